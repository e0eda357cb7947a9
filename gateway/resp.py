"""The hot path's Redis connection: commands written straight to an asyncio transport, replies parsed
by hiredis, answered in order.

Per record, the engine reads `NS:cmd` and appends to `NS:seq` (MULTI/EXEC), and each gateway appends
its group commit to `NS:cmd` and reads `NS:seq`: four to six Redis round trips for every batch, on
the processes whose CPU the order path is short of. Through redis-py's asyncio client each of those
costs the caller 100-250 us of CPU on the bench machine (its connection lock, retry wrapper,
timeout context and response callbacks), against ~40-55 us for the same command written to a
transport and parsed by hiredis's C reader (docs/performance.md, "The Redis client on the hot
path"). Everything else (recovery, snapshots, status, checks of settings) stays on redis-py.

Invariants:

- Replies come back in the order the commands were written, on one connection; each call writes
  its whole command (or a whole MULTI ... EXEC) in one `transport.write`, so commands of concurrent
  tasks never interleave inside each other. A caller that gives up (cancelled) keeps its place in
  the queue: its reply is read and dropped, the next caller gets its own.
- A connection that lost its place (closed by the peer, or a reply not back within its timeout:
  a late reply would be taken for the next command's) is dropped: every waiting call fails with
  `redis.ConnectionError` / `redis.TimeoutError` (both in `redis_journal.redis_down_errors()`),
  and the next call connects afresh. A failed call may have been carried out by Redis: callers
  treat it as "status unknown", as they do with redis-py.
- Error replies raise redis-py's exception classes: `LOADING` (Redis restarting and reading its
  AOF) is `redis.BusyLoadingError`, a `redis.ConnectionError`, so it reads as "Redis unreachable".
- A transaction refused before it ran -- a command refused while queued (NOPERM, a wrong
  argument count), or EXEC refused whole (OOM, MISCONF, READONLY, EXECABORT) -- raises that
  reply's error and **nothing of it took effect**. An error inside EXEC's reply array (a command
  that failed as it ran: WRONGTYPE) raises `PartialTransactionError`: Redis does not roll back, so
  the other commands did take effect; a caller that retries would write them twice.
"""

from __future__ import annotations

import asyncio
import collections
import operator
from typing import Any

import hiredis
import redis
import redis.exceptions as rex
from redis.connection import parse_url

_ERRORS = (  # the start of an error reply -> the exception redis-py raises for it
    ("LOADING", rex.BusyLoadingError),
    ("NOAUTH", rex.AuthenticationError),
    ("WRONGPASS", rex.AuthenticationError),
    ("READONLY", rex.ReadOnlyError),
    ("EXECABORT", rex.ExecAbortError),
)


class PartialTransactionError(rex.ResponseError):
    """EXEC ran and at least one of its commands failed as it ran: the others took effect."""


def _error(reply: rex.ResponseError) -> rex.RedisError:
    msg = str(reply)
    for prefix, cls in _ERRORS:
        if msg.startswith(prefix):
            return cls(msg)
    return reply


def _arg(a: Any) -> bytes:
    """A command argument as Redis reads it (redis-py's encoding of the same types)."""
    if isinstance(a, bytes):
        return a
    if isinstance(a, str):
        return a.encode()
    if isinstance(a, bool):
        raise TypeError("a Redis argument is bytes, str or a number, not bool (say 0 or 1)")
    if isinstance(a, float):
        return repr(a).encode()
    if isinstance(a, (bytearray, memoryview)):
        return bytes(a)
    try:
        return b"%d" % operator.index(a)  # int, numpy integers
    except TypeError:
        raise TypeError(f"a Redis argument is bytes, str or a number, not {type(a).__name__}") from None


