"""`perp gateway --redis URL --port N`: one of any number of gateway processes in front of `perp engine`.

The connection side is the embedded server's (`gateway.server.Gateway`: protocol, logon, rate
limits, validation, subscriptions, send queues, /healthz, /metrics), so a client cannot tell which
it talks to. What differs is the backend behind the sequencer queue:

- **commit**: each group commit becomes one `XADD NS:cmd` entry `{g: this process's id, b: batch
  number, r: rows}`; nothing is acknowledged yet. The batch waits in `_inflight[b]`.
- **follow**: a reader task follows `NS:seq` from its last id (the event bus). Each record is run
  through this process's **read replica** of the engine (`redis_journal.apply_batch`: the same
  deterministic batch as the engine's), and `Gateway._complete_batch` then sends the acks of this
  process's commands of the batch (matched by `(g, b)`), and the batch's market data and private
  events to this process's subscribers. Book deltas carry the engine's sequence numbers, the same on
  every gateway. Queries and snapshots read the replica between records.

Faults (docs/deployment.md):

- Redis unreachable: new commands are refused with 4307 JOURNAL_UNAVAILABLE ("not placed": nothing
  was sent); commands whose XADD was sent and not answered, and those appended but not yet seen
  processed, are answered 4902 STATUS_UNKNOWN_REDIS (query before retrying). Connections and
  subscriptions stay open; the reader retries every 0.2 s and trading resumes by itself.
- Redis refusing the append with an error reply (out of memory under `maxmemory`): that group
  commit is answered 4307 "not placed" (certainly not appended); the next one is tried as usual.
- The engine not processing (killed, restarting): appended commands wait; after `ack_timeout_s`
  they are answered 4901 STATUS_UNKNOWN_ENGINE, and their events still reach the user channel
  when the engine processes them.
- This process killed: its clients reconnect to another gateway (the reference client takes
  several URLs) and resync from that gateway's snapshots.

A `client_order_id` is checked against the commands this gateway has seen (its replica and its
own pending places); the same id sent through two gateways within one ack latency reaches the
engine twice, and the engine sequences the first and leaves the other out of its batch (the
record's `x`, gateway/engine_proc.py): the gateway that sent it answers 4204, as embedded.

A logon's nonce is claimed in Redis (`NS:nonce:KEY:NONCE`, SET NX PX twice the receive window)
after the key, window and signature checks and before the connection is logged on, so a logon
frame seen by one gateway is refused (4106) by every other and by this one after a restart; with
Redis unreachable the logon is refused 4307 (it cannot be checked), never accepted unchecked. The
claim is one round trip on its own connection, awaited in a task: the event loop never blocks.

Known limits: the dead-man's switch (`cancel_after`) is armed in the gateway holding the session,
as embedded (it does not survive that gateway); the key file is read by each gateway.
"""

from __future__ import annotations

import asyncio
import os
import time
import traceback
from typing import Any

import numpy as np
import redis
import structlog

from gateway import redis_journal as RJ
from gateway.errors import GatewayCode as G
from gateway.keys import KeyError_
from gateway.resp import RespConnection
from gateway.server import Gateway, Pending, ServerConfig, _err

log = structlog.get_logger("gateway.front")


STAGES = ("queue", "append", "engine", "apply")  # perp_gateway_stage_seconds, in the order of an order's way
STAGE_BUCKETS_S = (0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.006, 0.008, 0.012, 0.016,
                   0.024, 0.032, 0.064, 0.128, 1.0)


def _no_observe(_seconds: float) -> None:
    return None


class Replica:
    """The engine as `NS:seq` describes it, in place of the embedded JournaledEngine: this process
    never writes a journal or a snapshot of its own."""

    def __init__(self, rec: RJ.Recovered):
        self.engine = rec.engine
        self.seq_id = rec.seq_id
        self.chains = rec.chains

    def snapshot(self) -> None:
        return None

    def close(self) -> None:
        return None


