"""The command journal and the event bus on Redis Streams (`perp engine` / `perp gateway --redis`).

Keys, all under a namespace (`--namespace`, default `perp`):

| key | type | written by | holds |
|---|---|---|---|
| `NS:cmd` | stream | gateways, the engine's timers | one entry per group commit: `g` source id, `b` the source's batch number, `r` command rows |
| `NS:seq` | stream | the engine | one entry per engine batch, written **after** the engine ran it: `s` first sequence number, `t` the batch's `ts_ns`, `c` the last `NS:cmd` id it consumed, `r` its rows (stamped with `t`), `src` `[[g, b, n], ...]`, `x` (when any) the commands it refused `[[g, b, index, code], ...]` |
| `NS:meta` | hash | the engine (first start) | `markets` (the config as JSON), `config_hash`, `journal_schema` (perp.journal.SCHEMA_VERSION: what the rows mean) |
| `NS:snap:SEQ` | string | the engine | a verified snapshot (perp/state.py format) whose metadata names the `NS:seq` and `NS:cmd` ids it covers |
| `NS:snaps` | sorted set | the engine | snapshot keys scored by sequence number (the newest `keep` are kept) |
| `NS:engine` | hash | the engine | status: `seq`, `seq_id`, `ts_ns`, `state_hash` (refreshed when idle) |
| `NS:ev:SYMBOL` | stream | the engine, with each record (one MULTI/EXEC) | the market's events of each batch that touched it: `s` first seq, `r` event rows (internal: they carry account ids) |

Invariants:

- `NS:cmd` order is the arrival order; the engine consumes it in order, cuts it into batches and
  stamps each batch with one clock reading. `NS:seq` records those cuts and stamps, so `NS:seq` is
  the sequenced journal: replaying its records in order through `apply_batch` gives, byte for
  byte, the engine's state (the sweep the sequencer appends after a batch that moved a mark or an
  index is derived, not stored: `perp.sequencer.moved_mark_or_index`).
- A record is written only after the engine ran its batch, and an acknowledgement only follows the
  record, so every ack is both processed and durable (with `appendfsync always`, Redis fsyncs its
  AOF before it replies to any client, including readers of the stream).
- Recovery = the newest snapshot that loads + the `NS:seq` records after it; then the engine reads
  `NS:cmd` after the last record's `c`. A record repeated by a retried write (the reply was lost,
  the write was not) has a first sequence number at or below the engine's and is skipped.
- Streams are trimmed only below the oldest kept snapshot (`XTRIM MINID`).
- A `client_order_id` is consumed once per account over the whole venue: the engine leaves out of
  a batch every place whose (account, id) its used set (perp.client_ids) holds or an earlier row of
  the batch uses, and names it in the record's `x`; its gateway answers it 4204. So however many
  gateways a retry goes through, one place per id is sequenced. A batch whose commands were all
  refused is still recorded (no rows; the same `s` as the next record, its own `c`), so the entries
  it consumed are answered and not read again.

`NS:seq` is also the event bus of the gateways: each gateway process follows it from its last id,
runs the same batches through a read replica of the engine and so derives exactly the engine's
events, market by market and account by account (docs/deployment.md says why and what it costs).
`NS:ev:SYMBOL` carries the engine's own events per market for consumers without a replica.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
import structlog

from perp import layout as L
from perp import state as S
from perp.commands import Liquidate
from perp.engine import Engine
from perp.journal import SCHEMA_CHANGES, SCHEMA_VERSION, JournalHeaderMismatch, admin_payloads_of
from perp.markets import MarketsConfig
from perp.sequencer import engine_config_hash, moved_mark_or_index

log = structlog.get_logger("gateway.redis")

ROW_BYTES = 8 * L.N_CMD_COLS


class UnsafeRedis(Exception):
    """Redis is configured so that an acknowledged order could be lost (refused unless --unsafe)."""


@dataclass(frozen=True)
class Keys:
    ns: str = "perp"

    @property
    def cmd(self) -> str:
        return f"{self.ns}:cmd"

    @property
    def seq(self) -> str:
        return f"{self.ns}:seq"

    @property
    def meta(self) -> str:
        return f"{self.ns}:meta"

    @property
    def snaps(self) -> str:
        return f"{self.ns}:snaps"

    @property
    def snapmeta(self) -> str:
        return f"{self.ns}:snapmeta"

    @property
    def snap_partial(self) -> str:
        return f"{self.ns}:snap:partial"

    @property
    def engine(self) -> str:
        return f"{self.ns}:engine"

    def snap(self, seq: int) -> str:
        return f"{self.ns}:snap:{seq:016d}"

    def events(self, symbol: str) -> str:
        return f"{self.ns}:ev:{symbol}"

    def nonce(self, key: str, nonce: str) -> str:
        """A logon's (key, nonce), set NX with an expiry by the gateway that took it (gateway.front)."""
        return f"{self.ns}:nonce:{key}:{nonce}"


