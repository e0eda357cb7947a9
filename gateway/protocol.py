"""The gateway's wire protocol: one msgspec Struct for every request, reply and push (docs/protocol.md).

Frames are JSON text. A request is `{"id", "method", "params"}`; its reply is
`{"id", "ok", "result"}` or `{"id", "ok": false, "error": {"code", "msg"}}`; a push is
`{"channel", "market", "type", "seq", "prev_seq", "ts_ns", "data"}`.

Every params struct forbids unknown fields, so a misspelt field is an error (code 4003), never
silently ignored. Prices travel as decimal strings on the market's tick grid (off-grid input is
refused, never rounded), sizes as integer lots, money as integer micro-USD, times as UTC
nanoseconds. `PROTOCOL_VERSION` is sent at logon and in every `hello`; a client asking for another
major version is refused (4004).

This module is shared by the server and the client and holds no logic beyond parsing.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from gateway.errors import GatewayCode

PROTOCOL_VERSION = 1
MAX_BATCH = 20  # places and cancels in one `order.batch` frame
MAX_CLIENT_ORDER_ID = (1 << 40) - 1  # the engine's client order id range (perp.layout.MAX_CLIENT_ORDER_ID)

RequestId = Annotated[int, Meta(ge=0, le=(1 << 53) - 1)]
Lots = Annotated[int, Meta(ge=1, le=10**12)]
ClientOrderId = Annotated[int, Meta(ge=0, le=MAX_CLIENT_ORDER_ID)]
OrderId = Annotated[int, Meta(ge=0, le=(1 << 62))]
Nonce = Annotated[str, Meta(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Hex = Annotated[str, Meta(min_length=2, max_length=256, pattern=r"^[0-9a-f]+$")]
Symbol = Annotated[str, Meta(min_length=1, max_length=32)]
PriceText = Annotated[str, Meta(min_length=1, max_length=32, pattern=r"^[0-9]+(\.[0-9]+)?$")]
Side = Literal["buy", "sell"]
OrderType = Literal["limit", "market"]
TimeInForce = Literal["gtc", "ioc", "fok", "post_only"]
StpMode = Literal["cancel_newest", "cancel_oldest", "cancel_both"]
Channel = Literal["book", "trades", "ticker", "liquidations", "funding", "user"]
Permission = Literal["read", "trade", "admin"]


class _Params(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


# ---- requests --------------------------------------------------------------------------------
class Request(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The envelope; `params` is decoded by the method's own struct (METHODS)."""

    id: RequestId
    method: Annotated[str, Meta(max_length=64)]
    params: msgspec.Raw = msgspec.Raw(b"{}")


class Empty(_Params):
    pass


class Logon(_Params):
    """Signed over `logon_payload(key, ts_ns, nonce)`: Ed25519 (hex signature of 64 bytes) or
    HMAC-SHA256 with the key's secret (hex digest of 32 bytes)."""

    key: Annotated[str, Meta(min_length=1, max_length=64)]
    ts_ns: Annotated[int, Meta(ge=0)]
    nonce: Nonce
    signature: Hex
    version: int = PROTOCOL_VERSION


class Subscribe(_Params):
    channel: Channel
    market: Symbol | None = None  # required for book, trades, ticker; the user channel covers all markets


class Unsubscribe(Subscribe):
    pass


class PlaceOrder(_Params, tag_field="op", tag="place"):
    market: Symbol
    side: Side
    size_lots: Lots
    order_type: OrderType = "limit"
    tif: TimeInForce | None = None  # limit: gtc; market: ioc
    price: PriceText | None = None  # limit orders only
    client_order_id: ClientOrderId = 0  # 0: none; otherwise unique per account for the server's lifetime
    reduce_only: bool = False
    stp: StpMode = "cancel_newest"


class CancelOrder(_Params, tag_field="op", tag="cancel"):
    """Exactly one of `order_id` and `client_order_id`."""

    order_id: OrderId = 0
    client_order_id: ClientOrderId = 0


class CancelAll(_Params):
    market: Symbol | None = None  # None: every market


class AmendOrder(_Params):
    market: Symbol
    order_id: OrderId = 0
    client_order_id: ClientOrderId = 0
    price: PriceText | msgspec.UnsetType = msgspec.UNSET  # absent: unchanged (an explicit 0 is refused)
    size_lots: Annotated[int, Meta(ge=1, le=10**12)] | msgspec.UnsetType = msgspec.UNSET  # absent: unchanged


class Batch(_Params):
    orders: Annotated[list[PlaceOrder | CancelOrder], Meta(min_length=1)]


class CancelAfter(_Params):
    """Dead-man's switch: cancel every open order of this account unless refreshed within
    `timeout_ms`. 0 disarms."""

    timeout_ms: Annotated[int, Meta(ge=0, le=600_000)]


