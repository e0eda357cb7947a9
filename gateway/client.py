"""The async client of the gateway: typed requests, logon, reconnect, resubscribe, local books.

    async with GatewayClient(url, Credentials("ed25519", key, private_hex)) as c:
        book = await c.subscribe_book("H100-PERP")
        ack = await c.place("H100-PERP", "buy", 10, price="2.1000", client_order_id=1)

- Every request returns its typed result (gateway.protocol) or raises `GatewayError` with the code.
- A request in flight when the connection drops raises `ConnectionLost`: for an order its fate is
  unknown, so query (`open_orders`) before retrying (client order ids make the retry safe: a
  duplicate is refused with 4204).
- With `reconnect=True` (the default) the client reconnects with a capped backoff, logs on again
  and resubscribes; a book is rebuilt from a fresh snapshot.
- A `LocalBook` is kept from the snapshot and the deltas. A delta whose `prev_seq` is not the
  book's `seq` is a gap: the book is marked unsynced and resubscribed (`resyncs` counts it).
- Pushes other than the book (trades, ticker, user) are queued; `next_push(channel)` awaits one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import msgspec

from gateway import protocol as P
from gateway.errors import GatewayCode
from gateway.keys import KeyKind, sign_logon
from perp import events as E


class GatewayError(Exception):
    def __init__(self, code: int, msg: str, engine_code: int | None = None, field: str | None = None,
                 what_if: Any = None):
        super().__init__(f"{code} {msg}" + (f" (engine code {engine_code})" if engine_code else "")
                         + (f" at {field}" if field else ""))
        self.code = code
        self.msg = msg
        self.engine_code = engine_code
        self.field = field  # admin refusals: the field the engine names
        self.what_if = what_if  # admin refusals that need confirmation: the what-if (a dict)


class ConnectionLost(Exception):
    """The connection dropped with this request in flight: its outcome is unknown."""


@dataclass(frozen=True)
class Credentials:
    kind: KeyKind
    key: str
    secret_hex: str  # ed25519 private key or hmac secret (hex)

    def __repr__(self) -> str:
        return f"Credentials(kind={self.kind!r}, key={self.key!r})"

    @classmethod
    def load(cls, path: str) -> Credentials:
        """A credential file written by `perp keys create --out`."""
        import json

        with open(path) as fh:
            d = json.load(fh)
        return cls(d["kind"], d["key"], d["secret_hex"])


class LocalBook:
    """One market's L2 book from a snapshot and the deltas after it (absolute level sizes)."""

    def __init__(self, market: str):
        self.market = market
        self.bids: dict[str, int] = {}
        self.asks: dict[str, int] = {}
        self.seq = 0
        self.synced = False
        self.resyncs = 0
        self.updated = asyncio.Event()

    def apply(self, kind: str, seq: int, prev_seq: int, data: P.BookData) -> bool:
        """Apply a snapshot or delta; False on a gap (the book is then unsynced until the next snapshot;
        deltas before it are ignored)."""
        if kind == "snapshot":
            self.bids = {p: s for p, s in data.bids}
            self.asks = {p: s for p, s in data.asks}
        else:
            if not self.synced:
                return True  # waiting for a snapshot: a resubscription is already on its way
            if prev_seq != self.seq:
                self.synced = False
                return False
            for side, levels in ((self.bids, data.bids), (self.asks, data.asks)):
                for p, s in levels:
                    if s:
                        side[p] = s
                    else:
                        side.pop(p, None)
        self.seq = seq
        self.synced = True
        self.updated.set()
        return True

    def levels(self) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
        """(bids best first, asks best first)."""
        return (sorted(self.bids.items(), key=lambda x: Decimal(x[0]), reverse=True),
                sorted(self.asks.items(), key=lambda x: Decimal(x[0])))

    def best(self) -> tuple[str | None, str | None]:
        b, a = self.levels()
        return (b[0][0] if b else None, a[0][0] if a else None)