# ---- settings --------------------------------------------------------------------------------
def durability_problems(config: dict[str, str]) -> list[str]:
    """What the Redis settings (`CONFIG GET` output) would lose of acknowledged orders; [] = safe."""
    out = []
    if config.get("appendonly") != "yes":
        out.append("appendonly is not 'yes': the streams live in memory until the next RDB save, and a Redis "
                   "crash or restart loses every acknowledged order since it")
    fsync = config.get("appendfsync")
    if config.get("appendonly") == "yes" and fsync != "always":
        out.append(f"appendfsync is {fsync!r}, not 'always': a power loss or kernel crash loses up to one second "
                   "(everysec) or up to ~30 s (no) of acknowledged orders; a Redis process crash alone loses nothing")
    if config.get("maxmemory", "0") != "0" and config.get("maxmemory-policy") != "noeviction":
        out.append(f"maxmemory-policy is {config.get('maxmemory-policy')!r} with a maxmemory: Redis may evict the "
                   "journal streams; use noeviction")
    return out


def check_settings(r: Any, unsafe: bool = False) -> list[str]:
    """Refuse (UnsafeRedis) a Redis whose settings would lose acknowledged orders, unless `unsafe`;
    returns the problems found (logged as warnings when accepted)."""
    import redis

    try:
        config = {k: v for k, v in r.config_get("*").items()}
    except redis.ResponseError as exc:  # CONFIG renamed or disabled (managed Redis)
        problems = [f"CONFIG GET is not available ({exc}): the durability settings cannot be verified"]
    else:
        problems = durability_problems({str(k): str(v) for k, v in config.items()})
    if problems and not unsafe:
        raise UnsafeRedis("refusing to use this Redis as the journal (pass --unsafe to accept): " + "; ".join(problems))
    for p in problems:
        log.warning("redis_unsafe_accepted", problem=p)
    return problems


# ---- rows and records ------------------------------------------------------------------------
def rows_to_bytes(rows: np.ndarray) -> bytes:
    return np.ascontiguousarray(rows, dtype="<i8").tobytes()


def rows_from_bytes(blob: bytes) -> np.ndarray:
    if len(blob) % ROW_BYTES:
        raise ValueError(f"{len(blob)} bytes is not a whole number of {ROW_BYTES}-byte command rows")
    return np.frombuffer(blob, dtype="<i8").reshape(-1, L.N_CMD_COLS).astype(np.int64)


def payloads_to_bytes(payloads: list[tuple[int, bytes]]) -> bytes:
    """Admin commands' payloads (perp.commands.admin_payload: key, msgpack) as one field value."""
    return msgspec.msgpack.encode(payloads)


def payloads_from_bytes(blob: bytes | None) -> list[tuple[int, bytes]]:
    return [] if not blob else [(int(k), bytes(d)) for k, d in msgspec.msgpack.decode(blob)]


def cmd_fields(source: str, batch: int, rows: np.ndarray, payloads: dict[int, bytes]) -> dict[str, Any]:
    """An `NS:cmd` entry: the source, its batch number, the rows and, when the rows hold admin
    commands, their payloads (`p`), which travel with their rows the way the file journal writes
    them as side records (perp/journal.py)."""
    fields: dict[str, Any] = {"g": source, "b": batch, "r": rows_to_bytes(rows)}
    carried = admin_payloads_of(rows, payloads)
    if carried:
        fields["p"] = payloads_to_bytes(carried)
    return fields


