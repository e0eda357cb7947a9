"""The gate: the one place every exposure- or money-changing path asks for permission.

Every command kind that can change an account's exposure or the venue's money (place, amend,
set_leverage, withdraw, deposit), the liquidation sweep and the insurance fund's own actions
(takeover, unwind) ask here first. The answer comes from, in this order:

1. the **permission table** `PERMIT[market status, kind]` below (one row per `ST_*`, one column per
   command kind or waterfall action);
2. the **reserved-account rule**: account ids below `RESERVED_ACCOUNTS` are insurance funds and
   other venue accounts; they never act through trader commands (they move only through the
   waterfall and documented operator commands);
3. the **oracle's gates** stored per market by the last `set_index` (`mkt[m, M_ORACLE_GATES]`,
   `M_LEVERAGE_SCALE_PPM`, `M_BAND_ANCHOR`, `M_FIX_TICKS`);
4. the **pre-trade margin rule** (risk/ledger.py), which the kernel runs after the book rules.

Invariant: a command the gate refuses changes nothing (not the clock either: the kernel asks the
gate before it advances time). The table is data, so docs/risk.md prints it and a test checks the
document against it row by row.

| status       | place      | amend      | cancel | leverage | deposit | withdraw | liquidate | fund unwind | admin |
|--------------|------------|------------|--------|----------|---------|----------|-----------|-------------|-------|
| active       | allow      | allow      | allow  | allow    | allow   | allow    | allow     | allow       | allow |
| post_only    | post-only  | allow      | allow  | allow    | allow   | allow    | defer     | defer       | allow |
| cancel_only  | deny       | shrink     | allow  | allow    | allow   | allow    | defer     | defer       | allow |
| reduce_only  | reduce     | reduce     | allow  | allow    | allow   | allow    | allow     | defer       | allow |
| halted       | deny       | deny       | allow  | deny     | allow   | deny     | defer     | defer       | allow |

Operator pauses (`set_pauses`, `mkt[m, M_PAUSED_OPS]`, as Drift has) come after the table: a paused
operation is refused (`OPERATION_PAUSED`, 1032) or deferred whatever the status allows -- trading
(place, amend), liquidation (the sweep and the fund's actions defer), funding (samples count as frozen),
withdrawals (by an account holding a position or orders in the market).

- *reduce*: allowed only when it cannot raise exposure (a reduce-only order; an amend that does not
  raise the size of an order that is not reduce-only);
- *shrink*: an amend that only lowers the size, at the same price (a partial cancel);
- *defer*: the liquidation sweep skips the market and says so; the accounts wait for the market to
  reopen (BitMEX, March 2020, resumed cancel-only and liquidated nobody while its feed was down);
- cancels are always allowed: they only lower risk.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from perp import layout as L
from perp.book import _reducible, taker_loss_tick_lots
from perp.kcodes import (
    R_INSUFFICIENT_MARGIN,
    R_MARKET_STATUS_FORBIDS,
    R_OPERATION_PAUSED,
    R_OPEN_INTEREST_CAP,
    R_ORACLE_REDUCE_ONLY,
    R_POSITION_LIMIT,
)
from risk.ledger import pretrade_ok, solvent_after, worst_case_lots

# permission values
P_DENY = 0
P_ALLOW = 1
P_REDUCE = 2  # only what cannot raise exposure
P_POST_ONLY = 3  # only post-only (maker) orders
P_DEFER = 4  # a timer action waits for the market to reopen
P_SHRINK = 5  # an amend may only lower the size (no price change)

# waterfall actions that are not commands but ask the gate like one
GK_FUND_UNWIND = 20
GK_FUND_TAKEOVER = 21
N_GATE_KINDS = 24

RESERVED_ACCOUNTS = 16  # account ids below this are venue accounts (insurance funds)

_STATUS_NAMES = ("active", "post_only", "cancel_only", "reduce_only", "halted")
_KIND_COLUMNS = (
    ("place", L.CK_PLACE), ("amend", L.CK_AMEND), ("cancel", L.CK_CANCEL), ("cancel_all", L.CK_CANCEL_ALL),
    ("set_leverage", L.CK_SET_LEVERAGE), ("deposit", L.CK_DEPOSIT), ("withdraw", L.CK_WITHDRAW),
    ("liquidate", L.CK_LIQUIDATE), ("fund_takeover", GK_FUND_TAKEOVER), ("fund_unwind", GK_FUND_UNWIND),
    ("admin", L.CK_ADMIN),
)
_PERMIT_ROWS = {
    #              place        amend     cancel   cxl-all  leverage deposit  withdraw liquidate fund-take fund-unwind admin
    "active":      (P_ALLOW,     P_ALLOW,  P_ALLOW, P_ALLOW, P_ALLOW, P_ALLOW, P_ALLOW, P_ALLOW, P_ALLOW, P_ALLOW, P_ALLOW),
    "post_only":   (P_POST_ONLY, P_ALLOW,  P_ALLOW, P_ALLOW, P_ALLOW, P_ALLOW, P_ALLOW, P_DEFER, P_DEFER, P_DEFER, P_ALLOW),
    "cancel_only": (P_DENY,      P_SHRINK, P_ALLOW, P_ALLOW, P_ALLOW, P_ALLOW, P_ALLOW, P_DEFER, P_DEFER, P_DEFER, P_ALLOW),
    "reduce_only": (P_REDUCE,    P_REDUCE, P_ALLOW, P_ALLOW, P_ALLOW, P_ALLOW, P_ALLOW, P_ALLOW, P_ALLOW, P_DEFER, P_ALLOW),
    "halted":      (P_DENY,      P_DENY,   P_ALLOW, P_ALLOW, P_DENY,  P_ALLOW, P_DENY,  P_DEFER, P_DEFER, P_DEFER, P_ALLOW),
}


def _build_permit() -> np.ndarray:
    table = np.full((L.N_STATUSES, N_GATE_KINDS), P_ALLOW, np.int64)  # operator/timer kinds: always
    for status, name in enumerate(_STATUS_NAMES):
        for (_, kind), value in zip(_KIND_COLUMNS, _PERMIT_ROWS[name], strict=True):
            table[status, kind] = value
    return table


PERMIT = _build_permit()
PERMIT.setflags(write=False)


def permit_table() -> list[dict[str, str]]:
    """The table as rows of names (for docs and `perp config show`)."""
    names = {P_DENY: "deny", P_ALLOW: "allow", P_REDUCE: "reduce", P_POST_ONLY: "post_only", P_DEFER: "defer",
             P_SHRINK: "shrink"}
    return [{"status": s, **{k: names[int(PERMIT[i, kind])] for k, kind in _KIND_COLUMNS}}
            for i, s in enumerate(_STATUS_NAMES)]


_K = dict(cache=True, _nrt=False, error_model="numpy", forceinline=True)


@njit(**_K)
def permission(st, m, kind):
    """`PERMIT[status of market m, kind]` (a `P_*` value)."""
    return PERMIT[st.mkt[m, L.M_STATUS], kind]


@njit(**_K)
def is_reserved(a):
    """A venue account (insurance funds): never a trader command's actor."""
    return 0 <= a < RESERVED_ACCOUNTS


