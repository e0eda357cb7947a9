"""The matching kernel: one numba call processes a batch of command rows into event rows.

Pure integer arithmetic over the arrays of `perp.state.EngineState`; no clock, no I/O, no logging.
Rules (docs/matching.md has the full table):

- price-time priority: best price first, FIFO within a level; trades print at the maker's price;
- a command is validated in a fixed order; the first failing rule rejects it and nothing changes;
- limit GTC / IOC / FOK / post-only; market orders are IOC or FOK bounded by the protection band;
- reduce-only orders never increase a position: a taker is clipped to its position at entry, a
  resting reduce-only maker fills at most what still reduces and is cancelled when nothing does;
- self-trade prevention by the taker's mode: cancel newest (the taker), oldest (the resting order,
  matching continues) or both; self-trades never print;
- an amend never trades: a price change or size increase re-queues at the back; a size decrease
  keeps priority; an amend that would cross is rejected;
- fees round toward the venue: `fee = ceil(notional_micro * fee_ppm / 1e6)` (a rebate is a
  negative fee, so it rounds toward zero);
- the mark is `index + clamp(EMA(impact_mid - index))`, sampled on a fixed time grid carried by
  the command timestamps; it is the index alone while the top of book is one-sided or empty;
- money (risk/ledger.py, inlined here): every fill books position, cost basis, realised PnL and
  fees; orders pass the open-interest cap and the pre-trade initial-margin check; premium samples
  and hourly funding run on their own time grids inside the clock advance.

Event space: before each command the kernel checks that the event buffer can hold the command's
worst case; if not it stops (returning how many commands it processed) so that no command is ever
half-applied, and sets `g[G_NEED_EVENTS]`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from perp.hashmap import hm_delete, hm_find, hm_insert
from perp.layout import (
    AM_LEVERAGE, CK_DEPOSIT, CK_SET_LEVERAGE, CK_WITHDRAW, EV_DEPOSIT, EV_FUNDING, EV_LEVERAGE, EV_WITHDRAWAL,
    G_DEPOSITS_MICRO, G_WITHDRAWALS_MICRO, INDEX_FUNDING_FROZEN, M_FROZEN_N, M_FUNDING_FROZEN, M_NEXT_FUNDING_TS,
    M_NEXT_PREMIUM_TS, M_OPEN_INTEREST, M_PREMIUM_N, M_PREMIUM_SUM_PPB, S_FUNDING_INTERVAL_NS, S_OI_CAP_LOTS,
    S_PREMIUM_SAMPLE_NS,
)
from risk.funding import premium_ppb
from risk.ledger import (
    MAX_TRANSFER_MICRO, account_margin, apply_fill, max_leverage, open_lots_delta, pretrade_ok, settle_funding,
    withdrawable,
)
from perp.layout import (
    AC_HEAD, AC_OPEN, LV_COUNT, LV_HEAD, LV_QTY, LV_TAIL, MAP_CLID, MAP_ORDER_ID, O_ACCOUNT, O_ANEXT,
    O_APREV, O_CLID, O_FLAGS, O_FREE, O_ID, O_LIVE, O_MARKET, O_NEXT, O_PREV, O_PRICE, O_REM, O_SIDE,
    BUY, C_ACCOUNT, C_CLID, C_FLAGS, C_KIND, C_MARKET, C_ORDER_ID, C_PRICE, C_SIDE, C_SIZE, C_TIF,
    C_TS, C_TYPE, CK_AMEND, CK_CANCEL, CK_CANCEL_ALL, CK_PLACE, CK_SET_INDEX, CK_SET_STATUS,
    CLID_BITS, E_ACCOUNT, E_CLID, E_CODE, E_FEE, E_KIND, E_MARKET, E_ORDER_ID, E_OTHER, E_PRICE,
    E_REMAINING, E_SEQ, E_SIDE, E_SIZE, E_TS, EV_ACCEPTED, EV_AMENDED, EV_BOOK, EV_CANCEL_ALL_DONE,
    EV_CANCELLED, EV_FILL, EV_INDEX, EV_MARK, EV_REJECTED, EV_STATUS, FLAG_REDUCE_ONLY, FOK,
    G_ACCOUNT_HWM, G_FREE_TOP, G_SCRATCH, G_LAST_TS, G_NEED_EVENTS, G_NEXT_ORDER_ID, G_SEQ, GTC, IOC, LIMIT,
    LIQ_MAKER, LIQ_TAKER, M_BASIS_EMA_UT, M_BEST_ASK, M_BEST_BID, M_INDEX, M_MARK, M_N_ASK_ORDERS,
    M_N_BID_ORDERS, M_NEXT_SAMPLE_TS, M_STATUS, MARKET, MAX_ACCOUNT_ID, MAX_CLIENT_ORDER_ID,
    N_EV_COLS, N_STATUSES, NO_PRICE, POST_ONLY, S_ALPHA_PPM, S_BAND_BPS, S_IMPACT_TICK_LOTS,
    S_MAKER_FEE_PPM, S_MARK_BAND_BPS, S_MAX_OPEN_ORDERS, S_MAX_SIZE, S_MAX_TICK,
    S_MICRO_PER_TICK_LOT, S_MIN_SIZE, S_MIN_TICK, S_PROTECT_BPS, S_SAMPLE_NS, S_TAKER_FEE_PPM,
    SELL, ST_CANCEL_ONLY, ST_HALTED, ST_POST_ONLY, ST_REDUCE_ONLY, STP_CANCEL_BOTH,
    STP_CANCEL_NEWEST, STP_CANCEL_OLDEST, STP_MASK, STP_SHIFT,
)

# result codes used inside the kernel (values from perp.codes.ResultCode)
R_UNKNOWN_MARKET = 1001
R_UNKNOWN_ACCOUNT = 1002
R_INVALID_SIDE = 1003
R_INVALID_ORDER_TYPE = 1004
R_INVALID_TIF = 1005
R_SIZE_BELOW_MIN = 1006
R_SIZE_ABOVE_MAX = 1007
R_PRICE_OUT_OF_RANGE = 1008
R_PRICE_OUTSIDE_BAND = 1009
R_NO_REFERENCE_PRICE = 1010
R_POST_ONLY_WOULD_TAKE = 1011
R_REDUCE_ONLY_WOULD_INCREASE = 1012
R_TOO_MANY_OPEN_ORDERS = 1013
R_DUPLICATE_CLID = 1014
R_INVALID_CLID = 1015
R_UNKNOWN_ORDER = 1016
R_MISSING_ORDER_REF = 1017
R_MARKET_STATUS_FORBIDS = 1018
R_AMEND_NO_CHANGE = 1019
R_AMEND_WOULD_CROSS = 1020
R_INVALID_STP = 1021
R_INVALID_STATUS = 1022
R_INVALID_PRICE = 1023
R_TIMESTAMP_REGRESSION = 1024
R_UNKNOWN_COMMAND = 1025
R_ORDER_POOL_FULL = 1026
R_CANCEL_BY_USER = 1101
R_INSUFFICIENT_MARGIN = 2101  # risk.errors.RiskCode
R_WITHDRAWAL_BELOW_IM = 2102
R_WITHDRAWAL_ABOVE_WITHDRAWABLE = 2103
R_OPEN_INTEREST_CAP = 2104
R_LEVERAGE_ABOVE_LIMIT = 2105
R_LEVERAGE_NOT_POSITIVE = 2106
R_NON_POSITIVE_AMOUNT = 2107
R_AMOUNT_TOO_LARGE = 2108
R_CANCEL_ALL_BY_USER = 1102
R_CANCEL_IOC_REMAINDER = 1103
R_CANCEL_FOK_NOT_FILLED = 1104
R_CANCEL_SELF_TRADE = 1105
R_CANCEL_REDUCE_ONLY = 1106

MICRO = 1_000_000
_ALLOWED_FLAG_BITS = FLAG_REDUCE_ONLY | STP_MASK
_RO_TRACK = 64  # reduce-only makers tracked per FOK feasibility walk


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
    open_lots_delta(st, st.orders[slot, O_ACCOUNT], m, side, st.orders[slot, O_REM])
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
    open_lots_delta(st, st.orders[slot, O_ACCOUNT], m, side, -st.orders[slot, O_REM])
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
    index = st.mkt[m, M_INDEX]
    if index <= 0:
        return 0
    if st.mkt[m, M_BEST_BID] == NO_PRICE or st.mkt[m, M_BEST_ASK] == NO_PRICE:
        return index
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
            if st.mkt[m, M_FUNDING_FROZEN]:
                st.mkt[m, M_FROZEN_N] += k
            else:
                st.mkt[m, M_PREMIUM_N] += k
                st.mkt[m, M_PREMIUM_SUM_PPB] += k * _premium_sample_ppb(st, m)
            st.mkt[m, M_NEXT_PREMIUM_TS] = nxt_p + k * ip
        elif nxt_f <= ts:
            rate, paid, remainder, samples = settle_funding(st, m)
            n = _emit(ev, n, EV_FUNDING, seq, nxt_f, m, -1, 0, 0, 0, st.mkt[m, M_INDEX], paid, samples, rate,
                      1 if st.mkt[m, M_FUNDING_FROZEN] else 0, remainder)
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
    ro_acc = st.g[G_SCRATCH:G_SCRATCH + _RO_TRACK]
    ro_used = st.g[G_SCRATCH + _RO_TRACK:G_SCRATCH + 2 * _RO_TRACK]
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
                    if n_ro == _RO_TRACK:
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
def _match(st, m, account, taker_id, taker_clid, side, limit, size, stp, seq, ts, ev, n):
    """Match a taker against the book. Returns (remaining lots, stopped by self-trade, n)."""
    opp = 1 - side
    lo = st.spec[m, S_MIN_TICK]
    mptl = st.spec[m, S_MICRO_PER_TICK_LOT]
    maker_ppm = st.spec[m, S_MAKER_FEE_PPM]
    taker_ppm = st.spec[m, S_TAKER_FEE_PPM]
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
                n = _emit(ev, n, EV_CANCELLED, seq, ts, m, maker, st.orders[slot, O_ID], st.orders[slot, O_CLID], opp, p,
                          st.orders[slot, O_REM], 0, 0, R_CANCEL_SELF_TRADE, taker_id)
                _drop_order(st, slot)
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
                    n = _emit(ev, n, EV_CANCELLED, seq, ts, m, maker, st.orders[slot, O_ID], st.orders[slot, O_CLID], opp,
                              p, st.orders[slot, O_REM], 0, 0, R_CANCEL_REDUCE_ONLY, taker_id)
                    _drop_order(st, slot)
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
            open_lots_delta(st, maker, m, opp, -q)
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
def _place(st, c, seq, ev, n):
    ts = c[C_TS]
    m = c[C_MARKET]
    a = c[C_ACCOUNT]
    side = c[C_SIDE]
    otype = c[C_TYPE]
    tif = c[C_TIF]
    size = c[C_SIZE]
    clid = c[C_CLID]
    flags = c[C_FLAGS]
    if m < 0 or m >= st.mkt.shape[0]:
        return _reject(c, ev, n, seq, R_UNKNOWN_MARKET)
    if not _valid_account(st, a):
        return _reject(c, ev, n, seq, R_UNKNOWN_ACCOUNT)
    if side != BUY and side != SELL:
        return _reject(c, ev, n, seq, R_INVALID_SIDE)
    if otype != LIMIT and otype != MARKET:
        return _reject(c, ev, n, seq, R_INVALID_ORDER_TYPE)
    if otype == LIMIT:
        if tif < GTC or tif > POST_ONLY:
            return _reject(c, ev, n, seq, R_INVALID_TIF)
    elif tif != IOC and tif != FOK:
        return _reject(c, ev, n, seq, R_INVALID_TIF)
    stp = (flags & STP_MASK) >> STP_SHIFT
    if (flags & ~_ALLOWED_FLAG_BITS) != 0 or stp > STP_CANCEL_BOTH:
        return _reject(c, ev, n, seq, R_INVALID_STP)
    if clid < 0 or clid > MAX_CLIENT_ORDER_ID:
        return _reject(c, ev, n, seq, R_INVALID_CLID)
    reduce_only = (flags & FLAG_REDUCE_ONLY) != 0
    status = st.mkt[m, M_STATUS]
    if status == ST_CANCEL_ONLY or status == ST_HALTED:
        return _reject(c, ev, n, seq, R_MARKET_STATUS_FORBIDS)
    if status == ST_POST_ONLY and tif != POST_ONLY:
        return _reject(c, ev, n, seq, R_MARKET_STATUS_FORBIDS)
    if status == ST_REDUCE_ONLY and not reduce_only:
        return _reject(c, ev, n, seq, R_MARKET_STATUS_FORBIDS)
    if size < st.spec[m, S_MIN_SIZE]:
        return _reject(c, ev, n, seq, R_SIZE_BELOW_MIN)
    if size > st.spec[m, S_MAX_SIZE]:
        return _reject(c, ev, n, seq, R_SIZE_ABOVE_MAX)
    mark = st.mkt[m, M_MARK]
    if mark <= 0:
        return _reject(c, ev, n, seq, R_NO_REFERENCE_PRICE)
    lo = st.spec[m, S_MIN_TICK]
    hi = st.spec[m, S_MAX_TICK]
    if otype == LIMIT:
        price = c[C_PRICE]
        if price < lo or price > hi:
            return _reject(c, ev, n, seq, R_PRICE_OUT_OF_RANGE)
        band = (mark * st.spec[m, S_BAND_BPS]) // 10_000
        if price > mark + band or price < mark - band:
            return _reject(c, ev, n, seq, R_PRICE_OUTSIDE_BAND)
    else:
        prot = (mark * st.spec[m, S_PROTECT_BPS]) // 10_000
        if side == BUY:
            price = mark + prot
            if price > hi:
                price = hi
        else:
            price = mark - prot
            if price < lo:
                price = lo
    if clid > 0 and hm_find(st.maps, MAP_CLID, _clid_key(a, clid)) >= 0:
        return _reject(c, ev, n, seq, R_DUPLICATE_CLID)
    if reduce_only:
        room = _reducible(st, a, m, side)
        if room <= 0:
            return _reject(c, ev, n, seq, R_REDUCE_ONLY_WOULD_INCREASE)
        if size > room:
            size = room
    may_rest = otype == LIMIT and (tif == GTC or tif == POST_ONLY)
    if may_rest and st.accounts[a, AC_OPEN + m] >= st.spec[m, S_MAX_OPEN_ORDERS]:
        return _reject(c, ev, n, seq, R_TOO_MANY_OPEN_ORDERS)
    if tif == POST_ONLY:
        best_opp = st.mkt[m, M_BEST_ASK] if side == BUY else st.mkt[m, M_BEST_BID]
        if _crosses(side, price, best_opp):
            return _reject(c, ev, n, seq, R_POST_ONLY_WOULD_TAKE)
    if not reduce_only:
        cap = st.spec[m, S_OI_CAP_LOTS]
        if cap > 0:
            reducing = _reducible(st, a, m, side)
            opening = size - reducing if size > reducing else 0
            if st.mkt[m, M_OPEN_INTEREST] + opening > cap:
                return _reject(c, ev, n, seq, R_OPEN_INTEREST_CAP)
        if not pretrade_ok(st, a, m, side, size):
            return _reject(c, ev, n, seq, R_INSUFFICIENT_MARGIN)
    if may_rest and st.g[G_FREE_TOP] == 0:
        return _reject(c, ev, n, seq, R_ORDER_POOL_FULL)

    # accepted
    oid = st.g[G_NEXT_ORDER_ID]
    st.g[G_NEXT_ORDER_ID] = oid + 1
    if a + 1 > st.g[G_ACCOUNT_HWM]:
        st.g[G_ACCOUNT_HWM] = a + 1
    n = _emit(ev, n, EV_ACCEPTED, seq, ts, m, a, oid, clid, side, price, size, size, 0, 0, otype * 16 + tif)
    if tif == FOK and not _fok_fillable(st, m, a, side, price, size, stp):
        return _emit(ev, n, EV_CANCELLED, seq, ts, m, a, oid, clid, side, price, size, 0, 0,
                     R_CANCEL_FOK_NOT_FILLED, 0)
    rem = size
    stopped = False
    if tif != POST_ONLY:
        rem, stopped, n = _match(st, m, a, oid, clid, side, price, size, stp, seq, ts, ev, n)
    if rem > 0:
        if stopped:
            n = _emit(ev, n, EV_CANCELLED, seq, ts, m, a, oid, clid, side, price, rem, 0, 0,
                      R_CANCEL_SELF_TRADE, 0)
        elif may_rest:
            top = st.g[G_FREE_TOP] - 1
            st.g[G_FREE_TOP] = top
            slot = st.orders[top, O_FREE]
            st.orders[slot, O_ID] = oid
            st.orders[slot, O_ACCOUNT] = a
            st.orders[slot, O_CLID] = clid
            st.orders[slot, O_MARKET] = m
            st.orders[slot, O_SIDE] = side
            st.orders[slot, O_PRICE] = price
            st.orders[slot, O_REM] = rem
            st.orders[slot, O_FLAGS] = flags
            _add_order(st, slot)
            n = _emit_book(st, ev, n, seq, ts, m, side, price)
        else:
            n = _emit(ev, n, EV_CANCELLED, seq, ts, m, a, oid, clid, side, price, rem, 0, 0,
                      R_CANCEL_IOC_REMAINDER, 0)
    return _refresh_mark(st, m, seq, ts, ev, n)


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _valid_account(st, a):
    return 0 <= a <= MAX_ACCOUNT_ID and a < st.accounts.shape[0]


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def cancel_resting(st, slot, reason, seq, ts, ev, n):
    """Cancel one resting order: `cancelled` event, out of the book, then its level's `book` event."""
    m = st.orders[slot, O_MARKET]
    side = st.orders[slot, O_SIDE]
    price = st.orders[slot, O_PRICE]
    n = _emit(ev, n, EV_CANCELLED, seq, ts, m, st.orders[slot, O_ACCOUNT], st.orders[slot, O_ID],
              st.orders[slot, O_CLID], side, price, st.orders[slot, O_REM], 0, 0, reason, 0)
    _drop_order(st, slot)
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


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _cancel(st, c, seq, ev, n):
    if not _valid_account(st, c[C_ACCOUNT]):
        return _reject(c, ev, n, seq, R_UNKNOWN_ACCOUNT)
    slot = _find_order(st, c)
    if slot == -2:
        return _reject(c, ev, n, seq, R_MISSING_ORDER_REF)
    if slot < 0:
        return _reject(c, ev, n, seq, R_UNKNOWN_ORDER)
    m = st.orders[slot, O_MARKET]
    n = cancel_resting(st, slot, R_CANCEL_BY_USER, seq, c[C_TS], ev, n)
    return _refresh_mark(st, m, seq, c[C_TS], ev, n)


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _cancel_all(st, c, seq, ev, n):
    a = c[C_ACCOUNT]
    only_m = c[C_MARKET]
    if not _valid_account(st, a):
        return _reject(c, ev, n, seq, R_UNKNOWN_ACCOUNT)
    if only_m < -1 or only_m >= st.mkt.shape[0]:
        return _reject(c, ev, n, seq, R_UNKNOWN_MARKET)
    ts = c[C_TS]
    count, n = cancel_account_orders(st, a, only_m, R_CANCEL_ALL_BY_USER, seq, ts, ev, n)
    n = _emit(ev, n, EV_CANCEL_ALL_DONE, seq, ts, only_m, a, 0, 0, 0, 0, count, 0, 0, 0, 0)
    for m in range(st.mkt.shape[0]):
        if only_m == -1 or m == only_m:
            n = _refresh_mark(st, m, seq, ts, ev, n)
    return n


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _amend(st, c, seq, ev, n):
    a = c[C_ACCOUNT]
    if not _valid_account(st, a):
        return _reject(c, ev, n, seq, R_UNKNOWN_ACCOUNT)
    slot = _find_order(st, c)
    if slot == -2:
        return _reject(c, ev, n, seq, R_MISSING_ORDER_REF)
    if slot < 0:
        return _reject(c, ev, n, seq, R_UNKNOWN_ORDER)
    m = st.orders[slot, O_MARKET]
    if c[C_MARKET] != m:
        return _reject(c, ev, n, seq, R_UNKNOWN_ORDER)
    side = st.orders[slot, O_SIDE]
    old_price = st.orders[slot, O_PRICE]
    old_rem = st.orders[slot, O_REM]
    if c[C_PRICE] < 0:
        return _reject(c, ev, n, seq, R_INVALID_PRICE)
    if c[C_SIZE] < 0:
        return _reject(c, ev, n, seq, R_SIZE_BELOW_MIN)
    new_price = c[C_PRICE] if c[C_PRICE] > 0 else old_price
    new_size = c[C_SIZE] if c[C_SIZE] > 0 else old_rem
    status = st.mkt[m, M_STATUS]
    if status == ST_CANCEL_ONLY or status == ST_HALTED:
        return _reject(c, ev, n, seq, R_MARKET_STATUS_FORBIDS)
    if status == ST_REDUCE_ONLY and new_size > old_rem and not (st.orders[slot, O_FLAGS] & FLAG_REDUCE_ONLY):
        return _reject(c, ev, n, seq, R_MARKET_STATUS_FORBIDS)
    if new_price == old_price and new_size == old_rem:
        return _reject(c, ev, n, seq, R_AMEND_NO_CHANGE)
    if new_size != old_rem:
        if new_size < st.spec[m, S_MIN_SIZE]:
            return _reject(c, ev, n, seq, R_SIZE_BELOW_MIN)
        if new_size > st.spec[m, S_MAX_SIZE]:
            return _reject(c, ev, n, seq, R_SIZE_ABOVE_MAX)
    if new_price != old_price:
        if new_price < st.spec[m, S_MIN_TICK] or new_price > st.spec[m, S_MAX_TICK]:
            return _reject(c, ev, n, seq, R_PRICE_OUT_OF_RANGE)
        mark = st.mkt[m, M_MARK]
        if mark <= 0:
            return _reject(c, ev, n, seq, R_NO_REFERENCE_PRICE)
        band = (mark * st.spec[m, S_BAND_BPS]) // 10_000
        if new_price > mark + band or new_price < mark - band:
            return _reject(c, ev, n, seq, R_PRICE_OUTSIDE_BAND)
        best_opp = st.mkt[m, M_BEST_ASK] if side == BUY else st.mkt[m, M_BEST_BID]
        if _crosses(side, new_price, best_opp):
            return _reject(c, ev, n, seq, R_AMEND_WOULD_CROSS)
    ts = c[C_TS]
    if new_price == old_price and new_size < old_rem:
        st.levels[m, side, old_price - st.spec[m, S_MIN_TICK], LV_QTY] -= old_rem - new_size
        open_lots_delta(st, a, m, side, new_size - old_rem)
        st.orders[slot, O_REM] = new_size
        n = _emit(ev, n, EV_AMENDED, seq, ts, m, a, st.orders[slot, O_ID], st.orders[slot, O_CLID], side, new_price,
                  new_size, new_size, 0, 1, old_price)
        n = _emit_book(st, ev, n, seq, ts, m, side, new_price)
    else:
        _unlink_level(st, slot)
        st.orders[slot, O_PRICE] = new_price
        st.orders[slot, O_REM] = new_size
        _link_level(st, slot)
        n = _emit(ev, n, EV_AMENDED, seq, ts, m, a, st.orders[slot, O_ID], st.orders[slot, O_CLID], side, new_price,
                  new_size, new_size, 0, 0, old_price)
        if new_price != old_price:
            n = _emit_book(st, ev, n, seq, ts, m, side, old_price)
        n = _emit_book(st, ev, n, seq, ts, m, side, new_price)
    return _refresh_mark(st, m, seq, ts, ev, n)


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _set_index(st, c, seq, ev, n):
    m = c[C_MARKET]
    if m < 0 or m >= st.mkt.shape[0]:
        return _reject(c, ev, n, seq, R_UNKNOWN_MARKET)
    price = c[C_PRICE]
    if price < st.spec[m, S_MIN_TICK] or price > st.spec[m, S_MAX_TICK]:
        return _reject(c, ev, n, seq, R_PRICE_OUT_OF_RANGE)
    st.mkt[m, M_INDEX] = price
    frozen = 1 if c[C_FLAGS] & INDEX_FUNDING_FROZEN else 0
    st.mkt[m, M_FUNDING_FROZEN] = frozen
    ts = c[C_TS]
    n = _emit(ev, n, EV_INDEX, seq, ts, m, -1, 0, 0, 0, price, 0, 0, 0, frozen, 0)
    return _refresh_mark(st, m, seq, ts, ev, n)


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _set_status(st, c, seq, ev, n):
    m = c[C_MARKET]
    if m < 0 or m >= st.mkt.shape[0]:
        return _reject(c, ev, n, seq, R_UNKNOWN_MARKET)
    status = c[C_FLAGS]
    if status < 0 or status >= N_STATUSES:
        return _reject(c, ev, n, seq, R_INVALID_STATUS)
    old = st.mkt[m, M_STATUS]
    st.mkt[m, M_STATUS] = status
    ts = c[C_TS]
    n = _emit(ev, n, EV_STATUS, seq, ts, m, -1, 0, 0, 0, 0, 0, 0, 0, status, old)
    return _refresh_mark(st, m, seq, ts, ev, n)


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _deposit(st, c, seq, ev, n):
    a = c[C_ACCOUNT]
    amount = c[C_SIZE]
    if not _valid_account(st, a):
        return _reject(c, ev, n, seq, R_UNKNOWN_ACCOUNT)
    if amount <= 0:
        return _reject(c, ev, n, seq, R_NON_POSITIVE_AMOUNT)
    if amount > MAX_TRANSFER_MICRO:
        return _reject(c, ev, n, seq, R_AMOUNT_TOO_LARGE)
    st.collateral_micro[a] += amount
    st.g[G_DEPOSITS_MICRO] += amount
    if a + 1 > st.g[G_ACCOUNT_HWM]:
        st.g[G_ACCOUNT_HWM] = a + 1
    return _emit(ev, n, EV_DEPOSIT, seq, c[C_TS], -1, a, 0, 0, 0, 0, amount, 0, st.collateral_micro[a], 0, 0)


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _withdraw(st, c, seq, ev, n):
    a = c[C_ACCOUNT]
    amount = c[C_SIZE]
    if not _valid_account(st, a):
        return _reject(c, ev, n, seq, R_UNKNOWN_ACCOUNT)
    if amount <= 0:
        return _reject(c, ev, n, seq, R_NON_POSITIVE_AMOUNT)
    if amount > MAX_TRANSFER_MICRO:
        return _reject(c, ev, n, seq, R_AMOUNT_TOO_LARGE)
    equity, im, _, _ = account_margin(st, a, -1, 0, 0)
    if amount > equity - im:
        return _reject(c, ev, n, seq, R_WITHDRAWAL_BELOW_IM)
    if amount > withdrawable(st, a):
        return _reject(c, ev, n, seq, R_WITHDRAWAL_ABOVE_WITHDRAWABLE)
    st.collateral_micro[a] -= amount
    st.g[G_WITHDRAWALS_MICRO] += amount
    return _emit(ev, n, EV_WITHDRAWAL, seq, c[C_TS], -1, a, 0, 0, 0, 0, amount, 0, st.collateral_micro[a], 0, 0)


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _set_leverage(st, c, seq, ev, n):
    a = c[C_ACCOUNT]
    m = c[C_MARKET]
    lev = c[C_SIZE]
    if m < 0 or m >= st.mkt.shape[0]:
        return _reject(c, ev, n, seq, R_UNKNOWN_MARKET)
    if not _valid_account(st, a):
        return _reject(c, ev, n, seq, R_UNKNOWN_ACCOUNT)
    if lev <= 0:
        return _reject(c, ev, n, seq, R_LEVERAGE_NOT_POSITIVE)
    if lev > max_leverage(st, m):
        return _reject(c, ev, n, seq, R_LEVERAGE_ABOVE_LIMIT)
    old = st.acct_mkt[a, m, AM_LEVERAGE]
    _, im_before, _, _ = account_margin(st, a, -1, 0, 0)
    st.acct_mkt[a, m, AM_LEVERAGE] = lev
    equity, im, _, _ = account_margin(st, a, -1, 0, 0)
    if im > im_before and equity < im:
        st.acct_mkt[a, m, AM_LEVERAGE] = old
        return _reject(c, ev, n, seq, R_INSUFFICIENT_MARGIN)
    if a + 1 > st.g[G_ACCOUNT_HWM]:
        st.g[G_ACCOUNT_HWM] = a + 1
    return _emit(ev, n, EV_LEVERAGE, seq, c[C_TS], m, a, 0, 0, 0, 0, lev, 0, 0, 0, old)


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _funding_hours_due(st, ts):
    due = 0
    for m in range(st.mkt.shape[0]):
        nxt = st.mkt[m, M_NEXT_FUNDING_TS]
        if nxt != 0 and ts >= nxt:
            due += (ts - nxt) // st.spec[m, S_FUNDING_INTERVAL_NS] + 1
    return due


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _event_bound(st, c):
    """Events the command can emit at most (clock + command)."""
    base = 2 * st.mkt.shape[0] + 4 + _funding_hours_due(st, c[C_TS])
    kind = c[C_KIND]
    if kind == CK_PLACE:
        m = c[C_MARKET]
        if m < 0 or m >= st.mkt.shape[0]:
            return base
        side = c[C_SIDE]
        opp_col = M_N_ASK_ORDERS if side == BUY else M_N_BID_ORDERS
        quick = base + 4 + 3 * st.mkt[m, opp_col]
        return quick
    if kind == CK_CANCEL_ALL:
        a = c[C_ACCOUNT]
        if a < 0 or a >= st.accounts.shape[0]:
            return base
        return base + 2 + 2 * st.accounts[a, AC_OPEN:].sum()
    return base + 4


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _exact_place_bound(st, c):
    """Tighter bound for a place when the quick one does not fit: walk the crossing orders."""
    base = 2 * st.mkt.shape[0] + 8
    m = c[C_MARKET]
    side = c[C_SIDE]
    mark = st.mkt[m, M_MARK]
    if c[C_TYPE] == LIMIT:
        limit = c[C_PRICE]
    else:
        prot = (mark * st.spec[m, S_PROTECT_BPS]) // 10_000
        limit = mark + prot if side == BUY else mark - prot
    if side != BUY and side != SELL:
        return base
    return base + 3 * _touch_bound(st, m, c[C_ACCOUNT], side, limit, c[C_SIZE])


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def process_one(st, c, ev, n):
    seq = st.g[G_SEQ] + 1
    st.g[G_SEQ] = seq
    ts = c[C_TS]
    if ts < st.g[G_LAST_TS]:
        return _reject(c, ev, n, seq, R_TIMESTAMP_REGRESSION)
    st.g[G_LAST_TS] = ts
    n = _advance_clock(st, ts, seq, ev, n)
    kind = c[C_KIND]
    if kind == CK_PLACE:
        return _place(st, c, seq, ev, n)
    if kind == CK_CANCEL:
        return _cancel(st, c, seq, ev, n)
    if kind == CK_CANCEL_ALL:
        return _cancel_all(st, c, seq, ev, n)
    if kind == CK_AMEND:
        return _amend(st, c, seq, ev, n)
    if kind == CK_SET_INDEX:
        return _set_index(st, c, seq, ev, n)
    if kind == CK_SET_STATUS:
        return _set_status(st, c, seq, ev, n)
    if kind == CK_DEPOSIT:
        return _deposit(st, c, seq, ev, n)
    if kind == CK_WITHDRAW:
        return _withdraw(st, c, seq, ev, n)
    if kind == CK_SET_LEVERAGE:
        return _set_leverage(st, c, seq, ev, n)
    return _reject(c, ev, n, seq, R_UNKNOWN_COMMAND)


