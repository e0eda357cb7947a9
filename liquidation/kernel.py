"""The liquidation waterfall inside the engine kernel (the `liquidate` timer command).

One sweep, deterministic, at the marks as they stand when it starts (docs/liquidation.md has the
rules with their numbers and the comparison with other venues):

1. **detection** over the accounts the kernel lists in `st.active` (every account holding a position
   or left flat with a negative balance; O(listed accounts), not O(highest account id)): every
   non-fund account with a position and equity < maintenance margin is selected, in ascending id;
2. **per selected account**: open orders cancelled; then market by market (ascending) while still
   below maintenance, unless the gate defers liquidation in that market (`perp.gate`):
   - size: the whole position when bankrupt (equity <= 0) or at most `liquidation_partial_above_usd`;
     otherwise the smallest chunk (at least `liquidation_chunk_ppm`) after which, **with its own
     fee**, equity >= maintenance x (1 + buffer) if it fills at the mark;
   - rate limits: notional per sweep and per UTC minute (scaled down while the oracle's throttle gate
     is on); what is over the limit waits for the next sweep (`rate_limited` event), not for the
     cooldown, which only follows a partial chunk the limits did not cut;
   - a reduce-only IOC order through the book, no taker fee, limited at the bankruptcy price (a whole
     close) or at the worst price at which the chunk still restores maintenance x (1 + buffer);
   - a **bankrupt** account (equity <= 0 when selected) is closed whole in every live market, and
     its deficit is owned by the markets that made it: split pro rata to each market's unrealised
     loss at the mark (exact integers; the rounding remainder to the largest loser), each position
     priced at the bankruptcy price of its own market's share, a profitable one at the mark (its
     profit pays the deficit first); a deferred market's share waits with its position;
   - what the book could not take: at the **mark** when the account is still solvent, at its
     **bankruptcy price** when it is not, first to the market's **insurance fund** (as far as the
     fund's equity after it, less its maintenance margin, stays at or above the floor and the fund's
     per-minute loss budget allows), then **ADL** against opposing profitable counterparties with
     positive equity, highest rank first, each only as far as it stays solvent after the offset;
     with no such counterparty left the fund takes the rest below its floor and says so;
   - the liquidation fee: min(`liquidation_fee_share_ppm` of the closed part's maintenance margin,
     `liquidation_max_fee_ppm` of the closed notional at the mark), never more than the account holds
     above what closing those lots at the bankruptcy price would have left it;
3. **every loss gets an owner**: a listed non-fund account that is flat with a negative balance
   (self-closed after a gap, or left so by the waterfall) is settled: the fund pays down to its floor
   (and loss budget), the rest is **socialised** over the winners of the market that lost it (pro
   rata to min(unrealised profit, equity - maintenance), so none is made unhealthy), and whatever is
   left (no winners, rounding) the fund pays below its floor, with an event;
4. **the fund is watched**: per market, a fund whose equity is below the market's floor has its
   position there deleveraged against solvent winners at the mark, or at the fund's bankruptcy price
   once its equity is negative (`fund_below_floor`, then `adl`);
   otherwise its backstop positions are **unwound through the book** (bounded IOC chunks, a price
   limit around the mark, a pace per minute; never where the gate stops the fund's unwind).

Every step is an `EV_LIQUIDATION` event (phase in E_CODE, `perp.layout.LQ_*`), so a replay says who
lost what and why. Money moves only through `risk.ledger.apply_fill` and explicit transfers between
collateral balances, so the ledger identity holds after the sweep.
"""

from __future__ import annotations

from numba import njit

from perp.book import _emit, _match, _refresh_mark, cancel_account_orders
from perp.gate import (
    GK_FUND_TAKEOVER,
    GK_FUND_UNWIND,
    P_DEFER,
    fund_action_permitted,
    liquidation_permission,
    liquidation_throttled,
)
from perp.kcodes import R_CANCEL_LIQUIDATION
from perp.layout import (
    AM_FEES_MICRO,
    AM_LIQ_COOLDOWN_TS,
    AM_LIQ_FLAG,
    AM_REALIZED_PNL_MICRO,
    BUY,
    EV_LIQUIDATION,
    G_ADL_HEAD,
    G_ADL_KEY,
    G_ADL_LEN,
    G_NEXT_ORDER_ID,
    LQ_ADL,
    LQ_ADL_START,
    LQ_BACKSTOP,
    LQ_BAD_DEBT,
    LQ_DEFERRED,
    LQ_DONE,
    LQ_FEE,
    LQ_FUND_BELOW_FLOOR,
    LQ_FUND_TAKEOVER,
    LQ_FUND_UNWIND,
    LQ_ORDER,
    LQ_RATE_LIMITED,
    LQ_SOCIALISED,
    LQ_STARTED,
    LQ_SWEEP,
    M_FUND_UNWIND_WINDOW_MICRO,
    M_FUND_UNWIND_WINDOW_START_NS,
    M_INSURANCE_FLOOR_MICRO,
    M_LIQ_SWEEP_NOTIONAL_MICRO,
    M_LIQ_WAITING,
    M_LIQ_WINDOW_FUND_LOSS_MICRO,
    M_LIQ_WINDOW_NOTIONAL_MICRO,
    M_LIQ_WINDOW_START_NS,
    M_MARK,
    M_N_ASK_ORDERS,
    M_N_BID_ORDERS,
    M_STATUS,
    RL_INSURANCE_LOSS,
    RL_MINUTE_NOTIONAL,
    RL_SWEEP_NOTIONAL,
    RL_UNWIND_PACE,
    S_FUND_ACCOUNT,
    S_FUND_UNWIND_CHUNK_MICRO,
    S_FUND_UNWIND_LIMIT_BPS,
    S_FUND_UNWIND_MINUTE_MICRO,
    S_LIQ_BUFFER_PPM,
    S_LIQ_CHUNK_PPM,
    S_LIQ_COOLDOWN_NS,
    S_LIQ_FEE_SHARE_PPM,
    S_LIQ_MAX_FEE_PPM,
    S_LIQ_MAX_FUND_LOSS_MINUTE_MICRO,
    S_LIQ_MAX_MINUTE_MICRO,
    S_LIQ_MAX_SWEEP_MICRO,
    S_LIQ_PARTIAL_ABOVE_MICRO,
    S_LIQ_THROTTLE_PPM,
    S_MAX_TICK,
    S_MICRO_PER_TICK_LOT,
    S_MIN_TICK,
    SELL,
    STP_CANCEL_OLDEST,
    T_BOUND_MICRO,
    T_MM_DEDUCTION_MICRO,
    T_MMR_PPM,
)
from risk.intmath import mul_div_ceil, mul_div_floor, ppm_of_ceil, ppm_ratio_floor_capped
from risk.ledger import account_margin, apply_fill, detection_figures, is_fund
from risk.tiers import maintenance_margin_micro