_incoming = msgspec.json.Decoder(P.Incoming)
_book_data = msgspec.json.Decoder(P.BookData)
_user_events = msgspec.json.Decoder(list[E.Event | P.FundingPayment])
_liquidations = msgspec.json.Decoder(list[P.PublicLiquidation])
_funding = msgspec.json.Decoder(list[P.PublicFunding])
_trades = msgspec.json.Decoder(list[P.Trade])
_ticker = msgspec.json.Decoder(P.Ticker)


class UserSnapshot(msgspec.Struct, frozen=True):
    open_orders: list[P.OpenOrder]
    account: dict
    adl: list[dict] = []


_user_snapshot = msgspec.json.Decoder(UserSnapshot)


@dataclass
class PushMsg:
    channel: str
    market: str | None
    type: str
    seq: int
    prev_seq: int
    ts_ns: int
    data: Any  # typed: list[perp.events.Event] | UserSnapshot | list[Trade] | Ticker | Hello


def _retrieve(fut: asyncio.Future) -> None:
    if not fut.cancelled():
        fut.exception()


class GatewayClient:
    def __init__(self, url: str, credentials: Credentials | None = None, *, reconnect: bool = True,
                 request_timeout_s: float = 10.0, max_backoff_s: float = 2.0, push_queue: int = 100_000,
                 heartbeat_s: float | None = 30.0, fallback_urls: tuple[str, ...] = ()):
        self.url = url
        self.urls = (url, *fallback_urls)  # several gateways of one venue: a failed reconnect tries the next
        self.credentials = credentials
        self.reconnect = reconnect
        self.request_timeout_s = request_timeout_s
        self.max_backoff_s = max_backoff_s
        self.books: dict[str, LocalBook] = {}
        self.account: int | None = None
        self.conn_id: int | None = None
        self.connects = 0
        self.close_code: int | None = None  # the last close code the server sent
        self._subs: list[tuple[str, str | None]] = []
        self._ws: Any = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._pushes: dict[str, deque[PushMsg]] = defaultdict(deque)
        self._push_event: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._push_queue = push_queue
        self._reader: asyncio.Task | None = None
        self._closing = False
        self._connected = asyncio.Event()
        self._enc = msgspec.json.Encoder()
        self.heartbeat_s = heartbeat_s  # an application ping this often keeps the session out of the idle sweep
        self._heartbeat: asyncio.Task | None = None

    async def __aenter__(self) -> GatewayClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- connection ------------------------------------------------------------------------
    async def connect(self) -> None:
        await self._open()
        self._reader = asyncio.create_task(self._read_loop())
        if self.heartbeat_s:
            self._heartbeat = asyncio.create_task(self._beat())
        await self._session()

    async def _beat(self) -> None:
        while not self._closing:
            await asyncio.sleep(self.heartbeat_s)
            if self._connected.is_set():
                with contextlib.suppress(ConnectionLost, GatewayError, TimeoutError):
                    await self._call("ping")

    async def _open(self) -> None:
        from websockets.asyncio.client import connect

        self._ws = await connect(self.url, max_size=1 << 24, open_timeout=10, close_timeout=2)
        self.connects += 1

    async def _session(self) -> None:
        """Logon and (re)subscribe on a fresh connection."""
        if self.credentials is not None:
            await self.logon()
        for channel, market in list(self._subs):
            if channel == "book" and market is not None:
                self.books[market].synced = False
            await self._call("subscribe", {"channel": channel, "market": market})
        self._connected.set()

    async def close(self) -> None:
        self._closing = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader

    async def _read_loop(self) -> None:
        from websockets.exceptions import ConnectionClosed

        backoff = 0.05
        while True:
            try:
                async for frame in self._ws:
                    self._on_frame(frame)
            except ConnectionClosed:
                pass
            rcvd = getattr(self._ws, "close_code", None)
            self.close_code = rcvd
            self._connected.clear()
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(ConnectionLost("connection lost with the request in flight"))
            self._waiting.clear()
            for b in self.books.values():
                b.synced = False
            if self._closing or not self.reconnect:
                return
            while not self._closing:
                await asyncio.sleep(backoff)
                backoff = min(self.max_backoff_s, backoff * 2)
                try:
                    await self._open()
                except Exception:  # noqa: BLE001 - refused, reset, handshake timeout: try again later
                    self.url = self.urls[(self.urls.index(self.url) + 1) % len(self.urls)]
                    continue
                backoff = 0.05
                asyncio.create_task(self._resume())
                break

    async def _resume(self) -> None:
        with contextlib.suppress(ConnectionLost, GatewayError, asyncio.TimeoutError):
            await self._session()

    async def wait_connected(self, timeout_s: float = 10.0) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout_s)

    def _on_frame(self, frame: str | bytes) -> None:
        msg = _incoming.decode(frame)
        if msg.channel is None:
            fut = self._waiting.pop(msg.id, None) if msg.id is not None else None
            if fut is not None and not fut.done():
                if msg.ok:
                    fut.set_result(msg.result)
                else:
                    err = msg.error or P.ErrorBody(0, "no error body")
                    fut.set_exception(GatewayError(err.code, err.msg, err.engine_code, err.field, err.what_if))
            return
        ch = msg.channel
        if ch == "book":
            book = self.books.get(msg.market)
            if book is None:
                return
            if not book.apply(msg.type, msg.seq, msg.prev_seq, _book_data.decode(msg.data)):
                book.resyncs += 1
                asyncio.create_task(self._resync(msg.market))
            return
        if ch == "hello":
            self.conn_id = msgspec.json.decode(msg.data, type=P.Hello).conn_id
            data: Any = None
        elif ch == "user":
            data = _user_snapshot.decode(msg.data) if msg.type == "snapshot" else _user_events.decode(msg.data)
        elif ch == "trades":
            data = _trades.decode(msg.data)
        elif ch == "ticker":
            data = _ticker.decode(msg.data)
        elif ch == "liquidations":
            data = _liquidations.decode(msg.data)
        elif ch == "funding":
            data = _funding.decode(msg.data)
        else:
            data = msgspec.json.decode(msg.data)
        q = self._pushes[ch]
        if len(q) >= self._push_queue:
            q.popleft()
        q.append(PushMsg(ch, msg.market, msg.type, msg.seq, msg.prev_seq, msg.ts_ns, data))
        self._push_event[ch].set()

    async def _resync(self, market: str) -> None:
        with contextlib.suppress(ConnectionLost, GatewayError, asyncio.TimeoutError):
            await self._call("unsubscribe", {"channel": "book", "market": market})
            await self._call("subscribe", {"channel": "book", "market": market})

    async def next_push(self, channel: str, timeout_s: float = 10.0) -> PushMsg:
        """The oldest unread push of a channel (user, trades, ticker)."""
        q = self._pushes[channel]
        ev = self._push_event[channel]
        deadline = time.monotonic() + timeout_s
        while not q:
            ev.clear()
            await asyncio.wait_for(ev.wait(), max(0.0, deadline - time.monotonic()))
        return q.popleft()

    def pending_pushes(self, channel: str) -> list[PushMsg]:
        q = self._pushes[channel]
        out = list(q)
        q.clear()
        return out

    # ---- requests --------------------------------------------------------------------------
    async def _call(self, method: str, params: Any = None) -> msgspec.Raw:
        rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_retrieve)  # an outcome nobody awaits any more is not an error
        self._waiting[rid] = fut
        body = {"id": rid, "method": method, "params": params if params is not None else {}}
        try:
            await self._ws.send(self._enc.encode(body).decode())
        except Exception:
            self._waiting.pop(rid, None)
            raise ConnectionLost("could not send") from None
        try:
            return await asyncio.wait_for(fut, self.request_timeout_s)
        finally:
            self._waiting.pop(rid, None)

    async def request(self, method: str, params: Any = None, type: Any = Any) -> Any:
        raw = await self._call(method, params)
        return msgspec.json.decode(raw, type=type)

    async def logon(self) -> P.LogonResult:
        c = self.credentials
        ts = time.time_ns()
        nonce = secrets.token_hex(12)
        sig = sign_logon(c.kind, c.secret_hex, c.key, ts, nonce)
        res = await self.request("logon", {"key": c.key, "ts_ns": ts, "nonce": nonce, "signature": sig},
                                 P.LogonResult)
        self.account = res.account
        return res

    async def ping(self) -> int:
        return (await self.request("ping"))["server_ts_ns"]

    async def subscribe(self, channel: str, market: str | None = None) -> None:
        if (channel, market) not in self._subs:
            self._subs.append((channel, market))
        if channel == "book" and market not in self.books:
            self.books[market] = LocalBook(market)
        await self._call("subscribe", {"channel": channel, "market": market})

    async def subscribe_book(self, market: str, timeout_s: float = 10.0) -> LocalBook:
        """Subscribe and wait for the snapshot."""
        await self.subscribe("book", market)
        book = self.books[market]
        deadline = time.monotonic() + timeout_s
        while not book.synced:
            book.updated.clear()
            await asyncio.wait_for(book.updated.wait(), max(0.0, deadline - time.monotonic()))
        return book

    async def unsubscribe(self, channel: str, market: str | None = None) -> None:
        with contextlib.suppress(ValueError):
            self._subs.remove((channel, market))
        await self._call("unsubscribe", {"channel": channel, "market": market})

    async def place(self, market: str, side: str, size_lots: int, *, price: str | None = None,
                    order_type: str = "limit", tif: str | None = None, client_order_id: int = 0,
                    reduce_only: bool = False, stp: str = "cancel_newest") -> P.OrderAck:
        params: dict[str, Any] = {"market": market, "side": side, "size_lots": size_lots, "order_type": order_type}
        if price is not None:
            params["price"] = price
        if tif is not None:
            params["tif"] = tif
        if client_order_id:
            params["client_order_id"] = client_order_id
        if reduce_only:
            params["reduce_only"] = True
        if stp != "cancel_newest":
            params["stp"] = stp
        return await self.request("order.place", params, P.OrderAck)

    async def cancel(self, order_id: int = 0, client_order_id: int = 0) -> P.CancelAck:
        return await self.request("order.cancel", {"order_id": order_id, "client_order_id": client_order_id},
                                  P.CancelAck)

    async def cancel_all(self, market: str | None = None) -> P.CancelAllAck:
        return await self.request("order.cancel_all", {"market": market}, P.CancelAllAck)

    async def amend(self, market: str, order_id: int = 0, client_order_id: int = 0, *, price: str | None = None,
                    size_lots: int | None = None) -> P.AmendAck:
        """Amend a resting order; a field left None is unchanged (it is not sent)."""
        params: dict[str, Any] = {"market": market, "order_id": order_id, "client_order_id": client_order_id}
        if size_lots is not None:
            params["size_lots"] = size_lots
        if price is not None:
            params["price"] = price
        return await self.request("order.amend", params, P.AmendAck)

    async def batch(self, ops: list[dict]) -> list[P.BatchItem]:
        """ops: dicts with "op": "place" | "cancel" and the fields of order.place / order.cancel."""
        res = await self.request("order.batch", {"orders": ops})
        return [P.BatchItem(i["ok"], i.get("result"), P.ErrorBody(**i["error"]) if "error" in i else None)
                for i in res["results"]]

    async def cancel_after(self, timeout_ms: int) -> P.CancelAfterAck:
        return await self.request("cancel_after", {"timeout_ms": timeout_ms}, P.CancelAfterAck)

    async def open_orders(self) -> list[P.OpenOrder]:
        return await self.request("query.open_orders", None, list[P.OpenOrder])

    async def account_info(self) -> dict:
        return await self.request("query.account")

    async def funding_history(self, market: str | None = None, limit: int = 100) -> list[P.FundingPayment]:
        """This account's last `limit` funding payments per position, oldest first."""
        return await self.request("query.funding_history", {"market": market, "limit": limit},
                                  list[P.FundingPayment])

    async def markets(self) -> dict:
        return await self.request("query.markets")

    async def deposit(self, account: int, amount_micro: int) -> P.DepositAck:
        """Admin keys only."""
        return await self.request("admin.deposit", {"account": account, "amount_micro": amount_micro}, P.DepositAck)


__all__ = ["ConnectionLost", "Credentials", "GatewayClient", "GatewayCode", "GatewayError", "LocalBook", "PushMsg"]
