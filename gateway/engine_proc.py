"""`perp engine --redis URL`: the one sequencer of a scaled-out venue.

It reads `NS:cmd` in stream order (gateways append validated commands there; its own timers too),
cuts it into batches of at most `max_batch` commands, stamps each batch with one reading of its
clock (never decreasing), runs it (`redis_journal.apply_batch`), and only then appends the batch's
record to `NS:seq`. Gateways acknowledge a command when they see its record, so an ack always
follows both the engine's processing and the durable record (gateway/redis_journal.py).

Invariants: the engine's state is always `recover(...)` of what `NS:seq` holds plus at most the
batch in hand; a batch whose record could not be written is retried until Redis takes it (the
engine pauses, keeps its state and its place, and resumes by itself when Redis returns), and a
record already written (the reply was lost) is recognised by its sequence number and not repeated.
An error reply to one of its writes or reads (OOM under `maxmemory`, MISCONF after a failed RDB
save, NOPERM after an ACL change, READONLY from a demoted primary) is a pause too, not a stop: the
MULTI/EXEC refused before it ran took nothing, so the record is retried every 0.2 s until Redis takes
it (`redis_refused` / `redis_accepted` in the log, once per episode), the timers wait, and nothing
is acked meanwhile. Only an error inside EXEC's reply array (a command that failed as it ran, the
others written: `PartialTransactionError`) stops the engine, as a retry would write them twice.

A place whose (account, client order id) was used before -- by any command already sequenced,
or by an earlier row of the same batch -- is left out of the batch and named in the record's `x`;
the gateway that sent it answers 4204 DUPLICATE_CLIENT_ORDER_ID (`_refuse_reused`). The gateways
check their own replicas first; this holds when the same id reaches two gateways before either has
seen the other's (a client failing over, or retrying elsewhere). Refused rows never reach the
kernel, so the record's rows stay the exact journal.

Timers (the liquidation sweep, the index feed: one set_index per market whose series the fix source
holds, gateway.feed.IndexFeeds) are commands the engine appends to `NS:cmd` like a gateway, so replay
replays them. After a recovery the first index step waits until the engine has run what `NS:cmd` held
at start and leaves out each market's set_index already in force; a market listed while the engine
runs is fed from the next tick (its point of the current step, gateway.feed.IndexFeeds.add_listed). Snapshots (every `snapshot_every` commands and on SIGTERM) go to
Redis with the ids they cover; the streams are trimmed below the oldest kept one. The periodic ones
pause the engine only for a copy of its state: hashing, encoding and the store (one MiB per Redis
command) run in a thread while batches go on (`_start_snapshot`).

Known limits: one engine process (no standby: a second `perp engine` on the same namespace would
sequence the same commands twice -- run it under a supervisor that restarts it, not beside it);
the snapshot on SIGTERM is written inline (the process is stopping anyway); the used
client order ids are also held as a Python set for the refusal check (~60-70 bytes per id, as each
gateway's replica holds them).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
import numpy as np
import redis
import structlog

from gateway import redis_journal as RJ
from gateway.errors import GatewayCode as G
from gateway.feed import IndexFeed, IndexFeeds
from gateway.limits import WallClock
from gateway.resp import PartialTransactionError, RespConnection, xadd_args
from perp import layout as L
from perp.background import BackgroundJob
from perp.client_ids import reused_places
from perp.commands import Liquidate
from perp.journal import SCHEMA_VERSION, admin_payloads_of
from perp.markets import load_markets
from perp.sequencer import engine_config_hash
from perp.gc_policy import freeze_heap, thaw_heap
from perp.warm import warm_kernels

log = structlog.get_logger("gateway.engine")

SOURCE = "engine"  # the `g` of the engine's own timer entries


def _stream_id(eid: str) -> tuple[int, int]:
    """A Redis stream id ("ms-seq") as a comparable pair."""
    ms, _, n = eid.partition("-")
    return int(ms), int(n or 0)


class EngineConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    redis_url: str
    namespace: str = "perp"
    unsafe: bool = False
    markets_path: str | None = None  # a new venue only; afterwards NS:meta is the config
    max_batch: int = 4096
    liquidation_interval_ms: int = 1000
    index_step_s: int = 3600
    index_csv: str | None = None
    index_feed: bool = True
    snapshot_every: int = 1_000_000  # commands between snapshots (0: only on SIGTERM): replay after a crash <= this
    keep_snapshots: int = 2
    snapshot_on_exit: bool = True
    market_stream_maxlen: int = 1_000_000  # NS:ev:SYMBOL entries kept (about; one per batch that touched it)
    # book deltas at most this often per market, in engine time (0: one per record); see SeqRecord.merge
    book_interval_ms: int = 20


class EngineProcess:
    def __init__(self, cfg: EngineConfig, *, feed: IndexFeed | IndexFeeds | list[IndexFeed] | None = None,
                 clock: WallClock | None = None):
        self.cfg = cfg
        self.keys = RJ.Keys(cfg.namespace)
        self.r = RJ.connect_sync(cfg.redis_url)  # start-up, the snapshot on exit
        self.r_snap = RJ.connect_sync(cfg.redis_url)  # the periodic snapshots' writer thread
        self._snap = BackgroundJob()  # the periodic snapshot in flight (perp.background)
        RJ.check_settings(self.r, cfg.unsafe)
        markets = load_markets(cfg.markets_path) if cfg.markets_path else load_markets()
        registered = RJ.markets_of(self.r, self.keys)
        if registered is None:
            from perp.engine import Engine

            self.r.hset(self.keys.meta, mapping={"markets": msgspec.json.encode(markets),
                                                 "config_hash": engine_config_hash(Engine(markets)),
                                                 "journal_schema": SCHEMA_VERSION})
            registered = markets
        rec = RJ.recover(self.r, self.keys, registered)
        self.engine = rec.engine
        self.seq_id = rec.seq_id
        self.cmd_id = rec.cmd_id
        self.chains = rec.chains
        self.engine.client_order_ids.seen(np.zeros(0, np.int64))  # its lookup set now, not in the first batch
        self.clock = clock or WallClock(int(self.engine.state.g[L.G_LAST_TS]))
        # one feed per market (recovered ones included) whose series the fix source has (gateway.feed)
        self.feed = IndexFeeds.of(feed)
        if self.feed is None and feed is None and cfg.index_feed:
            from pathlib import Path

            self.feed = IndexFeeds.from_csv(self.engine.specs, Path(cfg.index_csv) if cfg.index_csv else None,
                                            step_ns=cfg.index_step_s * 1_000_000_000)
        if self.feed is not None:
            log.info("index_feed_markets", markets=self.feed.markets)
        # recovered: the first index step waits until the sequencer has run what NS:cmd held at start
        # (a previous process's set_index of this step among it), then skips what the engine holds
        self._index_resumed = self.engine.seq > 0
        tail = self.r.xrevrange(self.keys.cmd, count=1)
        self._cmd_tail_at_start = _stream_id(tail[0][0].decode()) if tail else (0, 0)
        self._last_snapshot_seq = self.engine.seq
        self._status_seq = -1
        self._timer_batch = int(time.time_ns())  # batch numbers of this process's timer entries: unique per start
        self._stopping = False
        self._tasks: list[asyncio.Task] = []
        self.redis_up = True
        self.refused: dict[str, str] = {}  # op -> Redis's error reply, while Redis refuses it
        self.batches = 0
        self._book_interval_ns = cfg.book_interval_ms * 1_000_000
        self._book_closed_ts = 0  # engine time of the last record that closed the book delta
        self.failed = asyncio.Event()

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        warm = warm_kernels(self.engine.markets)  # compiled before the first command (perp.warm)
        log.info("kernels_ready", seconds=round(warm.seconds, 3))
        self.ar = RespConnection(self.cfg.redis_url)  # the sequencing loop's blocking reads (gateway.resp)
        self.arec = RespConnection(self.cfg.redis_url)  # the sequencing loop's record appends
        self.aw = RJ.connect_async(self.cfg.redis_url)  # timers, status, checks after a failure
        self._tasks.append(asyncio.create_task(self._sequence_loop(), name="sequencer"))
        self._tasks.append(asyncio.create_task(self._timers(), name="engine-timers"))
        for t in self._tasks:
            t.add_done_callback(self._task_done)
        log.info("gc_frozen", objects=freeze_heap())  # full collections skip the start-up heap (perp.gc_policy)
        log.info("engine_started", seq=self.engine.seq, seq_id=self.seq_id, cmd_id=self.cmd_id,
                 namespace=self.cfg.namespace)

    def _task_done(self, task: asyncio.Task) -> None:
        """A loop that ends by an exception is a bug: fail-stop (the process exits; a restart
        recovers from snapshot + stream)."""
        if task.cancelled() or task.exception() is None:
            return
        log.error("engine_failed", task=task.get_name(), error=repr(task.exception()), seq=self.engine.seq)
        self.failed.set()

    async def stop(self) -> None:
        """Stop the timers, finish the batch in hand, snapshot, close."""
        self._stopping = True
        for t in self._tasks[1:]:
            t.cancel()
        done, pending = await asyncio.wait(self._tasks, timeout=5.0)  # a batch held while Redis is down
        for t in pending:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.snapshot_settled()  # a periodic snapshot still being stored: let it finish first
        if self.cfg.snapshot_on_exit and not pending:
            try:
                self.snapshot()
            except (*RJ.redis_down_errors(), redis.ResponseError) as exc:  # recovery replays the stream instead
                log.error("snapshot_failed", error=repr(exc))
        await self._status(force=True)
        for c in (self.ar, self.arec, self.aw):
            await c.aclose()
        self.r.close()
        self.r_snap.close()
        thaw_heap()
        log.info("engine_stopped", seq=self.engine.seq, state_hash=self.engine.state_hash())

    def snapshot(self) -> int:
        """A snapshot now, stored before this returns (on exit, and for tests)."""
        size = RJ.write_snapshot(self.r, self.keys, self.engine, self.seq_id, self.cmd_id, self.chains,
                                 self.cfg.keep_snapshots)
        self._last_snapshot_seq = self.engine.seq
        log.info("snapshot_written", seq=self.engine.seq, seq_id=self.seq_id, bytes=size)
        return size

    async def snapshot_settled(self) -> None:
        """Until the periodic snapshot in hand (if any) is stored or has failed."""
        await self._snap.settled()

    def _start_snapshot(self) -> None:
        """The periodic snapshot, off the sequencer's path: the engine pauses only for the copy
        (Engine.snapshot_job, a few ms); hashing, encoding and the chunked store
        (RJ.store_snapshot) run in a thread on their own connection while batches go on. One at a
        time; a store that fails (Redis down) is retried from a fresh copy at a later batch, and
        the streams are trimmed only by a stored snapshot, so a failure loses nothing. Before,
        the inline snapshot (a 20 MB state) stopped the engine -- and with its one SET, Redis --
        for ~250 ms every `snapshot_every` commands: the p99 ack of a 10k/s pace read 300-400 ms."""
        seq, seq_id, cmd_id, before = self.engine.seq, self.seq_id, self.cmd_id, self._last_snapshot_seq
        job = RJ.snapshot_job(self.engine, seq_id, cmd_id, self.chains)
        self._last_snapshot_seq = seq

        def store() -> int:
            return RJ.store_snapshot(self.r_snap, self.keys, seq, job(), seq_id, cmd_id, self.cfg.keep_snapshots)

        def done(error: BaseException | None, size: int | None) -> None:
            if error is not None:
                log.warning("snapshot_failed", seq=seq, error=repr(error))
                self._last_snapshot_seq = before  # due again: retried from a fresh copy
            else:
                log.info("snapshot_written", seq=seq, seq_id=seq_id, bytes=size)

        self._snap.start(store, done)

    # ---- the sequencer ---------------------------------------------------------------------
    async def _sequence_loop(self) -> None:
        down = RJ.redis_down_errors()
        while not self._stopping:
            book_open = any(self.chains.get("book_pending", ()))  # a book changed since the last closing record
            block_ms = self._until_book_due_ms() if book_open else 200
            try:
                entries = await self.ar.xread_one(self.keys.cmd, self.cmd_id, self.cfg.max_batch, block_ms)
            except down as exc:
                self._down(exc)
                await asyncio.sleep(0.2)
                continue
            except redis.ResponseError as exc:  # NOPERM: read nothing, wait
                self._refused("read", exc)
                await asyncio.sleep(0.2)
                continue
            self._up()
            self._accepted("read")
            if not entries:
                if book_open:
                    await self._close_book_delta()
                else:
                    await self._status()
                continue
            take, n_rows, parts, src, payloads = 0, 0, [], [], []
            for eid, fields in entries:
                try:
                    rows = RJ.rows_from_bytes(fields[b"r"])
                    source, b = fields[b"g"].decode(), int(fields[b"b"])
                    carried = RJ.payloads_from_bytes(fields.get(b"p"))
                except (KeyError, ValueError, msgspec.DecodeError) as exc:  # never from our gateways
                    log.error("cmd_entry_skipped", id=eid.decode(), error=repr(exc))
                    rows, source, b, carried = np.zeros((0, L.N_CMD_COLS), np.int64), "?", 0, []
                if take and n_rows + rows.shape[0] > self.cfg.max_batch:
                    break
                take += 1
                n_rows += rows.shape[0]
                parts.append(rows)
                payloads.extend(carried)
                src.append((source, b, rows.shape[0]))
            last_id = entries[take - 1][0].decode()
            if n_rows == 0:
                self.cmd_id = last_id
                continue
            rows, src, refused = self._refuse_reused(np.concatenate(parts), src)
            ts = self.clock.now_ns()
            rows[:, L.C_TS] = ts
            seq0 = self.engine.seq + 1
            events = RJ.apply_batch(self.engine, rows, payloads)
            merge = self._book_merge(ts)
            RJ.advance_chains(self.chains, events, self.engine.seq, merge, len(self.engine.specs))
            rec = RJ.SeqRecord(seq0, ts, last_id, rows, src, admin_payloads_of(rows, self.engine.encoder.payloads),
                               refused, merge)
            self.seq_id = await self._append_record(rec, events)
            self.cmd_id = last_id
            self.batches += 1
            if (self.cfg.snapshot_every and not self._snap.busy
                    and self.engine.seq - self._last_snapshot_seq >= self.cfg.snapshot_every):
                self._start_snapshot()

    def _book_merge(self, ts: int) -> bool:
        """Whether this record leaves the book delta open (SeqRecord.merge): yes until
        `book_interval_ms` of engine time has passed since the last record that closed it. Which
        books changed since then is the chains' `book_pending` (RJ.advance_chains)."""
        if not self._book_interval_ns or ts - self._book_closed_ts >= self._book_interval_ns:
            self._book_closed_ts = ts
            return False
        return True

    def _until_book_due_ms(self) -> int:
        """Milliseconds (at least 1) until the open book delta is due to close."""
        due_ns = self._book_closed_ts + self._book_interval_ns - self.clock.now_ns()
        return max(1, -(-due_ns // 1_000_000))

    async def _close_book_delta(self) -> None:
        """Nothing came while a book delta was open and due: an empty record (no rows, no source)
        closes it, so the gateways publish it within `book_interval_ms`."""
        ts = self.clock.now_ns()
        rec = RJ.SeqRecord(self.engine.seq + 1, ts, self.cmd_id, np.zeros((0, L.N_CMD_COLS), np.int64), [])
        empty = np.zeros((0, L.N_EV_COLS), np.int64)
        self._book_closed_ts = ts
        RJ.advance_chains(self.chains, empty, self.engine.seq, False, len(self.engine.specs))
        self.seq_id = await self._append_record(rec, empty)

    def _refuse_reused(self, rows: np.ndarray, src: list[tuple[str, int, int]]
                       ) -> tuple[np.ndarray, list[tuple[str, int, int]], list[tuple[str, int, int, int]]]:
        """The batch without its places whose (account, client order id) is already used -- by a
        command sequenced before (the engine's set, kept from its own rows, in its snapshots and
        rebuilt on recovery) or by an earlier row of this batch: (rows kept, `src` with the counts
        kept, the refusals as (source, source batch, index in it, 4204)). Every gateway checks its
        own replica first; this is what holds when two gateways each see an id for the first time.
        The kept rows' ids are recorded when they run (`apply_batch`), not here."""
        gone = reused_places(rows, self.engine.client_order_ids)
        if not gone.shape[0]:
            return rows, src, []
        ends = np.cumsum([n for _, _, n in src])
        which = np.searchsorted(ends, gone, side="right")
        starts = ends - np.array([n for _, _, n in src])
        refused = [(src[k][0], src[k][1], int(i - starts[k]), int(G.DUPLICATE_CLIENT_ORDER_ID))
                   for i, k in zip(gone.tolist(), which.tolist(), strict=True)]
        lost = np.bincount(which, minlength=len(src)).tolist()
        kept = [(g, b, n - d) for (g, b, n), d in zip(src, lost, strict=True)]
        log.info("client_order_ids_refused", commands=len(refused), seq=self.engine.seq)
        return np.delete(rows, gone, axis=0), kept, refused

    async def _append_record(self, rec: RJ.SeqRecord, events: np.ndarray) -> str:
        """XADD the record and, in the same MULTI/EXEC, each market's events to NS:ev:SYMBOL; while
        Redis is down, wait and retry (the batch is held, nothing is acked). After a failure, a record
        already in the stream with this first sequence number was written (with its market entries)."""
        down = RJ.redis_down_errors()
        fields = rec.fields()
        per_market = RJ.market_entries(events, rec.seq0, len(self.engine.specs))
        check = False
        while True:
            try:
                if check:  # `c` and `src` too: a record of refusals only, and an empty record closing a
                    # book delta, have the next record's `s`; the closing one also the `c` of the one before
                    last = await self.aw.xrevrange(self.keys.seq, count=1)
                    if (last and int(last[0][1][b"s"]) == rec.seq0 and last[0][1][b"c"].decode() == rec.cmd_id
                            and last[0][1].get(b"src") == fields["src"]):
                        return last[0][0].decode()
                eid = (await self.arec.transaction(
                    [xadd_args(self.keys.seq, fields)]
                    + [xadd_args(self.keys.events(self.engine.specs[m].symbol), entry, self.cfg.market_stream_maxlen)
                       for m, entry in per_market]))[0]
                self._up()
                self._accepted("record")
                return eid.decode()
            except down as exc:
                self._down(exc)
                check = True
                await asyncio.sleep(0.2)
            except PartialTransactionError:  # some of it written: a retry would repeat it (fail-stop)
                raise
            except redis.ResponseError as exc:  # refused before it ran: nothing written, retry
                self._refused("record", exc)
                await asyncio.sleep(0.2)

    def _down(self, exc: BaseException) -> None:
        if self.redis_up:
            log.error("redis_down", error=repr(exc), seq=self.engine.seq)
        self.redis_up = False

    def _up(self) -> None:
        if not self.redis_up:
            log.info("redis_up", seq=self.engine.seq)
        self.redis_up = True

    def _refused(self, op: str, exc: BaseException) -> None:
        """Redis answered `op` (record, read, timer, status) with an error: logged once until it
        takes one again (`refused` names what is refused now; tests and operators read it)."""
        if op not in self.refused:
            log.error("redis_refused", op=op, error=str(exc), seq=self.engine.seq)
        self.refused[op] = str(exc)

    def _accepted(self, op: str) -> None:
        if self.refused.pop(op, None) is not None:
            log.info("redis_accepted", op=op, seq=self.engine.seq)

    async def _status(self, force: bool = False) -> None:
        """When idle: the engine's seq and state hash in NS:engine (tests and operators read it)."""
        if self.engine.seq == self._status_seq and not force:
            return
        try:
            await self.aw.hset(self.keys.engine, mapping={
                "seq": self.engine.seq, "seq_id": self.seq_id, "ts_ns": time.time_ns(),
                "state_hash": self.engine.state_hash()})
            self._status_seq = self.engine.seq
            self._accepted("status")
        except RJ.redis_down_errors() as exc:
            self._down(exc)
        except redis.ResponseError as exc:  # tried again when next idle
            self._refused("status", exc)

    # ---- timers ----------------------------------------------------------------------------
    async def _append_timer(self, command: Any) -> None:
        await self._append_timer_rows(self.engine.encoder.row(command)[None, :])

    async def _append_timer_rows(self, row: np.ndarray) -> None:
        """One NS:cmd entry of the engine's own (`SOURCE`) holding `row` (one or more command rows)."""
        self._timer_batch += 1
        try:
            await self.aw.xadd(self.keys.cmd, RJ.cmd_fields(SOURCE, self._timer_batch, row, self.engine.encoder.payloads))
            self._accepted("timer")
        except RJ.redis_down_errors() as exc:  # the next tick tries again
            self._down(exc)
            raise
        except redis.ResponseError as exc:  # refused: nothing appended; the next tick tries again
            self._refused("timer", exc)
            raise

    async def _timers(self) -> None:
        liq_ns = self.cfg.liquidation_interval_ms * 1_000_000
        next_liq = time.monotonic_ns() + liq_ns
        index_step: int | None = None
        listed: list[str] = []  # fed since the last entry, their point not yet appended
        while not self._stopping:
            try:
                now = self.clock.now_ns()
                if self.feed is not None and (not self._index_resumed
                                              or _stream_id(self.cmd_id) >= self._cmd_tail_at_start):
                    step = self.feed.step_of(now)
                    listed += await self.feed.add_listed(self.engine.specs)  # listed since: fed now
                    fed = []
                    if step != index_step:
                        # each fed market's set_index, following its operators' oracle parameters (admin
                        # commands), in market order, as one entry; after a recovery only what is not in force
                        fed = self.feed.rows(self.engine, step, self._index_resumed)
                    elif listed:  # a market listed within the step: its point of this step
                        fed = self.feed.rows(self.engine, step, only=listed)
                    if fed:
                        await self._append_timer_rows(np.stack([row for _, row in fed]))
                    index_step, self._index_resumed, listed = step, False, []
                    for cmd, _ in fed:
                        log.info("index", market=cmd.market, price=cmd.price, validity=cmd.validity)
                if liq_ns and time.monotonic_ns() >= next_liq:
                    next_liq = time.monotonic_ns() + liq_ns
                    await self._append_timer(Liquidate(ts_ns=0))
            except (*RJ.redis_down_errors(), redis.ResponseError):  # logged where it was raised
                await asyncio.sleep(0.2)
                continue
            waits = [1_000_000_000]
            if liq_ns:
                waits.append(max(0, next_liq - time.monotonic_ns()))
            if self.feed is not None:
                waits.append(max(0, self.feed.next_step_ns(now) - self.clock.now_ns()))
            await asyncio.sleep(min(waits) / 1e9 + 0.0005)

