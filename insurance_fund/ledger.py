"""The insurance fund's ledger, read from the event stream.

A fund is an account named by market specs (`insurance_fund_account`, default 0, shared by every
market that names it): its collateral is the fund's cash, its positions are what the backstop took over (ordinary positions, closed later through the book). Every movement
of its cash is an event, so its history is derived, never kept twice:

| kind | event | sign |
|---|---|---|
| top_up / withdrawal | `deposit` / `withdrawal` of account 0 | + / - |
| fee_share | `fill` (a share `fee_share_to_fund_ppm` of each positive fee, floor) | + |
| funding_remainder | `funding` (rounding remainder) | + |
| funding | `funding` on the fund's own position, any market: `floor(-lots x index_ticks x micro_per_tick_lot x rate_ppb / 1e9)` (risk.funding.funding_delta_micro, the engine's delta) | +/- |
| liquidation_fee | `liquidation` phase `fee` | + |
| bad_debt | `liquidation` phase `bad_debt` (the part the fund paid, within and below its floor) | - |
| deleveraged | `liquidation` phase `adl` against the fund's own position (below its floor): realised PnL | +/- |
| trading | `fill` of account 0 (closing backstop positions: realised PnL and fees) | +/- |

Backstop takeovers (`liquidation` phase `backstop`) move positions: they show in the fund's equity
at the mark (`Engine.account(0)`), and in the history with the loss at the mark for reference and, as
cash, what they realise -- 0 when the takeover only opens or grows the fund's position; the realised
PnL when it nets a position the fund already holds (a long taken over, then a short). `FundHistory.cash_micro` equals the fund account's collateral
(tested), and the floor below which losses go to ADL is `Engine.ledger()["insurance_floor_micro"]`.
`FundHistory.equity_series()` is the fund's equity (cash + positions at the marks) as the waterfall's
events report it (takeover, unwind, ADL start, bad debt, deferral, below floor).
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from perp.events import (
    Deposited,
    Event,
    Fill,
    FundDeposited,
    FundingPaid,
    LiquidationStep,
    Withdrawn,
)
from perp.markets import MarketSpec, micro_per_tick_lot
from risk.funding import funding_delta_micro


class FundEntry(msgspec.Struct, frozen=True):
    seq: int
    ts_ns: int
    kind: str
    amount_micro: int  # change of the fund's cash (a backstop takeover: what it realises, 0 if it only opens)
    detail: str = ""


class FundHistory(msgspec.Struct):
    entries: list[FundEntry]
    cash_micro: int
    equity: list[tuple[int, int, int]] = []  # (seq, ts_ns, the fund's equity at the marks) from the events

    def equity_series(self) -> list[tuple[int, int, int]]:
        """The fund's equity over time (cash + its positions at the marks), as the waterfall's events
        report it: after each takeover, unwind, ADL start, bad debt, deferral and below-floor step."""
        return list(self.equity)

    def totals(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.entries:
            out[e.kind] = out.get(e.kind, 0) + e.amount_micro
        return out


def fund_history(events: Iterable[Event], specs: list[MarketSpec], fund: int | None = None) -> FundHistory:
    """The history of one fund account (default: the first market's) from the event stream."""
    FUND_ACCOUNT = specs[0].insurance_fund_account if fund is None else fund  # noqa: N806
    mine = {s.symbol for s in specs if s.insurance_fund_account == FUND_ACCOUNT}
    share = {s.symbol: (s.fee_share_to_fund_ppm if s.symbol in mine else 0) for s in specs}
    k = {s.symbol: micro_per_tick_lot(s) for s in specs}
    entries: list[FundEntry] = []
    equity: list[tuple[int, int, int]] = []
    basis: dict[str, tuple[int, int]] = {}  # the fund's own position per market: (lots, cost basis)
    for ev in events:
        if isinstance(ev, (Deposited, FundDeposited)) and ev.account == FUND_ACCOUNT:
            entries.append(FundEntry(ev.seq, ev.ts_ns, "top_up", ev.amount_micro))  # an operator's fund_top_up
        elif isinstance(ev, Withdrawn) and ev.account == FUND_ACCOUNT:
            entries.append(FundEntry(ev.seq, ev.ts_ns, "withdrawal", -ev.amount_micro))
        elif isinstance(ev, Fill):
            if ev.fee_micro > 0 and share[ev.market] and ev.account != FUND_ACCOUNT:
                cut = ev.fee_micro * share[ev.market] // 1_000_000
                if cut:
                    entries.append(FundEntry(ev.seq, ev.ts_ns, "fee_share", cut, f"fill of order {ev.order_id}"))
            if ev.account == FUND_ACCOUNT:
                signed = ev.size_lots if ev.side == "buy" else -ev.size_lots
                cash = _fund_fill_cash(basis, ev.market, signed, ev.price_ticks, k[ev.market]) - ev.fee_micro
                if ev.fee_micro > 0 and share[ev.market]:
                    cash += ev.fee_micro * share[ev.market] // 1_000_000  # its own fee share comes back
                entries.append(FundEntry(ev.seq, ev.ts_ns, "trading", cash, f"closing at {ev.price}"))
        elif isinstance(ev, FundingPaid):
            if ev.remainder_micro and ev.market in mine:
                entries.append(FundEntry(ev.seq, ev.ts_ns, "funding_remainder", ev.remainder_micro, ev.market))
            lots = basis.get(ev.market, (0, 0))[0]
            if lots and ev.rate_ppb:  # the fund's own (backstop) position pays or receives like any other
                delta = int(funding_delta_micro(lots, ev.index_ticks * k[ev.market], ev.rate_ppb))
                entries.append(FundEntry(ev.seq, ev.ts_ns, "funding", delta,
                                         f"{lots} lots of {ev.market} at {ev.rate_ppb} ppb"))
        elif isinstance(ev, LiquidationStep) and (ev.market in mine or ev.market is None):
            reported = _fund_equity_reported(ev, FUND_ACCOUNT)
            if reported is not None:
                equity.append((ev.seq, ev.ts_ns, reported))
            if ev.phase == "fee":
                entries.append(FundEntry(ev.seq, ev.ts_ns, "liquidation_fee", ev.amount_micro, f"account {ev.account}"))
            elif ev.phase == "bad_debt":
                if ev.amount_micro:
                    entries.append(FundEntry(ev.seq, ev.ts_ns, "bad_debt", -ev.amount_micro,
                                             f"account {ev.account}; debt {ev.filled}, socialised {ev.other}"))
            elif ev.phase == "adl" and ev.other == FUND_ACCOUNT:  # the fund's own position deleveraged
                signed = -ev.lots if ev.side == "buy" else ev.lots
                cash = _fund_fill_cash(basis, ev.market, signed, ev.price_ticks, k[ev.market])
                entries.append(FundEntry(ev.seq, ev.ts_ns, "deleveraged", cash,
                                         f"{ev.lots} lots against account {ev.account} at {ev.price_ticks} ticks"))
            elif ev.phase == "backstop" or (ev.phase == "fund_below_floor" and ev.lots and ev.account != FUND_ACCOUNT):
                signed = ev.lots if ev.side == "buy" else -ev.lots
                # 0 when it only opens; a takeover that nets a position the fund holds realises its PnL
                cash = _fund_fill_cash(basis, ev.market, signed, ev.price_ticks, k[ev.market])
                entries.append(FundEntry(ev.seq, ev.ts_ns, ev.phase, cash,
                                         f"{ev.lots} lots of account {ev.account} at {ev.price_ticks} ticks; "
                                         f"loss at the mark {ev.amount_micro} micro-USD"))
            elif ev.phase == "fund_below_floor":  # a debt past the floor (in bad_debt) or the fund's watch
                entries.append(FundEntry(ev.seq, ev.ts_ns, ev.phase, 0,
                                         f"equity {ev.other} below the floor {ev.filled}"))
    return FundHistory(entries, sum(e.amount_micro for e in entries), equity)


def _fund_equity_reported(ev: LiquidationStep, fund: int) -> int | None:
    """The fund's equity where a waterfall event reports it (docs/liquidation.md, Events)."""
    if ev.phase in ("fund_takeover", "fund_unwind") and ev.account == fund:
        return ev.amount_micro
    if ev.phase in ("backstop", "fund_below_floor"):
        return ev.other
    if ev.phase in ("adl_start", "deferred"):
        return ev.amount_micro
    if ev.phase == "bad_debt":
        return ev.extra
    return None


def _fund_fill_cash(basis: dict, market: str, signed: int, price: int, k: int) -> int:
    """Realised PnL of a fund position change (the same rule as risk.ledger.apply_fill)."""
    lots, cost = basis.get(market, (0, 0))
    realised = 0
    new = lots + signed
    if lots == 0 or (lots > 0) == (signed > 0):
        cost += signed * price * k
    else:
        close = min(abs(signed), abs(lots))
        removed = _trunc_div(cost * close, abs(lots))
        realised = (close if lots > 0 else -close) * price * k - removed
        cost -= removed
        if abs(signed) > abs(lots):
            cost = new * price * k
    basis[market] = (new, cost)
    return realised


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // b
    return q if a >= 0 else -q
