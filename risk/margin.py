"""The withdrawal formula over plain values, for the array account views (`risk.views.account_view`).

The engine's rules live once, in `risk/ledger.py`: the pre-trade rule (`pretrade_ok`: equity - fee -
immediate loss >= initial margin under the oracle's gates), withdrawals (`withdrawable`, with each
market's own transfer floor) and margins. This module keeps only `withdrawable_micro`, the same
formula for a single floor rate, so that a view computed from exported arrays says what the
engine would allow:

    max(0, min(equity - IM, max(cash, equity - max(IM, ceil(gross notional x floor_ppm / 1e6)))))

with cash = min(collateral, equity). Pure integer arithmetic; margins round against the account.
"""

from __future__ import annotations

from numba import njit

from risk.intmath import ppm_of_ceil

DEFAULT_TRANSFER_FLOOR_PPM = 100_000  # unrealised profit is withdrawable only above 10% of notional


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