class FundingHistoryQuery(_Params):
    market: Symbol | None = None  # None: every market
    limit: Annotated[int, Meta(ge=1, le=1000)] = 100  # the last `limit` payments, oldest first


class AdminDeposit(_Params):
    account: Annotated[int, Meta(ge=16, le=(1 << 22) - 1)]
    amount_micro: Annotated[int, Meta(ge=1, le=10**15)]


METHODS: dict[str, tuple[type, str | None]] = {
    # method: (params struct, permission needed; None: no logon needed)
    "ping": (Empty, None),
    "logon": (Logon, None),
    "subscribe": (Subscribe, None),  # the user channel needs `read`, checked by the server
    "unsubscribe": (Unsubscribe, None),
    "query.markets": (Empty, None),
    "order.place": (PlaceOrder, "trade"),
    "order.cancel": (CancelOrder, "trade"),
    "order.cancel_all": (CancelAll, "trade"),
    "order.amend": (AmendOrder, "trade"),
    "order.batch": (Batch, "trade"),
    "cancel_after": (CancelAfter, "trade"),
    "query.open_orders": (Empty, "read"),
    "query.account": (Empty, "read"),
    "query.funding_history": (FundingHistoryQuery, "read"),
    "admin.deposit": (AdminDeposit, "admin"),
}
_PARAM_DECODERS = {name: msgspec.json.Decoder(t) for name, (t, _) in METHODS.items()}


def register_methods(methods: dict[str, tuple[type, str | None]]) -> None:
    """Add a module's methods to the table (gateway.admin registers the admin API this way, so its
    params structs live beside their handlers). A name already taken is a programming error."""
    taken = sorted(m for m in set(methods) & set(METHODS) if METHODS[m] != methods[m])
    if taken:
        raise ValueError(f"methods already registered: {taken}")
    METHODS.update(methods)
    _PARAM_DECODERS.update({name: msgspec.json.Decoder(t) for name, (t, _) in methods.items()})
_request_decoder = msgspec.json.Decoder(Request)


class ProtocolError(Exception):
    """A frame the gateway refuses before doing anything: carries the code and the request id (if
    the envelope could be read)."""

    def __init__(self, code: GatewayCode, msg: str, request_id: int | None = None):
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.request_id = request_id


def parse_request(frame: bytes | str) -> tuple[Request, Any]:
    """Decode one frame into (envelope, params struct); raises ProtocolError with 4000-4003."""
    try:
        req = _request_decoder.decode(frame)
    except msgspec.ValidationError as exc:
        raise ProtocolError(GatewayCode.BAD_REQUEST, str(exc), _peek_id(frame)) from None
    except msgspec.DecodeError as exc:
        raise ProtocolError(GatewayCode.BAD_JSON, str(exc)) from None
    decoder = _PARAM_DECODERS.get(req.method)
    if decoder is None:
        raise ProtocolError(GatewayCode.UNKNOWN_METHOD, f"unknown method {req.method!r}", req.id)
    try:
        params = decoder.decode(req.params)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise ProtocolError(GatewayCode.BAD_PARAMS, f"{req.method}: {exc}", req.id) from None
    return req, params


class _IdOnly(msgspec.Struct):
    id: Any = None


def _peek_id(frame: bytes | str) -> int | None:
    try:
        rid = msgspec.json.decode(frame, type=_IdOnly).id
    except msgspec.DecodeError:
        return None
    return rid if isinstance(rid, int) and not isinstance(rid, bool) and 0 <= rid < (1 << 53) else None


def logon_payload(key: str, ts_ns: int, nonce: str) -> bytes:
    """The exact bytes a logon signs."""
    return f"perp-logon/v{PROTOCOL_VERSION}\n{key}\n{ts_ns}\n{nonce}".encode()


# ---- replies ---------------------------------------------------------------------------------
class ErrorBody(msgspec.Struct, frozen=True, omit_defaults=True):
    code: int
    msg: str
    engine_code: int | None = None  # with ENGINE_REJECTED: the engine's result code (perp/codes.py)
    field: str | None = None  # admin refusals: the field the engine names ("tiers[1].maintenance_margin_ppm")
    what_if: Any = None  # admin refusals that need confirmation: the engine's what-if


class Reply(msgspec.Struct, frozen=True, omit_defaults=True):
    id: int | None
    ok: bool
    result: Any = None
    error: ErrorBody | None = None


class Hello(msgspec.Struct, frozen=True):
    """Pushed once on connect (channel "hello")."""

    version: int
    server_ts_ns: int
    conn_id: int
    max_batch: int
    max_frame_bytes: int


class LogonResult(msgspec.Struct, frozen=True):
    key: str
    account: int
    permissions: list[str]
    server_ts_ns: int


