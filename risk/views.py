"""Account view: what one account's numbers are, built from the engine's arrays (off the hot path).

All money in micro-USD, prices in ticks (average entry in micro-ticks, since it is rarely on the grid),
rates in ppm. Sums are Python integers; per-position margins come from the kernels' own
`risk.tiers` functions, so the view and the sweep cannot disagree.

- `equity = collateral + upnl`; `margin_used = IM` at the user's leverage; `free_collateral =
  equity - IM` (negative when the account is below initial margin: it may only reduce);
- `margin_ratio_ppm = ceil(MM * 1e6 / equity)` (Binance's convention: liquidation at >= 1_000_000),
  None when equity <= 0;
- `liquidation_price_ticks` per position, other markets' marks held fixed: for a long, the highest
  tick at which the account would be below maintenance; for a short, the lowest. None when no
  positive tick (up to the int64 notional limit) makes it unhealthy. Found by bisection on the exact
  integer health, which is monotone in the mark: for a long, equity rises by lots*k per tick while
  MM rises by at most that (every maintenance rate is below 100%); for a short equity falls and MM
  rises.
- funding history is not state: it is the engine's stream of funding events (per account and hour,
  the `funding_out` of the sweep), so the view does not carry it.
"""

from __future__ import annotations

import msgspec
import numpy as np

from risk.intmath import INT64_MAX, MICRO, PPM
from risk.margin import withdrawable_micro
from risk.tiers import TierArrays, initial_margin_micro, maintenance_margin_micro


class PositionView(msgspec.Struct, frozen=True):
    market: int
    lots: int
    avg_entry_micro_ticks: int  # cost_basis / (lots * k) in micro-ticks, rounded toward zero
    notional_micro: int  # signed, at mark
    upnl_micro: int
    initial_margin_micro: int
    maintenance_margin_micro: int
    liquidation_price_ticks: int | None


class AccountView(msgspec.Struct, frozen=True):
    account: int
    collateral_micro: int
    upnl_micro: int
    equity_micro: int
    margin_used_micro: int  # initial margin
    maintenance_margin_micro: int
    free_collateral_micro: int
    withdrawable_micro: int
    margin_ratio_ppm: int | None
    positions: tuple[PositionView, ...]


def _mm(notional: int, m: int, tiers: TierArrays) -> int:
    return int(maintenance_margin_micro(abs(notional), m, tiers.bound_micro, tiers.mmr_ppm,
                                        tiers.mm_deduction_micro))


def _im(notional: int, m: int, leverage: int, tiers: TierArrays) -> int:
    return int(initial_margin_micro(abs(notional), m, leverage, tiers.bound_micro, tiers.imr_ppm))


def _liquidation_price(lots: int, k: int, mark: int, m: int, equity: int, mm_total: int,
                       tiers: TierArrays) -> int | None:
    """Bisection for the boundary tick of `equity(p) < MM(p)`, other markets fixed."""
    mm_here = _mm(lots * mark * k, m, tiers)

    def unhealthy(p: int) -> bool:
        e = equity + lots * k * (p - mark)
        return e < mm_total - mm_here + _mm(lots * k * p, m, tiers)

    p_max = (INT64_MAX - PPM) // (abs(lots) * k)
    if p_max < 1:
        return None
    if lots > 0:  # unhealthy on [1, p*): the highest unhealthy tick is one below the first healthy one
        first_healthy = _first_true(lambda p: not unhealthy(p), 1, p_max)
        if first_healthy is None:
            return p_max
        return first_healthy - 1 if first_healthy > 1 else None
    return _first_true(unhealthy, 1, p_max)  # short: unhealthy on [p*, p_max]