_K = dict(cache=True, _nrt=False, error_model="numpy", forceinline=True)
_KE = dict(cache=True, _nrt=False, error_model="numpy")  # the two entry points: compiled once, called
_RANK_CAP = 1_000_000_000
MINUTE_NS = 60_000_000_000
NO_LIMIT = 1 << 62  # a budget that never binds (limit 0 in the spec)
_EV_RESERVE = 64  # event rows kept free by the ADL and socialisation loops' guard
_SPLIT_MAX = 3_000_000_000  # below risk.intmath.SPLIT_DIVISOR_MAX: pro-rata weights are scaled under it


# ---------------------------------------------------------------------------------------------
# small pure pieces
# ---------------------------------------------------------------------------------------------
@njit(**_K)
def _has_position(st, a):
    for m in range(st.mkt.shape[0]):
        if st.position_lots[a, m] != 0:
            return True
    return False


@njit(**_K)
def _mm_of(st, m, lots_abs):
    """Maintenance margin of a position of `lots_abs` lots in m at the mark."""
    if lots_abs == 0:
        return 0
    notional = lots_abs * st.mkt[m, M_MARK] * st.spec[m, S_MICRO_PER_TICK_LOT]
    return maintenance_margin_micro(notional, m, st.tiers[:, :, T_BOUND_MICRO], st.tiers[:, :, T_MMR_PPM],
                                    st.tiers[:, :, T_MM_DEDUCTION_MICRO])


@njit(**_K)
def _equity(st, a):
    equity, _, _, _ = account_margin(st, a, -1, 0, 0)
    return equity


@njit(**_K)
def _deferred(st, m):
    return liquidation_permission(st, m) == P_DEFER


@njit(**_K)
def bankruptcy_price(st, a, m, equity):
    """The price at which closing account a's whole position in m leaves its equity >= 0 (and as
    close to 0 as the tick allows), other marks fixed; bounded to the price ladder."""
    pos = st.position_lots[a, m]
    apos = pos if pos > 0 else -pos
    shift = equity // (apos * st.spec[m, S_MICRO_PER_TICK_LOT])  # floor: negative equity moves it past the mark
    mark = st.mkt[m, M_MARK]
    p = mark - shift if pos > 0 else mark + shift
    lo = st.spec[m, S_MIN_TICK]
    hi = st.spec[m, S_MAX_TICK]
    return lo if p < lo else hi if p > hi else p


@njit(**_K)
def _split_shift(weight_sum):
    """The right shift that brings a sum of pro-rata weights under the split divisor (`_SPLIT_MAX`):
    each weight is scaled by it, so `mul_div_floor(total, weight >> shift, scaled sum)` stays exact."""
    shift = 0
    while (weight_sum >> shift) > _SPLIT_MAX:
        shift += 1
    return shift


@njit(**_K)
def _loss_at_mark(st, a, m):
    """Account a's unrealised loss in m at the mark (micro-USD, >= 0; 0 for a profit or no position)."""
    pos = st.position_lots[a, m]
    if pos == 0:
        return 0
    upnl = pos * st.mkt[m, M_MARK] * st.spec[m, S_MICRO_PER_TICK_LOT] - st.cost_basis_micro[a, m]
    return -upnl if upnl < 0 else 0


@njit(**_K)
def deficit_split(st, a, deficit):
    """How a bankrupt account's deficit (-equity, >= 0) is owned by its markets: pro rata to each
    market's unrealised loss at the mark (weights scaled under the split divisor, as in
    socialisation), every market's share floored, the rounding remainder to the largest loser (ties:
    the lowest market id); a profitable market owns nothing. Returns (shift, scaled sum, largest
    loser or -1 when no market is at a loss, remainder) for `deficit_share`; the shares add up to
    the deficit exactly when some market is at a loss (otherwise the deficit is a balance already
    realised, and the flat-debt settlement owns it once the positions are closed)."""
    loss_sum = 0
    largest = -1
    largest_loss = 0
    for m in range(st.mkt.shape[0]):
        loss = _loss_at_mark(st, a, m)
        loss_sum += loss
        if loss > largest_loss:
            largest = m
            largest_loss = loss
    if largest < 0 or deficit <= 0:
        return 0, 0, largest, 0
    shift = _split_shift(loss_sum)
    scaled = 0
    for m in range(st.mkt.shape[0]):
        scaled += _loss_at_mark(st, a, m) >> shift
    given = 0
    for m in range(st.mkt.shape[0]):
        given += mul_div_floor(deficit, _loss_at_mark(st, a, m) >> shift, scaled)
    return shift, scaled, largest, deficit - given


@njit(**_K)
def deficit_share(st, a, m, deficit, shift, scaled, largest, remainder):
    """The part of the deficit that market m owns (see `deficit_split`; m's position must be the one
    the split saw)."""
    if largest < 0 or deficit <= 0:
        return 0
    share = mul_div_floor(deficit, _loss_at_mark(st, a, m) >> shift, scaled)
    return share + remainder if m == largest else share


@njit(**_K)
def adl_rank(st, c, m):
    """ADL priority of account c's position in m: PnL% x effective leverage, in ppm x ppm / 1e6:
    floor(upnl x 1e6 / |cost basis|) x floor(|notional| x 1e6 / equity) // 1e6, all in micro-USD
    (each factor exact and capped at 1e9, so the product fits int64); -1 when the position is not
    profitable or the account's equity is not positive (an insolvent counterparty is never
    deleveraged). Before, basis and equity were first floored to whole dollars, which mis-ordered
    small accounts (equity $1.99 counted as $1) and gave a basis under $1 the divisor 1."""
    pos = st.position_lots[c, m]
    if pos == 0:
        return -1
    notional = pos * st.mkt[m, M_MARK] * st.spec[m, S_MICRO_PER_TICK_LOT]
    basis = st.cost_basis_micro[c, m]
    upnl = notional - basis
    if upnl <= 0:
        return -1
    equity = _equity(st, c)
    if equity <= 0:
        return -1
    gross = notional if notional > 0 else -notional
    pnl_ppm = ppm_ratio_floor_capped(upnl, basis if basis > 0 else -basis, _RANK_CAP)
    lev_ppm = ppm_ratio_floor_capped(gross, equity, _RANK_CAP)
    return pnl_ppm * lev_ppm // 1_000_000