class FillInfo(msgspec.Struct, frozen=True):
    price: str
    size_lots: int
    fee_micro: int
    liquidity: str


class OrderAck(msgspec.Struct, frozen=True):
    """The fate of one place or amend, once its command is journaled (fsynced) and processed.

    status: `resting` (on the book with `remaining_lots`), `filled`, `cancelled` (an IOC/FOK or
    market remainder, or self-trade prevention; `filled_lots` may be > 0)."""

    seq: int
    order_id: int
    client_order_id: int
    status: str
    filled_lots: int
    remaining_lots: int
    fills: list[FillInfo]


class CancelAck(msgspec.Struct, frozen=True):
    seq: int
    order_id: int
    client_order_id: int
    cancelled_lots: int


class CancelAllAck(msgspec.Struct, frozen=True):
    seq: int
    cancelled: int


class AmendAck(msgspec.Struct, frozen=True):
    seq: int
    order_id: int
    client_order_id: int
    price: str
    remaining_lots: int
    kept_priority: bool


class BatchItem(msgspec.Struct, frozen=True, omit_defaults=True):
    ok: bool
    result: Any = None
    error: ErrorBody | None = None


class CancelAfterAck(msgspec.Struct, frozen=True):
    timeout_ms: int
    deadline_ts_ns: int  # 0: disarmed


class DepositAck(msgspec.Struct, frozen=True):
    seq: int
    account: int
    collateral_micro: int


class OpenOrder(msgspec.Struct, frozen=True):
    market: str
    order_id: int
    client_order_id: int
    side: str
    price: str
    remaining_lots: int


# ---- pushes ----------------------------------------------------------------------------------
class Push(msgspec.Struct, frozen=True):
    channel: str
    market: str | None
    type: str  # "snapshot" | "delta" | "update"
    seq: int  # the engine sequence number this push is consistent with
    prev_seq: int  # seq of the previous push of this (channel, market) stream; 0 before the first
    ts_ns: int
    data: Any


class BookData(msgspec.Struct, frozen=True, array_like=False):
    """Levels as [price, size_lots]; in a delta a size is the level's new absolute size (0: gone).
    Snapshots: bids best (highest) first, asks best (lowest) first."""

    bids: list[tuple[str, int]]
    asks: list[tuple[str, int]]


class Trade(msgspec.Struct, frozen=True):
    price: str
    size_lots: int
    taker_side: str
    seq: int


class Ticker(msgspec.Struct, frozen=True):
    mark: str | None
    index: str | None
    best_bid: str | None
    best_ask: str | None
    open_interest_lots: int
    predicted_funding_rate_ppb: int  # what this hour's premium samples give so far
    last_funding_rate_ppb: int
    next_funding_ts_ns: int
    funding_frozen: bool
    oracle_validity: int  # oracle.validity order: 0 = fresh
    fix_price: str | None = None  # the last usable fix the oracle's set_index carried (None: none)
    fix_vintage: str | None = None  # its vintage: provisional / final / revised (None: not given)
    fix_date: str | None = None  # its UTC date, YYYY-MM-DD (None: not given)


class FundingPayment(msgspec.Struct, frozen=True, tag_field="type", tag="funding_payment"):
    """One position's hourly funding on the user channel, derived exactly from the engine: the
    change of the position's cumulative funding (`funding_micro` of the account view) across the
    batch that carried the market's `funding` event. Every command of a batch has one timestamp,
    so the hour is crossed before the batch's first command and `lots` (the position before the
    batch) is the position that was charged: amount = floor(-lots x index_ticks x micro_per_tick_lot
    x rate_ppb / 1e9), positive when received."""

    seq: int
    ts_ns: int
    market: str
    account: int
    lots: int
    rate_ppb: int
    index_ticks: int
    amount_micro: int


class PublicLiquidation(msgspec.Struct, frozen=True):
    """A liquidation step on the public `liquidations` channel: no account ids."""

    seq: int
    phase: str
    side: str
    price_ticks: int
    lots: int
    filled: int


class PublicFunding(msgspec.Struct, frozen=True):
    seq: int
    rate_ppb: int
    index_ticks: int
    paid_micro: int
    frozen: bool


class Incoming(msgspec.Struct, frozen=True):
    """What a client reads: a reply (id, ok) or a push (channel); `result`/`data` stay raw until
    the caller knows their type."""

    id: int | None = None
    ok: bool | None = None
    result: msgspec.Raw = msgspec.Raw(b"null")
    error: ErrorBody | None = None
    channel: str | None = None
    market: str | None = None
    type: str | None = None
    seq: int = 0
    prev_seq: int = 0
    ts_ns: int = 0
    data: msgspec.Raw = msgspec.Raw(b"null")