@njit(**_K)
def liquidation_permission(st, m):
    """`P_ALLOW` or `P_DEFER` for the liquidation sweep in market m (an operator's pause defers it)."""
    if (st.mkt[m, L.M_PAUSED_OPS] & L.PAUSE_LIQUIDATION) != 0:
        return P_DEFER
    return PERMIT[st.mkt[m, L.M_STATUS], L.CK_LIQUIDATE]


@njit(**_K)
def liquidation_throttled(st, m):
    """The oracle's gate: liquidations in m take a bounded slice per sweep."""
    return (st.mkt[m, L.M_ORACLE_GATES] & L.GATE_LIQ_THROTTLED) != 0


@njit(**_K)
def fund_action_permitted(st, m, kind):
    """May the fund take over (`GK_FUND_TAKEOVER`) or unwind (`GK_FUND_UNWIND`) in market m now?
    Unwinding also stops while the oracle says reduce-only."""
    p = PERMIT[st.mkt[m, L.M_STATUS], kind]
    if p != P_ALLOW or (st.mkt[m, L.M_PAUSED_OPS] & L.PAUSE_LIQUIDATION) != 0:
        return False
    if kind == GK_FUND_UNWIND and (st.mkt[m, L.M_ORACLE_GATES] & L.GATE_REDUCE_ONLY) != 0:
        return False
    return True


# ---- trader commands (inlined into perp/kernel.py) -----------------------------------------------
@njit(**_K)
def place_status_code(st, m, reduce_only, post_only):
    """Market status and the oracle's reduce-only gate for a new order (0 = permitted)."""
    p = PERMIT[st.mkt[m, L.M_STATUS], L.CK_PLACE]
    if (st.mkt[m, L.M_PAUSED_OPS] & L.PAUSE_TRADING) != 0:
        return R_OPERATION_PAUSED
    if p == P_DENY:
        return R_MARKET_STATUS_FORBIDS
    if p == P_POST_ONLY and not post_only:
        return R_MARKET_STATUS_FORBIDS
    if p == P_REDUCE and not reduce_only:
        return R_MARKET_STATUS_FORBIDS
    if (st.mkt[m, L.M_ORACLE_GATES] & L.GATE_REDUCE_ONLY) != 0 and not reduce_only:
        return R_ORACLE_REDUCE_ONLY
    return 0


