"""Every trader's ADL standing: where their position sits in the auto-deleveraging queue.

The queue of a market side holds the profitable positions on that side, ordered by the kernel's own
rank (`liquidation.kernel.adl_rank`: PnL% x effective leverage; ties: lowest account id), which is
the order ADL would take them in if an opposing bankrupt position had to be absorbed now (a
position of an account whose equity is not positive is never in the queue: ADL only takes from
solvent winners). A trader
sees their rank value, their place (1 = first to be deleveraged), the queue's length and their
quintile (1 = the first fifth, 5 = the last); a flat or losing position is not in the queue.
"""

from __future__ import annotations

import msgspec

from liquidation.kernel import adl_rank
from perp import layout as L


class AdlStanding(msgspec.Struct, frozen=True):
    market: str
    account: int
    side: str  # "long" or "short"
    rank: int  # PnL% x leverage (ppm x ppm / 1e6); -1: not in the queue
    place: int | None  # 1-based; None when not in the queue
    of: int  # positions in the queue on this side
    quintile: int | None  # 1..5


def adl_standing(st, account: int, market: int, symbol: str) -> AdlStanding:
    pos = int(st.position_lots[account, market]) if account < st.position_lots.shape[0] else 0
    side = "long" if pos > 0 else "short"
    if pos == 0:
        return AdlStanding(symbol, account, "flat", -1, None, 0, None)
    mine = int(adl_rank(st, account, market))
    queue = []
    funds = {int(f) for f in st.spec[:, L.S_FUND_ACCOUNT]}
    listed = st.active[1:int(st.active[0, 0]) + 1, 0].tolist()  # every account with a position is listed
    for c in listed:
        if c in funds:
            continue
        p = int(st.position_lots[c, market])
        if p == 0 or (p > 0) != (pos > 0):
            continue
        r = int(adl_rank(st, c, market))
        if r >= 0:
            queue.append((-r, c))
    queue.sort()
    if mine < 0:
        return AdlStanding(symbol, account, side, mine, None, len(queue), None)
    place = queue.index((-mine, account)) + 1
    quintile = (place - 1) * 5 // len(queue) + 1
    return AdlStanding(symbol, account, side, mine, place, len(queue), quintile)