@njit(cache=True, _nrt=False, error_model="numpy")
def process_batch(st, cmds, ev, ev_start):
    """Process command rows in order into `ev` from row `ev_start`.

    Returns (commands processed, event rows used). Stops early, before a command, when the event
    buffer could not hold that command's worst case; `g[G_NEED_EVENTS]` then says how many rows it
    needs.
    """
    n = ev_start
    cap = ev.shape[0]
    st.g[G_NEED_EVENTS] = 0
    i = 0
    while i < cmds.shape[0]:
        c = cmds[i]
        need = _event_bound(st, c)
        if cap - n < need and c[C_KIND] == CK_PLACE:
            m = c[C_MARKET]
            if 0 <= m < st.mkt.shape[0] and st.mkt[m, M_MARK] > 0:
                need = _exact_place_bound(st, c)
        if cap - n < need:
            st.g[G_NEED_EVENTS] = need
            break
        n = process_one(st, c, ev, n)
        i += 1
    return i, n


@njit(cache=True)
def canonical_orders(st):
    """Live orders level by level (market, side, price from the best, FIFO) as int64 rows:
    (market, side, price, order id, account, client id, remaining, flags). Used by the state hash."""
    count = 0
    for slot in range(st.orders.shape[0]):
        if st.orders[slot, O_LIVE]:
            count += 1
    out = np.empty((count, 8), np.int64)
    k = 0
    n_levels = st.levels.shape[2]
    for m in range(st.mkt.shape[0]):
        lo = st.spec[m, S_MIN_TICK]
        for side in range(2):
            for i in range(n_levels):
                li = n_levels - 1 - i if side == BUY else i
                slot = st.levels[m, side, li, LV_HEAD]
                while slot != -1:
                    out[k, 0] = m
                    out[k, 1] = side
                    out[k, 2] = lo + li
                    out[k, 3] = st.orders[slot, O_ID]
                    out[k, 4] = st.orders[slot, O_ACCOUNT]
                    out[k, 5] = st.orders[slot, O_CLID]
                    out[k, 6] = st.orders[slot, O_REM]
                    out[k, 7] = st.orders[slot, O_FLAGS]
                    k += 1
                    slot = st.orders[slot, O_NEXT]
    return out


def new_event_buffer(rows: int) -> np.ndarray:
    return np.zeros((rows, N_EV_COLS), np.int64)
