"""Order-book primitives for the kernels: events, price levels, FIFO queues, matching, cancels,
and the mark and premium samples taken from the book.

numba functions over `perp.state.EngineState`, compiled without the allocator and inlined into
`perp.kernel.process_batch` (and the liquidation sweep). Invariants they keep: a level's total and
count equal the sum and number of its live orders; the best price is the best non-empty level;
an account's resting lots per side equal its live orders' remaining sizes; every change to a level
is followed by a `book` event before the command ends.
"""

from __future__ import annotations

from numba import njit

from perp.hashmap import hm_delete, hm_find, hm_insert
from perp.kcodes import (  # noqa: F401 - constants, numba inlines them
    ALLOWED_FLAG_BITS,
    MICRO,
    R_AMEND_NO_CHANGE,
    R_AMEND_WOULD_CROSS,
    R_AMOUNT_TOO_LARGE,
    R_CANCEL_ALL_BY_USER,
    R_CANCEL_BY_USER,
    R_CANCEL_FOK_NOT_FILLED,
    R_CANCEL_IOC_REMAINDER,
    R_CANCEL_REDUCE_ONLY,
    R_CANCEL_SELF_TRADE,
    R_DUPLICATE_CLID,
    R_INSUFFICIENT_MARGIN,
    R_INVALID_CLID,
    R_INVALID_ORDER_TYPE,
    R_INVALID_PRICE,
    R_INVALID_SIDE,
    R_INVALID_STATUS,
    R_INVALID_STP,
    R_INVALID_TIF,
    R_LEVERAGE_ABOVE_LIMIT,
    R_LEVERAGE_NOT_POSITIVE,
    R_MARKET_STATUS_FORBIDS,
    R_MISSING_ORDER_REF,
    R_NO_REFERENCE_PRICE,
    R_NON_POSITIVE_AMOUNT,
    R_OPEN_INTEREST_CAP,
    R_ORDER_POOL_FULL,
    R_POST_ONLY_WOULD_TAKE,
    R_PRICE_OUT_OF_RANGE,
    R_PRICE_OUTSIDE_BAND,
    R_REDUCE_ONLY_WOULD_INCREASE,
    R_SIZE_ABOVE_MAX,
    R_SIZE_BELOW_MIN,
    R_TIMESTAMP_REGRESSION,
    R_TOO_MANY_OPEN_ORDERS,
    R_UNKNOWN_ACCOUNT,
    R_UNKNOWN_COMMAND,
    R_UNKNOWN_MARKET,
    R_UNKNOWN_ORDER,
    R_WITHDRAWAL_ABOVE_WITHDRAWABLE,
    R_WITHDRAWAL_BELOW_IM,
    RO_TRACK,
)
from perp.layout import (
    AC_HEAD,
    AC_OPEN,
    BUY,
    C_ACCOUNT,
    C_CLID,
    C_KIND,
    C_MARKET,
    C_ORDER_ID,
    C_PRICE,
    C_SIDE,
    C_SIZE,
    C_TS,
    CLID_BITS,
    E_ACCOUNT,
    E_CLID,
    E_CODE,
    E_FEE,
    E_KIND,
    E_MARKET,
    E_ORDER_ID,
    E_OTHER,
    E_PRICE,
    E_REMAINING,
    E_SEQ,
    E_SIDE,
    E_SIZE,
    E_TS,
    EV_BOOK,
    EV_CANCELLED,
    EV_FILL,
    EV_FUNDING,
    EV_MARK,
    EV_REJECTED,
    FLAG_REDUCE_ONLY,
    G_FREE_TOP,
    G_SCRATCH,
    LIQ_MAKER,
    LIQ_TAKER,
    LV_COUNT,
    LV_HEAD,
    LV_QTY,
    LV_TAIL,
    M_BASIS_EMA_UT,
    M_BEST_ASK,
    M_BEST_BID,
    M_FROZEN_N,
    M_FUNDING_FROZEN,
    M_INDEX,
    M_MARK,
    M_N_ASK_ORDERS,
    M_N_BID_ORDERS,
    M_NEXT_FUNDING_TS,
    M_NEXT_PREMIUM_TS,
    M_NEXT_SAMPLE_TS,
    M_PAUSED_OPS,
    M_PREMIUM_N,
    M_PREMIUM_SUM_PPB,
    M_STATUS,
    MAP_CLID,
    MAP_ORDER_ID,
    MAX_ACCOUNT_ID,
    MAX_CLIENT_ORDER_ID,
    NO_PRICE,
    O_ACCOUNT,
    O_ANEXT,
    O_APREV,
    O_CLID,
    O_FLAGS,
    O_FREE,
    O_ID,
    O_LIVE,
    O_MARKET,
    O_NEXT,
    O_PREV,
    O_PRICE,
    O_REM,
    O_SIDE,
    PAUSE_FUNDING,
    S_ALPHA_PPM,
    S_FUNDING_INTERVAL_NS,
    S_IMPACT_TICK_LOTS,
    S_MAKER_FEE_PPM,
    S_MARK_BAND_BPS,
    S_MAX_TICK,
    S_MICRO_PER_TICK_LOT,
    S_MIN_TICK,
    S_PREMIUM_SAMPLE_NS,
    S_SAMPLE_NS,
    SELL,
    ST_HALTED,
    STP_CANCEL_BOTH,
    STP_CANCEL_NEWEST,
    STP_CANCEL_OLDEST,
)
from risk.funding import premium_ppb
from risk.ledger import (
    apply_fill,
    beyond_mark_ticks,
    open_lots_delta,
    settle_funding,
)