class RedisGateway(Gateway):
    def __init__(self, config: ServerConfig, *, redis_url: str, namespace: str = "perp", unsafe: bool = False,
                 ack_timeout_s: float = 10.0, clock: Any = None):
        self.redis_url = redis_url
        self.rkeys = RJ.Keys(namespace)
        self.ack_timeout_s = ack_timeout_s
        self.gid = f"gw-{os.getpid()}-{time.time_ns() & 0xFFFFFFFF:08x}"
        self._rs = RJ.connect_sync(redis_url)
        RJ.check_settings(self._rs, unsafe)
        config = _redis_config(config)
        super().__init__(config, feed=None, clock=clock)
        # the nonces live in Redis (_claim_nonce), across this process's restarts: no start-time rule
        self.auth.not_before_ns = 0
        self._nonce_ttl_ms = max(1, 2 * config.recv_window_ms)
        self._claims: set[asyncio.Task] = set()
        # the engine's chains, not this process's start; a delta open at the start was built by the
        # gateways running then, so this one's chain starts after it (its subscribers start from a snapshot)
        self.book_seq = [p or b for b, p in zip(self.jeng.chains["book"],
                                                self.jeng.chains.get("book_pending", [0] * len(self.specs)),
                                                strict=True)]
        self.trade_seq = list(self.jeng.chains["trades"])
        self._inflight: dict[int, tuple[float, list[Pending]]] = {}
        self._next_b = 1
        self.redis_up = True
        self._reader: asyncio.Task | None = None
        # `failed` (gateway.server) is set here when the replica can no longer follow NS:seq
        # (replica_failed): `perp gateway` then stops -- its connections closed, so clients move to
        # another gateway -- and exits for a supervisor to restart it from the newest snapshot,
        # instead of serving a book that no longer moves
        self._redis_gauge = None
        self._appended: dict[int, float] = {}  # own batch number -> when Redis answered its XADD (monotonic)
        self._stage: dict[str, Any] = dict.fromkeys(STAGES, _no_observe)
        if self.metrics.registry is not None:
            import prometheus_client as pc

            self._redis_gauge = pc.Gauge("perp_gateway_redis_up", "1 while Redis (the journal) is reachable",
                                         registry=self.metrics.registry)
            self._redis_gauge.set_function(lambda: 1.0 if self.redis_up else 0.0)
            self._stage_hist = pc.Histogram(
                "perp_gateway_stage_seconds", "an own group commit's way to its acks, by stage: queue (first "
                "command received to the XADD), append (XADD to Redis's reply: its AOF write and fsync), engine "
                "(the reply to the engine's record of it arriving here), apply (the record run here to its acks "
                "queued)", ["stage"], registry=self.metrics.registry, buckets=STAGE_BUCKETS_S)
            self._stage = {name: self._stage_hist.labels(name).observe for name in STAGES}

    # ---- the backend -----------------------------------------------------------------------
    def _open_engine(self) -> Replica:  # type: ignore[override]
        markets = RJ.markets_of(self._rs, self.rkeys, wait_s=30.0)
        if markets is None:
            raise RuntimeError(f"no engine has registered namespace {self.rkeys.ns!r} at {self.redis_url}: "
                               "start `perp engine --redis URL` first")
        return Replica(RJ.recover(self._rs, self.rkeys, markets))

    async def start(self) -> None:
        self._w = RespConnection(self.redis_url)  # group commits to NS:cmd (gateway.resp: the hot path)
        self._r = RespConnection(self.redis_url)  # blocking reads of NS:seq
        self._n = RespConnection(self.redis_url, timeout_s=2.0)  # logon nonces (_claim_nonce)
        await super().start()
        self._reader = asyncio.create_task(self._follow(), name="follow-seq")
        self._reader.add_done_callback(self._reader_done)
        log.info("gateway_started", gid=self.gid, port=self.port, seq=self.engine.seq, seq_id=self.jeng.seq_id)

    async def stop(self) -> None:
        """Refuse new commands, hand the queue to NS:cmd and wait (bounded) for the acks of what
        was sent, then close."""
        self.draining = True
        t_end = time.monotonic() + min(self.ack_timeout_s, 5.0)
        while (self._queue or self._pending_acks()) and self.redis_up and time.monotonic() < t_end:
            await asyncio.sleep(0.02)
        await super().stop()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        for t in list(self._claims):
            t.cancel()
        await asyncio.gather(*self._claims, return_exceptions=True)
        for c in (self._w, self._r, self._n):
            await c.aclose()
        self._rs.close()

    # ---- logon ------------------------------------------------------------------------------
    def _claim_nonce(self, conn: Any, rid: int, key: Any, nonce: str, now: int) -> None:  # type: ignore[override]
        """The logon passed its checks; claim its (key, nonce) in Redis in a task (the loop goes on),
        and log the connection on only once Redis says it was not there."""
        if not self.redis_up:
            self._logon_unchecked(conn, rid, "Redis is unreachable")
            return
        conn.logon_pending = True
        task = asyncio.get_running_loop().create_task(self._claim_nonce_in_redis(conn, rid, key, nonce))
        self._claims.add(task)
        task.add_done_callback(self._claims.discard)

    async def _claim_nonce_in_redis(self, conn: Any, rid: int, key: Any, nonce: str) -> None:
        try:
            fresh = await self._n.call(b"SET", self.rkeys.nonce(key.key, nonce), b"1", b"NX", b"PX",
                                       self._nonce_ttl_ms)
        except (redis.RedisError, *RJ.redis_down_errors()) as exc:  # unreachable, or an error reply: not checked
            conn.logon_pending = False
            log.warning("logon_nonce_unchecked", conn_id=conn.id, error=repr(exc))
            self._logon_unchecked(conn, rid, f"Redis did not take the claim ({type(exc).__name__})")
            return
        conn.logon_pending = False
        if conn.close_code or conn.id not in self.conns:  # the connection went away meanwhile
            return
        if fresh is None:
            self._logon_refused(conn, rid, KeyError_(G.NONCE_REUSED, "nonce already used (on this venue)"))
            return
        self.auth.remember(key.key, nonce, self.clock.now_ns())
        self._logged_on(conn, rid, key, time.monotonic_ns())

    def _logon_unchecked(self, conn: Any, rid: int, why: str) -> None:
        """Refused because the nonce could not be checked: the client's fault it is not, so it is no
        failed logon (`max_logon_failures`); log on again (a fresh signature) once Redis is back."""
        self._reply(conn, rid, error=_err(G.JOURNAL_UNAVAILABLE, f"logon not checked: {why}; the nonce store "
                                                                 "is Redis: log on again shortly"))

    def _pending_acks(self) -> int:
        return sum(1 for _, batch in self._inflight.values() for p in batch if p.done is not None)

    def _refuse_commands(self):  # type: ignore[override]
        if not self.redis_up and not (self.draining or self.broken):
            return _err(G.JOURNAL_UNAVAILABLE, "not placed: the journal (Redis) is unreachable; nothing was sent")
        return super()._refuse_commands()

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, batch: list[Pending]) -> None:
        """One group commit: one XADD to NS:cmd. Acks come from `_follow` when the engine's record
        of the batch arrives."""
        if not self.redis_up:  # never sent: a definite refusal
            self._refuse_batch(batch, "not placed: the journal (Redis) is unreachable")
            return
        rows = np.stack([p.row for p in batch])
        b = self._next_b
        self._next_b += 1
        t_cut = time.monotonic()
        self._inflight[b] = (t_cut, batch)
        if batch[0].received_ns:
            self._stage["queue"](t_cut - batch[0].received_ns / 1e9)
        fields = RJ.cmd_fields(self.gid, b, rows, self.engine.encoder.payloads)
        down = RJ.redis_down_errors()
        try:
            await self._w.connect()
        except down as exc:  # nothing of this batch was sent: "not placed"; the others in flight: unknown
            self._not_placed(b, "not placed: the journal (Redis) is unreachable; nothing was sent")
            self._set_down(exc)
            return
        try:
            await self._w.xadd(self.rkeys.cmd, fields)
            t = time.monotonic()
            if b in self._inflight:  # not already answered (the record can come before the reply is read)
                self._appended[b] = t
            self._stage["append"](t - t_cut)
        except down as exc:  # sent, and no reply: every batch in flight is "status unknown"
            self._set_down(exc)
        except redis.RedisError as exc:  # an error reply (e.g. out of memory): certainly not appended
            log.error("append_refused", batch=b, error=repr(exc))
            self._not_placed(b, f"not placed: Redis refused the append ({exc})")

    def _not_placed(self, b: int, msg: str) -> None:
        """Batch `b` is certainly not in NS:cmd."""
        self._appended.pop(b, None)
        self._refuse_batch(self._inflight.pop(b, (0.0, []))[1], msg)

    def _refuse_batch(self, batch: list[Pending], msg: str) -> None:
        """Commands that certainly did not reach NS:cmd: each is refused (4307), its client order id
        free again."""
        for p in batch:
            if p.clid:
                self._pending_clids.discard((p.account, p.clid))
            if p.done is not None:
                done, p.done = p.done, None
                done(0, [], _err(G.JOURNAL_UNAVAILABLE, msg), None, p.received_ns)

    def _set_down(self, exc: BaseException) -> None:
        if self.redis_up:
            log.error("redis_down", error=repr(exc), seq=self.engine.seq, inflight=self._pending_acks())
        self.redis_up = False
        self._answer_inflight(G.STATUS_UNKNOWN_REDIS, "status unknown: Redis went away with the command in "
                                                      "flight; query before retrying")

    def _answer_inflight(self, code: G, msg: str, older_than: float | None = None) -> None:
        now = time.monotonic()
        for b, (t0, batch) in list(self._inflight.items()):
            if older_than is not None and now - t0 < older_than:
                continue
            for p in batch:
                if p.done is not None:
                    done, p.done = p.done, None
                    done(0, [], _err(code, msg), None, p.received_ns)
            if now - t0 > 3600:  # never seen in an hour: its XADD did not reach Redis
                del self._inflight[b]
                self._appended.pop(b, None)

    def _reader_done(self, task: asyncio.Task) -> None:
        """The reader ending by an exception (a bug) leaves a gateway that no longer follows the
        engine: fail as a replica that lost the stream does (the CLI exits 3), never a zombie."""
        if task.cancelled() or task.exception() is None:
            return
        self._lost_engine(error=repr(task.exception()))

    def _lost_engine(self, **log_fields: Any) -> None:
        """The replica no longer follows the engine: `replica_failed`, what is in flight "status
        unknown", and `failed` set (no more commands; `perp gateway` exits 3)."""
        self.failed.set()
        log.error("replica_failed", seq=self.engine.seq, **log_fields)
        self._answer_inflight(G.STATUS_UNKNOWN_ENGINE, "status unknown: this gateway lost track of the engine; "
                                                       "query another gateway")

    async def _follow(self) -> None:
        """Follow NS:seq from the replica's last id (the event bus); apply every record in order.
        A read Redis refuses (an error reply: NOPERM after an ACL change) is handled as Redis down:
        this gateway cannot see its acks, so what it has in flight is "status unknown", new orders
        are refused "not placed", and it goes on by itself when a read is taken again."""
        down = RJ.redis_down_errors()
        seq_id = self.jeng.seq_id
        read_refused = False
        while True:
            try:
                got = await self._r.xread_one(self.rkeys.seq, seq_id, 64, 250)
            except down as exc:
                self._set_down(exc)
                await asyncio.sleep(0.2)
                continue
            except redis.ResponseError as exc:
                if not read_refused:
                    log.error("redis_refused", op="read", error=str(exc), seq=self.engine.seq)
                read_refused = True
                self._set_down(exc)
                await asyncio.sleep(0.2)
                continue
            if read_refused:
                log.info("redis_accepted", op="read", seq=self.engine.seq)
                read_refused = False
            if not self.redis_up:
                log.info("redis_up", seq=self.engine.seq)
                self.redis_up = True
            for eid, fields in got:
                try:
                    self._apply(RJ.SeqRecord.parse(fields))
                except Exception as exc:  # noqa: BLE001 - the replica no longer matches the engine
                    self._lost_engine(id=eid.decode(), error=repr(exc), traceback=traceback.format_exc())
                    return
                seq_id = eid.decode()
                self.jeng.seq_id = seq_id
            self._answer_inflight(G.STATUS_UNKNOWN_ENGINE, "status unknown: the engine has not processed it yet; "
                                                           "query before retrying", older_than=self.ack_timeout_s)

    def _apply(self, rec: RJ.SeqRecord) -> None:
        if rec.seq0 <= self.engine.seq:  # written twice (the engine retried a write whose reply was lost)
            return
        if rec.seq0 != self.engine.seq + 1:
            raise RuntimeError(f"record starts at seq {rec.seq0}, the replica is at {self.engine.seq}")
        refused: dict[int, dict[int, int]] = {}  # this process's batch number -> {index in it: code}
        for g, b, i, code in rec.refused:
            if g == self.gid:
                refused.setdefault(b, {})[i] = code
        batch: list[Pending | None] = []
        answer: list[tuple[Pending, int]] = []
        now = time.monotonic()
        own = False
        for g, b, n in rec.src:
            mine = self._inflight.pop(b, None) if g == self.gid else None
            gone = refused.get(b, {})
            if mine is not None and len(mine[1]) == n + len(gone):
                own = True
                batch.extend(p for i, p in enumerate(mine[1]) if i not in gone)
                answer.extend((mine[1][i], code) for i, code in gone.items())
                if self.metrics.batch_seconds is not None:  # XADD to the engine's record: journal + engine
                    self.metrics.batch_seconds.observe(now - mine[0])
                    self.metrics.batch_commands.observe(n)
                t_appended = self._appended.pop(b, None)
                if t_appended is not None:
                    self._stage["engine"](now - t_appended)
            else:  # another gateway's commands (or the engine's timers): applied and fanned out, not acked
                batch.extend([None] * n)
        funding_before = self._funding_watch(rec.ts_ns)
        ev_rows = RJ.apply_batch(self.engine, rec.rows, rec.payloads)
        for p, code in answer:
            self._refused(p, code)
        self._complete_batch(batch, rec.seq0, ev_rows, rec.ts_ns, funding_before)
        if own:
            self._stage["apply"](time.monotonic() - now)
        if not rec.merge:  # the engine closed the book delta (SeqRecord.merge): publish what is held
            for m, pending in enumerate(self._book_pending):
                if pending:
                    self._publish_book(m)

    def _book_changed(self, m: int, levels: dict[tuple[int, int], int], seq: int, ts: int) -> None:
        """A batch's level changes are held until a record closes the delta (`_apply`), never
        published by this process's clock: every gateway publishes the same deltas."""
        self._hold_book_change(m, levels, seq, ts)

    def _refused(self, p: Pending, code: int) -> None:
        """A command of this process the engine left out of its batch (the record's `x`): a place
        whose client order id another gateway's command had used first. Answered as the embedded
        gateway answers a duplicate (4204, nothing was done); the pending id is freed (the replica
        now holds it as used)."""
        if p.clid:
            self._pending_clids.discard((p.account, p.clid))
        if p.done is not None:
            done, p.done = p.done, None
            msg = f"client_order_id {p.clid} was already used" if code == G.DUPLICATE_CLIENT_ORDER_ID \
                else "refused by the sequencer"
            done(0, [], _err(code, msg), None, p.received_ns)  # the engine's code as it wrote it

    def _http(self, connection: Any, request: Any) -> Any:  # /healthz says whether Redis is reachable
        if request.path == "/healthz" and not self.redis_up:
            body = self._enc.encode({"ok": False, "seq": self.engine.seq, "connections": len(self.conns),
                                     "queue": len(self._queue), "redis": False}).decode()
            resp = connection.respond(503, body + "\n")
            resp.headers["Content-Type"] = "application/json"
            return resp
        return super()._http(connection, request)


def _redis_config(config: ServerConfig) -> ServerConfig:
    """A front process runs no timers, feed or journal of its own: the engine does. Its book deltas
    are merged where the engine's records say (`perp engine --book-interval-ms`, SeqRecord.merge),
    never over this process's own wall-clock interval (`book_interval_ms` 0 here): so every gateway
    pushes the same deltas with the same `seq` / `prev_seq`, and a client that moves to another
    gateway continues the same chain."""
    import msgspec

    return msgspec.structs.replace(config, index_feed=False, liquidation_interval_ms=0, snapshot_on_exit=False,
                                   book_interval_ms=0)
