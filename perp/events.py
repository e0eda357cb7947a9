"""Events at the edge: kernel event rows as typed msgspec structs (the documented JSON format).

Every event carries `seq` (the sequence number of the command that caused it) and `ts_ns`. Prices
appear twice: `price_ticks` (exact integer) and `price` (the same value as a decimal string in USD
per GPU-hour). Money is integer micro-USD. See docs/events.md.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import numpy as np

from perp import layout as L
from perp.codes import describe
from perp.commands import ADMIN_NAMES, fix_vintage_date
from perp.markets import MarketSpec, ticks_to_price

_SIDE = ("buy", "sell")
_TYPE = ("limit", "market")
_TIF = ("gtc", "ioc", "fok", "post_only")
_STATUS = ("active", "post_only", "cancel_only", "reduce_only", "halted")
_CMD = {L.CK_PLACE: "place", L.CK_CANCEL: "cancel", L.CK_CANCEL_ALL: "cancel_all", L.CK_AMEND: "amend",
        L.CK_SET_INDEX: "set_index", L.CK_SET_STATUS: "set_status", L.CK_DEPOSIT: "deposit",
        L.CK_WITHDRAW: "withdraw", L.CK_SET_LEVERAGE: "set_leverage", L.CK_LIQUIDATE: "liquidate",
        L.CK_SET_INSURANCE_FLOOR: "set_insurance_floor", L.CK_FUND_DEPOSIT: "fund_deposit",
        L.CK_CLOCK_GAP: "clock_gap", L.CK_ADMIN: "admin"}
_VALIDITY = ("fresh", "revised", "aging", "suppressed", "diverged", "too_volatile", "non_positive", "stale")
_PHASE = {L.LQ_STARTED: "started", L.LQ_ORDER: "order", L.LQ_FEE: "fee", L.LQ_BACKSTOP: "backstop",
          L.LQ_ADL: "adl", L.LQ_BAD_DEBT: "bad_debt", L.LQ_DONE: "done", L.LQ_SWEEP: "sweep",
          L.LQ_FUND_BELOW_FLOOR: "fund_below_floor", L.LQ_ADL_START: "adl_start",
          L.LQ_FUND_TAKEOVER: "fund_takeover", L.LQ_FUND_UNWIND: "fund_unwind", L.LQ_DEFERRED: "deferred",
          L.LQ_RATE_LIMITED: "rate_limited", L.LQ_SOCIALISED: "socialised"}
RATE_LIMITS = {L.RL_SWEEP_NOTIONAL: "notional_per_sweep", L.RL_MINUTE_NOTIONAL: "notional_per_minute",
               L.RL_INSURANCE_LOSS: "insurance_loss_per_minute", L.RL_UNWIND_PACE: "fund_unwind_per_minute"}


class _Ev(msgspec.Struct, frozen=True, tag_field="type"):
    seq: int
    ts_ns: int


class Accepted(_Ev, tag="accepted"):
    market: str
    account: int
    order_id: int
    client_order_id: int
    side: str
    order_type: str
    tif: str
    price_ticks: int
    price: str
    size_lots: int


class Rejected(_Ev, tag="rejected"):
    command: str
    account: int
    client_order_id: int
    order_id: int
    code: int
    reason: str


class Fill(_Ev, tag="fill"):
    market: str
    account: int
    order_id: int
    client_order_id: int
    side: str
    liquidity: str
    price_ticks: int
    price: str
    size_lots: int
    remaining_lots: int
    fee_micro: int
    counterparty_order_id: int


class Cancelled(_Ev, tag="cancelled"):
    market: str
    account: int
    order_id: int
    client_order_id: int
    side: str
    price_ticks: int
    size_lots: int
    code: int
    reason: str


class Amended(_Ev, tag="amended"):
    market: str
    account: int
    order_id: int
    client_order_id: int
    side: str
    price_ticks: int
    price: str
    size_lots: int
    kept_priority: bool
    old_price_ticks: int


class BookLevel(_Ev, tag="book"):
    market: str
    side: str
    price_ticks: int
    price: str
    size_lots: int
    orders: int


class IndexSet(_Ev, tag="index"):
    market: str
    price_ticks: int
    price: str
    funding_frozen: bool
    gates: int = 0  # layout.GATE_* bits in force from this anchor on
    leverage_scale_ppm: int = 1_000_000
    fix_price_ticks: int = 0  # the last usable fix (0: none)
    validity: str = "fresh"
    fix_vintage: str | None = None  # that fix's vintage (provisional / final / revised; None: not given)
    fix_date: str | None = None  # that fix's UTC date, YYYY-MM-DD (None: not given)


class Deposited(_Ev, tag="deposit"):
    account: int
    amount_micro: int
    collateral_micro: int


class Withdrawn(_Ev, tag="withdrawal"):
    account: int
    amount_micro: int
    collateral_micro: int


class LeverageSet(_Ev, tag="leverage"):
    market: str
    account: int
    leverage: int
    previous: int  # 0: the market default


class FundingPaid(_Ev, tag="funding"):
    """One market's hourly funding. Each position received floor(-lots x index_ticks x
    micro_per_tick_lot x rate_ppb / 1e9) micro-USD (negative: paid)."""

    market: str
    rate_ppb: int
    index_ticks: int
    paid_micro: int  # by the payers, in all
    remainder_micro: int  # rounding, to the insurance fund
    samples: int
    frozen: bool


class MarkChanged(_Ev, tag="mark"):
    market: str
    price_ticks: int
    price: str
    index_ticks: int
    basis_ema_uticks: int


class StatusChanged(_Ev, tag="status"):
    market: str
    status: str
    previous: str


class CancelAllDone(_Ev, tag="cancel_all_done"):
    account: int
    market: str | None
    cancelled: int


class LiquidationStep(_Ev, tag="liquidation"):
    """One step of the waterfall. Fields by phase (docs/liquidation.md):
    started: amount = equity, other = maintenance margin; order: lots asked, filled, price = limit
    (bankruptcy price); fee: amount = liquidation fee to the fund; backstop: lots the fund took at
    price, amount = its loss at the mark, other = its equity after; adl_start: lots to deleverage,
    amount = fund equity, other = floor, filled = bankrupt equity; adl: account = the counterparty,
    lots at price, amount = its rank, other = the bankrupt account, filled = lots still to absorb;
    bad_debt: amount paid by the fund (within and below its floor), filled = the whole debt, other = the
    part socialised over winners, extra = the fund's equity after; done: amount = equity, other =
    maintenance margin; sweep: lots = accounts liquidated, filled = accounts checked, amount = flat
    debts settled, other = accounts selected, extra = positions left waiting.
    Issue 10 phases: fund_takeover (account = the fund; lots at price; amount = the fund's equity
    after, filled = its maintenance margin after, other = the liquidated account, extra = the floor);
    fund_unwind (account = the fund; lots asked, filled at most at price; amount = the fund's equity
    after, other = its position after, extra = the floor); fund_below_floor (lots taken at price with
    no solvent counterparty left, or the fund's whole position when a sweep finds its equity below
    the floor; amount = the loss at the mark, other = the fund's equity, filled = the floor);
    deferred (market; lots = unhealthy positions waiting, amount = the fund's equity, other = the
    market status); rate_limited (account, -1 for the fund's unwind; lots that wait or, for the
    insurance loss budget, go on to ADL; amount = the budget left; `limit` names it; filled = 1 while
    the oracle's throttle gate is on); socialised (account = the winner charged amount; filled = its
    unrealised profit before); adl: extra = `haircut_micro`, what the counterparty gave up against
    the mark."""

    phase: str
    market: str | None
    account: int
    order_id: int
    side: str  # order: the liquidation order's side; backstop/adl/fund_below_floor: what the taker did
    price_ticks: int
    lots: int
    filled: int
    amount_micro: int
    other: int
    # adl steps carry their explanation (from the sweep's adl_start for the same bankrupt account):
    bankrupt_equity_micro: int | None = None  # the bankrupt account's equity (its loss when negative)
    fund_equity_micro: int | None = None  # the fund's equity when ADL started
    fund_floor_micro: int | None = None  # the floor it could not go below
    extra: int = 0  # one more number, by phase (see above)
    haircut_micro: int | None = None  # adl: what the counterparty gave up against the mark
    limit: str | None = None  # rate_limited: which limit bound

class InsuranceFloorSet(_Ev, tag="insurance_floor"):
    market: str | None  # None: every market
    amount_micro: int


class FundDeposited(_Ev, tag="fund_deposit"):
    """An operator's top-up of an insurance fund account."""

    account: int
    amount_micro: int
    fund_cash_after_micro: int


class ClockGapCrossed(_Ev, tag="clock_gap"):
    """The clock crossed a gap (the venue was down): the funding hours it skipped paid nothing."""

    skipped_funding_hours: int
    previous_ts_ns: int


class AdminApplied(_Ev, tag="admin"):
    """An admin command was accepted and applied (docs/operations.md): its changes are in the audit log
    under this `seq`; `pending` says they wait for `effective_ts_ns` (otherwise in force from `ts_ns`)."""

    command: str
    market: str | None
    effective_ts_ns: int
    pending: bool
    entries: int  # audit entries it wrote (one per changed field)


class AdminEffective(_Ev, tag="admin_effective"):
    """Pending changes of the admin command at `origin_seq` took effect (emitted by the command whose
    time reached `effective_ts_ns`)."""

    command: str
    market: str | None
    origin_seq: int
    effective_ts_ns: int


Event = (Accepted | Rejected | Fill | Cancelled | Amended | BookLevel | IndexSet | MarkChanged
         | StatusChanged | CancelAllDone | Deposited | Withdrawn | LeverageSet | FundingPaid | LiquidationStep
         | InsuranceFloorSet | FundDeposited | ClockGapCrossed | AdminApplied | AdminEffective)


def decode_rows(rows: np.ndarray, specs: list[MarketSpec]) -> Iterator[Event]:
    """Kernel event rows to structs, in order."""
    symbols = [s.symbol for s in specs]
    adl_context: dict[tuple[int, int], tuple[int, int, int]] = {}  # (seq, bankrupt) -> explanation
    for r in rows.tolist():
        kind = r[L.E_KIND]
        seq, ts, m = r[L.E_SEQ], r[L.E_TS], r[L.E_MARKET]
        if kind == L.EV_REJECTED:
            command = (ADMIN_NAMES.get(r[L.E_CLID], "admin") if r[L.E_OTHER] == L.CK_ADMIN
                       else _CMD.get(r[L.E_OTHER], str(r[L.E_OTHER])))
            yield Rejected(seq, ts, command, r[L.E_ACCOUNT], r[L.E_CLID], r[L.E_ORDER_ID], r[L.E_CODE],
                           describe(r[L.E_CODE]))
            continue
        sym = symbols[m] if 0 <= m < len(symbols) else None
        spec = specs[m] if 0 <= m < len(specs) else None
        if kind == L.EV_ACCEPTED:
            other = r[L.E_OTHER]
            yield Accepted(seq, ts, sym, r[L.E_ACCOUNT], r[L.E_ORDER_ID], r[L.E_CLID], _SIDE[r[L.E_SIDE]],
                           _TYPE[other // 16], _TIF[other % 16], r[L.E_PRICE], ticks_to_price(spec, r[L.E_PRICE]),
                           r[L.E_SIZE])
        elif kind == L.EV_FILL:
            yield Fill(seq, ts, sym, r[L.E_ACCOUNT], r[L.E_ORDER_ID], r[L.E_CLID], _SIDE[r[L.E_SIDE]],
                       "maker" if r[L.E_CODE] == L.LIQ_MAKER else "taker", r[L.E_PRICE],
                       ticks_to_price(spec, r[L.E_PRICE]), r[L.E_SIZE], r[L.E_REMAINING], r[L.E_FEE],
                       r[L.E_OTHER])
        elif kind == L.EV_CANCELLED:
            yield Cancelled(seq, ts, sym, r[L.E_ACCOUNT], r[L.E_ORDER_ID], r[L.E_CLID], _SIDE[r[L.E_SIDE]],
                            r[L.E_PRICE], r[L.E_SIZE], r[L.E_CODE], describe(r[L.E_CODE]))
        elif kind == L.EV_AMENDED:
            yield Amended(seq, ts, sym, r[L.E_ACCOUNT], r[L.E_ORDER_ID], r[L.E_CLID], _SIDE[r[L.E_SIDE]],
                          r[L.E_PRICE], ticks_to_price(spec, r[L.E_PRICE]), r[L.E_SIZE], r[L.E_CODE] == 1,
                          r[L.E_OTHER])
        elif kind == L.EV_BOOK:
            yield BookLevel(seq, ts, sym, _SIDE[r[L.E_SIDE]], r[L.E_PRICE], ticks_to_price(spec, r[L.E_PRICE]),
                            r[L.E_SIZE], r[L.E_REMAINING])
        elif kind == L.EV_INDEX:
            v = r[L.E_CLID]
            vintage, day = fix_vintage_date(r[L.E_FEE])
            yield IndexSet(seq, ts, sym, r[L.E_PRICE], ticks_to_price(spec, r[L.E_PRICE]), r[L.E_CODE] == 1,
                           r[L.E_OTHER], r[L.E_SIZE], r[L.E_REMAINING], _VALIDITY[v] if 0 <= v < len(_VALIDITY) else str(v),
                           vintage, None if day is None else day.isoformat())
        elif kind == L.EV_MARK:
            yield MarkChanged(seq, ts, sym, r[L.E_PRICE], ticks_to_price(spec, r[L.E_PRICE]), r[L.E_OTHER],
                              r[L.E_FEE])
        elif kind == L.EV_STATUS:
            yield StatusChanged(seq, ts, sym, _STATUS[r[L.E_CODE]], _STATUS[r[L.E_OTHER]])
        elif kind == L.EV_CANCEL_ALL_DONE:
            yield CancelAllDone(seq, ts, r[L.E_ACCOUNT], sym, r[L.E_SIZE])
        elif kind == L.EV_DEPOSIT:
            yield Deposited(seq, ts, r[L.E_ACCOUNT], r[L.E_SIZE], r[L.E_FEE])
        elif kind == L.EV_WITHDRAWAL:
            yield Withdrawn(seq, ts, r[L.E_ACCOUNT], r[L.E_SIZE], r[L.E_FEE])
        elif kind == L.EV_LEVERAGE:
            yield LeverageSet(seq, ts, sym, r[L.E_ACCOUNT], r[L.E_SIZE], r[L.E_OTHER])
        elif kind == L.EV_FUNDING:
            yield FundingPaid(seq, ts, sym, r[L.E_FEE], r[L.E_PRICE], r[L.E_SIZE], r[L.E_OTHER], r[L.E_REMAINING],
                              r[L.E_CODE] == 1)
        elif kind == L.EV_LIQUIDATION:
            phase = r[L.E_CODE]
            why = (None, None, None)
            if phase == L.LQ_ADL_START:
                adl_context[(seq, r[L.E_ACCOUNT])] = (r[L.E_REMAINING], r[L.E_FEE], r[L.E_OTHER])
            elif phase == L.LQ_ADL:
                why = adl_context.get((seq, r[L.E_OTHER]), why)
            yield LiquidationStep(seq, ts, _PHASE.get(phase, str(phase)), sym, r[L.E_ACCOUNT], r[L.E_ORDER_ID],
                                  _SIDE[r[L.E_SIDE]], r[L.E_PRICE], r[L.E_SIZE], r[L.E_REMAINING], r[L.E_FEE],
                                  r[L.E_OTHER], *why, extra=r[L.E_CLID],
                                  haircut_micro=r[L.E_CLID] if phase == L.LQ_ADL else None,
                                  limit=RATE_LIMITS.get(r[L.E_OTHER]) if phase == L.LQ_RATE_LIMITED else None)
        elif kind == L.EV_INSURANCE_FLOOR:
            yield InsuranceFloorSet(seq, ts, sym, r[L.E_SIZE])
        elif kind == L.EV_FUND_DEPOSIT:
            yield FundDeposited(seq, ts, r[L.E_ACCOUNT], r[L.E_SIZE], r[L.E_FEE])
        elif kind == L.EV_CLOCK_GAP:
            yield ClockGapCrossed(seq, ts, r[L.E_SIZE], r[L.E_OTHER])
        elif kind == L.EV_ADMIN:
            yield AdminApplied(seq, ts, ADMIN_NAMES.get(r[L.E_CLID], str(r[L.E_CLID])), sym, r[L.E_PRICE],
                               r[L.E_CODE] == 1, r[L.E_SIZE])
        elif kind == L.EV_ADMIN_EFFECTIVE:
            yield AdminEffective(seq, ts, ADMIN_NAMES.get(r[L.E_CLID], str(r[L.E_CLID])), sym, r[L.E_ORDER_ID],
                                 r[L.E_PRICE])
        else:  # pragma: no cover - the kernel emits only the kinds above
            raise ValueError(f"unknown event kind {kind}")


_encoder = msgspec.json.Encoder()


def to_json_line(event: Event) -> bytes:
    return _encoder.encode(event)
