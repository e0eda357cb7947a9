"""What a tier change would do to the accounts, before it is made (issue 15, docs/operations.md).

`shortfall_flags(st, st_new, holders, out)`: for each account in `holders`, bit 1 when its equity is below
maintenance margin under `st_new`'s tiers and not under `st`'s, bit 2 the same for initial margin (resting
orders at their worst case, the account's leverage). Both states are the engine's arrays and differ only
in their tier table; margins are the engine's own `risk.ledger.account_margin` (cross margin at the marks),
so the what-if and the sweep cannot disagree. Changes nothing. One compiled loop: `Engine.what_if_tiers` over
10,001 accounts holding a position takes 6 ms, against 367 ms for the same two calls per account made
one by one from Python (measured on this 2-core machine under load; docs/performance.md).
"""

from __future__ import annotations

from numba import njit

from risk.ledger import account_margin

BELOW_MM = 1
BELOW_IM = 2


@njit(cache=True)
def shortfall_flags(st, st_new, holders, out):
    for i in range(holders.shape[0]):
        a = holders[i]
        eq0, im0, mm0, _ = account_margin(st, a, -1, 0, 0)
        eq1, im1, mm1, _ = account_margin(st_new, a, -1, 0, 0)
        f = 0
        if eq1 < mm1 and not eq0 < mm0:
            f |= BELOW_MM
        if eq1 < im1 and not eq0 < im0:
            f |= BELOW_IM
        out[i] = f