# result codes used inside the kernel (values from perp.codes.ResultCode)



# ---------------------------------------------------------------------------------------------
# events
# ---------------------------------------------------------------------------------------------
@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _emit(ev, n, kind, seq, ts, market, account, order_id, clid, side, price, size, remaining, fee,
          code, other):
    ev[n, E_KIND] = kind
    ev[n, E_SEQ] = seq
    ev[n, E_TS] = ts
    ev[n, E_MARKET] = market
    ev[n, E_ACCOUNT] = account
    ev[n, E_ORDER_ID] = order_id
    ev[n, E_CLID] = clid
    ev[n, E_SIDE] = side
    ev[n, E_PRICE] = price
    ev[n, E_SIZE] = size
    ev[n, E_REMAINING] = remaining
    ev[n, E_FEE] = fee
    ev[n, E_CODE] = code
    ev[n, E_OTHER] = other
    return n + 1


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _emit_book(st, ev, n, seq, ts, m, side, price):
    li = price - st.spec[m, S_MIN_TICK]
    return _emit(ev, n, EV_BOOK, seq, ts, m, -1, 0, 0, side, price, st.levels[m, side, li, LV_QTY],
                 st.levels[m, side, li, LV_COUNT], 0, 0, 0)


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _reject(c, ev, n, seq, code):
    return _emit(ev, n, EV_REJECTED, seq, c[C_TS], c[C_MARKET], c[C_ACCOUNT], c[C_ORDER_ID], c[C_CLID],
                 c[C_SIDE], c[C_PRICE], c[C_SIZE], 0, 0, code, c[C_KIND])