@njit(**_K)
def _transfer(st, frm, to, m, signed_lots_from, price):
    """Move a position between two accounts at `price`, fee-free (backstop and ADL)."""
    apply_fill(st, frm, m, signed_lots_from, price, 0)
    apply_fill(st, to, m, -signed_lots_from, price, 0)


@njit(**_K)
def _move_cash(st, frm, to, amount):
    st.collateral_micro[frm] -= amount
    st.collateral_micro[to] += amount


# ---------------------------------------------------------------------------------------------
# rate limits (fixed UTC-minute windows per market; the sweep's own budget)
# ---------------------------------------------------------------------------------------------
@njit(**_K)
def _limit(st, m, col):
    """A spec limit as a budget: NO_LIMIT for 0, scaled by the throttle share while throttled."""
    lim = st.spec[m, col]
    if lim <= 0:
        return NO_LIMIT
    if liquidation_throttled(st, m):
        return mul_div_floor(lim, st.spec[m, S_LIQ_THROTTLE_PPM], 1_000_000)
    return lim


@njit(**_K)
def _roll_windows(st, m, ts):
    start = ts - ts % MINUTE_NS
    if st.mkt[m, M_LIQ_WINDOW_START_NS] != start:
        st.mkt[m, M_LIQ_WINDOW_START_NS] = start
        st.mkt[m, M_LIQ_WINDOW_NOTIONAL_MICRO] = 0
        st.mkt[m, M_LIQ_WINDOW_FUND_LOSS_MICRO] = 0
    if st.mkt[m, M_FUND_UNWIND_WINDOW_START_NS] != start:
        st.mkt[m, M_FUND_UNWIND_WINDOW_START_NS] = start
        st.mkt[m, M_FUND_UNWIND_WINDOW_MICRO] = 0
    st.mkt[m, M_LIQ_SWEEP_NOTIONAL_MICRO] = 0
    st.mkt[m, M_LIQ_WAITING] = 0


@njit(**_K)
def _notional_budget(st, m):
    """(notional that may still be liquidated in m now, the limit that binds)."""
    per_sweep = _limit(st, m, S_LIQ_MAX_SWEEP_MICRO) - st.mkt[m, M_LIQ_SWEEP_NOTIONAL_MICRO]
    per_minute = _limit(st, m, S_LIQ_MAX_MINUTE_MICRO) - st.mkt[m, M_LIQ_WINDOW_NOTIONAL_MICRO]
    if per_minute < per_sweep:
        return (per_minute if per_minute > 0 else 0), RL_MINUTE_NOTIONAL
    return (per_sweep if per_sweep > 0 else 0), RL_SWEEP_NOTIONAL


@njit(**_K)
def _loss_budget(st, m):
    left = _limit(st, m, S_LIQ_MAX_FUND_LOSS_MINUTE_MICRO) - st.mkt[m, M_LIQ_WINDOW_FUND_LOSS_MICRO]
    return left if left > 0 else 0


@njit(**_K)
def _count_notional(st, m, lots):
    notional = lots * st.mkt[m, M_MARK] * st.spec[m, S_MICRO_PER_TICK_LOT]
    st.mkt[m, M_LIQ_SWEEP_NOTIONAL_MICRO] += notional
    st.mkt[m, M_LIQ_WINDOW_NOTIONAL_MICRO] += notional


# ---------------------------------------------------------------------------------------------
# the fund
# ---------------------------------------------------------------------------------------------
@njit(**_K)
def _fund_ok(st, f, m, q, sign, loss_per_lot, equity_f, mm_f, floor):
    """After taking over q lots (the liquidated position's sign) at a loss of loss_per_lot each (at
    the mark), does the fund's equity less its maintenance margin stay at or above the floor?"""
    pos = st.position_lots[f, m]
    new = pos + sign * q
    mm_after = mm_f - _mm_of(st, m, pos if pos > 0 else -pos) + _mm_of(st, m, new if new > 0 else -new)
    return equity_f - q * loss_per_lot - mm_after >= floor


@njit(**_K)
def _fund_capacity(st, f, m, sign, lots, loss_per_lot):
    """Most of `lots` the fund may take over: (by its floor with margin and its per-minute loss
    budget, by its floor alone)."""
    equity_f, _, mm_f, _ = account_margin(st, f, -1, 0, 0)
    floor = st.mkt[m, M_INSURANCE_FLOOR_MICRO]
    if _fund_ok(st, f, m, lots, sign, loss_per_lot, equity_f, mm_f, floor):
        by_floor = lots
    else:
        lo = 0  # largest q with _fund_ok (0 always qualifies as "nothing")
        hi = lots
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _fund_ok(st, f, m, mid, sign, loss_per_lot, equity_f, mm_f, floor):
                lo = mid
            else:
                hi = mid
        by_floor = lo
    take = by_floor
    if loss_per_lot > 0:
        cap = _loss_budget(st, m) // loss_per_lot
        if take > cap:
            take = cap
    return take, by_floor


# ---------------------------------------------------------------------------------------------
# ADL
# ---------------------------------------------------------------------------------------------
@njit(**_K)
def _before(q, i, j):
    """Row i of the ADL queue goes before row j: higher rank first, then lower account id."""
    return q[i, 0] > q[j, 0] or (q[i, 0] == q[j, 0] and q[i, 1] < q[j, 1])