def _first_true(pred, lo: int, hi: int) -> int | None:
    """Smallest p in [lo, hi] with pred(p), for pred monotone (False...False True...True); else None."""
    if not pred(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def account_view(a: int, collateral_micro: np.ndarray, position_lots: np.ndarray,
                 cost_basis_micro: np.ndarray, leverage: np.ndarray, mark_ticks: np.ndarray,
                 micro_per_tick_lot: np.ndarray, tiers: TierArrays,
                 transfer_floor_ppm: int = 100_000) -> AccountView:
    """The view of account `a` from the engine's arrays (see the module docstring)."""
    collateral = int(collateral_micro[a])
    rows = []
    upnl = im = mm = gross = 0
    for m in range(position_lots.shape[1]):
        lots = int(position_lots[a, m])
        basis = int(cost_basis_micro[a, m])
        k = int(micro_per_tick_lot[m])
        notional = lots * int(mark_ticks[m]) * k
        upnl += notional - basis
        if lots == 0:
            continue
        p_im = _im(notional, m, int(leverage[a, m]), tiers)
        p_mm = _mm(notional, m, tiers)
        im += p_im
        mm += p_mm
        gross += abs(notional)
        entry_num = basis * MICRO
        entry_den = lots * k
        avg = abs(entry_num) // abs(entry_den)
        rows.append((m, lots, avg if (entry_num >= 0) == (entry_den > 0) else -avg, notional,
                     notional - basis, p_im, p_mm))
    equity = collateral + upnl
    positions = tuple(
        PositionView(market=m, lots=lots, avg_entry_micro_ticks=avg, notional_micro=notional,
                     upnl_micro=p_upnl, initial_margin_micro=p_im, maintenance_margin_micro=p_mm,
                     liquidation_price_ticks=_liquidation_price(
                         lots, int(micro_per_tick_lot[m]), int(mark_ticks[m]), m, equity, mm, tiers))
        for m, lots, avg, notional, p_upnl, p_im, p_mm in rows
    )
    ratio = -((-mm * PPM) // equity) if equity > 0 else None
    return AccountView(
        account=a, collateral_micro=collateral, upnl_micro=upnl, equity_micro=equity,
        margin_used_micro=im, maintenance_margin_micro=mm, free_collateral_micro=equity - im,
        withdrawable_micro=int(withdrawable_micro(collateral, equity, im, gross, transfer_floor_ppm)),
        margin_ratio_ppm=ratio, positions=positions)


# ---- the engine's own view ---------------------------------------------------------------------
class EnginePositionView(msgspec.Struct, frozen=True):
    market: str
    lots: int
    leverage: int
    avg_entry_micro_ticks: int | None  # cost basis / (lots x k), toward zero; None when flat
    notional_micro: int  # signed, at mark
    upnl_micro: int
    maintenance_margin_micro: int
    liquidation_price_ticks: int | None
    open_buy_lots: int
    open_sell_lots: int
    realized_pnl_micro: int  # cumulative
    fees_micro: int  # cumulative (rebates negative)
    funding_micro: int  # cumulative, received (+) / paid (-)


class EngineAccountView(msgspec.Struct, frozen=True):
    """One account as the engine sees it: the numbers the pre-trade check, withdrawals and the risk
    sweep use (computed by the same kernel functions), for the gateway and the console."""

    account: int
    collateral_micro: int
    upnl_micro: int
    equity_micro: int
    initial_margin_micro: int  # positions and resting orders at their worst case
    maintenance_margin_micro: int
    free_collateral_micro: int  # equity - initial margin
    withdrawable_micro: int
    margin_ratio_ppm: int | None  # MM / equity, ceil; liquidation at >= 1,000,000
    positions: tuple[EnginePositionView, ...]


def engine_account_view(st, a: int, symbols: list[str]) -> EngineAccountView:
    """The view of account `a` from an `EngineState` (read-only)."""
    from perp import layout as L
    from risk.ledger import account_margin, leverage_of, withdrawable

    tiers = TierArrays(st.tiers[:, :, L.T_BOUND_MICRO].copy(), st.tiers[:, :, L.T_IMR_PPM].copy(),
                       st.tiers[:, :, L.T_MMR_PPM].copy(), st.tiers[:, :, L.T_MM_DEDUCTION_MICRO].copy(),
                       np.zeros(st.tiers.shape[0], np.int64))
    if a >= st.accounts.shape[0]:
        return EngineAccountView(a, 0, 0, 0, 0, 0, 0, 0, None, ())
    equity, im, mm, _ = (int(x) for x in account_margin(st, a, -1, 0, 0))
    collateral = int(st.collateral_micro[a])
    positions = []
    for m, sym in enumerate(symbols):
        lots = int(st.position_lots[a, m])
        am = st.acct_mkt[a, m]
        touched = lots or any(int(am[c]) for c in (L.AM_OPEN_BUY_LOTS, L.AM_OPEN_SELL_LOTS, L.AM_REALIZED_PNL_MICRO,
                                                   L.AM_FEES_MICRO, L.AM_FUNDING_MICRO))
        if not touched:
            continue
        k = int(st.spec[m, L.S_MICRO_PER_TICK_LOT])
        mark = int(st.mkt[m, L.M_MARK])
        basis = int(st.cost_basis_micro[a, m])
        notional = lots * mark * k
        avg = None
        if lots:
            q = abs(basis * MICRO) // abs(lots * k)
            avg = q if (basis >= 0) == (lots > 0) else -q
        positions.append(EnginePositionView(
            market=sym, lots=lots, leverage=int(leverage_of(st, a, m)), avg_entry_micro_ticks=avg,
            notional_micro=notional, upnl_micro=notional - basis,
            maintenance_margin_micro=_mm(notional, m, tiers) if lots else 0,
            liquidation_price_ticks=(_liquidation_price(lots, k, mark, m, equity, mm, tiers)
                                     if lots and mark > 0 else None),
            open_buy_lots=int(am[L.AM_OPEN_BUY_LOTS]), open_sell_lots=int(am[L.AM_OPEN_SELL_LOTS]),
            realized_pnl_micro=int(am[L.AM_REALIZED_PNL_MICRO]), fees_micro=int(am[L.AM_FEES_MICRO]),
            funding_micro=int(am[L.AM_FUNDING_MICRO])))
    ratio = -((-mm * PPM) // equity) if equity > 0 else None
    return EngineAccountView(
        account=a, collateral_micro=collateral, upnl_micro=equity - collateral, equity_micro=equity,
        initial_margin_micro=im, maintenance_margin_micro=mm, free_collateral_micro=equity - im,
        withdrawable_micro=int(withdrawable(st, a)), margin_ratio_ppm=ratio, positions=tuple(positions))