@njit(**_K)
def amend_status_code(st, m, grows, reprices, order_reduce_only):
    """Market status and the oracle's reduce-only gate for an amend (0 = permitted)."""
    p = PERMIT[st.mkt[m, L.M_STATUS], L.CK_AMEND]
    if (st.mkt[m, L.M_PAUSED_OPS] & L.PAUSE_TRADING) != 0:
        return R_OPERATION_PAUSED
    if p == P_DENY:
        return R_MARKET_STATUS_FORBIDS
    if p == P_SHRINK and (grows or reprices):
        return R_MARKET_STATUS_FORBIDS
    if p == P_REDUCE and grows and not order_reduce_only:
        return R_MARKET_STATUS_FORBIDS
    if (st.mkt[m, L.M_ORACLE_GATES] & L.GATE_REDUCE_ONLY) != 0 and grows and not order_reduce_only:
        return R_ORACLE_REDUCE_ONLY
    return 0


@njit(**_K)
def account_status_code(st, a, kind):
    """An account-wide command (withdraw) is permitted only if every market the account holds a
    position or open orders in permits it."""
    for m in range(st.mkt.shape[0]):
        if st.position_lots[a, m] != 0 or st.accounts[a, L.AC_OPEN + m] != 0:
            if PERMIT[st.mkt[m, L.M_STATUS], kind] != P_ALLOW:
                return R_MARKET_STATUS_FORBIDS
            if kind == L.CK_WITHDRAW and (st.mkt[m, L.M_PAUSED_OPS] & L.PAUSE_WITHDRAWALS) != 0:
                return R_OPERATION_PAUSED
    return 0


@njit(**_K)
def band_centre(st, m):
    """Centre of the order band: the mark, or the last fresh anchor while the oracle freezes the band."""
    if (st.mkt[m, L.M_ORACLE_GATES] & L.GATE_BAND_FROZEN) != 0 and st.mkt[m, L.M_BAND_ANCHOR] > 0:
        return st.mkt[m, L.M_BAND_ANCHOR]
    return st.mkt[m, L.M_MARK]


@njit(**_K)
def reduce_code(st, a, m, side, price, lots, fee_ppm, may_rest):
    """What an order that can only reduce passes (a reduce-only order; one that neither raises the
    worst case nor outgrows the position): nothing at a fair price -- closing is always possible --,
    and, when it gives away against the mark (a sell below it, a buy above it, walked on the book as
    `exposure_code` does), `equity - fee - loss >= 0` under the oracle's gates (risk.ledger.solvent_after):
    nobody can trade an account past bankruptcy into a colluding order and leave the loss to the
    insurance fund. 0 = permitted."""
    loss = taker_loss_tick_lots(st, m, a, side, price, lots, may_rest) * st.spec[m, L.S_MICRO_PER_TICK_LOT]
    if loss > 0 and not solvent_after(st, a, m, price, lots, fee_ppm, loss):
        return R_INSUFFICIENT_MARGIN
    return 0


@njit(**_K)
def exposure_code(st, a, m, side, price, lots, fee_ppm, may_rest):
    """What every order that is not reduce-only passes (a place, an amend's added or repriced lots),
    in this order: the open-interest cap, the position bound (int64 headroom), then the margin rule
    under the oracle's gates with the order's fee and immediate loss walked on the book
    (`perp.book.taker_loss_tick_lots`):

    - an order that only **reduces** -- even if it and every resting order of its side fill, the
      position does not pass zero -- passes `reduce_code`: always at a fair price, and through the
      mark only while the account stays solvent;
    - any other order may **open**, whether or not it raises the market's worst-case position
      (resting orders that can open counted, reduce-only ones never: risk.ledger.open_lots_delta): a
      flip's opening half leaves the worst case where it was, but its fee and loss still come out of
      the margin. It passes when `equity - fee - loss >= IM` with it counted (risk.ledger.pretrade_ok).

    `price` is the order's limit (a market order's protection limit); `may_rest`: a remainder rests.
    0 = permitted."""
    reducing = _reducible(st, a, m, side)
    cap = st.spec[m, L.S_OI_CAP_LOTS]
    if cap > 0:
        opening = lots - reducing if lots > reducing else 0
        if st.mkt[m, L.M_OPEN_INTEREST] + opening > cap:
            return R_OPEN_INTEREST_CAP
    pos = st.position_lots[a, m]
    buys = st.acct_mkt[a, m, L.AM_OPEN_BUY_LOTS]
    sells = st.acct_mkt[a, m, L.AM_OPEN_SELL_LOTS]
    after = worst_case_lots(pos, buys + lots, sells) if side == L.BUY else worst_case_lots(pos, buys, sells + lots)
    if after > st.spec[m, L.S_MAX_POSITION_LOTS]:
        return R_POSITION_LIMIT
    # only reduces: even with every resting order of that side filled too, the position does not
    # pass zero (then the worst case cannot rise either)
    if (pos + buys + lots <= 0) if side == L.BUY else (pos - sells - lots >= 0):
        return reduce_code(st, a, m, side, price, lots, fee_ppm, may_rest)
    loss = taker_loss_tick_lots(st, m, a, side, price, lots, may_rest) * st.spec[m, L.S_MICRO_PER_TICK_LOT]
    if not pretrade_ok(st, a, m, side, price, lots, fee_ppm, loss):
        return R_INSUFFICIENT_MARGIN
    return 0