class SeqRecord(msgspec.Struct, frozen=True):
    """One engine batch as `NS:seq` holds it (with the payloads of its admin commands, if any).

    `src` names every `NS:cmd` entry the batch consumed, with how many of its commands are in
    `rows` (0 when the sequencer refused them all); `refused` names the commands it left out, each
    as (source id, source batch number, index within that source batch, gateway code): a place whose
    client order id was already used (4204, gateway/engine_proc.py). Refused commands never reach a
    kernel, so replaying `rows` alone gives the engine's state; they are listed only so that their
    gateway can answer them. A batch may therefore hold no rows at all (all refused, or a flush).

    `merge` (field `m`): the book delta goes on past this record -- gateways hold its book changes
    and publish them, merged, at the next record without it (the engine's `book_interval_ms` of
    engine time; when the book changed and nothing else comes, the engine writes an empty record to
    close the delta). The decision is in the stream, so every gateway publishes the same deltas with
    the same `seq` / `prev_seq`. Records written before the field existed publish each time."""

    seq0: int
    ts_ns: int
    cmd_id: str
    rows: np.ndarray
    src: list[tuple[str, int, int]]  # (source id, its batch number, commands in rows) in stream order
    payloads: list[tuple[int, bytes]] = []
    refused: list[tuple[str, int, int, int]] = []  # (source id, its batch number, index in it, code)
    merge: bool = False

    def fields(self) -> dict[str, Any]:
        out = {"s": self.seq0, "t": self.ts_ns, "c": self.cmd_id, "r": rows_to_bytes(self.rows),
               "src": msgspec.json.encode(self.src)}
        if self.payloads:
            out["p"] = payloads_to_bytes(self.payloads)
        if self.refused:
            out["x"] = msgspec.json.encode(self.refused)
        if self.merge:
            out["m"] = 1
        return out

    @classmethod
    def parse(cls, fields: dict[bytes, bytes]) -> SeqRecord:
        refused = [tuple(x) for x in msgspec.json.decode(fields[b"x"])] if b"x" in fields else []
        return cls(int(fields[b"s"]), int(fields[b"t"]), fields[b"c"].decode(), rows_from_bytes(fields[b"r"]),
                   [tuple(x) for x in msgspec.json.decode(fields[b"src"])], payloads_from_bytes(fields.get(b"p")),
                   refused, b"m" in fields)


def apply_batch(engine: Engine, rows: np.ndarray, payloads: list[tuple[int, bytes]] = ()) -> np.ndarray:
    """One engine batch as the sequencer runs it: the rows, then the sweep after a batch that moved a
    mark or an index (at the batch's time). The engine process and every replica call this, with the
    payloads of the batch's admin commands (without them an admin row is refused, as in replay)."""
    engine.encoder.payloads.update(payloads)
    events = engine.submit_rows(rows)
    if rows.shape[0] and moved_mark_or_index(events):
        sweep = engine.encode([Liquidate(ts_ns=int(engine.state.g[L.G_LAST_TS]))])
        events = np.concatenate([events, engine.submit_rows(sweep)])
    return events


def market_entries(events: np.ndarray, seq0: int, n_markets: int) -> list[tuple[int, dict[str, Any]]]:
    """A batch's events split by market, as NS:ev:SYMBOL entries {s: first seq, r: event rows};
    markets the batch did not touch get none. Events of no market (deposits, withdrawals) travel
    only inside NS:seq."""
    out = []
    markets = events[:, L.E_MARKET]
    for m in range(n_markets):
        sel = markets == m
        if sel.any():
            out.append((m, {"s": seq0, "r": np.ascontiguousarray(events[sel], dtype="<i8").tobytes()}))
    return out