@njit(**_K)
def _sort_ids(v, lo, n):
    """In-place heapsort of v[lo:lo+n] ascending (account ids selected by the sweep)."""
    for start in range((n - 2) // 2, -1, -1):
        _sift_ids(v, lo, start, n - 1)
    for end in range(n - 1, 0, -1):
        tmp = v[lo]
        v[lo] = v[lo + end]
        v[lo + end] = tmp
        _sift_ids(v, lo, 0, end - 1)


@njit(**_K)
def _sift_ids(v, lo, start, end):
    root = start
    while True:
        child = 2 * root + 1
        if child > end:
            return
        if child + 1 <= end and v[lo + child] < v[lo + child + 1]:
            child += 1
        if v[lo + root] < v[lo + child]:
            tmp = v[lo + root]
            v[lo + root] = v[lo + child]
            v[lo + child] = tmp
            root = child
        else:
            return


@njit(**_K)
def _swap_rows(q, i, j):
    for col in range(2):
        tmp = q[i, col]
        q[i, col] = q[j, col]
        q[j, col] = tmp


@njit(**_K)
def _heap_down(q, root, size):
    """Restore the heap below `root` (the row that goes first on top)."""
    while True:
        child = 2 * root + 1
        if child >= size:
            return
        if child + 1 < size and _before(q, child + 1, child):
            child += 1
        if _before(q, child, root):
            _swap_rows(q, root, child)
            root = child
        else:
            return


@njit(**_K)
def _adl_pop(st):
    """Drop the top of the ADL queue (a heap in st.adl_scratch of G_ADL_LEN rows)."""
    size = st.g[G_ADL_LEN] - 1
    _swap_rows(st.adl_scratch, 0, size)
    st.g[G_ADL_LEN] = size
    _heap_down(st.adl_scratch, 0, size)


@njit(**_K)
def _adl_queue(st, m, sign):
    """Build (in st.adl_scratch) the ADL queue of market m against positions of `sign`: every opposing
    profitable position of an account with positive equity, in rank order (PnL% x leverage, highest
    first; ties: lowest account id). Ranked once per sweep and market side, as a heap: O(P) to
    build, O(log P) per counterparty used, so a cascade pays for the counterparties it reaches, not
    for sorting every winner. Visits the listed accounts only."""
    key = m * 2 + (1 if sign > 0 else 0) + 1
    if st.g[G_ADL_KEY] != key:
        q = st.adl_scratch
        k = 0
        for i in range(1, st.active[0, 0] + 1):
            c = st.active[i, 0]
            pos = st.position_lots[c, m]
            if pos == 0 or (pos > 0) == (sign > 0) or is_fund(st, c):
                continue
            r = adl_rank(st, c, m)
            if r < 0:
                continue
            q[k, 0] = r
            q[k, 1] = c
            k += 1
        for root in range((k - 2) // 2, -1, -1):
            _heap_down(q, root, k)
        st.g[G_ADL_KEY] = key
        st.g[G_ADL_LEN] = k
        st.g[G_ADL_HEAD] = 0


@njit(**_K)
def _adl(st, a, m, sign, lots, price, seq, ts, ev, n):
    """Offset `lots` of account a's position (sign) at `price` against the ranked queue; each
    counterparty only while its equity after the offset stays >= 0. Returns (n, lots left)."""
    k = st.spec[m, S_MICRO_PER_TICK_LOT]
    loss_per_lot = (price - st.mkt[m, M_MARK]) * k * sign  # what each counterparty gives up against the mark
    taker_side = BUY if sign > 0 else SELL
    _adl_queue(st, m, sign)
    queue = st.adl_scratch
    stamp = seq  # AM_LIQ_FLAG == this command's seq: brought to its solvency limit in this sweep
    while lots > 0 and st.g[G_ADL_LEN] > 0:
        if n + _EV_RESERVE > ev.shape[0]:
            break  # never reached when liquidation_event_bound holds; a guard, not a rule
        rank = queue[0, 0]
        c = queue[0, 1]
        pos_c = st.position_lots[c, m]
        if c == a or pos_c == 0 or (pos_c > 0) == (sign > 0):
            _adl_pop(st)  # closed (or flipped) since the queue was ranked
            continue
        equity_c = _equity(st, c)
        if equity_c <= 0 or st.acct_mkt[c, m, AM_LIQ_FLAG] == stamp:
            _adl_pop(st)  # insolvent now, or brought to its limit earlier in this sweep: never deleveraged
            continue
        q = pos_c if pos_c > 0 else -pos_c
        used_up = q <= lots
        if q > lots:
            q = lots
        if loss_per_lot > 0 and q * loss_per_lot > equity_c:
            q = equity_c // loss_per_lot  # only as far as it stays solvent
            used_up = True
            st.acct_mkt[c, m, AM_LIQ_FLAG] = stamp
        if used_up:
            _adl_pop(st)
        if q <= 0:
            continue
        _transfer(st, a, c, m, -sign * q, price)
        lots -= q
        n = _emit(ev, n, EV_LIQUIDATION, seq, ts, m, c, 0, q * loss_per_lot, taker_side, price, q, lots, rank,
                  LQ_ADL, a)
    return n, lots


# ---------------------------------------------------------------------------------------------
# one position
# ---------------------------------------------------------------------------------------------
@njit(**_K)
def _fee(st, m, closed, apos, mm_position):
    """The liquidation fee on `closed` of `apos` lots, before the surplus cap: the smaller of the
    share of their maintenance margin and the cap on their notional at the mark."""
    by_mm = ppm_of_ceil(mul_div_ceil(mm_position, closed, apos), st.spec[m, S_LIQ_FEE_SHARE_PPM])
    by_notional = ppm_of_ceil(closed * st.mkt[m, M_MARK] * st.spec[m, S_MICRO_PER_TICK_LOT],
                              st.spec[m, S_LIQ_MAX_FEE_PPM])
    return by_mm if by_mm < by_notional else by_notional


@njit(**_K)
def _chunk_room(st, m, equity, mm, apos, q, mm_position, shift_k):
    """equity - fee(q) - MM(after closing q at the mark) x (1 + buffer): >= 0 when a chunk of q lots
    filled at the mark restores health (shift_k: micro-USD per lot between mark and bankruptcy)."""
    fee = _fee(st, m, q, apos, mm_position)
    surplus = q * shift_k
    if fee > surplus:
        fee = surplus if surplus > 0 else 0
    mm_after = mm - mm_position + _mm_of(st, m, apos - q)
    target = mm_after + ppm_of_ceil(mm_after, st.spec[m, S_LIQ_BUFFER_PPM])
    return equity - fee - target


@njit(**_K)
def _chunk_lots(st, m, equity, mm, apos, mm_position, shift_k):
    """The smallest chunk that restores maintenance x (1 + buffer) after its fee (at the mark), at
    least `liquidation_chunk_ppm` of the position; the whole position when no smaller one does."""
    if _chunk_room(st, m, equity, mm, apos, apos - 1, mm_position, shift_k) < 0:
        return apos
    lo = 0  # room(lo) < 0 (0 lots restore nothing: the account is unhealthy)
    hi = apos - 1  # room(hi) >= 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _chunk_room(st, m, equity, mm, apos, mid, mm_position, shift_k) >= 0:
            hi = mid
        else:
            lo = mid
    q = hi
    chunk = mul_div_ceil(apos, st.spec[m, S_LIQ_CHUNK_PPM], 1_000_000)
    if q < chunk:
        q = chunk
    return apos if q > apos else q


@njit(**_K)
def _backstop_and_adl(st, a, m, sign, lots, price, equity_before, seq, ts, ev, n):
    """What the book did not take, at `price`: the fund (floor with margin, loss budget), then ADL,
    then the fund below its floor. Returns (n, lots left with the account)."""
    k = st.spec[m, S_MICRO_PER_TICK_LOT]
    mark = st.mkt[m, M_MARK]
    loss_per_lot = (price - mark) * k * sign  # the fund pays `price` for what is worth the mark
    taker_side = BUY if sign > 0 else SELL  # what the fund or an ADL counterparty does: buys a long
    fund = st.spec[m, S_FUND_ACCOUNT]
    floor = st.mkt[m, M_INSURANCE_FLOOR_MICRO]
    if not fund_action_permitted(st, m, GK_FUND_TAKEOVER):
        return n, lots  # the gate stops the fund: the rest waits with the account
    take, by_floor = _fund_capacity(st, fund, m, sign, lots, loss_per_lot)
    if take < by_floor:  # the loss budget binds: the rest goes on down the waterfall (ADL), not to the fund
        n = _emit(ev, n, EV_LIQUIDATION, seq, ts, m, a, 0, 0, 0, price, by_floor - take,
                  1 if liquidation_throttled(st, m) else 0, _loss_budget(st, m), LQ_RATE_LIMITED, RL_INSURANCE_LOSS)
    if take > 0:
        _transfer(st, a, fund, m, -sign * take, price)
        if loss_per_lot > 0:
            st.mkt[m, M_LIQ_WINDOW_FUND_LOSS_MICRO] += take * loss_per_lot
        fund_after, _, fund_mm, _ = account_margin(st, fund, -1, 0, 0)
        n = _emit(ev, n, EV_LIQUIDATION, seq, ts, m, a, 0, 0, taker_side, price, take, 0, loss_per_lot * take,
                  LQ_BACKSTOP, fund_after)
        n = _emit(ev, n, EV_LIQUIDATION, seq, ts, m, fund, 0, floor, taker_side, price, take, fund_mm, fund_after,
                  LQ_FUND_TAKEOVER, a)
        lots -= take
    if lots > 0:
        fund_equity = _equity(st, fund)
        n = _emit(ev, n, EV_LIQUIDATION, seq, ts, m, a, 0, 0, 0, price, lots, equity_before, fund_equity,
                  LQ_ADL_START, floor)
        n, lots = _adl(st, a, m, sign, lots, price, seq, ts, ev, n)
    if lots > 0:  # no solvent profitable counterparty left: the fund takes the rest, below its floor
        _transfer(st, a, fund, m, -sign * lots, price)
        if loss_per_lot > 0:
            st.mkt[m, M_LIQ_WINDOW_FUND_LOSS_MICRO] += lots * loss_per_lot
        fund_after = _equity(st, fund)
        n = _emit(ev, n, EV_LIQUIDATION, seq, ts, m, a, 0, 0, taker_side, price, lots, floor, loss_per_lot * lots,
                  LQ_FUND_BELOW_FLOOR, fund_after)
    return n, 0


@njit(**_K)
def _liquidate_position(st, a, m, equity, mm, bankrupt, share, seq, ts, ev, n):
    """Liquidate account a's position in m (equity and mm: the account's, now). A bankrupt account's
    position is priced on the part of its deficit that m owns (`share`, from `deficit_split`): its
    bankruptcy price here places that share, to the tick, on m's fund and m's winners, and a
    profitable position (share 0) closes at the mark, its profit going to the account. Otherwise the
    price holds the account's whole equity (other marks fixed)."""
    pos = st.position_lots[a, m]
    apos = pos if pos > 0 else -pos
    sign = 1 if pos > 0 else -1
    k = st.spec[m, S_MICRO_PER_TICK_LOT]
    mark = st.mkt[m, M_MARK]
    p_b = bankruptcy_price(st, a, m, -share if bankrupt else equity)
    shift_k = (mark - p_b) * sign * k  # per lot: what closing at the bankruptcy price costs against the mark
    mm_position = _mm_of(st, m, apos)
    if bankrupt or apos * mark * k <= st.spec[m, S_LIQ_PARTIAL_ABOVE_MICRO]:
        q = apos
    else:
        q = _chunk_lots(st, m, equity, mm, apos, mm_position, shift_k)
    whole = q == apos  # a whole close is limited at the bankruptcy price, a chunk at its restoring price
    # rate limits: what is over them waits for the next sweep
    budget, which = _notional_budget(st, m)
    per_lot = mark * k
    cut = q * per_lot > budget  # the rest waits for the next sweep, not for a cooldown
    if cut:
        fit = budget // per_lot
        n = _emit(ev, n, EV_LIQUIDATION, seq, ts, m, a, 0, 0, 0, 0, q - fit,
                  1 if liquidation_throttled(st, m) else 0, budget, LQ_RATE_LIMITED, which)
        if fit <= 0:
            st.mkt[m, M_LIQ_WAITING] += 1
            return n
        q = fit
    if whole:
        limit = p_b
    else:  # the worst price at which the chunk still restores maintenance x (1 + buffer) after its fee
        room = _chunk_room(st, m, equity, mm, apos, q, mm_position, shift_k)
        d = room // (q * k) if room > 0 else 0
        limit = mark - d if sign > 0 else mark + d
        lo = st.spec[m, S_MIN_TICK]
        hi = st.spec[m, S_MAX_TICK]
        limit = lo if limit < lo else hi if limit > hi else limit
    _count_notional(st, m, q)
    oid = st.g[G_NEXT_ORDER_ID]
    st.g[G_NEXT_ORDER_ID] = oid + 1
    side = SELL if pos > 0 else BUY
    rem, _, n = _match(st, m, a, oid, 0, side, limit, q, STP_CANCEL_OLDEST, 0, seq, ts, ev, n)
    n = _emit(ev, n, EV_LIQUIDATION, seq, ts, m, a, oid, mark, side, limit, q, q - rem, 0, LQ_ORDER, 0)
    left = 0
    if rem > 0:
        # the rest: at the mark while the account is solvent (it keeps its equity above bankruptcy);
        # at the bankruptcy price of what is left when it is not (it ends at ~0); for a bankrupt
        # account, of what is left of m's share once the book's fills are counted
        now = _equity(st, a)
        owed = now - equity - share if bankrupt else now
        price = bankruptcy_price(st, a, m, owed) if owed < 0 else mark
        n, left = _backstop_and_adl(st, a, m, sign, rem, price, now, seq, ts, ev, n)
        if left > 0:
            st.mkt[m, M_LIQ_WAITING] += 1
    closed = q - left
    if closed > 0:
        fee = _fee(st, m, closed, apos, mm_position)
        eq_now = _equity(st, a)
        # never more than the account holds above what closing these lots at the bankruptcy price leaves
        surplus = eq_now - (equity - closed * shift_k)
        if fee > surplus:
            fee = surplus
        if fee > eq_now:
            fee = eq_now
        if fee > 0:
            fund = st.spec[m, S_FUND_ACCOUNT]
            st.collateral_micro[a] -= fee
            st.acct_mkt[a, m, AM_FEES_MICRO] += fee
            st.collateral_micro[fund] += fee
            n = _emit(ev, n, EV_LIQUIDATION, seq, ts, m, a, 0, 0, 0, 0, closed, 0, fee, LQ_FEE, 0)
        if not whole and not cut:  # only a partial chunk cools down; a close the limits cut short continues
            st.acct_mkt[a, m, AM_LIQ_COOLDOWN_TS] = ts + st.spec[m, S_LIQ_COOLDOWN_NS]
    return n


@njit(**_K)
def _eligible(st, a, equity, ts):
    """Bankrupt accounts always; others when some position is out of its cooldown."""
    if equity <= 0:
        return True
    for m in range(st.mkt.shape[0]):
        if st.position_lots[a, m] != 0 and ts >= st.acct_mkt[a, m, AM_LIQ_COOLDOWN_TS]:
            return True
    return False


@njit(**_K)
def _liquidate_account(st, a, seq, ts, ev, n):
    equity, _, mm, _ = account_margin(st, a, -1, 0, 0)
    live = False
    for m in range(st.mkt.shape[0]):
        if st.position_lots[a, m] != 0:
            if _deferred(st, m):
                st.mkt[m, M_LIQ_WAITING] += 1
            else:
                live = True
    if not live:
        return n, 0  # every market it holds is deferred: nothing happens to it (not even its orders)
    n = _emit(ev, n, EV_LIQUIDATION, seq, ts, -1, a, 0, 0, 0, 0, 0, 0, equity, LQ_STARTED, mm)
    _, n = cancel_account_orders(st, a, -1, R_CANCEL_LIQUIDATION, seq, ts, ev, n)
    # bankrupt: every live position closes whole, each market owning the part of the deficit its
    # loss made (a deferred market's part waits with its position)
    bankrupt = equity <= 0
    deficit = -equity if equity < 0 else 0
    shift, scaled, largest, remainder = deficit_split(st, a, deficit)
    for m in range(st.mkt.shape[0]):
        if st.position_lots[a, m] == 0 or _deferred(st, m):
            continue
        equity, _, mm, _ = account_margin(st, a, -1, 0, 0)
        if equity >= mm:
            break
        if not bankrupt and ts < st.acct_mkt[a, m, AM_LIQ_COOLDOWN_TS]:
            continue
        share = deficit_share(st, a, m, deficit, shift, scaled, largest, remainder) if bankrupt else 0
        n = _liquidate_position(st, a, m, equity, mm, bankrupt, share, seq, ts, ev, n)
    equity, _, mm, _ = account_margin(st, a, -1, 0, 0)
    return _emit(ev, n, EV_LIQUIDATION, seq, ts, -1, a, 0, 0, 0, 0, 0, 0, equity, LQ_DONE, mm), 1


# ---------------------------------------------------------------------------------------------
# every loss gets an owner: flat accounts with a negative balance
# ---------------------------------------------------------------------------------------------
@njit(**_K)
def loss_market(st, a):
    """The market a flat account's loss belongs to: the one where its realised PnL is lowest (ties:
    the lowest market id)."""
    best = 0
    for m in range(1, st.mkt.shape[0]):
        if st.acct_mkt[a, m, AM_REALIZED_PNL_MICRO] < st.acct_mkt[a, best, AM_REALIZED_PNL_MICRO]:
            best = m
    return best


@njit(**_K)
def _winner_weight(st, c, m):
    """What a winner in m can give without becoming unhealthy: min(unrealised profit, equity - MM)."""
    pos = st.position_lots[c, m]
    if pos == 0 or is_fund(st, c):
        return 0
    upnl = pos * st.mkt[m, M_MARK] * st.spec[m, S_MICRO_PER_TICK_LOT] - st.cost_basis_micro[c, m]
    if upnl <= 0:
        return 0
    equity, _, mm, _ = account_margin(st, c, -1, 0, 0)
    room = equity - mm
    w = upnl if upnl < room else room
    return w if w > 0 else 0


@njit(**_K)
def _socialise(st, m, total, seq, ts, ev, n):
    """Charge `total` to m's winners pro rata to their weight (scaled under the split divisor),
    each at most its weight. Returns (n, charged)."""
    w_sum = 0
    for i in range(1, st.active[0, 0] + 1):
        w_sum += _winner_weight(st, st.active[i, 0], m)
    if w_sum == 0:
        return n, 0
    shift = _split_shift(w_sum)
    scaled_sum = 0
    for i in range(1, st.active[0, 0] + 1):
        scaled_sum += _winner_weight(st, st.active[i, 0], m) >> shift
    charged = 0
    for i in range(1, st.active[0, 0] + 1):
        c = st.active[i, 0]
        w = _winner_weight(st, c, m)
        if w == 0:
            continue
        if n + _EV_RESERVE > ev.shape[0]:
            break  # never reached when liquidation_event_bound holds; a guard, not a rule
        if total >= w_sum:
            charge = w
        else:
            charge = mul_div_floor(total, w >> shift, scaled_sum) if scaled_sum > 0 else 0
            if charge > w:
                charge = w
        if charge > total - charged:
            charge = total - charged
        if charge <= 0:
            continue
        upnl = st.position_lots[c, m] * st.mkt[m, M_MARK] * st.spec[m, S_MICRO_PER_TICK_LOT] - st.cost_basis_micro[c, m]
        st.collateral_micro[c] -= charge
        charged += charge
        n = _emit(ev, n, EV_LIQUIDATION, seq, ts, m, c, 0, 0, 0, 0, 0, upnl, charge, LQ_SOCIALISED, -1)
    return n, charged


@njit(**_K)
def _settle_debts(st, nd, seq, ts, ev, n):
    """Settle the nd flat accounts with a negative balance listed (ascending) in st.active[1:, 2]:
    the fund down to its floor (with its margin) and loss budget; then, per market, the rest pooled
    and socialised over that market's winners; then the fund below its floor."""
    v = st.active[:, 2]
    # 1. the fund, in ascending account id, while it has room
    for j in range(nd):
        a = v[1 + j]
        m = loss_market(st, a)
        fund = st.spec[m, S_FUND_ACCOUNT]
        debt = -st.collateral_micro[a]
        equity_f, _, mm_f, _ = account_margin(st, fund, -1, 0, 0)
        room = equity_f - mm_f - st.mkt[m, M_INSURANCE_FLOOR_MICRO]
        budget = _loss_budget(st, m)
        if room > budget:
            room = budget
        pay = debt if debt < room else room
        if pay < 0:
            pay = 0  # the fund is at or below its floor already
        if pay > 0:
            _move_cash(st, fund, a, pay)
            st.mkt[m, M_LIQ_WINDOW_FUND_LOSS_MICRO] += pay
        st.acct_mkt[a, 0, AM_LIQ_FLAG] = pay  # scratch: what the fund paid within its floor
    # 2. per market, the unpaid rest pooled over the winners
    for m in range(st.mkt.shape[0]):
        total = 0
        for j in range(nd):
            a = v[1 + j]
            if loss_market(st, a) == m and st.collateral_micro[a] < 0:
                total -= st.collateral_micro[a]
        pot = 0
        if total > 0:
            n, pot = _socialise(st, m, total, seq, ts, ev, n)
        fund = st.spec[m, S_FUND_ACCOUNT]
        floor = st.mkt[m, M_INSURANCE_FLOOR_MICRO]
        for j in range(nd):
            a = v[1 + j]
            if loss_market(st, a) != m:
                continue
            debt_total = st.acct_mkt[a, 0, AM_LIQ_FLAG] - st.collateral_micro[a]
            rest = -st.collateral_micro[a]
            share = 0
            if rest > 0 and pot > 0:
                share = rest if rest < pot else pot
                st.collateral_micro[a] += share
                pot -= share
                rest -= share
            if rest > 0:  # 3. nobody else can: the fund, below its floor, says so
                _move_cash(st, fund, a, rest)
                st.mkt[m, M_LIQ_WINDOW_FUND_LOSS_MICRO] += rest
                n = _emit(ev, n, EV_LIQUIDATION, seq, ts, m, a, 0, 0, 0, 0, 0, floor, rest, LQ_FUND_BELOW_FLOOR,
                          _equity(st, fund))
            paid_by_fund = debt_total - share
            n = _emit(ev, n, EV_LIQUIDATION, seq, ts, m, a, 0, _equity(st, fund), 0, 0, 0, debt_total, paid_by_fund,
                      LQ_BAD_DEBT, share)
            st.acct_mkt[a, 0, AM_LIQ_FLAG] = 0
    return n


# ---------------------------------------------------------------------------------------------
# the fund's own positions: deleveraged below its floor, otherwise unwound through the book
# ---------------------------------------------------------------------------------------------
@njit(**_K)
def _watch_fund(st, m, seq, ts, ev, n):
    fund = st.spec[m, S_FUND_ACCOUNT]
    pos = st.position_lots[fund, m]
    if pos == 0:
        return n
    apos = pos if pos > 0 else -pos
    sign = 1 if pos > 0 else -1
    mark = st.mkt[m, M_MARK]
    floor = st.mkt[m, M_INSURANCE_FLOOR_MICRO]
    equity_f = _equity(st, fund)
    if equity_f < floor:
        # below its floor: its position here goes to ADL at the mark (the winners give up nothing
        # against the mark; the fund stops riding the move)
        price = mark if equity_f >= 0 else bankruptcy_price(st, fund, m, equity_f)
        n = _emit(ev, n, EV_LIQUIDATION, seq, ts, m, fund, 0, 0, 0, price, apos, floor, 0, LQ_FUND_BELOW_FLOOR,
                  equity_f)
        n = _emit(ev, n, EV_LIQUIDATION, seq, ts, m, fund, 0, 0, 0, price, apos, equity_f, equity_f,
                  LQ_ADL_START, floor)
        n, _ = _adl(st, fund, m, sign, apos, price, seq, ts, ev, n)
        return n
    chunk = st.spec[m, S_FUND_UNWIND_CHUNK_MICRO]
    if chunk <= 0 or not fund_action_permitted(st, m, GK_FUND_UNWIND):
        return n
    per_lot = mark * st.spec[m, S_MICRO_PER_TICK_LOT]
    lots = chunk // per_lot
    pace = st.spec[m, S_FUND_UNWIND_MINUTE_MICRO]
    if pace > 0:
        left = pace - st.mkt[m, M_FUND_UNWIND_WINDOW_MICRO]
        fit = (left if left > 0 else 0) // per_lot
        if fit < lots and fit < apos:
            n = _emit(ev, n, EV_LIQUIDATION, seq, ts, m, -1, 0, 0, 0, 0, (lots if lots < apos else apos) - fit,
                      0, left if left > 0 else 0, LQ_RATE_LIMITED, RL_UNWIND_PACE)
            lots = fit
    if lots > apos:
        lots = apos
    if lots <= 0:
        return n
    band = mark * st.spec[m, S_FUND_UNWIND_LIMIT_BPS] // 10_000
    side = SELL if pos > 0 else BUY
    limit = mark - band if pos > 0 else mark + band
    lo = st.spec[m, S_MIN_TICK]
    hi = st.spec[m, S_MAX_TICK]
    limit = lo if limit < lo else hi if limit > hi else limit
    oid = st.g[G_NEXT_ORDER_ID]
    st.g[G_NEXT_ORDER_ID] = oid + 1
    rem, _, n = _match(st, m, fund, oid, 0, side, limit, lots, STP_CANCEL_OLDEST, 0, seq, ts, ev, n)
    st.mkt[m, M_FUND_UNWIND_WINDOW_MICRO] += (lots - rem) * per_lot
    return _emit(ev, n, EV_LIQUIDATION, seq, ts, m, fund, oid, floor, side, limit, lots, lots - rem, _equity(st, fund),
                 LQ_FUND_UNWIND, st.position_lots[fund, m])


# ---------------------------------------------------------------------------------------------
# the sweep
# ---------------------------------------------------------------------------------------------
@njit(**_K)
def _unlist(st, i):
    """Drop row i of the active list (swap with the last row)."""
    last = st.active[0, 0]
    a = st.active[i, 0]
    b = st.active[last, 0]
    st.active[i, 0] = b
    st.active[b, 1] = i
    st.active[a, 1] = 0
    st.active[last, 0] = 0
    st.active[0, 0] = last - 1


@njit(**_K)
def flag_unhealthy(st, ts, prune):
    """Select the accounts to liquidate now, ascending, into st.active[1:, 2]. Visits the listed
    accounts only (with `prune`, drops those flat with collateral >= 0 from the list). Returns
    (selected, checked, their open orders, flat accounts with a negative balance, profitable
    positions of accounts with positive equity: the most counterparties ADL or socialisation can
    use up)."""
    flagged = 0
    checked = 0
    open_orders = 0
    debtors = 0
    winners = 0
    n_mkt = st.mkt.shape[0]
    tier_bound = st.tiers[:, :, T_BOUND_MICRO]  # the tier views once per sweep, not once per account
    tier_mmr = st.tiers[:, :, T_MMR_PPM]
    tier_ded = st.tiers[:, :, T_MM_DEDUCTION_MICRO]
    i = 1
    while i <= st.active[0, 0]:
        a = st.active[i, 0]
        equity, mm, held, profitable = detection_figures(st, a, tier_bound, tier_mmr, tier_ded)
        if held == 0:
            if st.collateral_micro[a] < 0 and not is_fund(st, a):
                debtors += 1
            elif prune and st.collateral_micro[a] >= 0:
                _unlist(st, i)
                continue  # row i now holds the former last row
            i += 1
            continue
        i += 1
        if is_fund(st, a):
            continue
        checked += 1
        if equity > 0:
            winners += profitable
        if equity < mm and _eligible(st, a, equity, ts):
            flagged += 1
            st.active[flagged, 2] = a
            for m in range(n_mkt):
                open_orders += st.accounts[a, 1 + m]
    _sort_ids(st.active[:, 2], 1, flagged)
    return flagged, checked, open_orders, debtors, winners


@njit(**_KE)
def liquidation_event_bound(st, ts):
    """Most events the sweep can emit from this state. Every ADL event uses up a counterparty (it
    is closed, or brought to its solvency limit and skipped for the rest of the sweep) or ends its
    call; every socialised charge is one winner's; makers filled during the sweep may become new
    counterparties (the book term)."""
    flagged, _, open_orders, debtors, winners = flag_unhealthy(st, ts, False)
    n_mkt = st.mkt.shape[0]
    book = 0
    for m in range(n_mkt):
        book += st.mkt[m, M_N_BID_ORDERS] + st.mkt[m, M_N_ASK_ORDERS]
    steps = flagged * n_mkt
    trades = 3 * (book + steps + n_mkt)  # every resting order fully consumed once, one partial per order
    adl = 2 * (steps + n_mkt) + winners + book
    owners = 3 * (debtors + flagged) + (winners + book if debtors + flagged > 0 else 0)
    return 16 + 6 * n_mkt + flagged * 4 + steps * 12 + 2 * open_orders + trades + adl + owners


@njit(**_KE)
def liquidate_sweep(st, ts, seq, ev, n):
    """The sweep (see the module docstring). Marks stay as they are during it and are refreshed at
    its end (liquidation and unwind orders may have emptied a side of a book)."""
    n_mkt = st.mkt.shape[0]
    for m in range(n_mkt):
        _roll_windows(st, m, ts)
    flagged, checked, _, _, _ = flag_unhealthy(st, ts, True)
    st.g[G_ADL_KEY] = 0  # ADL queues are ranked afresh each sweep
    done = 0
    for j in range(flagged):
        a = st.active[1 + j, 2]
        n, did = _liquidate_account(st, a, seq, ts, ev, n)
        done += did
    # every loss gets an owner: flat accounts left with a negative balance (before or by this sweep)
    nd = 0
    for i in range(1, st.active[0, 0] + 1):
        a = st.active[i, 0]
        if st.collateral_micro[a] < 0 and not is_fund(st, a) and not _has_position(st, a):
            nd += 1
            st.active[nd, 2] = a
    if nd > 0:
        _sort_ids(st.active[:, 2], 1, nd)
        n = _settle_debts(st, nd, seq, ts, ev, n)
    waiting = 0
    for m in range(n_mkt):
        if _deferred(st, m):
            if st.mkt[m, M_LIQ_WAITING] > 0:
                n = _emit(ev, n, EV_LIQUIDATION, seq, ts, m, -1, 0, 0, 0, 0, st.mkt[m, M_LIQ_WAITING], 0,
                          _equity(st, st.spec[m, S_FUND_ACCOUNT]), LQ_DEFERRED, st.mkt[m, M_STATUS])
        else:
            n = _watch_fund(st, m, seq, ts, ev, n)
        waiting += st.mkt[m, M_LIQ_WAITING]
    n = _emit(ev, n, EV_LIQUIDATION, seq, ts, -1, -1, 0, waiting, 0, 0, done, checked, nd, LQ_SWEEP, flagged)
    for m in range(n_mkt):
        n = _refresh_mark(st, m, seq, ts, ev, n)
    return n