# ---------------------------------------------------------------------------------------------
# arithmetic
# ---------------------------------------------------------------------------------------------
@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def ceil_div(a, b):
    """Ceiling of a / b for b > 0 (any sign of a)."""
    return -((-a) // b)


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def fee_micro(notional_micro, fee_ppm):
    """Fee rounded toward the venue: ceil(notional * ppm / 1e6); a rebate (ppm < 0) rounds to zero."""
    return ceil_div(notional_micro * fee_ppm, MICRO)


# ---------------------------------------------------------------------------------------------
# levels and orders
# ---------------------------------------------------------------------------------------------
@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _scan_best(st, m, side, from_price):
    """Best non-empty price strictly behind `from_price` on `side`, or NO_PRICE."""
    col = M_N_BID_ORDERS if side == BUY else M_N_ASK_ORDERS
    if st.mkt[m, col] == 0:
        return NO_PRICE
    lo = st.spec[m, S_MIN_TICK]
    if side == BUY:
        p = from_price - 1
        while st.levels[m, BUY, p - lo, LV_COUNT] == 0:
            p -= 1
        return p
    p = from_price + 1
    while st.levels[m, SELL, p - lo, LV_COUNT] == 0:
        p += 1
    return p


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _next_level(st, m, side, price):
    """Next non-empty level behind `price` on `side` (NO_PRICE past the ladder's end)."""
    lo = st.spec[m, S_MIN_TICK]
    hi = st.spec[m, S_MAX_TICK]
    if side == BUY:
        p = price - 1
        while p >= lo:
            if st.levels[m, BUY, p - lo, LV_COUNT] > 0:
                return p
            p -= 1
        return NO_PRICE
    p = price + 1
    while p <= hi:
        if st.levels[m, SELL, p - lo, LV_COUNT] > 0:
            return p
        p += 1
    return NO_PRICE


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _link_level(st, slot):
    """Append a slot at the back of its level's FIFO; update totals and the best price."""
    m = st.orders[slot, O_MARKET]
    side = st.orders[slot, O_SIDE]
    price = st.orders[slot, O_PRICE]
    li = price - st.spec[m, S_MIN_TICK]
    tail = st.levels[m, side, li, LV_TAIL]
    st.orders[slot, O_PREV] = tail
    st.orders[slot, O_NEXT] = -1
    if tail == -1:
        st.levels[m, side, li, LV_HEAD] = slot
    else:
        st.orders[tail, O_NEXT] = slot
    st.levels[m, side, li, LV_TAIL] = slot
    st.levels[m, side, li, LV_QTY] += st.orders[slot, O_REM]
    st.levels[m, side, li, LV_COUNT] += 1
    open_lots_delta(st, slot, st.orders[slot, O_REM])
    if side == BUY:
        st.mkt[m, M_N_BID_ORDERS] += 1
        best = st.mkt[m, M_BEST_BID]
        if best == NO_PRICE or price > best:
            st.mkt[m, M_BEST_BID] = price
    else:
        st.mkt[m, M_N_ASK_ORDERS] += 1
        best = st.mkt[m, M_BEST_ASK]
        if best == NO_PRICE or price < best:
            st.mkt[m, M_BEST_ASK] = price


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _unlink_level(st, slot):
    """Take a slot out of its level's FIFO (its remaining size leaves the level total)."""
    m = st.orders[slot, O_MARKET]
    side = st.orders[slot, O_SIDE]
    price = st.orders[slot, O_PRICE]
    li = price - st.spec[m, S_MIN_TICK]
    p = st.orders[slot, O_PREV]
    nx = st.orders[slot, O_NEXT]
    if p == -1:
        st.levels[m, side, li, LV_HEAD] = nx
    else:
        st.orders[p, O_NEXT] = nx
    if nx == -1:
        st.levels[m, side, li, LV_TAIL] = p
    else:
        st.orders[nx, O_PREV] = p
    st.orders[slot, O_PREV] = -1
    st.orders[slot, O_NEXT] = -1
    st.levels[m, side, li, LV_QTY] -= st.orders[slot, O_REM]
    st.levels[m, side, li, LV_COUNT] -= 1
    open_lots_delta(st, slot, -st.orders[slot, O_REM])
    if side == BUY:
        st.mkt[m, M_N_BID_ORDERS] -= 1
        if st.levels[m, side, li, LV_COUNT] == 0 and st.mkt[m, M_BEST_BID] == price:
            st.mkt[m, M_BEST_BID] = _scan_best(st, m, side, price)
    else:
        st.mkt[m, M_N_ASK_ORDERS] -= 1
        if st.levels[m, side, li, LV_COUNT] == 0 and st.mkt[m, M_BEST_ASK] == price:
            st.mkt[m, M_BEST_ASK] = _scan_best(st, m, side, price)


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _clid_key(account, clid):
    return (account << CLID_BITS) | clid


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _add_order(st, slot):
    """A slot whose o_* fields are set becomes a live resting order."""
    a = st.orders[slot, O_ACCOUNT]
    m = st.orders[slot, O_MARKET]
    st.orders[slot, O_LIVE] = 1
    _link_level(st, slot)
    head = st.accounts[a, AC_HEAD]
    st.orders[slot, O_APREV] = -1
    st.orders[slot, O_ANEXT] = head
    if head != -1:
        st.orders[head, O_APREV] = slot
    st.accounts[a, AC_HEAD] = slot
    st.accounts[a, AC_OPEN + m] += 1
    hm_insert(st.maps, MAP_ORDER_ID, st.orders[slot, O_ID], slot)
    if st.orders[slot, O_CLID] > 0:
        hm_insert(st.maps, MAP_CLID, _clid_key(a, st.orders[slot, O_CLID]), slot)


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _drop_order(st, slot):
    """Remove a live order completely (level, account list, maps) and free its slot."""
    a = st.orders[slot, O_ACCOUNT]
    m = st.orders[slot, O_MARKET]
    _unlink_level(st, slot)
    p = st.orders[slot, O_APREV]
    nx = st.orders[slot, O_ANEXT]
    if p == -1:
        st.accounts[a, AC_HEAD] = nx
    else:
        st.orders[p, O_ANEXT] = nx
    if nx != -1:
        st.orders[nx, O_APREV] = p
    st.accounts[a, AC_OPEN + m] -= 1
    hm_delete(st.maps, MAP_ORDER_ID, st.orders[slot, O_ID])
    if st.orders[slot, O_CLID] > 0:
        hm_delete(st.maps, MAP_CLID, _clid_key(a, st.orders[slot, O_CLID]))
    st.orders[slot, O_LIVE] = 0
    top = st.g[G_FREE_TOP]
    st.orders[top, O_FREE] = slot
    st.g[G_FREE_TOP] = top + 1


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _reducible(st, account, m, side):
    """Lots an order on `side` can still fill without increasing |position|."""
    pos = st.position_lots[account, m]
    if side == BUY:
        return -pos if pos < 0 else 0
    return pos if pos > 0 else 0


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _find_order(st, c):
    """Slot of the order a cancel/amend names (by order id, else client order id); -1 if none."""
    a = c[C_ACCOUNT]
    if c[C_ORDER_ID] > 0:
        slot = hm_find(st.maps, MAP_ORDER_ID, c[C_ORDER_ID])
    elif 0 < c[C_CLID] <= MAX_CLIENT_ORDER_ID:
        slot = hm_find(st.maps, MAP_CLID, _clid_key(a, c[C_CLID]))
    else:
        return -2
    if slot < 0 or st.orders[slot, O_ACCOUNT] != a:
        return -1
    return slot


# ---------------------------------------------------------------------------------------------
# mark price
# ---------------------------------------------------------------------------------------------
@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def impact_price_ut(st, m, side):
    """Average fill price (micro-ticks, floor) of the market's impact notional against the resting
    orders of `side`, or -1 if that side cannot absorb it."""
    need = st.spec[m, S_IMPACT_TICK_LOTS]
    best = st.mkt[m, M_BEST_BID] if side == BUY else st.mkt[m, M_BEST_ASK]
    if best == NO_PRICE:
        return -1
    lo = st.spec[m, S_MIN_TICK]
    p = best
    lots = 0
    notional = 0
    while p != NO_PRICE:
        q = st.levels[m, side, p - lo, LV_QTY]
        take = ceil_div(need, p)
        if take > q:
            take = q
        lots += take
        notional += take * p
        need -= take * p
        if need <= 0:
            return (notional * MICRO) // lots
        p = _next_level(st, m, side, p)
    return -1


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def basis_sample_ut(st, m):
    """One sample of (impact mid - index) in micro-ticks, bounded to the mark band; 0 without an
    index or when either side lacks the impact notional."""
    index = st.mkt[m, M_INDEX]
    if index <= 0:
        return 0
    bid = impact_price_ut(st, m, BUY)
    if bid < 0:
        return 0
    ask = impact_price_ut(st, m, SELL)
    if ask < 0:
        return 0
    x = (bid + ask) // 2 - index * MICRO
    band_ut = index * st.spec[m, S_MARK_BAND_BPS] * 100
    if x > band_ut:
        return band_ut
    if x < -band_ut:
        return -band_ut
    return x


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def ema_step(ema, x, alpha_ppm):
    """One EMA step toward x, truncated toward zero but at least one micro-tick, so a constant
    input is reached exactly."""
    d = x - ema
    if d == 0:
        return ema
    if d > 0:
        s = (d * alpha_ppm) // MICRO
        return ema + (s if s > 0 else 1)
    s = ((-d) * alpha_ppm) // MICRO
    return ema - (s if s > 0 else 1)


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def mark_from(st, m):
    """index + the basis EMA (rounded, clamped to the mark band). A one-sided or empty book never
    snaps the mark to the index: its basis samples are 0, so the EMA decays toward the index at the
    half-life, one sample at a time, like any other input (docs/mark_price.md)."""
    index = st.mkt[m, M_INDEX]
    if index <= 0:
        return 0
    basis = (st.mkt[m, M_BASIS_EMA_UT] + MICRO // 2) // MICRO  # round half up
    band = (index * st.spec[m, S_MARK_BAND_BPS]) // 10_000
    if basis > band:
        basis = band
    elif basis < -band:
        basis = -band
    mark = index + basis
    return mark if mark >= 1 else 1


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _refresh_mark(st, m, seq, ts, ev, n):
    if st.mkt[m, M_STATUS] == ST_HALTED:
        return n  # a halted market's mark is frozen
    mark = mark_from(st, m)
    if mark != st.mkt[m, M_MARK]:
        st.mkt[m, M_MARK] = mark
        n = _emit(ev, n, EV_MARK, seq, ts, m, -1, 0, 0, 0, mark, 0, 0, st.mkt[m, M_BASIS_EMA_UT], 0,
                  st.mkt[m, M_INDEX])
    return n


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _premium_sample_ppb(st, m):
    """One premium sample: impact prices against the index; 0 without an index, while halted, or
    when either side lacks the impact notional."""
    index = st.mkt[m, M_INDEX]
    if index <= 0 or st.mkt[m, M_STATUS] == ST_HALTED:
        return 0
    bid = impact_price_ut(st, m, BUY)
    ask = impact_price_ut(st, m, SELL)
    if bid < 0 or ask < 0:
        return 0
    return premium_ppb(bid, ask, index)


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def pay_funding_hour(st, m, hour_ts, seq, ev, n):
    """Settle market m's funding hour ending at `hour_ts` and emit its `funding` event (stamped with
    the hour): the clock's boundary and the operator's clock_gap pay through here."""
    rate, paid, remainder, samples = settle_funding(st, m)
    frozen = st.mkt[m, M_FUNDING_FROZEN] != 0 or (st.mkt[m, M_PAUSED_OPS] & PAUSE_FUNDING) != 0
    return _emit(ev, n, EV_FUNDING, seq, hour_ts, m, -1, 0, 0, 0, st.mkt[m, M_INDEX], paid, samples, rate,
                 1 if frozen else 0, remainder)


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _funding_clock(st, m, ts, seq, ev, n):
    """Premium samples on their grid, funding at each interval boundary, in time order: the samples
    due at or before a boundary belong to the hour that ends there."""
    ip = st.spec[m, S_PREMIUM_SAMPLE_NS]
    fi = st.spec[m, S_FUNDING_INTERVAL_NS]
    if st.mkt[m, M_NEXT_PREMIUM_TS] == 0:
        st.mkt[m, M_NEXT_PREMIUM_TS] = (ts // ip + 1) * ip
        st.mkt[m, M_NEXT_FUNDING_TS] = (ts // fi + 1) * fi
        return n
    while True:
        nxt_p = st.mkt[m, M_NEXT_PREMIUM_TS]
        nxt_f = st.mkt[m, M_NEXT_FUNDING_TS]
        if nxt_p <= ts and nxt_p <= nxt_f:
            until = nxt_f if nxt_f < ts else ts
            k = (until - nxt_p) // ip + 1
            if st.mkt[m, M_FUNDING_FROZEN] or (st.mkt[m, M_PAUSED_OPS] & PAUSE_FUNDING) != 0:
                st.mkt[m, M_FROZEN_N] += k
            else:
                st.mkt[m, M_PREMIUM_N] += k
                st.mkt[m, M_PREMIUM_SUM_PPB] += k * _premium_sample_ppb(st, m)
            st.mkt[m, M_NEXT_PREMIUM_TS] = nxt_p + k * ip
        elif nxt_f <= ts:
            n = pay_funding_hour(st, m, nxt_f, seq, ev, n)
            st.mkt[m, M_NEXT_FUNDING_TS] = nxt_f + fi
        else:
            return n


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _advance_clock(st, ts, seq, ev, n):
    """Take every basis sample due at or before `ts` (the book is unchanged since the last command)."""
    for m in range(st.mkt.shape[0]):
        n = _funding_clock(st, m, ts, seq, ev, n)
        interval = st.spec[m, S_SAMPLE_NS]
        nxt = st.mkt[m, M_NEXT_SAMPLE_TS]
        if nxt == 0:
            st.mkt[m, M_NEXT_SAMPLE_TS] = (ts // interval + 1) * interval
            continue
        if ts < nxt:
            continue
        k = (ts - nxt) // interval + 1
        st.mkt[m, M_NEXT_SAMPLE_TS] = nxt + k * interval
        if st.mkt[m, M_STATUS] == ST_HALTED:
            continue  # no samples while halted
        x = basis_sample_ut(st, m)
        ema = st.mkt[m, M_BASIS_EMA_UT]
        alpha = st.spec[m, S_ALPHA_PPM]
        for _ in range(k):
            if ema == x:
                break
            ema = ema_step(ema, x, alpha)
        st.mkt[m, M_BASIS_EMA_UT] = ema
        n = _refresh_mark(st, m, seq, ts, ev, n)
    return n


# ---------------------------------------------------------------------------------------------
# matching
# ---------------------------------------------------------------------------------------------
@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _crosses(side, limit, best):
    if best == NO_PRICE:
        return False
    if side == BUY:
        return best <= limit
    return best >= limit


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _fok_fillable(st, m, account, side, limit, need, stp):
    """Whether the taker can fill `need` lots now, following exactly the rules of `_match`."""
    opp = 1 - side
    lo = st.spec[m, S_MIN_TICK]
    # reduce-only makers met so far and the lots assigned to them (scratch space in g: the kernel
    # runs without the allocator)
    ro_acc = st.g[G_SCRATCH:G_SCRATCH + RO_TRACK]
    ro_used = st.g[G_SCRATCH + RO_TRACK:G_SCRATCH + 2 * RO_TRACK]
    n_ro = 0
    total = 0
    p = st.mkt[m, M_BEST_ASK] if side == BUY else st.mkt[m, M_BEST_BID]
    while _crosses(side, limit, p):
        slot = st.levels[m, opp, p - lo, LV_HEAD]
        while slot != -1:
            maker = st.orders[slot, O_ACCOUNT]
            if maker == account:
                if stp != STP_CANCEL_OLDEST:
                    return False
                slot = st.orders[slot, O_NEXT]
                continue
            q = st.orders[slot, O_REM]
            if st.orders[slot, O_FLAGS] & FLAG_REDUCE_ONLY:
                k = 0
                while k < n_ro and ro_acc[k] != maker:
                    k += 1
                if k == n_ro:
                    if n_ro == RO_TRACK:
                        return False  # conservative beyond the tracked makers
                    ro_acc[k] = maker
                    ro_used[k] = 0
                    n_ro += 1
                room = _reducible(st, maker, m, opp) - ro_used[k]
                if q > room:
                    q = room
                if q < 0:
                    q = 0
                if q > need - total:
                    q = need - total
                ro_used[k] += q
            total += q
            if total >= need:
                return True
            slot = st.orders[slot, O_NEXT]
        p = _next_level(st, m, opp, p)
    return False


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _touch_bound(st, m, account, side, limit, need):
    """Upper bound on resting orders a taker can touch (own and reduce-only ones add no size)."""
    opp = 1 - side
    lo = st.spec[m, S_MIN_TICK]
    count = 0
    total = 0
    p = st.mkt[m, M_BEST_ASK] if side == BUY else st.mkt[m, M_BEST_BID]
    while _crosses(side, limit, p):
        slot = st.levels[m, opp, p - lo, LV_HEAD]
        while slot != -1:
            count += 1
            if st.orders[slot, O_ACCOUNT] != account and not (st.orders[slot, O_FLAGS] & FLAG_REDUCE_ONLY):
                total += st.orders[slot, O_REM]
                if total >= need:
                    return count
            slot = st.orders[slot, O_NEXT]
        p = _next_level(st, m, opp, p)
    return count


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def taker_loss_tick_lots(st, m, account, side, limit, size, may_rest):
    """What an order would give away against the mark, in tick-lots (x micro_per_tick_lot = micro-USD),
    walking the book as matching would: each fill costs (price - mark) x lots for a buy, (mark - price)
    x lots for a sell (a fill better than the mark gains); the account's own orders are skipped (self-
    trade prevention never fills them); what is left and may rest costs its distance beyond the mark
    when it later fills at its limit. Never below 0."""
    opp = 1 - side
    lo = st.spec[m, S_MIN_TICK]
    mark = st.mkt[m, M_MARK]
    rem = size
    loss = 0
    p = st.mkt[m, M_BEST_ASK] if side == BUY else st.mkt[m, M_BEST_BID]
    while rem > 0 and _crosses(side, limit, p):
        slot = st.levels[m, opp, p - lo, LV_HEAD]
        while slot != -1 and rem > 0:
            if st.orders[slot, O_ACCOUNT] != account:
                q = st.orders[slot, O_REM]
                if q > rem:
                    q = rem
                loss += (p - mark) * q if side == BUY else (mark - p) * q
                rem -= q
            slot = st.orders[slot, O_NEXT]
        p = _next_level(st, m, opp, p)
    if rem > 0 and may_rest:
        loss += beyond_mark_ticks(side, limit, mark) * rem
    return loss if loss > 0 else 0


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _drop_cancelled(st, slot, reason, other, seq, ts, ev, n):
    """Emit a resting order's `cancelled` event and take it out of the book; the caller emits the
    level's `book` event (once per level when matching)."""
    n = _emit(ev, n, EV_CANCELLED, seq, ts, st.orders[slot, O_MARKET], st.orders[slot, O_ACCOUNT],
              st.orders[slot, O_ID], st.orders[slot, O_CLID], st.orders[slot, O_SIDE], st.orders[slot, O_PRICE],
              st.orders[slot, O_REM], 0, 0, reason, other)
    _drop_order(st, slot)
    return n


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _match(st, m, account, taker_id, taker_clid, side, limit, size, stp, taker_ppm, seq, ts, ev, n):
    """Match a taker against the book (taker fee rate `taker_ppm`: the market's, or 0 for a
    liquidation order, which pays the liquidation fee instead). Returns (remaining lots, stopped by
    self-trade, n)."""
    opp = 1 - side
    lo = st.spec[m, S_MIN_TICK]
    mptl = st.spec[m, S_MICRO_PER_TICK_LOT]
    maker_ppm = st.spec[m, S_MAKER_FEE_PPM]
    best_col = M_BEST_ASK if side == BUY else M_BEST_BID
    rem = size
    stp_stop = False
    while rem > 0:
        p = st.mkt[m, best_col]
        if not _crosses(side, limit, p):
            break
        li = p - lo
        slot = st.levels[m, opp, li, LV_HEAD]
        touched = False
        while slot != -1 and rem > 0:
            nxt = st.orders[slot, O_NEXT]
            maker = st.orders[slot, O_ACCOUNT]
            if maker == account:
                if stp == STP_CANCEL_NEWEST:
                    stp_stop = True
                    break
                n = _drop_cancelled(st, slot, R_CANCEL_SELF_TRADE, taker_id, seq, ts, ev, n)
                touched = True
                if stp == STP_CANCEL_BOTH:
                    stp_stop = True
                    break
                slot = nxt
                continue
            q = st.orders[slot, O_REM]
            if q > rem:
                q = rem
            if st.orders[slot, O_FLAGS] & FLAG_REDUCE_ONLY:
                room = _reducible(st, maker, m, opp)
                if room <= 0:
                    n = _drop_cancelled(st, slot, R_CANCEL_REDUCE_ONLY, taker_id, seq, ts, ev, n)
                    touched = True
                    slot = nxt
                    continue
                if q > room:
                    q = room
            touched = True
            notional = q * p * mptl
            mfee = fee_micro(notional, maker_ppm)
            tfee = fee_micro(notional, taker_ppm)
            apply_fill(st, account, m, q if side == BUY else -q, p, tfee)
            apply_fill(st, maker, m, -q if side == BUY else q, p, mfee)
            st.orders[slot, O_REM] -= q
            st.levels[m, opp, li, LV_QTY] -= q
            open_lots_delta(st, slot, -q)
            rem -= q
            n = _emit(ev, n, EV_FILL, seq, ts, m, maker, st.orders[slot, O_ID], st.orders[slot, O_CLID], opp, p, q,
                      st.orders[slot, O_REM], mfee, LIQ_MAKER, taker_id)
            n = _emit(ev, n, EV_FILL, seq, ts, m, account, taker_id, taker_clid, side, p, q, rem, tfee,
                      LIQ_TAKER, st.orders[slot, O_ID])
            if st.orders[slot, O_REM] == 0:
                _drop_order(st, slot)
                slot = nxt
            # a partially filled maker stays at the front (rem is 0 now, or it was reduce-only
            # capped and will be cancelled on the next pass)
        if touched:
            n = _emit_book(st, ev, n, seq, ts, m, opp, p)
        if stp_stop:
            break
    return rem, stp_stop, n


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _valid_account(st, a):
    return 0 <= a <= MAX_ACCOUNT_ID and a < st.accounts.shape[0]


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def cancel_resting(st, slot, reason, seq, ts, ev, n):
    """Cancel one resting order: `cancelled` event, out of the book, then its level's `book` event."""
    m = st.orders[slot, O_MARKET]
    side = st.orders[slot, O_SIDE]
    price = st.orders[slot, O_PRICE]
    n = _drop_cancelled(st, slot, reason, 0, seq, ts, ev, n)
    return _emit_book(st, ev, n, seq, ts, m, side, price)


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def cancel_account_orders(st, a, only_m, reason, seq, ts, ev, n):
    """Cancel the account's resting orders (one market, or all with only_m = -1), newest first.
    Returns (orders cancelled, n). Used by cancel-all and, before liquidation, by the risk sweep."""
    count = 0
    slot = st.accounts[a, AC_HEAD]
    while slot != -1:
        nxt = st.orders[slot, O_ANEXT]
        if only_m == -1 or st.orders[slot, O_MARKET] == only_m:
            n = cancel_resting(st, slot, reason, seq, ts, ev, n)
            count += 1
        slot = nxt
    return count, n


