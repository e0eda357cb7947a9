"""`perp serve`: the venue in one asyncio process -- WebSocket gateway, sequencer, engine, timers.

The flow of one order (../shared/DESIGN.md):

1. a frame is parsed into its msgspec struct (gateway.protocol), the connection's rate limit, the
   logon and the key's permission are checked, and the order is validated against the market spec
   (tick grid, size range, own orders only, client order id not used before). Anything refused here
   gets its 4000-4899 code and never reaches the journal or the engine.
2. valid commands join the sequencer's queue. **Group commit, pipelined**: the committer waits for
   up to `group_commit_us` after the first command -- and, while the previous batch's fsync is
   still running, until it returns -- (or until `max_batch` are queued), stamps them all with one
   wall-clock reading (never decreasing), writes them as one journal record and runs them as one
   engine batch (`JournaledEngine.run_rows`, on the loop thread), reads what the acks and pushes
   need from engine state (`_settle`), and starts the one fsync of the batch in the engine thread
   (`commit_upto`). The next batch is written and run while this one's acks go out.
3. only once the batch's fsync returned are its acks sent (batches in order), followed by its
   market data (book deltas with absolute level sizes -- merged over `book_interval_ms` --,
   trades, ticker) and each account's private events. The batch's events stay int64 rows (gateway.batch_events): acks are read from each
   command's rows, the public streams from numpy selections, and only the rows of accounts with
   a user-channel subscriber (and the rare liquidation and funding rows) become Python objects.
   Every push is encoded and framed once (gateway.wire) and the same bytes are queued for each
   subscriber; a connection's frames of one event-loop turn leave in one socket write.

Reads that touch engine state (queries, snapshots on subscribe) run with the pipeline drained, never
while a batch is between its engine run and its acks, so every snapshot is consistent with the stream
of deltas that follows it (`seq`/`prev_seq`).

This module is the only wall-clock reader of the venue (gateway.limits.WallClock); timers (the
liquidation sweep tick, which also carries the clock over funding hours, the index feed and the
dead-man's switches) enter the same queue as journaled commands.

If a journal append, an engine batch or a fsync raises, the gateway cannot tell what is durable:
every command of that batch (and of a batch already run behind a failed fsync) is answered with a
4900-range "status unknown" code, commands still queued get 4300 (not sequenced), and the gateway
stops taking commands (fail-stop); a restart recovers from snapshot + journal.

Incoming frames skip the websockets message queue (gateway.fastws): each whole frame is handed
to `_on_frame` from the protocol's `data_received`.

Known limits (see docs/protocol.md and docs/performance.md): one process, one engine thread; the
per-frame work (parse, checks, ack) is Python: see `perp bench gateway` for what it reaches.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np
import structlog
from websockets.protocol import State as _WsState

from gateway import protocol as P
from gateway.admin import AdminApi
from gateway.batch_events import BatchEvents, PriceText
from gateway.deadman import DeadmanStore
from gateway.errors import GatewayCode as G
from gateway.fanout import send_to_all
from gateway.fanout import warm as warm_fanout
from gateway.fastws import FastServerConnection
from gateway.feed import IndexFeed, IndexFeeds
from gateway.funding_history import FundingHistory, payments
from gateway.keys import ApiKey, Authenticator, KeyError_, KeyStore
from gateway.limits import TokenBucket, WallClock
from gateway.wire import text_frame
from perp import events as E
from perp import layout as L
from perp.background import BackgroundJob
from perp.codes import describe
from perp.commands import (
    Amend,
    CancelAll,
    Deposit,
    Liquidate,
)
from perp.journal import JournalReader
from perp.markets import MarketSpec, load_markets, price_to_ticks, ticks_to_price
from perp.sequencer import JournaledEngine
from perp.gc_policy import freeze_heap, thaw_heap
from perp.warm import warm_kernels

log = structlog.get_logger("gateway")
_OPEN = _WsState.OPEN


def _writable_now(conn: "Conn") -> bool:
    """The gateway may write this connection's socket now: its sender is not waiting for the
    socket to drain, flow control has not paused it, and the WebSocket is open. `_flush` and the
    kernel fan-out (`Gateway._broadcast`) share this rule."""
    ws = conn.ws
    return not conn.blocked and not ws.paused and ws.protocol.state is _OPEN

RESERVED_ACCOUNTS = 16  # venue accounts (insurance funds); never trade through the gateway


class ServerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8765  # 0: an ephemeral port (see Gateway.port)
    data_dir: str = "data"
    keys_path: str | None = None  # default: DATA_DIR/keys.json
    markets_path: str | None = None  # default: the embedded markets.toml (ignored when a snapshot exists)
    fsync: Literal["always", "interval", "never"] = "always"
    group_commit_us: int = 1000  # gather commands for up to this long after the first one...
    max_batch: int = 4096  # ...or until this many are queued
    max_queue: int = 65536  # commands waiting for the sequencer; beyond: OVERLOADED
    max_frame_bytes: int = 65536
    send_queue_frames: int = 4096  # per connection; beyond: book conflated, anything else disconnects
    book_interval_ms: int = 20  # book deltas at most this often per market, merged (0: one per batch)
    # pushes to at least this many subscribers are written by one kernel call (gateway.fanout); 0: never
    fanout_kernel_min: int = 32
    send_timeout_s: float = 10.0  # a frame the socket cannot take for this long: the connection is cut
    write_limit_bytes: int = 32768  # the WebSocket layer's write buffer per connection
    so_sndbuf_bytes: int = 0  # kernel send buffer per connection (0: the OS default)
    order_rate_per_s: float = 500.0  # per key: places and amends...
    order_burst: int = 1000
    cancel_rate_per_s: float = 2000.0  # ...cancels get more room
    cancel_burst: int = 4000
    conn_rate_per_s: float = 2000.0  # per connection: every frame
    conn_burst: int = 4000
    max_subscriptions: int = 64
    max_conns_per_ip: int = 256
    idle_timeout_s: float = 300.0
    recv_window_ms: int = 5000
    max_logon_failures: int = 5
    liquidation_interval_ms: int = 1000  # 0: no timer (the sequencer still sweeps after index moves)
    index_step_s: int = 3600  # the feed moves the index once per step (gateway.feed)
    index_csv: str | None = None  # default: ../shared/data/gpumarkets/daily_fixings.csv
    index_feed: bool = True
    snapshot_on_exit: bool = True
    # commands between periodic snapshots (0: only on SIGTERM): the engine pauses for a copy of its
    # state, the file is written by a thread once the batch is durable; replay after a crash <= this
    snapshot_every: int = 1_000_000
    freeze_gc: bool = True  # freeze the start-up heap once serving (perp.gc_policy: 77-107 ms full collections)


# ---- connections -----------------------------------------------------------------------------
LOGON_TS_RESOLUTION_NS = 1_000_000  # how coarse a logon's timestamp may be (clients sign in ms)


class Conn:
    __slots__ = (
        "book_resync",
        "blocked",
        "bucket",
        "close_code",
        "close_reason",
        "fd",
        "id",
        "ip",
        "key",
        "last_rx_ns",
        "log",
        "logon_failures",
        "logon_pending",
        "out",
        "subs",
        "wake",
        "ws",
    )

    def __init__(self, conn_id: int, ws: Any, ip: str, bucket: TokenBucket):
        self.id = conn_id
        self.ws = ws
        self.ip = ip
        self.key: ApiKey | None = None
        self.subs: set[tuple[str, int]] = set()  # (channel, market index; -1 for user)
        self.out: collections.deque[bytes] = collections.deque()  # whole WebSocket frames (gateway.wire)
        self.blocked = False  # the sender is waiting for the socket to drain: only it writes
        self.wake = asyncio.Event()
        self.book_resync: set[int] = set()
        self.bucket = bucket
        self.close_code = 0
        self.close_reason = ""
        self.logon_failures = 0
        self.logon_pending = False  # a logon passed its checks and waits for its nonce's claim (RedisGateway)
        self.log = log.bind(conn_id=conn_id)
        self.last_rx_ns = time.monotonic_ns()
        sock = ws.transport.get_extra_info("socket") if ws is not None else None
        plain = sock is not None and ws.transport.get_extra_info("sslcontext") is None
        self.fd = sock.fileno() if plain else -1  # the kernel fan-out writes only plain TCP (gateway.fanout)


@dataclass(slots=True)
class Pending:
    """One command waiting for the sequencer, and who to tell."""

    row: np.ndarray | tuple[int, ...]
    kind: str  # place | cancel | cancel_all | amend | deposit | system
    account: int
    done: Callable[[int, list, ErrorOrNone], None] | None  # (seq, events of that seq, error)
    received_ns: int = 0
    clid: int = 0


ErrorOrNone = Any


@dataclass
class _Metrics:
    registry: Any = None
    acks: Any = None
    rejects: Any = None
    ack_latency: Any = None
    batch_seconds: Any = None
    batch_commands: Any = None
    queue_depth: Any = None
    connections: Any = None
    engine_seq: Any = None
    book_conflations: Any = None
    fanout_kernel_frames: Any = None
    fanout_kernel_rests: Any = None


class _BulkHistogram:
    """A Prometheus histogram fed per batch: `observe` only appends, `flush` buckets the batch's
    values with numpy (a per-observation lock costs more than the rest of an ack)."""

    def __init__(self, name: str, doc: str, buckets: tuple[float, ...]):
        self.name = name
        self.doc = doc
        self.bounds = np.array(buckets, np.float64)
        self.counts = np.zeros(len(buckets) + 1, np.int64)
        self.total = 0.0
        self.pending: list[float] = []

    def observe(self, value: float) -> None:
        self.pending.append(value)

    def flush(self) -> None:
        if self.pending:
            a = np.array(self.pending, np.float64)
            np.add.at(self.counts, np.searchsorted(self.bounds, a, side="left"), 1)  # bucket i: le bounds[i]
            self.total += float(a.sum())
            self.pending.clear()

    def collect(self):
        from prometheus_client.core import HistogramMetricFamily

        self.flush()
        cum = np.cumsum(self.counts)
        buckets = [(repr(float(b)), int(c)) for b, c in zip(self.bounds, cum[:-1], strict=True)]
        yield HistogramMetricFamily(self.name, self.doc, buckets=buckets + [("+Inf", int(cum[-1]))],
                                    sum_value=self.total)


def _make_metrics() -> _Metrics:
    try:
        import prometheus_client as pc
    except ImportError:  # pragma: no cover - a declared dependency
        return _Metrics()
    reg = pc.CollectorRegistry()
    m = _Metrics(
        registry=reg,
        acks=pc.Counter("perp_gateway_acks", "commands acknowledged after the journal had them", registry=reg),
        rejects=pc.Counter("perp_gateway_rejects", "requests refused, by code", ["code"], registry=reg),
        ack_latency=_BulkHistogram("perp_gateway_ack_latency_seconds", "frame received to ack queued",
                                   (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0)),
        batch_seconds=pc.Histogram("perp_gateway_batch_seconds", "journal append + fsync + engine batch",
                                   registry=reg, buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1, 1.0)),
        batch_commands=pc.Histogram("perp_gateway_batch_commands", "commands per group commit", registry=reg,
                                    buckets=(1, 2, 4, 16, 64, 256, 1024, 4096)),
        queue_depth=pc.Gauge("perp_gateway_queue_depth_commands", "commands waiting for the sequencer",
                             registry=reg),
        connections=pc.Gauge("perp_gateway_connections", "open WebSocket connections", registry=reg),
        engine_seq=pc.Gauge("perp_engine_seq", "sequence number of the last command processed", registry=reg),
        book_conflations=pc.Counter("perp_gateway_book_conflations", "book streams conflated for a slow consumer",
                                    registry=reg),
        fanout_kernel_frames=pc.Counter("perp_gateway_fanout_kernel_frames",
                                        "pushes written to an idle socket by the fan-out kernel", registry=reg),
        fanout_kernel_rests=pc.Counter("perp_gateway_fanout_kernel_rests",
                                       "of those, the ones a full socket did not take whole (the rest went "
                                       "through the transport)", registry=reg),
    )
    reg.register(m.ack_latency)
    return m


@dataclass(slots=True)
class _Settled:
    """A batch the engine ran, with what its acks and pushes read from engine state at that moment."""

    batch: list[Pending | None]  # None: another gateway's command (gateway.front)
    seq0: int
    events: BatchEvents
    ts: int
    seq: int  # the engine's last seq after the batch (and its sweep)
    funding_before: Any
    funding_after: Any
    tickers: dict[int, P.Ticker]  # touched markets with a ticker subscriber
    snapshot: Any = None  # a periodic snapshot's writer (JournaledEngine.snapshot_job), run once durable


_ACK_FROM_ROWS = frozenset(("place", "cancel"))  # acked from raw event rows (the hot path), not structs
_OWNER_COLS = [L.E_ORDER_ID, L.E_ACCOUNT, L.E_CLID]
_BOOK_COLS = [L.E_MARKET, L.E_SIDE, L.E_PRICE, L.E_SIZE]
_TRADE_COLS = [L.E_MARKET, L.E_PRICE, L.E_SIZE, L.E_SIDE, L.E_SEQ]


def _err(code: G, msg: str, engine_code: int | None = None) -> P.ErrorBody:
    return P.ErrorBody(int(code), msg, engine_code)


# ---- the gateway -----------------------------------------------------------------------------
class Gateway:
    def __init__(self, config: ServerConfig, *, feed: IndexFeed | IndexFeeds | list[IndexFeed] | None = None,
                 clock: WallClock | None = None):
        self.cfg = config
        data = Path(config.data_dir)
        data.mkdir(parents=True, exist_ok=True)
        self.journal_path = data / "journal.bin"
        self.snapshot_dir = data / "snapshots"  # bound to the journal (id + seq), verified on load
        self.jeng = self._open_engine()
        self.engine = self.jeng.engine
        # per-market views: filled for every market by _add_market_views (below, and after a batch
        # that listed one)
        self.market_index: dict[str, int] = {}
        self._tick_cache: list[dict[str, int]] = []
        self._price_text = PriceText(self.specs)
        self.tick_range: list[tuple[int, int]] = []
        self.keys = KeyStore(config.keys_path or data / "keys.json")
        self.clock = clock or WallClock(self.engine.last_ts_ns)
        # the nonces this process saw are the venue's only record of them: a logon signed before it
        # started is refused (4106), so one seen by the process before a restart cannot be replayed
        # after it. "Before it started" by either clock a client may sign with: the wall clock, or
        # the server's (the console signs with the time `hello` gave it), which a test or a sim may
        # hold behind the wall clock -- whichever is earlier, so a fresh logon by either passes --, less
        # a client's timestamp resolution (the console signs with `hello`'s time rounded to the
        # millisecond); a restart takes far longer than that, so no frame seen before it gets through
        self.auth = Authenticator(self.keys, recv_window_ns=config.recv_window_ms * 1_000_000,
                                  not_before_ns=min(time.time_ns(), self.clock.now_ns()) - LOGON_TS_RESOLUTION_NS)
        # one feed per market (recovered ones included) whose series the fix source has (gateway.feed)
        self.feed = IndexFeeds.of(feed)
        if self.feed is None and feed is None and config.index_feed:
            self.feed = IndexFeeds.from_csv(self.specs, Path(config.index_csv) if config.index_csv else None,
                                            step_ns=config.index_step_s * 1_000_000_000)
        if self.feed is not None:
            log.info("index_feed_markets", markets=self.feed.markets)
        self.metrics = _make_metrics()
        self._enc = msgspec.json.Encoder()
        # gateway-side views kept exactly from the event stream (rebuilt from the engine on start)
        self.owner: dict[int, tuple[int, int]] = {}  # live order id -> (account, client order id)
        self.live_clid: dict[tuple[int, int], int] = {}  # (account, client order id) -> live order id
        self.books: list[tuple[dict[int, int], dict[int, int]]] = []
        self.book_seq: list[int] = []
        # book changes not yet published (book_interval_ms): level -> absolute size, and the seq and
        # ts_ns of the batches they come from (ts: the first one's)
        self._book_pending: list[dict[tuple[int, int], int]] = []
        self._book_pending_seq: list[int] = []
        self._book_pending_ts: list[int] = []
        self._book_published_ns: list[int] = []  # monotonic
        self._book_timer: list[asyncio.TimerHandle | None] = []
        self.trade_seq: list[int] = []
        self.ticker_seq: list[int] = []
        self.last_ticker: list[P.Ticker | None] = []
        self._add_market_views()
        self._rebuild_views()
        self.used_clids = self.engine.client_order_ids  # kept by the engine, in its snapshots (perp.client_ids)
        self._clids_before_snapshot()
        self._pending_clids: set[tuple[int, int]] = set()  # places sequenced, not yet through the engine
        self.user_seq: dict[int, int] = {}
        # connections and subscriptions
        self.conns: dict[int, Conn] = {}
        self.subscribers: dict[tuple[str, int], set[Conn]] = collections.defaultdict(set)
        self.user_conns: dict[int, set[Conn]] = collections.defaultdict(set)
        self.conns_per_ip: collections.Counter[str] = collections.Counter()
        self.key_buckets: dict[str, tuple[TokenBucket, TokenBucket]] = {}
        self._next_conn_id = 1
        # the sequencer
        self._queue: list[Pending] = []
        self._queue_since_ns = 0  # monotonic time the oldest queued command arrived
        self._wake: asyncio.Event | None = None
        self._gather: asyncio.Future | None = None
        self._journal_wait: asyncio.Future | None = None  # the committer waits for the fsync in flight
        self._fsync_in_flight = False
        self._in_batch = False  # a batch is between its engine run and its acks: reads wait (_when_idle)
        self._pipeline: collections.deque[asyncio.Task] = collections.deque()  # batches awaiting fsync + acks
        self._journal_lost = False  # a fsync failed: nothing after it is acknowledged
        self._deferred: list[Callable[[], None]] = []
        self._dirty: list[Conn] = []  # connections with frames queued since the last flush
        self._flush_scheduled = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self.deadman: dict[int, asyncio.TimerHandle] = {}
        self.deadman_store = DeadmanStore(data / "cancel_after.json", fsync=config.fsync != "never")
        self.funding_history = FundingHistory(data / "funding_history.bin", fsync=config.fsync != "never")
        self.draining = False
        # set when the journal failed (a write or a fsync raised): what the engine holds in memory
        # may be past what is on disk, so `perp serve` stops and exits 3 for its supervisor; the
        # restart recovers from snapshot + journal, which hold only what was durable
        self.failed = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._server: Any = None
        self._committer: asyncio.Task | None = None
        self._snap = BackgroundJob()  # a periodic snapshot being written (perp.background)
        self._stopped: asyncio.Event | None = None
        self._index_step: int | None = None
        self._index_resumed = self.engine.seq > 0  # recovered: the feed's current step may be in already
        self._keys_generation = self.keys.generation
        self._tiers = self._tier_table()
        self.admin = AdminApi.bind(self)  # the admin.* methods and the /console page (gateway/admin.py)
        self._handlers = {name: getattr(self, "_m_" + name.replace(".", "_")) for name in P.METHODS}
        self.port = config.port

    @property
    def broken(self) -> bool:
        """No more commands are taken: the process failed (`failed`) and waits to be stopped."""
        return self.failed.is_set()

    def _open_engine(self) -> JournaledEngine:
        """The backend behind the sequencer: embedded, the file journal + engine, recovered from
        snapshot + journal (gateway.front's Redis gateway returns a read replica instead)."""
        markets = load_markets(self.cfg.markets_path) if self.cfg.markets_path else None
        return JournaledEngine.open(self.journal_path, snapshot_dir=self.snapshot_dir, markets=markets,
                                    fsync=self.cfg.fsync, snapshot_every=self.cfg.snapshot_every)

    # ---- start-up views --------------------------------------------------------------------
    @property
    def specs(self) -> list[MarketSpec]:
        """The engine's markets in force, read through: listing one gives the engine a new list."""
        return self.engine.specs

    def _add_market_views(self) -> None:
        """Every per-market view for each market the engine has and the views do not: all of them at
        the start, then a market an operator lists (admin `list_market`) right after the batch
        that listed it ran (`_settle`), so the market is served from the next frame on -- orders,
        subscriptions, its pushes -- on every gateway at once. A new market's book chain starts at
        the engine's seq then: the end of the listing batch (redis_journal.fit_chains, the same
        number on every gateway of a scaled-out venue)."""
        seq = self.engine.seq
        for m in range(len(self.market_index), len(self.specs)):
            spec = self.specs[m]
            self.market_index[spec.symbol] = m
            self._tick_cache.append({})
            self.tick_range.append((price_to_ticks(spec, spec.min_price_usd), price_to_ticks(spec, spec.max_price_usd)))
            self.books.append(({}, {}))
            self.book_seq.append(seq)
            self._book_pending.append({})
            self._book_pending_seq.append(0)
            self._book_pending_ts.append(0)
            self._book_published_ns.append(0)
            self._book_timer.append(None)
            self.trade_seq.append(0)
            self.ticker_seq.append(0)
            self.last_ticker.append(None)
        self._price_text.fit(self.specs)

    def _rebuild_views(self) -> None:
        for m, side, price, oid, acct, clid, rem, _flags in self.engine.open_orders().tolist():
            self.owner[oid] = (acct, clid)
            if clid:
                self.live_clid[(acct, clid)] = oid
            lv = self.books[m][side]
            lv[price] = lv.get(price, 0) + rem

    def _clids_before_snapshot(self) -> None:
        """Only after recovering from a snapshot written before the engine kept the used client
        order ids: read them from the journal's records up to that snapshot, once (the next
        snapshot carries them)."""
        upto = self.engine.client_order_ids_from_seq
        if not upto:
            return
        with JournalReader(self.journal_path) as reader:
            for seq0, rows in reader.records():
                if seq0 > upto:
                    break
                self.used_clids.add_rows(rows[: upto - seq0 + 1])
        self.engine.client_order_ids_from_seq = 0

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        from websockets.asyncio.server import serve

        warm = warm_kernels(self.engine.markets)  # compiled before the port opens (perp.warm)
        log.info("kernels_ready", seconds=round(warm.seconds, 3))
        warm_fanout()
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._committer = asyncio.create_task(self._commit_loop(), name="committer")
        self._rearm_deadman()
        self._tasks.append(asyncio.create_task(self._timer_loop(), name="timers"))
        self._server = await serve(self._handler, self.cfg.host, self.cfg.port, max_size=self.cfg.max_frame_bytes,
                                   # pushes are framed once and shared (gateway.wire), so no compression
                                   create_connection=FastServerConnection, compression=None,
                                   process_request=self._http, ping_interval=20, ping_timeout=20,
                                   close_timeout=2, max_queue=64, write_limit=self.cfg.write_limit_bytes)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.cfg.freeze_gc:
            log.info("gc_frozen", objects=freeze_heap())  # full collections skip the start-up heap (perp.gc_policy)
        log.info("serving", host=self.cfg.host, port=self.port, seq=self.engine.seq,
                 journal=str(self.journal_path))

    async def stop(self) -> None:
        """Stop taking commands, drain the queue, snapshot, close the journal and the server."""
        if self._stopped is None or self._stopped.is_set():
            return
        self.draining = True
        for t in self._tasks:
            t.cancel()
        for h in self.deadman.values():
            h.cancel()
        self.deadman.clear()
        for m in range(len(self.specs)):
            self._publish_book(m)  # nothing pending is left unsent
        self._wake.set()
        if self._committer is not None:
            await self._committer  # returns once the pipeline is drained: every batch answered
        for m in range(len(self.specs)):
            self._publish_book(m)  # what the last batches left pending
        await self.snapshot_settled()  # a periodic snapshot being written: let it finish
        if self.cfg.snapshot_on_exit and not self.broken:
            path = self.jeng.snapshot()  # atomic, fsynced, bound to the journal (perp/sequencer.py)
            log.info("snapshot", path=str(path), seq=self.engine.seq)
        try:
            self.jeng.close()
        except OSError as exc:  # its last fsync (with fsync `always` every ack already waited for its own)
            log.error("journal_close_failed", error=repr(exc), seq=self.engine.seq)
            self.failed.set()
        await self.deadman_store.close()
        self._server.close()
        await self._server.wait_closed()
        self._executor.shutdown(wait=True)
        if self.cfg.freeze_gc:
            thaw_heap()
        self._stopped.set()
        log.info("stopped", seq=self.engine.seq)

    # ---- HTTP: /healthz and /metrics on the same port --------------------------------------
    def _http(self, connection: Any, request: Any) -> Any:
        if request.path.startswith("/console"):
            return self.admin.http(connection, request)
        if request.path == "/healthz":
            ok = not self.broken and not self.draining
            body = self._enc.encode({"ok": ok, "seq": self.engine.seq, "connections": len(self.conns),
                                     "queue": len(self._queue)}).decode()
            resp = connection.respond(200 if ok else 503, body + "\n")
            resp.headers["Content-Type"] = "application/json"
            return resp
        if request.path == "/metrics":
            if self.metrics.registry is None:
                return connection.respond(501, "prometheus-client is not installed\n")
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            self.metrics.queue_depth.set(len(self._queue))
            self.metrics.connections.set(len(self.conns))
            self.metrics.engine_seq.set(self.engine.seq)
            resp = connection.respond(200, generate_latest(self.metrics.registry).decode())
            del resp.headers["Content-Type"]
            resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
            return resp
        return None

    # ---- connections -----------------------------------------------------------------------
    async def _handler(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        ip = ws.remote_address[0] if ws.remote_address else "?"
        if self.conns_per_ip[ip] >= self.cfg.max_conns_per_ip:
            await ws.close(int(G.TOO_MANY_CONNECTIONS), "too many connections from this address")
            return
        if self.cfg.so_sndbuf_bytes:
            import socket

            sock = ws.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.cfg.so_sndbuf_bytes)
        now = time.monotonic_ns()
        conn = Conn(self._next_conn_id, ws, ip, TokenBucket(self.cfg.conn_rate_per_s, self.cfg.conn_burst, now))
        self._next_conn_id += 1
        self.conns[conn.id] = conn
        self.conns_per_ip[ip] += 1
        sender = asyncio.create_task(self._sender(conn))
        self._send(conn, self._push("hello", None, "update", self.engine.seq, 0,
                                    P.Hello(P.PROTOCOL_VERSION, self.clock.now_ns(), conn.id, P.MAX_BATCH,
                                            self.cfg.max_frame_bytes)))
        conn.log.info("connected", ip=ip)

        def on_message(frame: str | bytes) -> None:
            if not conn.close_code:  # once closing, nothing more is read
                conn.last_rx_ns = time.monotonic_ns()
                self._on_frame(conn, frame)

        ws.start_messages(on_message)  # whole frames straight from the socket (gateway.fastws)
        try:
            async for frame in ws:  # fragmented messages only (idle connections: _sweep_idle)
                on_message(frame)
                if conn.close_code:
                    break
        except ConnectionClosed as exc:
            if exc.rcvd is not None and exc.rcvd.code == 1009:
                conn.log.info("frame_too_large")
        finally:
            self._drop(conn)
            if not conn.close_code:
                sender.cancel()
            try:
                await asyncio.wait_for(sender, timeout=self.cfg.send_timeout_s + 3)
            except (asyncio.CancelledError, TimeoutError, Exception):
                pass
            conn.log.info("disconnected", code=conn.close_code)

    def _drop(self, conn: Conn) -> None:
        if self.conns.pop(conn.id, None) is None:
            return
        self.conns_per_ip[conn.ip] -= 1
        if self.conns_per_ip[conn.ip] <= 0:
            del self.conns_per_ip[conn.ip]
        for sub in conn.subs:
            self.subscribers[sub].discard(conn)
        if conn.key is not None:
            self.user_conns[conn.key.account].discard(conn)

    def _close(self, conn: Conn, code: G, reason: str) -> None:
        if not conn.close_code:
            conn.close_code = int(code)
            conn.close_reason = reason
            conn.log.info("closing", code=int(code), reason=reason)
            conn.wake.set()

    def _send(self, conn: Conn, frame: bytes, book_market: int | None = None, wire: bytes | None = None) -> None:
        """Queue one message (`frame`, JSON) for the connection; `wire` is its WebSocket frame when
        the caller built it already (a push shared by many subscribers is framed once). Frames
        queued in one event-loop turn (a batch's acks and pushes) leave in one socket write."""
        if conn.close_code:
            return
        if book_market is not None and book_market in conn.book_resync:
            return  # conflated: a fresh snapshot follows once the queue drains
        if len(conn.out) >= self.cfg.send_queue_frames:
            if book_market is not None:
                conn.book_resync.add(book_market)
                if self.metrics.book_conflations is not None:
                    self.metrics.book_conflations.inc()
                conn.wake.set()
                return
            self._close(conn, G.SLOW_CONSUMER, "send queue full")
            return
        if not conn.out:
            self._dirty.append(conn)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
        conn.out.append(wire if wire is not None else text_frame(frame))

    def _flush(self) -> None:
        """Write every connection's queued frames straight to its socket (one write each), unless
        the socket is above its write limit: then the connection's sender waits for it to drain."""
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        for conn in dirty:  # a closing connection still gets what it was sent before (its close follows)
            if not conn.out:
                continue
            if not _writable_now(conn):
                conn.wake.set()
                continue
            ws = conn.ws
            out = conn.out
            ws.transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
            if ws.paused:  # above the write limit now: the sender takes over until it drains
                conn.wake.set()

    async def _sender(self, conn: Conn) -> None:
        """The connection's slow path: waits for a socket above its write limit to drain (cut after
        `send_timeout_s`), then writes what queued meanwhile; queues the fresh book snapshots of a
        conflated stream once the queue is empty; closes with the connection's code."""
        ws = conn.ws
        try:
            while True:
                await conn.wake.wait()
                conn.wake.clear()
                while True:
                    if ws.paused:
                        conn.blocked = True
                        await asyncio.wait_for(ws.drain(), self.cfg.send_timeout_s)
                    conn.blocked = False
                    if ws.protocol.state is not _OPEN:
                        break
                    if conn.out:  # also when closing: what was queued before the close goes first
                        ws.transport.write(b"".join(conn.out))
                        conn.out.clear()
                        continue
                    if conn.book_resync and not conn.close_code:
                        for m in sorted(conn.book_resync):
                            conn.book_resync.discard(m)
                            if ("book", m) in conn.subs:
                                conn.out.append(text_frame(self._book_snapshot(m)))
                        continue
                    break
                if conn.close_code:
                    await ws.close(conn.close_code, conn.close_reason)
                    return
        except TimeoutError:
            conn.log.warning("send_timeout", code=int(G.SLOW_CONSUMER))
            conn.close_code = conn.close_code or int(G.SLOW_CONSUMER)
            ws.transport.abort()
        except Exception:  # the connection went away
            return

    # ---- frames ----------------------------------------------------------------------------
    def _reply(self, conn: Conn, rid: int | None, result: Any = None, error: P.ErrorBody | None = None,
               received_ns: int = 0) -> None:
        if error is not None:
            if self.metrics.rejects is not None:
                self.metrics.rejects.labels(str(error.code)).inc()
            self._send(conn, self._enc.encode(P.Reply(rid, False, None, error)))
        else:
            self._send(conn, self._enc.encode(P.Reply(rid, True, result)))
        if received_ns and self.metrics.ack_latency is not None:
            self.metrics.ack_latency.observe((time.monotonic_ns() - received_ns) / 1e9)

    def _on_frame(self, conn: Conn, frame: str | bytes) -> None:
        now = time.monotonic_ns()
        if not conn.bucket.take(now):
            self._reply(conn, P._peek_id(frame), error=_err(G.RATE_LIMITED, "too many frames on this connection"))
            return
        try:
            req, params = P.parse_request(frame)
        except P.ProtocolError as exc:
            self._reply(conn, exc.request_id, error=_err(exc.code, exc.msg))
            return
        _, perm = P.METHODS[req.method]
        if perm is not None:
            if conn.key is None:
                self._reply(conn, req.id, error=_err(G.NOT_LOGGED_IN, "log on first"))
                return
            if perm not in conn.key.permissions:
                self._reply(conn, req.id, error=_err(G.PERMISSION_DENIED, f"{req.method} needs the {perm!r} permission"))
                return
        handler = self._handlers.get(req.method) or getattr(self, "_m_" + req.method.replace(".", "_"))
        handler(conn, req.id, params, now)

    # ---- methods ---------------------------------------------------------------------------
    def _m_ping(self, conn: Conn, rid: int, p: P.Empty, now: int) -> None:
        self._reply(conn, rid, {"server_ts_ns": self.clock.now_ns()})

    def _m_logon(self, conn: Conn, rid: int, p: P.Logon, now: int) -> None:
        if conn.key is not None or conn.logon_pending:
            self._reply(conn, rid, error=_err(G.ALREADY_LOGGED_IN, "this connection is logged on"))
            return
        if p.version != P.PROTOCOL_VERSION:
            self._reply(conn, rid, error=_err(G.UNSUPPORTED_VERSION, f"protocol version {P.PROTOCOL_VERSION} only"))
            return
        try:
            key = self.auth.verify(p.key, p.ts_ns, p.nonce, p.signature, self.clock.now_ns())
        except KeyError_ as exc:
            self._logon_refused(conn, rid, exc)
            return
        self._claim_nonce(conn, rid, key, p.nonce, now)

    def _claim_nonce(self, conn: Conn, rid: int, key: ApiKey, nonce: str, now: int) -> None:
        """Record the logon's nonce as used and log the connection on. Embedded, this process's
        memory is the venue's nonce store; RedisGateway claims it in Redis first."""
        self.auth.remember(key.key, nonce, self.clock.now_ns())
        self._logged_on(conn, rid, key, now)

    def _logon_refused(self, conn: Conn, rid: int, exc: KeyError_) -> None:
        conn.logon_failures += 1
        conn.log.info("logon_refused", code=int(exc.code))
        self._reply(conn, rid, error=_err(exc.code, exc.msg))
        if conn.logon_failures >= self.cfg.max_logon_failures:
            self._close(conn, G.LOGON_FAILED_TOO_OFTEN, "too many failed logons")

    def _logged_on(self, conn: Conn, rid: int, key: ApiKey, now: int) -> None:
        conn.key = key
        conn.log = conn.log.bind(account=key.account)
        self.user_conns[key.account].add(conn)
        if key.key not in self.key_buckets:
            self.key_buckets[key.key] = (TokenBucket(self.cfg.order_rate_per_s, self.cfg.order_burst, now),
                                         TokenBucket(self.cfg.cancel_rate_per_s, self.cfg.cancel_burst, now))
        conn.log.info("logon", key=key.key, permissions=list(key.permissions))
        self._reply(conn, rid, P.LogonResult(key.key, key.account, list(key.permissions), self.clock.now_ns()))

    def _market(self, symbol: str | None) -> int | P.ErrorBody:
        if symbol is None:
            return _err(G.BAD_PARAMS, "this channel needs a market")
        m = self.market_index.get(symbol)
        if m is None:
            return _err(G.UNKNOWN_MARKET, f"unknown market {symbol!r}")
        return m

    def _m_subscribe(self, conn: Conn, rid: int, p: P.Subscribe, now: int) -> None:
        if p.channel == "user":
            if conn.key is None:
                self._reply(conn, rid, error=_err(G.NOT_LOGGED_IN, "the user channel needs a logon"))
                return
            if "read" not in conn.key.permissions:
                self._reply(conn, rid, error=_err(G.PERMISSION_DENIED, "the user channel needs the 'read' permission"))
                return
            m = -1
        else:
            m = self._market(p.market)
            if isinstance(m, P.ErrorBody):
                self._reply(conn, rid, error=m)
                return
        sub = (p.channel, m)
        if sub not in conn.subs and len(conn.subs) >= self.cfg.max_subscriptions:
            self._reply(conn, rid, error=_err(G.TOO_MANY_SUBSCRIPTIONS, f"at most {self.cfg.max_subscriptions}"))
            return

        def go() -> None:  # between batches: the snapshot and the deltas after it are one stream
            if conn.close_code or conn.id not in self.conns:
                return
            if p.channel == "book":
                self._publish_book(m)  # what is pending goes to the others; the snapshot has it
            conn.subs.add(sub)
            self.subscribers[sub].add(conn)
            self._reply(conn, rid, {"channel": p.channel, "market": p.market if m >= 0 else None})
            if p.channel == "book":
                conn.book_resync.discard(m)
                self._send(conn, self._book_snapshot(m))
            elif p.channel == "ticker":
                t = self._ticker(m)
                self._send(conn, self._push("ticker", self.specs[m].symbol, "snapshot", self.ticker_seq[m], 0, t))
            elif p.channel == "user":
                acct = conn.key.account
                self._send(conn, self._push("user", None, "snapshot", self.user_seq.get(acct, 0), 0,
                                            {"open_orders": self._open_orders(acct),
                                             "account": self.engine.account(acct), "adl": self._adl(acct)}))

        self._when_idle(go)

    def _m_unsubscribe(self, conn: Conn, rid: int, p: P.Unsubscribe, now: int) -> None:
        m = -1 if p.channel == "user" else self._market(p.market)
        if isinstance(m, P.ErrorBody):
            self._reply(conn, rid, error=m)
            return

        def go() -> None:
            conn.subs.discard((p.channel, m))
            self.subscribers[(p.channel, m)].discard(conn)
            self._reply(conn, rid, {"channel": p.channel, "market": p.market if m >= 0 else None})

        self._when_idle(go)

    def _m_query_markets(self, conn: Conn, rid: int, p: P.Empty, now: int) -> None:
        self._reply(conn, rid, {"version": P.PROTOCOL_VERSION, "markets": self.specs, "tiers": self._tiers})

    def _tier_table(self) -> dict[str, list[dict]]:
        """The engine's leverage tiers per market (from its state, so a snapshot's tiers are shown):
        positions up to `bound_micro` of notional margined at `imr_ppm` / `mmr_ppm`."""
        return {spec.symbol: [{"bound_micro": t.bound_micro, "imr_ppm": t.imr_ppm,
                               "max_leverage": 1_000_000 // t.imr_ppm, "mmr_ppm": t.mmr_ppm,
                               "mm_deduction_micro": t.mm_deduction_micro} for t in self.engine.tier_rows(m)]
                for m, spec in enumerate(self.specs)}

    def _m_query_open_orders(self, conn: Conn, rid: int, p: P.Empty, now: int) -> None:
        acct = conn.key.account
        self._when_idle(lambda: self._reply(conn, rid, self._open_orders(acct)))

    def _m_query_funding_history(self, conn: Conn, rid: int, p: P.FundingHistoryQuery, now: int) -> None:
        m = None if p.market is None else self._market(p.market)
        if isinstance(m, P.ErrorBody):
            self._reply(conn, rid, error=m)
            return
        acct = conn.key.account
        self._when_idle(lambda: self._reply(conn, rid, [self._funding_payment(r) for r in
                                                        self.funding_history.of(acct, m, p.limit)]))

    def _m_query_account(self, conn: Conn, rid: int, p: P.Empty, now: int) -> None:
        acct = conn.key.account

        def go() -> None:
            self._reply(conn, rid, {"account": self.engine.account(acct), "adl": self._adl(acct)})

        self._when_idle(go)

    def _adl(self, acct: int) -> list:
        """ADL standing (rank, quintile) of each open position of the account."""
        return [self.engine.adl_standing(acct, m) for m in range(len(self.specs)) if self.engine.position_lots(acct, m)]

    def _m_cancel_after(self, conn: Conn, rid: int, p: P.CancelAfter, now: int) -> None:
        acct = conn.key.account
        old = self.deadman.pop(acct, None)
        if old is not None:
            old.cancel()
        deadline = 0
        if p.timeout_ms:
            loop = asyncio.get_running_loop()
            self.deadman[acct] = loop.call_later(p.timeout_ms / 1000, self._deadman_fire, acct)
            deadline = self.clock.now_ns() + p.timeout_ms * 1_000_000
            self.deadman_store.arm(acct, deadline)
        else:
            self.deadman_store.disarm(acct)

        def persisted(fut: asyncio.Future) -> None:  # the reply waits for the switch to be on disk
            if fut.exception() is not None:
                log.error("cancel_after_write_failed", account=acct, error=repr(fut.exception()))
                self._reply(conn, rid, error=_err(G.STATUS_UNKNOWN_JOURNAL,
                                                  "the switch may not be durable: call cancel_after again"))
            else:
                self._reply(conn, rid, P.CancelAfterAck(p.timeout_ms, deadline))

        self.deadman_store.persist().add_done_callback(persisted)

    def _rearm_deadman(self) -> None:
        """On start: every switch of gateway.deadman's file runs again; one whose deadline passed
        while the server was down fires now (its cancel_all is the first command sequenced)."""
        loop = asyncio.get_running_loop()
        now = self.clock.now_ns()
        for acct, deadline in sorted(self.deadman_store.deadlines.items()):
            if deadline <= now:
                self._deadman_fire(acct)
            else:
                self.deadman[acct] = loop.call_later((deadline - now) / 1e9, self._deadman_fire, acct)
            log.info("cancel_after_restored", account=acct, deadline_ts_ns=deadline, expired=deadline <= now)

    def _deadman_fire(self, acct: int) -> None:
        self.deadman.pop(acct, None)
        if self.draining or self.broken:
            return
        log.info("cancel_after_fired", account=acct)
        row = self.engine.encoder.row(CancelAll(ts_ns=0, account=acct))
        deadline = self.deadman_store.deadlines.get(acct)

        def journaled(seq: int, evs: list, error: P.ErrorBody | None, result: Any = None, received_ns: int = 0) -> None:
            # the switch leaves the file only once its cancel_all is in the journal (unless re-armed since)
            if error is None and acct not in self.deadman and self.deadman_store.deadlines.get(acct) == deadline:
                self.deadman_store.disarm(acct)
                self.deadman_store.persist().add_done_callback(_log_write_failure)

        self._enqueue(Pending(row, "system", acct, journaled))

    def _m_admin_deposit(self, conn: Conn, rid: int, p: P.AdminDeposit, now: int) -> None:
        if (e := self._refuse_commands()) is not None:
            self._reply(conn, rid, error=e)
            return
        row = self.engine.encoder.row(Deposit(ts_ns=0, account=p.account, amount_micro=p.amount_micro))
        self._enqueue(Pending(row, "deposit", p.account, self._single(conn, rid), now))

    def _refuse_commands(self) -> P.ErrorBody | None:
        if self.draining or self.broken:
            return _err(G.SHUTTING_DOWN, "the gateway is not taking commands; nothing was done")
        if len(self._queue) >= self.cfg.max_queue:
            return _err(G.OVERLOADED, "the sequencer queue is full; nothing was done")
        return None

    def _single(self, conn: Conn, rid: int) -> Callable:
        def done(seq: int, evs: list, error: P.ErrorBody | None, result: Any = None, received_ns: int = 0) -> None:
            self._reply(conn, rid, result, error, received_ns)
        return done

    def _trade_checks(self, conn: Conn, places: int, cancels: int, now: int) -> P.ErrorBody | None:
        if (e := self._refuse_commands()) is not None:
            return e
        acct = conn.key.account
        if acct < RESERVED_ACCOUNTS:
            return _err(G.ACCOUNT_NOT_TRADABLE, f"account {acct} is a reserved venue account")
        orders, cancel = self.key_buckets[conn.key.key]
        if places and not orders.take(now, places):
            return _err(G.RATE_LIMITED, "order rate limit of this key")
        if cancels and not cancel.take(now, cancels):
            return _err(G.RATE_LIMITED, "cancel rate limit of this key")
        return None

    def _place_row(self, acct: int, p: P.PlaceOrder) -> tuple[np.ndarray, int] | P.ErrorBody:
        m = self._market(p.market)
        if isinstance(m, P.ErrorBody):
            return m
        spec = self.specs[m]
        if p.order_type == "limit":
            if p.price is None:
                return _err(G.BAD_PARAMS, "a limit order needs a price")
            cache = self._tick_cache[m]
            ticks = cache.get(p.price)
            if ticks is None:
                try:
                    ticks = price_to_ticks(spec, p.price)
                except ValueError as exc:
                    return _err(G.PRICE_NOT_ON_TICK_GRID, str(exc))
                if len(cache) < 100_000:  # prices repeat: parse each decimal string once
                    cache[p.price] = ticks
            lo, hi = self.tick_range[m]
            if not lo <= ticks <= hi:
                return _err(G.BAD_PRICE, f"price {p.price} is outside {spec.min_price_usd}..{spec.max_price_usd}")
        elif p.price is not None:
            return _err(G.BAD_PARAMS, "a market order takes no price (the protection band bounds it)")
        if not spec.min_order_lots <= p.size_lots <= spec.max_order_lots:
            return _err(G.SIZE_OUT_OF_RANGE, f"size_lots must be {spec.min_order_lots}..{spec.max_order_lots}")
        if p.client_order_id and (self.used_clids.contains(acct, p.client_order_id)
                                  or (acct, p.client_order_id) in self._pending_clids):
            return _err(G.DUPLICATE_CLIENT_ORDER_ID, f"client_order_id {p.client_order_id} was already used")
        row = self.engine.encoder.place_values(0, acct, m, p.side, p.order_type, p.tif,
                                               ticks if p.order_type == "limit" else 0, p.size_lots,
                                               p.client_order_id, p.reduce_only, p.stp)
        return row, m

    def _own_order(self, acct: int, order_id: int, clid: int) -> P.ErrorBody | None:
        if (order_id == 0) == (clid == 0):
            return _err(G.BAD_ORDER_REFERENCE, "give exactly one of order_id and client_order_id")
        if order_id:
            owner = self.owner.get(order_id)
            if owner is None:
                return _err(G.ORDER_NOT_OPEN, f"no open order {order_id}")
            if owner[0] != acct:
                return _err(G.NOT_YOUR_ORDER, f"order {order_id} belongs to another account")
        elif (acct, clid) not in self.live_clid and (acct, clid) not in self._pending_clids:
            return _err(G.ORDER_NOT_OPEN, f"no open order with client_order_id {clid}")
        return None

    def _cancel_row(self, acct: int, p: P.CancelOrder) -> tuple[int, ...] | P.ErrorBody:
        if (e := self._own_order(acct, p.order_id, p.client_order_id)) is not None:
            return e
        return self.engine.encoder.cancel_values(0, acct, p.order_id, p.client_order_id)

    def _m_order_place(self, conn: Conn, rid: int, p: P.PlaceOrder, now: int) -> None:
        if (e := self._trade_checks(conn, 1, 0, now)) is not None:
            self._reply(conn, rid, error=e)
            return
        acct = conn.key.account
        built = self._place_row(acct, p)
        if isinstance(built, P.ErrorBody):
            self._reply(conn, rid, error=built)
            return
        self._enqueue_place(built[0], acct, p.client_order_id, self._single(conn, rid), now)

    def _enqueue_place(self, row: np.ndarray, acct: int, clid: int, done: Callable, now: int) -> None:
        if clid:
            self._pending_clids.add((acct, clid))
        self._enqueue(Pending(row, "place", acct, done, now, clid))

    def _m_order_cancel(self, conn: Conn, rid: int, p: P.CancelOrder, now: int) -> None:
        if (e := self._trade_checks(conn, 0, 1, now)) is not None:
            self._reply(conn, rid, error=e)
            return
        acct = conn.key.account
        row = self._cancel_row(acct, p)
        if isinstance(row, P.ErrorBody):
            self._reply(conn, rid, error=row)
            return
        self._enqueue(Pending(row, "cancel", acct, self._single(conn, rid), now))

    def _m_order_cancel_all(self, conn: Conn, rid: int, p: P.CancelAll, now: int) -> None:
        if (e := self._trade_checks(conn, 0, 1, now)) is not None:
            self._reply(conn, rid, error=e)
            return
        if p.market is not None and isinstance(m := self._market(p.market), P.ErrorBody):
            self._reply(conn, rid, error=m)
            return
        acct = conn.key.account
        row = self.engine.encoder.row(CancelAll(ts_ns=0, account=acct, market=p.market))
        self._enqueue(Pending(row, "cancel_all", acct, self._single(conn, rid), now))

    def _m_order_amend(self, conn: Conn, rid: int, p: P.AmendOrder, now: int) -> None:
        if (e := self._trade_checks(conn, 1, 0, now)) is not None:
            self._reply(conn, rid, error=e)
            return
        acct = conn.key.account
        m = self._market(p.market)
        if isinstance(m, P.ErrorBody):
            self._reply(conn, rid, error=m)
            return
        if (e := self._own_order(acct, p.order_id, p.client_order_id)) is not None:
            self._reply(conn, rid, error=e)
            return
        spec = self.specs[m]
        if p.price is not msgspec.UNSET:
            try:
                ticks = price_to_ticks(spec, p.price)
            except ValueError as exc:
                self._reply(conn, rid, error=_err(G.PRICE_NOT_ON_TICK_GRID, str(exc)))
                return
            lo, hi = self.tick_range[m]
            if not lo <= ticks <= hi:
                self._reply(conn, rid, error=_err(G.BAD_PRICE, f"price {p.price} is outside the ladder"))
                return
        if p.size_lots is not msgspec.UNSET and p.size_lots > spec.max_order_lots:
            self._reply(conn, rid, error=_err(G.SIZE_OUT_OF_RANGE, f"size_lots must be <= {spec.max_order_lots}"))
            return
        row = self.engine.encoder.row(Amend(ts_ns=0, account=acct, market=p.market, order_id=p.order_id,
                                            client_order_id=p.client_order_id, price=p.price,
                                            size_lots=p.size_lots))
        self._enqueue(Pending(row, "amend", acct, self._single(conn, rid), now))

    def _m_order_batch(self, conn: Conn, rid: int, p: P.Batch, now: int) -> None:
        if len(p.orders) > P.MAX_BATCH:
            self._reply(conn, rid, error=_err(G.BATCH_TOO_LARGE, f"at most {P.MAX_BATCH} operations per batch"))
            return
        places = sum(isinstance(o, P.PlaceOrder) for o in p.orders)
        if (e := self._trade_checks(conn, places, len(p.orders) - places, now)) is not None:
            self._reply(conn, rid, error=e)
            return
        acct = conn.key.account
        items: list[P.BatchItem | None] = [None] * len(p.orders)
        waiting = [0]

        def finish() -> None:
            self._reply(conn, rid, {"results": items}, received_ns=now)

        def slot(i: int) -> Callable:
            def done(seq: int, evs: list, error: P.ErrorBody | None, result: Any = None, received_ns: int = 0) -> None:
                items[i] = P.BatchItem(error is None, result, error)
                waiting[0] -= 1
                if waiting[0] == 0:
                    finish()
            return done

        todo: list[tuple[int, Pending]] = []
        for i, op in enumerate(p.orders):
            if isinstance(op, P.PlaceOrder):
                built = self._place_row(acct, op)
                if isinstance(built, P.ErrorBody):
                    items[i] = P.BatchItem(False, None, built)
                    continue
                if op.client_order_id:
                    self._pending_clids.add((acct, op.client_order_id))
                todo.append((i, Pending(built[0], "place", acct, None, now, op.client_order_id)))
            else:
                row = self._cancel_row(acct, op)
                if isinstance(row, P.ErrorBody):
                    items[i] = P.BatchItem(False, None, row)
                    continue
                todo.append((i, Pending(row, "cancel", acct, None, now)))
        if not todo:
            finish()
            return
        waiting[0] = len(todo)
        for i, pend in todo:
            pend.done = slot(i)
            self._enqueue(pend)

    # ---- the sequencer ---------------------------------------------------------------------
    def _enqueue(self, p: Pending) -> None:
        if not self._queue:
            self._queue_since_ns = time.monotonic_ns()  # the gather window runs from the first command
        self._queue.append(p)
        self._wake.set()
        if len(self._queue) >= self.cfg.max_batch:
            for fut in (self._gather, self._journal_wait):
                if fut is not None:
                    _wake_future(fut)

    def _when_idle(self, fn: Callable[[], None]) -> None:
        if self._in_batch:
            self._deferred.append(fn)
        else:
            fn()

    def _run_deferred(self) -> None:
        deferred, self._deferred = self._deferred, []
        for fn in deferred:
            fn()

    async def _drain_pipeline(self) -> None:
        """Wait until every batch run by the engine has been fsynced and answered (the last one to
        finish runs the deferred reads)."""
        while self._pipeline:
            await asyncio.wait({self._pipeline[-1]})

    async def _commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            if not self._queue:
                self._wake.clear()
                if self.draining:
                    await self._drain_pipeline()
                    return
                continue
            # gather: for group_commit_us after the first queued command (commands that queued
            # during the previous batch have waited already) or until the queue reaches max_batch
            wait_ns = self.cfg.group_commit_us * 1000 - (time.monotonic_ns() - self._queue_since_ns)
            if len(self._queue) < self.cfg.max_batch and wait_ns > 0 and not self.draining:
                self._gather = loop.create_future()
                timer = loop.call_later(wait_ns / 1e9, _wake_future, self._gather)
                await self._gather
                timer.cancel()
                self._gather = None
            # while a fsync is in flight the batch keeps gathering: it is cut when the journal is
            # free (or at max_batch), so each fsync covers everything that queued during the last
            while self._fsync_in_flight and len(self._queue) < self.cfg.max_batch and not self.draining:
                self._journal_wait = loop.create_future()
                await self._journal_wait
                self._journal_wait = None
            while self._pipeline and self._deferred:
                await asyncio.wait({self._pipeline[0]})  # reads wait for a drained pipeline
            batch = self._queue[: self.cfg.max_batch]
            del self._queue[: self.cfg.max_batch]
            await self._run_batch(loop, batch)
            if not self._pipeline:
                self._run_deferred()

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[Pending]) -> None:
        """One group commit, pipelined: on this thread the batch is stamped, written to the journal
        (no fsync yet) and run by the engine, and everything its acks and pushes need from engine
        state is read (`_settle`); its fsync then runs in the engine thread while the next batch is
        gathered and run, and only once the fsync returned are its acks and pushes sent
        (`_finish`, in batch order). No ack or push leaves before its batch is durable."""
        if self._journal_lost:  # a fsync failed: nothing more is written (these were not)
            for p in batch:
                if p.done is not None:
                    p.done(0, [], _err(G.SHUTTING_DOWN, "the journal failed: not sequenced, nothing was done"),
                           None, p.received_ns)
            return
        rows = np.array([p.row for p in batch], dtype=np.int64)  # rows: arrays or tuples (places)
        ts = self.clock.now_ns()
        rows[:, L.C_TS] = ts
        seq0 = self.engine.seq + 1
        funding_before = self._funding_watch(ts)
        t0 = time.perf_counter()
        try:
            ev_rows = self.jeng.run_rows(rows)
        except Exception as exc:
            durable = self.jeng.durable_seq >= seq0 + len(batch) - 1  # written and fsynced
            self.failed.set()
            self._answer_unknown(batch, seq0, G.STATUS_UNKNOWN_ENGINE if durable else G.STATUS_UNKNOWN_JOURNAL, exc)
            return
        settled = self._settle(batch, seq0, ev_rows, ts, funding_before)
        if not self._snap.busy and self.jeng.snapshot_due():
            settled.snapshot = self.jeng.snapshot_job()[1]  # the copy now; written once this batch is durable
        fsync = loop.run_in_executor(self._executor, self.jeng.commit_upto, self.engine.seq)
        self._fsync_in_flight = True
        fsync.add_done_callback(self._journal_freed)  # before _finish's own wake-up (callbacks run in order)
        prev = self._pipeline[-1] if self._pipeline else None
        self._pipeline.append(loop.create_task(self._finish(prev, fsync, settled, t0)))
        self._in_batch = True

    async def _finish(self, prev: asyncio.Task | None, fsync: asyncio.Future, settled: _Settled, t0: float) -> None:
        """After the batch before it was answered and its own fsync returned: its acks and pushes;
        if a fsync failed (this one or an earlier one's), "status unknown" for every command."""
        batch, seq0 = settled.batch, settled.seq0
        try:
            if prev is not None:
                await asyncio.wait({prev})
            try:
                await fsync
                # one loop step for the committer (woken by _journal_freed) to cut and run the next
                # batch and start its fsync before this batch's acks are written
                await asyncio.sleep(0)
            except Exception as exc:  # noqa: BLE001 - nothing of this batch or after it may be acked
                self._journal_lost = True
                self.failed.set()
                self._answer_unknown(batch, seq0, G.STATUS_UNKNOWN_JOURNAL, exc)
                return
            if self._journal_lost:  # an earlier fsync failed: what follows it cannot be recovered
                self._answer_unknown(batch, seq0, G.STATUS_UNKNOWN_JOURNAL, None)
                return
            if settled.snapshot is not None:
                self._write_snapshot(settled.snapshot)
            spent = time.perf_counter() - t0
            if spent > 0.1:
                log.warning("slow_batch", seq=seq0, commands=len(batch), seconds=round(spent, 4))
            if self.metrics.batch_seconds is not None:
                self.metrics.batch_seconds.observe(spent)
                self.metrics.batch_commands.observe(len(batch))
            self._publish_batch(settled)
        finally:
            self._pipeline.popleft()  # batches finish in order: this one is the oldest
            if not self._pipeline:
                self._in_batch = False
                self._run_deferred()

    def _write_snapshot(self, write: Any) -> None:
        """A periodic snapshot, written by a thread (not the fsync worker: acks do not wait for it)
        now that its batch is durable; one at a time. Before, `perp serve` snapshotted only on
        SIGTERM, so a crash replayed the whole journal."""
        def done(error: BaseException | None, _path: Any) -> None:
            if error is not None:
                log.error("snapshot_failed", error=repr(error))
        self._snap.start(write, done)

    async def snapshot_settled(self) -> None:
        """Until the periodic snapshot being written (if any) is on disk or has failed."""
        await self._snap.settled()

    def _journal_freed(self, _fsync: asyncio.Future) -> None:
        self._fsync_in_flight = False
        if self._journal_wait is not None:
            _wake_future(self._journal_wait)

    def _answer_unknown(self, batch: list[Pending], seq0: int, code: G, exc: BaseException | None) -> None:
        log.error("batch_failed", seq=seq0, commands=len(batch), code=int(code), error=repr(exc))
        for p in batch:
            if p.done is not None:
                p.done(0, [], _err(code, "status unknown: query before retrying"), None, p.received_ns)

    def _complete_batch(self, batch: list[Pending], seq0: int, ev_rows: np.ndarray, ts: int,
                        funding_before: Any) -> None:
        """After the engine ran `batch` (sequence numbers seq0..) and it is durable: views, every
        ack, then market data and private events (the Redis gateway's path; the embedded one
        settles at once and publishes after the fsync)."""
        self._publish_batch(self._settle(batch, seq0, ev_rows, ts, funding_before))

    def _settle(self, batch: list[Pending], seq0: int, ev_rows: np.ndarray, ts: int,
                funding_before: Any) -> _Settled:
        """Right after the engine ran the batch, before the next one: every read of engine state
        that the batch's acks and pushes need (the engine may be further on when they are sent)."""
        if len(self.market_index) < len(self.specs):  # the batch listed a market
            self._add_market_views()
        events = BatchEvents(ev_rows, seq0, len(batch), self.specs)
        self.admin.after_batch(ts)
        tickers = {m: self._ticker(m) for m in events.touched_markets() if self.subscribers.get(("ticker", m))}
        funding_after = None if funding_before is None else self.engine.funding_positions(funding_before.accounts)
        return _Settled(batch, seq0, events, ts, self.engine.seq, funding_before, funding_after, tickers)

    def _publish_batch(self, st: _Settled) -> None:
        """A settled batch once durable: views, every ack, then market data and private events.
        `batch` may end before the batch's last sequence number (a sweep the sequencer appended);
        events past it are fanned out, not acked. A None in `batch` is a command this process did
        not place (the Redis gateway): its events are fanned out, nothing is acked."""
        batch, seq0, events = st.batch, st.seq0, st.events
        for p in batch:  # these places are now live or gone: the views below say which
            if p is not None and p.clid:
                self._pending_clids.discard((p.account, p.clid))
        self._apply_views(events)
        for i, p in enumerate(batch):
            if p is not None and p.done is not None:
                from_rows = p.kind in _ACK_FROM_ROWS
                evs = [] if from_rows else events.events_of(i)
                try:
                    result, error = self._outcome(p, seq0 + i, events.rows_of(i) if from_rows else evs)
                except Exception as exc:  # noqa: BLE001 - a bug here must not stop the sequencer
                    log.error("outcome_failed", seq=seq0 + i, error=repr(exc))
                    result, error = None, _err(G.STATUS_UNKNOWN_ENGINE, "the outcome could not be read; query")
                p.done(seq0 + i, evs, error, result, p.received_ns)
        if self.metrics.acks is not None:
            self.metrics.acks.inc(len(batch))
            self.metrics.ack_latency.flush()
        self._fan_out(st)

    def _funding_watch(self, ts: int) -> Any:
        """Before a batch that will cross a funding hour: the cumulative funding and the positions
        of every account (gateway.funding_history)."""
        return self.engine.funding_positions() if self.engine.funding_due(ts) else None

    def _funding_payments(self, before: Any, after: Any, events: list) -> list:
        """The batch's funding payments per position: recorded in the funding history (durable),
        and returned as user-channel events for the accounts that have a subscriber."""
        paid = {self.market_index[e.market]: (e.seq, e.ts_ns, e.rate_ppb, e.index_ticks)
                for e in events if type(e) is E.FundingPaid and e.market is not None}  # see _fan_out
        if not paid:
            return []
        rows = payments(before, after, paid)
        self.funding_history.append(rows)
        return [self._funding_payment(r) for r in rows.tolist() if self.user_conns.get(r[3])]

    def _funding_payment(self, r: list[int] | tuple[int, ...]) -> P.FundingPayment:
        seq, ts, m, acct, lots, rate, index, amount = r
        return P.FundingPayment(seq, ts, self.specs[m].symbol, acct, lots, rate, index, amount)

    async def submit_system(self, commands: list) -> list:
        """Sequence operator or simulator commands (perp.commands structs) like a timer's; returns
        their events once journaled and processed. For embedding and tests, not on the wire."""
        loop = asyncio.get_running_loop()
        futs = []
        for cmd in commands:
            fut = loop.create_future()

            def done(seq, evs, error, result=None, received_ns=0, fut=fut):
                if not fut.done():
                    fut.set_exception(RuntimeError(error.msg)) if error is not None else fut.set_result(evs)

            self._enqueue(Pending(self.engine.encoder.row(cmd), "system", -1, done))
            futs.append(fut)
        return [e for evs in await asyncio.gather(*futs) for e in evs]

    def _apply_views(self, events: BatchEvents) -> None:
        """The gateway's views (live order owners, live client order ids, the L2 books) follow
        the batch's event rows: accepted orders, fully filled or cancelled ones, book levels.
        Applied by kind (numpy selections, then one loop each): an order id is accepted once and
        before it is filled or cancelled, and client order ids are never reused, so doing every
        acceptance before every removal ends in the same views as row order; book rows keep
        their order (the last size of a level wins)."""
        ev = events.of_kind(L.EV_ACCEPTED, L.EV_FILL, L.EV_CANCELLED, L.EV_BOOK)
        if ev.shape[0] == 0:
            return
        owner, live_clid, books = self.owner, self.live_clid, self.books
        k = ev[:, L.E_KIND]
        for oid, acct, clid in ev[(k == L.EV_ACCEPTED) & (ev[:, L.E_SIZE] > 0)][:, _OWNER_COLS].tolist():
            owner[oid] = (acct, clid)
            if clid:
                live_clid[(acct, clid)] = oid
        gone_mask = (k == L.EV_CANCELLED) | ((k == L.EV_FILL) & (ev[:, L.E_REMAINING] == 0))
        for oid in ev[gone_mask, L.E_ORDER_ID].tolist():
            gone = owner.pop(oid, None)
            if gone is not None and gone[1]:
                live_clid.pop(gone, None)
        for m, side, price, size in ev[k == L.EV_BOOK][:, _BOOK_COLS].tolist():
            lv = books[m][side]
            if size:
                lv[price] = size
            else:
                lv.pop(price, None)

    def _outcome(self, p: Pending, seq: int, evs: list) -> tuple[Any, P.ErrorBody | None]:
        """The reply of a sequenced command from its events: event rows (lists of ints) for the
        kinds in _ACK_FROM_ROWS (places and cancels: the hot path), perp.events structs otherwise."""
        if p.kind in _ACK_FROM_ROWS:
            return self._outcome_from_rows(p, seq, evs)
        for e in evs:
            if type(e) is E.Rejected:
                return None, _err(G.ENGINE_REJECTED, e.reason, e.code)
        if p.kind == "place":
            acc = next((e for e in evs if type(e) is E.Accepted and e.account == p.account), None)
            if acc is None:
                return None, _err(G.STATUS_UNKNOWN_ENGINE, "the engine reported no outcome")
            fills = [e for e in evs if type(e) is E.Fill and e.order_id == acc.order_id]
            cancelled = any(type(e) is E.Cancelled and e.order_id == acc.order_id for e in evs)
            filled = sum(f.size_lots for f in fills)
            remaining = 0 if cancelled else acc.size_lots - filled
            status = "cancelled" if cancelled else ("filled" if remaining == 0 else "resting")
            return P.OrderAck(seq, acc.order_id, acc.client_order_id, status, filled, remaining,
                              [P.FillInfo(f.price, f.size_lots, f.fee_micro, f.liquidity) for f in fills]), None
        if p.kind == "cancel":
            c = next((e for e in evs if type(e) is E.Cancelled), None)
            if c is None:
                return None, _err(G.STATUS_UNKNOWN_ENGINE, "the engine reported no outcome")
            return P.CancelAck(seq, c.order_id, c.client_order_id, c.size_lots), None
        if p.kind == "cancel_all":
            d = next((e for e in evs if type(e) is E.CancelAllDone), None)
            return P.CancelAllAck(seq, d.cancelled if d is not None else 0), None
        if p.kind == "amend":
            a = next((e for e in evs if type(e) is E.Amended), None)
            if a is None:
                return None, _err(G.STATUS_UNKNOWN_ENGINE, "the engine reported no outcome")
            return P.AmendAck(seq, a.order_id, a.client_order_id, a.price, a.size_lots, a.kept_priority), None
        if p.kind == "deposit":
            d = next((e for e in evs if type(e) is E.Deposited), None)
            if d is None:
                return None, _err(G.STATUS_UNKNOWN_ENGINE, "the engine reported no outcome")
            return P.DepositAck(seq, d.account, d.collateral_micro), None
        return None, None

    def _outcome_from_rows(self, p: Pending, seq: int, rows: list[list[int]]) -> tuple[Any, P.ErrorBody | None]:
        K, A, OID = L.E_KIND, L.E_ACCOUNT, L.E_ORDER_ID
        for r in rows:
            if r[K] == L.EV_REJECTED:
                return None, _err(G.ENGINE_REJECTED, describe(r[L.E_CODE]), r[L.E_CODE])
        if p.kind == "place":
            acc = next((r for r in rows if r[K] == L.EV_ACCEPTED and r[A] == p.account), None)
            if acc is None:
                return None, _err(G.STATUS_UNKNOWN_ENGINE, "the engine reported no outcome")
            oid, m = acc[OID], acc[L.E_MARKET]
            fills = [P.FillInfo(self._price_text(m, r[L.E_PRICE]), r[L.E_SIZE], r[L.E_FEE],
                                "maker" if r[L.E_CODE] == L.LIQ_MAKER else "taker")
                     for r in rows if r[K] == L.EV_FILL and r[OID] == oid]
            cancelled = any(r[K] == L.EV_CANCELLED and r[OID] == oid for r in rows)
            filled = sum(f.size_lots for f in fills)
            remaining = 0 if cancelled else acc[L.E_SIZE] - filled
            status = "cancelled" if cancelled else ("filled" if remaining == 0 else "resting")
            return P.OrderAck(seq, oid, acc[L.E_CLID], status, filled, remaining, fills), None
        c = next((r for r in rows if r[K] == L.EV_CANCELLED), None)  # "cancel"
        if c is None:
            return None, _err(G.STATUS_UNKNOWN_ENGINE, "the engine reported no outcome")
        return P.CancelAck(seq, c[OID], c[L.E_CLID], c[L.E_SIZE]), None

    # ---- market data and private events ----------------------------------------------------
    def _push(self, channel: str, market: str | None, kind: str, seq: int, prev_seq: int, data: Any,
              ts_ns: int = 0) -> bytes:
        return self._enc.encode(P.Push(channel, market, kind, seq, prev_seq, ts_ns or self.clock.now_ns(), data))

    def _book_levels(self, m: int) -> P.BookData:
        bids, asks = self.books[m]
        px = self._price_text
        return P.BookData([(px(m, t), bids[t]) for t in sorted(bids, reverse=True)],
                          [(px(m, t), asks[t]) for t in sorted(asks)])

    def _book_snapshot(self, m: int) -> bytes:
        return self._push("book", self.specs[m].symbol, "snapshot", self.book_seq[m], 0, self._book_levels(m))

    def _ticker(self, m: int) -> P.Ticker:
        spec = self.specs[m]
        eng = self.engine
        mv = eng.market_view(m)
        bid, ask = eng.best_bid_ask(m)
        px = lambda t: None if not t else ticks_to_price(spec, t)
        return P.Ticker(px(eng.mark_ticks(m)), px(eng.index_ticks(m)), px(bid), px(ask),
                        mv.open_interest_lots, eng.predicted_funding_rate_ppb(m), mv.last_funding_rate_ppb,
                        mv.next_funding_ts_ns, mv.funding_frozen, mv.oracle_validity, px(mv.fix_ticks), mv.fix_vintage,
                        None if mv.fix_date is None else mv.fix_date.isoformat())

    def _open_orders(self, acct: int) -> list[P.OpenOrder]:
        rows = self.engine.open_orders()
        rows = rows[rows[:, 4] == acct]
        return [P.OpenOrder(self.specs[m].symbol, oid, clid, "buy" if side == L.BUY else "sell",
                            ticks_to_price(self.specs[m], price), rem)
                for m, side, price, oid, _a, clid, rem, _f in rows.tolist()]

    def _fan_out(self, st: _Settled) -> None:
        """One push per stream and batch, each encoded once and shared (the same bytes) by every
        subscriber: the book delta (absolute sizes of the changed levels), the taker trades, the
        ticker of each touched market, liquidation and funding steps, and per account with a
        user-channel subscriber the list of its events (decoded from its rows only)."""
        events, ts, seq = st.events, st.ts, st.seq
        px = self._price_text
        book: list[dict[tuple[int, int], int]] = [{} for _ in self.specs]
        for m, side, price, size in events.book_levels()[:, _BOOK_COLS].tolist():
            book[m][(side, price)] = size  # the last size of a level in the batch wins
        trades: list[list[P.Trade]] = [[] for _ in self.specs]
        for m, price, size, side, eseq in events.taker_fills()[:, _TRADE_COLS].tolist():
            trades[m].append(P.Trade(px(m, price), size, "buy" if side == L.BUY else "sell", eseq))
        liqs: list[list[P.PublicLiquidation]] = [[] for _ in self.specs]
        funding: list[list[P.PublicFunding]] = [[] for _ in self.specs]
        users: dict[int, list] = collections.defaultdict(list)
        watched = {c.key.account for c in self.subscribers.get(("user", -1), ()) if c.key is not None}
        decoded = events.decoded(watched)  # rows of accounts with a user-channel subscriber only
        for e in decoded:
            t = type(e)
            if t is E.LiquidationStep and e.market is not None:
                liqs[self.market_index[e.market]].append(
                    P.PublicLiquidation(e.seq, e.phase, e.side, e.price_ticks, e.lots, e.filled))
            elif t is E.FundingPaid and e.market is not None:  # None: a market listed after this gateway started
                funding[self.market_index[e.market]].append(
                    P.PublicFunding(e.seq, e.rate_ppb, e.index_ticks, e.paid_micro, e.frozen))
            acct = getattr(e, "account", None)
            if acct is not None and acct in watched:
                users[acct].append(e)
        if st.funding_before is not None:
            for fp in self._funding_payments(st.funding_before, st.funding_after, decoded):
                users[fp.account].append(fp)
        for m in events.touched_markets():
            sym = self.specs[m].symbol
            if book[m]:
                self._book_changed(m, book[m], seq, ts)
            if trades[m]:
                if self.subscribers.get(("trades", m)):  # built only for someone (the chain moves on anyway)
                    self._broadcast(("trades", m), self._push("trades", sym, "update", seq, self.trade_seq[m],
                                                               trades[m]))
                self.trade_seq[m] = seq
            for channel, items in (("liquidations", liqs[m]), ("funding", funding[m])):
                subs = self.subscribers.get((channel, m))
                if items and subs:
                    self._broadcast((channel, m), self._push(channel, sym, "update", seq, 0, items))
            tk = st.tickers.get(m)
            if tk is not None and self.subscribers.get(("ticker", m)):
                if tk != self.last_ticker[m]:
                    self.last_ticker[m] = tk
                    frame = self._push("ticker", sym, "update", seq, self.ticker_seq[m], tk)
                    self.ticker_seq[m] = seq
                    self._broadcast(("ticker", m), frame)
        for acct, evs in users.items():
            subs = [c for c in self.user_conns[acct] if ("user", -1) in c.subs]
            if not subs:
                continue
            wire = text_frame(self._push("user", None, "update", seq, self.user_seq.get(acct, 0), evs))
            self.user_seq[acct] = seq
            for c in subs:
                self._send(c, b"", wire=wire)

    def _book_changed(self, m: int, levels: dict[tuple[int, int], int], seq: int, ts: int) -> None:
        """Hold a batch's level changes (`_hold_book_change`) and publish the delta now, or when
        `book_interval_ms` has passed since the last one."""
        self._hold_book_change(m, levels, seq, ts)
        interval_ns = self.cfg.book_interval_ms * 1_000_000
        due_ns = self._book_published_ns[m] + interval_ns
        now = time.monotonic_ns()
        if now >= due_ns:
            self._publish_book(m)
        elif self._book_timer[m] is None:
            self._book_timer[m] = asyncio.get_running_loop().call_later((due_ns - now) / 1e9, self._publish_book, m)

    def _hold_book_change(self, m: int, levels: dict[tuple[int, int], int], seq: int, ts: int) -> None:
        """Merge a batch's level changes into the market's pending delta (absolute sizes: the
        latest wins, so merging loses nothing); `seq` is the last batch it covers, `ts` the first's."""
        pending = self._book_pending[m]
        if not pending:
            self._book_pending_ts[m] = ts
        pending.update(levels)
        self._book_pending_seq[m] = seq

    def _publish_book(self, m: int) -> None:
        """The pending delta of market m, framed once for every `book` subscriber: `seq` is the
        last batch it covers, `ts_ns` the first one's (its oldest change)."""
        if self._book_timer[m] is not None:
            self._book_timer[m].cancel()
            self._book_timer[m] = None
        pending = self._book_pending[m]
        if not pending:
            return
        seq = self._book_pending_seq[m]
        frame = None
        if self.subscribers.get(("book", m)):  # built only for someone; the chain moves on either way
            px = self._price_text
            levels = sorted(pending.items())
            bids = [(px(m, p), sz) for (side, p), sz in reversed(levels) if side == 0]
            asks = [(px(m, p), sz) for (side, p), sz in levels if side == 1]
            frame = self._push("book", self.specs[m].symbol, "delta", seq, self.book_seq[m], P.BookData(bids, asks),
                               ts_ns=self._book_pending_ts[m])
        self.book_seq[m] = seq
        pending.clear()
        self._book_published_ns[m] = time.monotonic_ns()
        if frame is not None:
            self._broadcast(("book", m), frame, book_market=m)

    def _broadcast(self, sub: tuple[str, int], frame: bytes, book_market: int | None = None) -> None:
        """One push to every subscriber of `sub`, framed once: the same bytes queued for each, or,
        from `fanout_kernel_min` subscribers, written by one kernel call to every idle socket
        (gateway.fanout: nothing of the connection waiting anywhere, so they are the next bytes on
        its wire) and queued for the others."""
        conns = self.subscribers.get(sub)
        if not conns:
            return
        wire = text_frame(frame)
        if not self.cfg.fanout_kernel_min or len(conns) < self.cfg.fanout_kernel_min:
            for c in tuple(conns):
                self._send(c, frame, book_market, wire)
            return
        # idle sockets: one kernel call for all (gateway.fanout); any other the usual way
        direct, fds = [], []
        for c in tuple(conns):
            t = c.ws.transport
            if (c.out or c.close_code or c.fd < 0 or not _writable_now(c) or t.is_closing()
                    or t.get_write_buffer_size()
                    or (book_market is not None and book_market in c.book_resync)):
                self._send(c, frame, book_market, wire)  # queued, or dropped there when conflated
            else:
                direct.append(c)
                fds.append(c.fd)
        if not direct:
            return
        sent = np.empty(len(fds), dtype=np.int64)
        whole = send_to_all(np.array(fds, dtype=np.int32), np.frombuffer(wire, dtype=np.uint8), sent)
        if self.metrics.fanout_kernel_frames is not None:
            self.metrics.fanout_kernel_frames.inc(len(fds))
            if whole < len(fds):
                self.metrics.fanout_kernel_rests.inc(len(fds) - whole)
        if whole == len(fds):
            return
        n = len(wire)
        for c, took in zip(direct, sent.tolist()):
            if took != n:  # the rest through the transport, first (an error: the transport reports it)
                c.ws.transport.write(wire[took:] if took > 0 else wire)
                if c.ws.paused:
                    c.wake.set()

    # ---- timers ----------------------------------------------------------------------------
    async def _timer_loop(self) -> None:
        while True:
            try:
                await self._timers()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - log and keep the clock running
                log.error("timer_failed", error=repr(exc))
                await asyncio.sleep(1.0)

    def _feed_step(self, step: int, listed: list[str] | None = None) -> None:
        """Between batches: each fed market's feed follows its operators' oracle parameters (admin
        commands in the engine), then its point for `step` is queued as a journaled set_index, in
        market order. The first step after a recovery sends, per market, only what the engine does
        not hold already (a restart in the same step: sending it again would only move the clock,
        and make the recovered state differ from the one that stopped). With `listed`: only those
        markets, just fed (a listing within the step)."""
        if listed is None:
            resumed, self._index_resumed = self._index_resumed, False
        else:
            resumed = False
        for cmd, row in self.feed.rows(self.engine, step, resumed, only=listed):
            self._enqueue(Pending(row, "system", -1, None))
            log.info("index", market=cmd.market, price=cmd.price, validity=cmd.validity,
                     funding_frozen=cmd.funding_frozen)

    async def _timers(self) -> None:
        liq_ns = self.cfg.liquidation_interval_ms * 1_000_000
        next_liq = time.monotonic_ns() + liq_ns
        while True:
            now = self.clock.now_ns()
            if self.feed is not None and not self.draining and not self.broken:
                step = self.feed.step_of(now)
                listed = await self.feed.add_listed(self.specs)  # a market listed since: fed now
                if step != self._index_step:
                    self._index_step = step
                    self._when_idle(lambda step=step: self._feed_step(step))
                elif listed:
                    self._when_idle(lambda step=step, listed=listed: self._feed_step(step, listed))
            self._check_revocations()
            self._sweep_idle()
            mono = time.monotonic_ns()
            if liq_ns and mono >= next_liq and not self.draining and not self.broken:
                next_liq = mono + liq_ns
                self._enqueue(Pending(self.engine.encoder.row(Liquidate(ts_ns=0)), "system", -1, None))
            waits = []
            if liq_ns:
                waits.append(max(0, next_liq - time.monotonic_ns()))
            if self.feed is not None:
                waits.append(max(0, self.feed.next_step_ns(now) - self.clock.now_ns()))
            waits.append(min(1_000_000_000, int(self.cfg.idle_timeout_s * 1e9 / 4)))  # key changes, idle sweep
            await asyncio.sleep(min(waits) / 1e9 + 0.0005)

    def _sweep_idle(self) -> None:
        """Close connections that sent no frame for idle_timeout_s and hold no subscription
        (subscribers are kept honest by the WebSocket keepalive: a peer that stops answering pings
        is dropped by the protocol layer)."""
        cutoff = time.monotonic_ns() - int(self.cfg.idle_timeout_s * 1e9)
        for conn in list(self.conns.values()):
            if conn.last_rx_ns < cutoff and not conn.subs:
                self._close(conn, G.IDLE_TIMEOUT, "idle")

    def _check_revocations(self) -> None:
        """A key revoked in the key file ends the sessions logged on with it."""
        self.keys.reload_if_changed()
        if self.keys.generation == self._keys_generation:
            return
        self._keys_generation = self.keys.generation
        for conn in list(self.conns.values()):
            if conn.key is not None:
                k = self.keys.keys.get(conn.key.key)
                if k is None or k.revoked:
                    self._close(conn, G.KEY_REVOKED, "key revoked")


def _log_write_failure(fut: asyncio.Future) -> None:
    if fut.exception() is not None:  # the switch stays in the file: it fires again after a restart
        log.error("cancel_after_write_failed", error=repr(fut.exception()))


def _wake_future(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)
