"""Commands at the edge: typed msgspec structs (the documented JSON format) and their kernel rows.

One JSON object per command, tagged by `type`. Prices are decimal strings in USD per GPU-hour and
must lie on the market's tick grid (rejected otherwise, never rounded); sizes are integer lots;
`ts_ns` is the command's UTC timestamp in nanoseconds (the engine has no other clock).
See docs/commands.md.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Annotated, Literal

import msgspec
import numpy as np

from perp import layout as L
from perp.markets import MarketsConfig, MarketSpec, clip_text, price_to_ticks
from risk.tiers import LeverageTier

I64 = Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)]  # every integer field: int64 or refused
MAX_LINE_BYTES = 4096  # a command line longer than this is refused before it is parsed

Side = Literal["buy", "sell"]
OrderType = Literal["limit", "market"]
TimeInForce = Literal["gtc", "ioc", "fok", "post_only"]
StpMode = Literal["cancel_newest", "cancel_oldest", "cancel_both"]
Status = Literal["active", "post_only", "cancel_only", "reduce_only", "halted"]

SIDES = {"buy": L.BUY, "sell": L.SELL}
ORDER_TYPES = {"limit": L.LIMIT, "market": L.MARKET}
TIFS = {"gtc": L.GTC, "ioc": L.IOC, "fok": L.FOK, "post_only": L.POST_ONLY}
STP_MODES = {"cancel_newest": L.STP_CANCEL_NEWEST, "cancel_oldest": L.STP_CANCEL_OLDEST,
             "cancel_both": L.STP_CANCEL_BOTH}
STATUSES = {"active": L.ST_ACTIVE, "post_only": L.ST_POST_ONLY, "cancel_only": L.ST_CANCEL_ONLY,
            "reduce_only": L.ST_REDUCE_ONLY, "halted": L.ST_HALTED}


class _Cmd(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type"):
    ts_ns: I64


class Place(_Cmd, tag="place"):
    account: I64
    market: str
    side: Side
    size_lots: I64
    order_type: OrderType = "limit"
    tif: TimeInForce | None = None  # limit: gtc; market: ioc
    price: str | None = None  # required for limit orders
    client_order_id: I64 = 0
    reduce_only: bool = False
    stp: StpMode = "cancel_newest"


class Cancel(_Cmd, tag="cancel"):
    account: I64
    order_id: I64 = 0
    client_order_id: I64 = 0


class CancelAll(_Cmd, tag="cancel_all"):
    account: I64
    market: str | None = None  # None: every market


class Amend(_Cmd, tag="amend"):
    account: I64
    market: str
    order_id: I64 = 0
    client_order_id: I64 = 0
    price: str | msgspec.UnsetType = msgspec.UNSET  # absent: unchanged
    size_lots: I64 | msgspec.UnsetType = msgspec.UNSET  # the new remaining size; absent: unchanged


Validity = Literal["fresh", "revised", "aging", "suppressed", "diverged", "too_volatile", "non_positive", "stale"]
VALIDITY_CODES = {v: i for i, v in enumerate(Validity.__args__)}  # oracle.validity.Validity order
FixVintage = Literal["provisional", "final", "revised"]  # oracle.records.Vintage
FIX_VINTAGE_CODES = {"provisional": L.FIX_VINTAGE_PROVISIONAL, "final": L.FIX_VINTAGE_FINAL,
                     "revised": L.FIX_VINTAGE_REVISED}
FIX_VINTAGE_NAMES = {v: k for k, v in FIX_VINTAGE_CODES.items()}


def packed_fix_vintage_date(set_index_row) -> int:
    """`mkt[m, M_FIX_VINTAGE_DATE]` as the kernel's `_set_index` packs it from a set_index command row
    (its C_SIDE vintage code and C_TIF date ordinal)."""
    return (int(set_index_row[L.C_TIF]) << L.FIX_DAY_SHIFT) | int(set_index_row[L.C_SIDE])


def fix_vintage_date(packed: int) -> tuple[str | None, dt.date | None]:
    """(vintage name, fix date) of a packed `mkt[m, M_FIX_VINTAGE_DATE]` (or an `index` event's): the
    vintage code in the low FIX_DAY_SHIFT bits, the date's ordinal above them; None for "not given"."""
    packed = int(packed)
    day = packed >> L.FIX_DAY_SHIFT
    return (FIX_VINTAGE_NAMES.get(packed & ((1 << L.FIX_DAY_SHIFT) - 1)),
            dt.date.fromordinal(day) if 0 < day <= L.MAX_FIX_DAY else None)


class SetIndex(_Cmd, tag="set_index"):
    """The oracle's hourly anchor with its validity and gates (oracle.validity.Gates), which the
    engine stores per market and applies to every later command (perp/gate.py)."""

    market: str
    price: str
    funding_frozen: bool = False  # no funding accrues while this anchor holds
    margin_on_worse_of_anchor_and_fix: bool = False
    reduce_only: bool = False
    leverage_scale_ppm: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 1_000_000  # 1x = no scale
    liquidations_throttled: bool = False
    order_band_frozen: bool = False
    fix_price: str | None = None  # the last usable fix (for margin on the worse of anchor and fix)
    validity: Validity = "fresh"
    fix_vintage: FixVintage | None = None  # that fix's vintage as the oracle holds it (None: not given)
    fix_date: str | None = None  # that fix's UTC date, YYYY-MM-DD (None: not given)


class FundDeposit(_Cmd, tag="fund_deposit"):
    """Retired: always refused by the engine (1033 FUND_DEPOSIT_RETIRED, a `rejected` event; nothing
    changes). A fund takes an operator's money only by the audited admin `fund_top_up` (operator, reason,
    audit entry). Still decoded, so an old command file or client gets that code, not a format error."""

    account: I64
    amount_micro: I64


class ClockGap(_Cmd, tag="clock_gap"):
    """Operator: the venue was down; move the clock to ts_ns however far ahead. Hours without samples
    pay no funding; the hour in progress pays pro rata for the samples it had."""

    settle: Literal["no_funding"] = "no_funding"


class Deposit(_Cmd, tag="deposit"):
    account: I64
    amount_micro: I64


class Withdraw(_Cmd, tag="withdraw"):
    account: I64
    amount_micro: I64


class SetLeverage(_Cmd, tag="set_leverage"):
    account: I64
    market: str
    leverage: I64


class Liquidate(_Cmd, tag="liquidate"):
    """Timer: the liquidation sweep over every account (docs/liquidation.md)."""


class SetInsuranceFloor(_Cmd, tag="set_insurance_floor"):
    amount_micro: I64
    market: str | None = None  # None: every market


class SetStatus(_Cmd, tag="set_status"):
    market: str
    status: Status


# ---- admin commands (issue 15; perp/admin.py applies them, docs/operations.md lists them) ---------------
# Each carries the operator's identity and a reason (1..MAX_OPERATOR_CHARS / MAX_REASON_CHARS printable
# characters, checked by the engine) and travels as a CK_ADMIN row whose payload -- this struct, msgpack --
# is a side record of the journal (perp/journal.py), keyed by a hash that the row carries.
PauseOp = Literal["trading", "liquidation", "funding", "withdrawals"]


class _Admin(_Cmd):
    operator: str
    reason: str


class SetFundingParams(_Admin, tag="set_funding_params"):
    """Funding cap and clamp, effective at the next funding hour."""

    market: str
    cap_ppb: I64
    clamp_ppb: I64


class SetTiers(_Admin, tag="set_tiers"):
    """A market's leverage tiers at `effective_ts_ns` (0: the next funding hour); a non-zero what-if
    needs `confirm`."""

    market: str
    tiers: tuple[LeverageTier, ...]
    effective_ts_ns: I64 = 0
    confirm: bool = False


class SetOpenInterestCap(_Admin, tag="set_open_interest_cap"):
    market: str
    open_interest_cap_lots: I64  # 0: no cap


class SetFees(_Admin, tag="set_fees"):
    market: str
    maker_fee_ppm: I64
    taker_fee_ppm: I64
    fee_share_to_fund_ppm: I64 | None = None  # None: unchanged


class SetLiquidationParams(_Admin, tag="set_liquidation_params"):
    """Liquidation parameters and rate limits; a field left out (None) is unchanged."""

    market: str
    liquidation_fee_share_ppm: I64 | None = None
    liquidation_max_fee_ppm: I64 | None = None
    liquidation_partial_above_usd: I64 | None = None
    liquidation_chunk_ppm: I64 | None = None
    liquidation_cooldown_s: I64 | None = None
    liquidation_buffer_ppm: I64 | None = None
    liquidation_max_per_sweep_usd: I64 | None = None
    liquidation_max_per_minute_usd: I64 | None = None
    insurance_max_loss_per_minute_usd: I64 | None = None
    liquidation_throttle_ppm: I64 | None = None
    fund_unwind_chunk_usd: I64 | None = None
    fund_unwind_limit_bps: I64 | None = None
    fund_unwind_per_minute_usd: I64 | None = None


class SetFundFloor(_Admin, tag="set_fund_floor"):
    """The insurance fund's floor (the audited form of set_insurance_floor)."""

    floor_micro: I64
    market: str | None = None  # None: every market


class FundTopUp(_Admin, tag="fund_top_up"):
    """An operator's deposit into an insurance fund account: the only deposit a fund takes (audited; the
    retired fund_deposit is refused, 1033)."""

    account: I64
    amount_micro: I64


class SetMarketStatus(_Admin, tag="set_market_status"):
    """Market status (the audited form of set_status)."""

    market: str
    status: Status


class SetPauses(_Admin, tag="set_pauses"):
    """The operations paused in a market (None: every market); an empty list resumes all."""

    paused: tuple[PauseOp, ...]
    market: str | None = None


class SetOracleParams(_Admin, tag="set_oracle_params"):
    """The oracle feed's parameters for a market's anchor (applied by the feed at the edge from the next
    hour it renders); a field left out (None) is unchanged."""

    market: str
    half_life_s: I64 | None = None
    max_hourly_move_ppm: I64 | None = None
    fresh_max_age_s: I64 | None = None
    stale_after_s: I64 | None = None


class SuppressFix(_Admin, tag="suppress_fix"):
    """Suppress (or, with `lift`, restore) one day's fix of a market's series, with a reason: the feed
    treats the day as suppressed."""

    market: str
    fix_date: str  # YYYY-MM-DD, the fix's UTC date
    lift: bool = False


class ListMarket(_Admin, tag="list_market"):
    """A new market from a full spec (the fields and rules of a `[[market]]` of perp/markets.toml, its
    `[[market.tier]]` rows included), listed at the command's time with `status`; it gets the next market
    index."""

    spec: MarketSpec
    status: Status = "active"


AdminCommand = (SetFundingParams | SetTiers | SetOpenInterestCap | SetFees | SetLiquidationParams | SetFundFloor
                | FundTopUp | SetMarketStatus | SetPauses | SetOracleParams | SuppressFix | ListMarket)
ADMIN_TYPES: tuple[type, ...] = AdminCommand.__args__
ADMIN_KINDS = {t.__struct_config__.tag: i + 1 for i, t in enumerate(ADMIN_TYPES)}  # the row's C_CLID
ADMIN_NAMES = {v: k for k, v in ADMIN_KINDS.items()}
assert ADMIN_KINDS["fund_top_up"] == L.ADMIN_FUND_TOP_UP  # the kernel credits the fund for this kind only

Command = (Place | Cancel | CancelAll | Amend | SetIndex | SetStatus | Deposit | Withdraw | SetLeverage | Liquidate
           | SetInsuranceFloor | FundDeposit | ClockGap | SetFundingParams | SetTiers | SetOpenInterestCap | SetFees
           | SetLiquidationParams | SetFundFloor | FundTopUp | SetMarketStatus | SetPauses | SetOracleParams
           | SuppressFix | ListMarket)
_admin_decoder = msgspec.msgpack.Decoder(AdminCommand)


def admin_payload(cmd: AdminCommand) -> tuple[int, bytes]:
    """(key, bytes) of an admin command's payload: msgpack of the struct; the key is a 62-bit blake2b of
    those bytes (what the row carries in C_ORDER_ID)."""
    data = msgspec.msgpack.encode(cmd)
    return payload_key(data), data


def payload_key(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") & ((1 << 62) - 1)


def decode_admin_payload(data: bytes) -> AdminCommand:
    return _admin_decoder.decode(data)

_decoder = msgspec.json.Decoder(Command)


class CommandFormatError(ValueError):
    """A command line that is not valid JSON of the documented format (code 5004)."""


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise CommandFormatError(f"duplicate field {clip_text(key)}")
        seen[key] = value
    return seen


def decode_command(line: str | bytes) -> Command:
    """One JSON command, strictly: at most MAX_LINE_BYTES, UTF-8, no duplicate keys, known fields
    only, every integer within int64. Errors are CommandFormatError with user text clipped and
    escaped (code 5004 at the edge)."""
    data = line.encode("utf-8", errors="surrogatepass") if isinstance(line, str) else bytes(line)
    if len(data) > MAX_LINE_BYTES:
        raise CommandFormatError(f"line longer than {MAX_LINE_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandFormatError("not valid UTF-8") from None
    try:
        json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_refuse_constant)
    except CommandFormatError:
        raise
    except (ValueError, RecursionError):
        raise CommandFormatError("not valid JSON") from None
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise CommandFormatError(clip_text(str(exc), 160)) from None


def _refuse_constant(name: str):
    raise CommandFormatError(f"{name} is not a JSON number")


# place_values builds a row as a positional tuple: the column order it assumes
assert (L.C_KIND, L.C_TS, L.C_ACCOUNT, L.C_MARKET, L.C_SIDE, L.C_TYPE, L.C_TIF, L.C_PRICE, L.C_SIZE, L.C_CLID,
        L.C_ORDER_ID, L.C_FLAGS) == tuple(range(L.N_CMD_COLS))


class CommandEncoder:
    """Turns command structs into kernel rows for one markets config."""

    def __init__(self, markets: MarketsConfig):
        self.specs: list[MarketSpec] = list(markets.market)
        self.market_index = {s.symbol: i for i, s in enumerate(self.specs)}
        self.payloads: dict[int, bytes] = {}  # admin payloads by key: what the journal writes as side records

    def add_market(self, spec: MarketSpec) -> int:
        """A listed market (admin `list_market`): its symbol gets the next index; returns it."""
        self.specs.append(spec)
        self.market_index[spec.symbol] = len(self.specs) - 1
        return len(self.specs) - 1

    def _market(self, symbol: str) -> int:
        try:
            return self.market_index[symbol]
        except KeyError:
            raise CommandFormatError(f"unknown market {clip_text(symbol)}") from None

    def _ticks(self, m: int, price: str, field: str = "price") -> int:
        try:
            return price_to_ticks(self.specs[m], price, field)
        except ValueError as exc:
            raise CommandFormatError(str(exc)) from None

    @staticmethod
    def place_values(ts_ns: int, account: int, m: int, side: str, order_type: str, tif: str | None,
                     price_ticks: int, size_lots: int, client_order_id: int, reduce_only: bool,
                     stp: str) -> tuple[int, ...]:
        """A place's kernel row as a tuple (C_* order), from fields already checked and a price
        already on the tick grid (0 for a market order): the gateway's per-order path, which
        builds a batch's rows without a struct or an array per order. `row` uses it for `Place`."""
        tif_code = TIFS[tif or ("gtc" if order_type == "limit" else "ioc")]
        flags = (L.FLAG_REDUCE_ONLY if reduce_only else 0) | (STP_MODES[stp] << L.STP_SHIFT)
        return (L.CK_PLACE, ts_ns, account, m, SIDES[side], ORDER_TYPES[order_type], tif_code, price_ticks,
                size_lots, client_order_id, 0, flags)

    @staticmethod
    def cancel_values(ts_ns: int, account: int, order_id: int, client_order_id: int) -> tuple[int, ...]:
        """A cancel's kernel row as a tuple (C_* order); see `place_values`."""
        return (L.CK_CANCEL, ts_ns, account, -1, 0, 0, 0, 0, 0, client_order_id, order_id, 0)

    def row(self, cmd: Command) -> np.ndarray:
        """The kernel row of one command; raises CommandFormatError on what no row can express."""
        r = np.zeros(L.N_CMD_COLS, np.int64)
        r[L.C_TS] = cmd.ts_ns
        r[L.C_MARKET] = -1
        if isinstance(cmd, Place):
            m = self._market(cmd.market)
            if cmd.order_type == "limit":
                if cmd.price is None:
                    raise CommandFormatError("a limit order needs a price")
                price_ticks = self._ticks(m, cmd.price)
            elif cmd.price is not None:
                raise CommandFormatError("a market order takes no price (it is bounded by the protection band)")
            else:
                price_ticks = 0
            r[:] = self.place_values(cmd.ts_ns, cmd.account, m, cmd.side, cmd.order_type, cmd.tif, price_ticks,
                                     cmd.size_lots, cmd.client_order_id, cmd.reduce_only, cmd.stp)
        elif isinstance(cmd, Cancel):
            r[:] = self.cancel_values(cmd.ts_ns, cmd.account, cmd.order_id, cmd.client_order_id)
        elif isinstance(cmd, CancelAll):
            r[L.C_KIND] = L.CK_CANCEL_ALL
            r[L.C_ACCOUNT] = cmd.account
            r[L.C_MARKET] = -1 if cmd.market is None else self._market(cmd.market)
        elif isinstance(cmd, Amend):
            m = self._market(cmd.market)
            r[L.C_KIND] = L.CK_AMEND
            r[L.C_ACCOUNT] = cmd.account
            r[L.C_MARKET] = m
            r[L.C_ORDER_ID] = cmd.order_id
            r[L.C_CLID] = cmd.client_order_id
            # the kernel reads 0 as "unchanged": only an absent field may say that
            if cmd.price is not msgspec.UNSET:
                r[L.C_PRICE] = self._ticks(m, cmd.price)
                if r[L.C_PRICE] <= 0:
                    raise CommandFormatError(f"price {clip_text(cmd.price)} must be positive (omit it to keep the price)")
            if cmd.size_lots is not msgspec.UNSET:
                if cmd.size_lots <= 0:
                    raise CommandFormatError("size_lots must be positive (omit it to keep the size)")
                r[L.C_SIZE] = cmd.size_lots
        elif isinstance(cmd, SetIndex):
            m = self._market(cmd.market)
            r[L.C_KIND] = L.CK_SET_INDEX
            r[L.C_MARKET] = m
            r[L.C_PRICE] = self._ticks(m, cmd.price)
            r[L.C_FLAGS] = ((L.GATE_FUNDING_FROZEN if cmd.funding_frozen else 0)
                            | (L.GATE_MARGIN_WORSE_OF if cmd.margin_on_worse_of_anchor_and_fix else 0)
                            | (L.GATE_REDUCE_ONLY if cmd.reduce_only else 0)
                            | (L.GATE_LIQ_THROTTLED if cmd.liquidations_throttled else 0)
                            | (L.GATE_BAND_FROZEN if cmd.order_band_frozen else 0))
            if not 1 <= cmd.leverage_scale_ppm <= 1_000_000:  # 0 would read as "no scale" in the row
                raise CommandFormatError(f"leverage_scale_ppm {cmd.leverage_scale_ppm} must be 1 .. 1000000")
            r[L.C_SIZE] = cmd.leverage_scale_ppm
            r[L.C_ORDER_ID] = 0 if cmd.fix_price is None else self._ticks(m, cmd.fix_price, "fix_price")
            r[L.C_CLID] = VALIDITY_CODES[cmd.validity]
            r[L.C_SIDE] = L.FIX_VINTAGE_NONE if cmd.fix_vintage is None else FIX_VINTAGE_CODES[cmd.fix_vintage]
            if cmd.fix_date is not None:
                try:
                    day = dt.date.fromisoformat(cmd.fix_date)
                except (TypeError, ValueError):
                    day = None
                if day is None or day.isoformat() != cmd.fix_date:
                    raise CommandFormatError(f"fix_date {clip_text(cmd.fix_date)} is not a date (YYYY-MM-DD)")
                r[L.C_TIF] = day.toordinal()
        elif isinstance(cmd, SetStatus):
            m = self._market(cmd.market)
            r[L.C_KIND] = L.CK_SET_STATUS
            r[L.C_MARKET] = m
            r[L.C_FLAGS] = STATUSES[cmd.status]
        elif isinstance(cmd, (Deposit, Withdraw, FundDeposit)):
            r[L.C_KIND] = (L.CK_DEPOSIT if isinstance(cmd, Deposit) else L.CK_FUND_DEPOSIT
                           if isinstance(cmd, FundDeposit) else L.CK_WITHDRAW)
            r[L.C_ACCOUNT] = cmd.account
            r[L.C_SIZE] = cmd.amount_micro
        elif isinstance(cmd, SetLeverage):
            r[L.C_KIND] = L.CK_SET_LEVERAGE
            r[L.C_ACCOUNT] = cmd.account
            r[L.C_MARKET] = self._market(cmd.market)
            r[L.C_SIZE] = cmd.leverage
        elif isinstance(cmd, Liquidate):
            r[L.C_KIND] = L.CK_LIQUIDATE
        elif isinstance(cmd, ClockGap):
            r[L.C_KIND] = L.CK_CLOCK_GAP
            r[L.C_FLAGS] = L.GAP_NO_FUNDING
        elif isinstance(cmd, SetInsuranceFloor):
            r[L.C_KIND] = L.CK_SET_INSURANCE_FLOOR
            r[L.C_MARKET] = -1 if cmd.market is None else self._market(cmd.market)
            r[L.C_SIZE] = cmd.amount_micro
        elif isinstance(cmd, ADMIN_TYPES):
            market = getattr(cmd, "market", None)
            key, data = admin_payload(cmd)
            self.payloads[key] = data
            r[L.C_KIND] = L.CK_ADMIN
            r[L.C_MARKET] = -1 if market is None else self._market(market)
            r[L.C_ORDER_ID] = key
            r[L.C_CLID] = ADMIN_KINDS[cmd.__struct_config__.tag]
        else:  # pragma: no cover - the union is closed
            raise CommandFormatError(f"unsupported command {type(cmd).__name__}")
        return r