def pack(*args: Any) -> bytes:
    """One command in RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if type(a) is bytes else _arg(a)
        parts.append(b"$%d\r\n%b\r\n" % (len(b), b))
    return b"".join(parts)


def xadd_args(key: str, fields: dict, maxlen: int | None = None) -> tuple:
    """XADD key [MAXLEN ~ n] * field value ... (the id chosen by Redis)."""
    head: tuple = (b"XADD", key) + ((b"MAXLEN", b"~", maxlen) if maxlen is not None else ())
    flat: list = []
    for k, v in fields.items():
        flat.append(k)
        flat.append(v)
    return head + (b"*",) + tuple(flat)


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: RespConnection):
        self.owner = owner
        self.reader = hiredis.Reader(replyError=rex.ResponseError, protocolError=rex.InvalidResponse)
        self.waiting: collections.deque[tuple[asyncio.Future, int]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.waiting
        while True:
            try:
                r = self.reader.gets()
            except rex.InvalidResponse as exc:  # the stream cannot be read on: drop the connection
                self.fail(rex.ConnectionError(f"unreadable reply from Redis: {exc}"))
                return
            if r is False:
                return
            if not waiting:  # a reply nobody asked for: the order is lost, so is the connection
                self.fail(rex.ConnectionError("a reply from Redis that no command was waiting for"))
                return
            fut, n = waiting[0]
            if n > 1:  # a transaction: MULTI's +OK and n-2 +QUEUED come before EXEC's array
                waiting[0] = (fut, n - 1)
                if isinstance(r, rex.ResponseError) and not fut.done():
                    fut.set_exception(_error(r))
                continue
            waiting.popleft()
            if fut.done():  # its caller gave up (the connection is being dropped anyway)
                continue
            if isinstance(r, rex.ResponseError):
                fut.set_exception(_error(r))
            else:
                fut.set_result(r)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.fail(rex.ConnectionError(f"Redis closed the connection: {exc!r}" if exc
                                      else "Redis closed the connection"))

    def fail(self, exc: BaseException) -> None:
        if self.lost is None:
            self.lost = exc
        while self.waiting:
            fut, _ = self.waiting.popleft()
            if not fut.done():
                fut.set_exception(type(exc)(str(exc)))
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        if self.owner._proto is self:
            self.owner._proto = None


class RespConnection:
    """One Redis connection (see the module docstring); connects on first use and again after a
    loss. `timeout_s` bounds the wait for each reply (a blocking read's block time on top)."""

    def __init__(self, url: str, *, timeout_s: float = 5.0, connect_timeout_s: float = 2.0):
        self.url = url
        kw = parse_url(url)
        if kw.get("connection_class") is redis.SSLConnection:
            raise ValueError("rediss:// (TLS) is not supported on the hot path: use a local or tunnelled Redis")
        self._path: str | None = kw.get("path")
        self._host: str = kw.get("host", "localhost")
        self._port: int = int(kw.get("port", 6379))
        self._db: int = int(kw.get("db", 0) or 0)
        self._username: str | None = kw.get("username")
        self._password: str | None = kw.get("password")
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Task | None = None
        self._closed = False

    async def _connection(self) -> _Protocol:
        if self._closed:
            raise rex.ConnectionError("the connection was closed")
        p = self._proto
        if p is not None and p.lost is None:
            return p
        if self._connecting is None:  # one attempt shared by every caller waiting meanwhile
            self._connecting = asyncio.ensure_future(self._connect())
        task = self._connecting
        try:
            return await asyncio.shield(task)
        finally:
            if task.done() and self._connecting is task:
                self._connecting = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            if self._path:
                coro = loop.create_unix_connection(lambda: _Protocol(self), self._path)
            else:
                coro = loop.create_connection(lambda: _Protocol(self), self._host, self._port)
            _, proto = await asyncio.wait_for(coro, self.connect_timeout_s)
        except (OSError, asyncio.TimeoutError) as exc:
            raise rex.ConnectionError(f"cannot connect to Redis at {self._where()}: {exc!r}") from exc
        setup = []
        if self._password is not None:
            setup.append(pack(b"AUTH", *((self._username,) if self._username else ()), self._password))
        if self._db:
            setup.append(pack(b"SELECT", self._db))
        try:
            for cmd in setup:
                await self._send(proto, cmd, 1, self.connect_timeout_s)
        except BaseException as exc:
            proto.fail(rex.ConnectionError(f"Redis at {self._where()} refused the connection's set-up: {exc}"))
            raise
        self._proto = proto  # live only once set up: nothing is written before AUTH and SELECT
        return proto

    async def connect(self) -> None:
        """A live connection (made now if there is none); redis.ConnectionError when Redis is
        unreachable."""
        await self._connection()

    def _where(self) -> str:
        return self._path or f"{self._host}:{self._port}"

    def _send(self, proto: _Protocol, data: bytes, replies: int, timeout_s: float) -> asyncio.Future:
        """Write `data` now; the future of its (last) reply. Not answered within `timeout_s`, the
        connection is dropped: a reply that came later would be read as the next command's."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        proto.waiting.append((fut, replies))
        proto.transport.write(data)  # type: ignore[union-attr]
        where = self._where()

        def late() -> None:
            if not fut.done():
                proto.fail(rex.TimeoutError(f"no reply from Redis at {where} within {timeout_s:g} s"))

        timer = loop.call_later(timeout_s, late)
        fut.add_done_callback(lambda _: timer.cancel())
        return fut

    async def call(self, *args: Any, block_s: float = 0.0) -> Any:
        """One command; its reply (bytes, int, list or None) or redis-py's exception."""
        proto = await self._connection()
        return await self._send(proto, pack(*args), 1, self.timeout_s + block_s)

    async def transaction(self, commands: list[tuple]) -> list:
        """MULTI, `commands`, EXEC in one write; EXEC's replies. An error reply before EXEC's array
        (nothing ran) raises as `call` does; one inside it raises `PartialTransactionError`."""
        proto = await self._connection()
        data = pack(b"MULTI") + b"".join(pack(*c) for c in commands) + pack(b"EXEC")
        replies = await self._send(proto, data, len(commands) + 2, self.timeout_s)
        if replies is None:
            raise rex.ExecAbortError("the transaction was aborted")
        for r in replies:
            if isinstance(r, rex.ResponseError):
                raise PartialTransactionError(str(r))
        return replies

    async def xadd(self, key: str, fields: dict, maxlen: int | None = None) -> bytes:
        return await self.call(*xadd_args(key, fields, maxlen))

    async def xread_one(self, key: str, last_id: str | bytes, count: int, block_ms: int) -> list[tuple[bytes, dict]]:
        """XREAD COUNT n BLOCK ms STREAMS key id: the entries after `last_id`, as (id, {field: value})
        -- [] when none came within `block_ms`."""
        got = await self.call(b"XREAD", b"COUNT", count, b"BLOCK", block_ms, b"STREAMS", key, last_id,
                              block_s=block_ms / 1000)
        if not got:
            return []
        out = []
        for eid, flat in got[0][1]:
            out.append((eid, dict(zip(flat[::2], flat[1::2], strict=True)) if flat else {}))
        return out

    async def aclose(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
            self._connecting = None
        p = self._proto
        if p is not None:
            p.fail(rex.ConnectionError("the connection was closed"))