def rows_from_event_bytes(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<i8").reshape(-1, L.N_EV_COLS).astype(np.int64)


def market_events(r: Any, keys: Keys, symbol: str, after: str = "0-0", chunk: int = 512):
    """NS:ev:SYMBOL after id `after`: (id, event rows) in order -- for consumers that are not
    gateways (risk, the console, data capture). The rows carry account ids: an internal feed."""
    start = "(" + after if after != "0-0" else "-"
    while True:
        got = r.xrange(keys.events(symbol), min=start, max="+", count=chunk)
        if not got:
            return
        for eid, fields in got:
            yield eid.decode(), rows_from_event_bytes(fields[b"r"])
        start = "(" + got[-1][0].decode()


class EventBook:
    """A market's L2 book (ticks -> lots per side) kept from the engine's book-level events, as a
    consumer of NS:ev:SYMBOL from its first entry keeps it."""

    def __init__(self) -> None:
        self.levels: tuple[dict[int, int], dict[int, int]] = ({}, {})
        self.seq = 0

    def apply(self, rows: np.ndarray) -> None:
        for kind, seq, side, price, size in rows[:, [L.E_KIND, L.E_SEQ, L.E_SIDE, L.E_PRICE, L.E_SIZE]].tolist():
            self.seq = max(self.seq, seq)
            if kind != L.EV_BOOK:
                continue
            lv = self.levels[0 if side == L.BUY else 1]
            if size:
                lv[price] = size
            else:
                lv.pop(price, None)


def _id_key(stream_id: str) -> tuple[int, int]:
    a, _, b = stream_id.partition("-")
    return int(a), int(b or 0)


def id_after(a: str, b: str) -> bool:
    """Whether stream id `a` is after `b`."""
    return _id_key(a) > _id_key(b)


# ---- snapshots -------------------------------------------------------------------------------
def new_chains(engine: Engine) -> dict[str, list[int]]:
    """The prev_seq chains a venue starting at this engine has (Gateway.__init__'s defaults)."""
    n = len(engine.specs)
    return {"book": [engine.seq] * n, "trades": [0] * n}


def fit_chains(chains: dict[str, list[int]], n_markets: int, seq: int) -> None:
    """Chains for markets listed (admin `list_market`) since they were made: a new market's book
    chain starts at `seq` -- the engine's seq after the batch that listed it, as `new_chains` starts
    every market at the venue's first seq -- its trades chain at 0, nothing pending. Called with the
    same `seq` by every holder of the chains (after that batch, or on a snapshot made before the
    chains knew the market), so they stay a function of the stream."""
    book = chains["book"]
    pending = chains.setdefault("book_pending", [0] * len(book))
    for _ in range(len(book), n_markets):
        book.append(seq)
        chains["trades"].append(0)
        pending.append(0)


def advance_chains(chains: dict[str, list[int]], events: np.ndarray, seq: int, merge: bool = False,
                   n_markets: int = 0) -> None:
    """After a batch ending at `seq`: the `seq` of the last published book delta of each market and
    of the last batch that traded in it -- the prev_seq chains of the `book` and `trades` pushes.
    A batch that changed a book marks it pending (`book_pending`: the seq the delta will carry); a
    record without `merge` publishes every pending delta. They are a function of the stream, so every
    gateway (and one restarted from a snapshot, which records them) pushes the same `seq`/`prev_seq`.
    `n_markets`: the engine's market count after the batch (markets it listed get chains first)."""
    fit_chains(chains, n_markets, seq)
    book = chains["book"]
    pending = chains["book_pending"]
    kinds, markets = events[:, L.E_KIND], events[:, L.E_MARKET]
    for m in np.unique(markets[kinds == L.EV_BOOK]).tolist():
        if m >= 0:
            pending[m] = seq
    if not merge:
        for m, p in enumerate(pending):
            if p:
                book[m] = p
                pending[m] = 0
    taker = (kinds == L.EV_FILL) & (events[:, L.E_CODE] == 2)
    for m in np.unique(markets[taker]).tolist():
        if m >= 0:
            chains["trades"][m] = seq


SNAPSHOT_CHUNK_BYTES = 1 << 20  # one Redis command per MiB: other clients' commands run between them


def snapshot_bytes(engine: Engine, seq_id: str, cmd_id: str, chains: dict[str, list[int]]) -> bytes:
    """The engine's snapshot (perp.state's format) with the stream ids it covers, built in memory."""
    return snapshot_job(engine, seq_id, cmd_id, chains)()


def snapshot_job(engine: Engine, seq_id: str, cmd_id: str, chains: dict[str, list[int]]) -> Callable[[], bytes]:
    """`snapshot_bytes` in two steps (Engine.snapshot_job): the copy now, the hashing and encoding
    when the returned function runs (in a thread, while the engine goes on)."""
    return engine.snapshot_job({  # the engine's own metadata (admin state, used client order ids) and ours
        "config_hash": engine_config_hash(engine), "seq_id": seq_id, "cmd_id": cmd_id,
        "chains": msgspec.json.encode(chains).decode()})


def engine_from_snapshot_bytes(blob: bytes, name: str = "redis snapshot") -> tuple[Engine, dict[str, str]]:
    """Raises SnapshotCorrupt / SnapshotHashMismatch like a snapshot file would."""
    st, meta = S.load_snapshot_blob(blob, name)
    return Engine.from_state(st, meta, name), meta


def write_snapshot(r: Any, keys: Keys, engine: Engine, seq_id: str, cmd_id: str, chains: dict[str, list[int]],
                   keep: int = 2) -> int:
    """Build and store a snapshot (`snapshot_bytes` then `store_snapshot`). Returns its size in bytes."""
    return store_snapshot(r, keys, engine.seq, snapshot_bytes(engine, seq_id, cmd_id, chains), seq_id, cmd_id, keep)


def store_snapshot(r: Any, keys: Keys, seq: int, blob: bytes, seq_id: str, cmd_id: str, keep: int = 2) -> int:
    """Store a snapshot taken at `seq`, keep the newest `keep`, trim both streams below the oldest kept.

    Written so that Redis never stalls its other clients for the whole blob (a 20 MB SET held
    Redis for ~50 ms, its AOF write and fsync included): the blob goes to `NS:snap:partial` one
    MiB per command, then one RENAME makes it `NS:snap:<seq>`, and only then is it listed in
    `NS:snaps` (recovery reads only listed snapshots, so a writer killed mid-way leaves a partial
    key that is never read and is overwritten next time). The stream ids it covers are kept in
    `NS:snapmeta`, so trimming does not decode the oldest kept snapshot (a snapshot listed before
    that hash existed is decoded once, as before). Safe to call from a thread with its own
    connection while the engine goes on: nothing here touches the engine."""
    key, partial = keys.snap(seq), keys.snap_partial
    view = memoryview(blob)
    r.set(partial, view[:SNAPSHOT_CHUNK_BYTES])
    for pos in range(SNAPSHOT_CHUNK_BYTES, len(blob), SNAPSHOT_CHUNK_BYTES):
        r.append(partial, view[pos:pos + SNAPSHOT_CHUNK_BYTES])
    r.rename(partial, key)
    r.hset(keys.snapmeta, key, f"{seq_id} {cmd_id}")
    r.zadd(keys.snaps, {key: seq})
    kept = r.zrevrange(keys.snaps, 0, -1)
    for old in kept[max(1, keep):]:
        r.delete(old)
        r.zrem(keys.snaps, old)
        r.hdel(keys.snapmeta, old)
    if len(kept) < max(1, keep):  # not yet `keep` snapshots: nothing trimmed, so a gateway a few
        return len(blob)  # records behind the only snapshot still finds them (it cannot load one)
    oldest = kept[: max(1, keep)][-1]
    ids = r.hget(keys.snapmeta, oldest)
    if ids is not None:
        old_seq_id, old_cmd_id = ids.decode().split()
    else:
        blob_old = r.get(oldest)
        if blob_old is None:
            return len(blob)
        meta = engine_from_snapshot_bytes(blob_old)[1]
        old_seq_id, old_cmd_id = meta["seq_id"], meta["cmd_id"]
    if old_seq_id != "0-0":
        r.xtrim(keys.seq, minid=old_seq_id, approximate=False)
    if old_cmd_id != "0-0":
        r.xtrim(keys.cmd, minid=old_cmd_id, approximate=False)
    return len(blob)


# ---- recovery --------------------------------------------------------------------------------
@dataclass
class Recovered:
    engine: Engine
    seq_id: str  # the last NS:seq record applied ("0-0": none)
    cmd_id: str  # the last NS:cmd entry those records consumed ("0-0": none)
    chains: dict[str, list[int]]  # advance_chains at the engine's seq
    snapshot_seq: int
    replayed_records: int
    seconds: float


def markets_of(r: Any, keys: Keys, wait_s: float = 0.0) -> MarketsConfig | None:
    """The markets config the engine registered (None: no engine has started in this namespace)."""
    t_end = time.monotonic() + wait_s
    while True:
        raw = r.hget(keys.meta, "markets")
        if raw is not None:
            return msgspec.json.decode(raw, type=MarketsConfig)
        if time.monotonic() >= t_end:
            return None
        time.sleep(0.1)


def records(r: Any, keys: Keys, after: str = "0-0", chunk: int = 512):
    """`NS:seq` records after id `after`, in order: (id, SeqRecord)."""
    start = "(" + after if after != "0-0" else "-"
    while True:
        got = r.xrange(keys.seq, min=start, max="+", count=chunk)
        if not got:
            return
        for eid, fields in got:
            yield eid.decode(), SeqRecord.parse(fields)
        start = "(" + got[-1][0].decode()


def check_journal_schema(r: Any, keys: Keys) -> None:
    """Refuse (JournalHeaderMismatch, 5011) a namespace whose `NS:seq` was written under another journal
    schema than this engine's (perp.journal.SCHEMA_VERSION), or before the schema was recorded (no
    `journal_schema` but records): its rows would replay to another state, as a journal file's would."""
    raw = r.hget(keys.meta, "journal_schema")
    if raw is None and not r.xlen(keys.seq):
        return
    schema = int(raw) if raw is not None else 2  # records without a recorded schema predate schema 3
    if schema != SCHEMA_VERSION:
        why = SCHEMA_CHANGES.get(schema, "")
        raise JournalHeaderMismatch(f"namespace {keys.ns!r}: a journal of schema {schema}; this engine reads "
                                    f"schema {SCHEMA_VERSION}" + (f" ({why})" if why else ""))


def recover(r: Any, keys: Keys, markets: MarketsConfig | None = None, *, use_snapshot: bool = True) -> Recovered:
    """The engine the newest loadable snapshot plus the `NS:seq` records after it describe (without
    a snapshot: every record from the start of the stream). A damaged snapshot is skipped for the one
    before it; a record that does not continue the sequence is refused (the stream was tampered with
    or trimmed above the snapshot)."""
    t0 = time.perf_counter()
    check_journal_schema(r, keys)
    engine, seq_id, cmd_id, snap_seq, chains = None, "0-0", "0-0", 0, None
    if use_snapshot:
        for key in r.zrevrange(keys.snaps, 0, -1):
            blob = r.get(key)
            if blob is None:
                continue
            try:
                engine, meta = engine_from_snapshot_bytes(blob)
            except S.SnapshotError as exc:
                log.warning("snapshot_skipped", key=key.decode(), error=str(exc), code=int(exc.code))
                continue
            seq_id, cmd_id, snap_seq = meta["seq_id"], meta["cmd_id"], engine.seq
            chains = msgspec.json.decode(meta["chains"]) if "chains" in meta else None
            break
    if engine is None:
        engine = Engine(markets if markets is not None else markets_of(r, keys))
    if chains is None:
        chains = new_chains(engine)
    fit_chains(chains, len(engine.specs), engine.seq)  # a snapshot whose chains predate a listing
    n = 0
    for eid, rec in records(r, keys, seq_id):
        end = rec.seq0 + rec.rows.shape[0] - 1
        if rec.seq0 <= engine.seq:  # a record written twice (a retried write whose reply was lost)
            seq_id = eid
            continue
        if rec.seq0 != engine.seq + 1:
            raise RuntimeError(f"{keys.seq} record {eid} starts at seq {rec.seq0} but the engine is at {engine.seq}: "
                               f"the stream does not continue the snapshot (trimmed above it?)")
        advance_chains(chains, apply_batch(engine, rec.rows, rec.payloads), engine.seq, rec.merge, len(engine.specs))
        if engine.seq < end:
            raise RuntimeError(f"record {eid}: the engine ended at seq {engine.seq}, before {end}")
        seq_id, cmd_id = eid, rec.cmd_id
        n += 1
    if engine.client_order_ids_from_seq:
        _client_order_ids_before(r, keys, engine)
    seconds = time.perf_counter() - t0
    log.info("redis_recovered", snapshot_seq=snap_seq, replayed_records=n, seq=engine.seq, seq_id=seq_id,
             seconds=round(seconds, 3))
    return Recovered(engine, seq_id, cmd_id, chains, snap_seq, n, seconds)


def _client_order_ids_before(r: Any, keys: Keys, engine: Engine) -> None:
    """After recovering from a snapshot written before the engine kept the used client order ids
    (`client_order_ids_from_seq` > 0): add those of the records up to it that the stream still
    holds, once (the next snapshot carries them). Records trimmed below the oldest kept snapshot
    are gone: their ids are then unknown, and said so (the kernel still refuses a live one, 1014)."""
    upto, first = engine.client_order_ids_from_seq, 0
    for _eid, rec in records(r, keys):
        if rec.seq0 > upto:
            break
        first = first or rec.seq0
        engine.client_order_ids.add_rows(rec.rows)
    if first != 1:
        log.warning("client_order_ids_partial", known_from_seq=first or upto + 1, snapshot_seq=upto,
                    why="the stream before the snapshot was trimmed: older client order ids are not known")
    engine.client_order_ids_from_seq = 0


def connect_sync(url: str) -> Any:
    import redis

    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)


def connect_async(url: str, timeout_s: float = 5.0) -> Any:
    import redis.asyncio as aioredis

    return aioredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=2,
                                   single_connection_client=True)


REDIS_DOWN = None  # set lazily: the exceptions that mean "Redis is unreachable"


def redis_down_errors() -> tuple[type[BaseException], ...]:
    global REDIS_DOWN
    if REDIS_DOWN is None:
        import redis

        REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, OSError, ConnectionError, TimeoutError)
    return REDIS_DOWN
