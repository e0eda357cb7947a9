"""Per-account margin kernels: what the engine's pre-trade check and withdrawal command call.

Array contract (the engine holds exactly these):
- `collateral_micro: int64[n_acc]`, `position_lots: int64[n_acc, n_mkt]` (signed, + long),
  `cost_basis_micro: int64[n_acc, n_mkt]` (signed entry notional: sum over opening fills of
  size * price_ticks * micro_per_tick_lot; 0 when flat),
  `leverage: int64[n_acc, n_mkt]` (the user's chosen leverage, >= 1),
  per market `mark_ticks`, `micro_per_tick_lot`, and the tier arrays of `risk.tiers.pack_tiers`.

Definitions (micro-USD):
- position notional at mark `= lots * mark_ticks * micro_per_tick_lot` (signed), unrealised PnL
  `= notional - cost_basis`, equity `= collateral + sum of unrealised PnL` (funding is settled into
  collateral, so nothing is "unsettled" between sweeps);
- MM / IM: sums over markets of the tier functions of |notional| (cross margin);
- an order passes the pre-trade check iff `equity >= IM` on the account as it would be after the
  fill (`passes_initial_margin`), so an account exactly at IM is accepted and one micro-USD below
  is rejected;
- withdrawable (`withdrawable_micro`): never below IM, and unrealised profit only above the transfer
  floor `max(IM, ceil(total notional * floor_ppm / 1e6))` (default floor 10% of notional).

Invariants: every function is pure integer arithmetic with named rounding (margins round up, i.e.
against the account); none writes to its inputs. Precondition: each |notional| <= INT64_MAX - 1e9.
"""

from __future__ import annotations

from numba import njit

from risk.intmath import ppm_of_ceil
from risk.tiers import initial_margin_micro, maintenance_margin_micro

DEFAULT_TRANSFER_FLOOR_PPM = 100_000  # unrealised profit is withdrawable only above 10% of notional


@njit(cache=True)
def account_health(a, collateral_micro, position_lots, cost_basis_micro, leverage, mark_ticks,
                   micro_per_tick_lot, tier_bound_micro, tier_imr_ppm, tier_mmr_ppm,
                   tier_mm_deduction_micro, override_mkt, override_lots, override_cost_basis_micro):
    """(equity, initial margin, maintenance margin, total |notional|) of account `a`, micro-USD.

    With override_mkt >= 0, market override_mkt is valued as if the account held override_lots at
    cost basis override_cost_basis_micro (the position after a prospective fill; fees are the
    caller's to take off collateral first). override_mkt = -1 values the account as it is.
    """
    equity = collateral_micro[a]
    im = 0
    mm = 0
    gross = 0
    for m in range(position_lots.shape[1]):
        lots = position_lots[a, m]
        basis = cost_basis_micro[a, m]
        if m == override_mkt:
            lots = override_lots
            basis = override_cost_basis_micro
        notional = lots * mark_ticks[m] * micro_per_tick_lot[m]
        equity += notional - basis
        if notional < 0:
            notional = -notional
        if notional != 0:
            gross += notional
            im += initial_margin_micro(notional, m, leverage[a, m], tier_bound_micro, tier_imr_ppm)
            mm += maintenance_margin_micro(notional, m, tier_bound_micro, tier_mmr_ppm,
                                           tier_mm_deduction_micro)
    return equity, im, mm, gross


@njit(cache=True)
def passes_initial_margin(equity_micro, initial_margin_micro_):
    """The pre-trade rule: accepted iff equity >= initial margin (at the boundary: accepted)."""
    return equity_micro >= initial_margin_micro_


@njit(cache=True)
def withdrawable_micro(collateral_micro, equity_micro, initial_margin_micro_, gross_notional_micro,
                       floor_ppm):
    """The most an account may withdraw now (>= 0), micro-USD.

    cash = min(collateral, equity) is what is not unrealised profit. A withdrawal must leave
    equity >= IM; the part above `cash` (unrealised profit) must also leave
    equity >= max(IM, ceil(gross notional * floor_ppm / 1e6)):
    `max(0, min(equity - IM, max(cash, equity - floor)))`.
    """
    cash = collateral_micro if collateral_micro < equity_micro else equity_micro
    floor = ppm_of_ceil(gross_notional_micro, floor_ppm)
    if floor < initial_margin_micro_:
        floor = initial_margin_micro_
    above_floor = equity_micro - floor
    best = cash if cash > above_floor else above_floor
    above_im = equity_micro - initial_margin_micro_
    if above_im < best:
        best = above_im
    return best if best > 0 else 0
