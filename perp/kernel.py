"""The matching kernel: one numba call processes a batch of command rows into event rows.

Pure integer arithmetic over the arrays of `perp.state.EngineState`; no clock, no I/O, no logging.
Rules (docs/matching.md has the full table):

- price-time priority: best price first, FIFO within a level; trades print at the maker's price;
- a command is validated in a fixed order; the first failing rule rejects it and nothing changes;
- limit GTC / IOC / FOK / post-only; market orders are IOC or FOK bounded by the protection band;
- reduce-only orders never increase a position: a taker is clipped to its position at entry, a
  resting reduce-only maker fills at most what still reduces and is cancelled when nothing does;
  so they carry no margin and count in no worst case (risk.ledger.open_lots_delta);
- self-trade prevention by the taker's mode: cancel newest (the taker), oldest (the resting order,
  matching continues) or both; self-trades never print;
- an amend never trades: a price change or size increase re-queues at the back; a size decrease
  keeps priority; an amend that would cross is rejected;
- fees round toward the venue: `fee = ceil(notional_micro * fee_ppm / 1e6)` (a rebate is a
  negative fee, so it rounds toward zero);
- the mark is `index + clamp(EMA(impact_mid - index))`, sampled on a fixed time grid carried by
  the command timestamps; a one-sided or empty book samples 0, so it never snaps the mark
  (docs/mark_price.md);
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

from liquidation.kernel import liquidate_sweep, liquidation_event_bound
from perp.book import (
    _add_order,
    _advance_clock,
    _clid_key,
    _crosses,
    _emit,
    _emit_book,
    _find_order,
    _fok_fillable,
    _link_level,
    _match,
    _reducible,
    _refresh_mark,
    _reject,
    _touch_bound,
    _unlink_level,
    _valid_account,
    cancel_account_orders,
    cancel_resting,
    pay_funding_hour,
)
from perp.gate import (
    P_ALLOW,
    account_status_code,
    amend_status_code,
    band_centre,
    exposure_code,
    is_reserved,
    permission,
    place_status_code,
    reduce_code,
)
from perp.hashmap import hm_find
from perp.kcodes import (  # noqa: F401 - constants, numba inlines them
    ALLOWED_FLAG_BITS,
    MICRO,
    R_AMEND_NO_CHANGE,
    R_AMEND_WOULD_CROSS,
    R_AMOUNT_TOO_LARGE,
    R_BALANCE_LIMIT,
    R_CANCEL_ALL_BY_USER,
    R_CANCEL_BY_USER,
    R_CANCEL_FOK_NOT_FILLED,
    R_CANCEL_IOC_REMAINDER,
    R_CANCEL_REDUCE_ONLY,
    R_CANCEL_SELF_TRADE,
    R_DUPLICATE_CLID,
    R_FUND_DEPOSIT_RETIRED,
    R_INSUFFICIENT_MARGIN,
    R_INVALID_CLID,
    R_INVALID_GAP_MODE,
    R_INVALID_ORDER_TYPE,
    R_INVALID_PRICE,
    R_INVALID_SIDE,
    R_INVALID_STATUS,
    R_INVALID_STP,
    R_INVALID_TIF,
    R_INVALID_TIMESTAMP,
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
    R_RESERVED_ACCOUNT,
    R_SIZE_ABOVE_MAX,
    R_SIZE_BELOW_MIN,
    R_TIMESTAMP_REGRESSION,
    R_TIMESTAMP_TOO_FAR_AHEAD,
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
    AC_OPEN,
    ADMIN_FUND_TOP_UP,
    AM_LEVERAGE,
    BUY,
    C_ACCOUNT,
    C_CLID,
    C_FLAGS,
    C_KIND,
    C_MARKET,
    C_ORDER_ID,
    C_PRICE,
    C_SIDE,
    C_SIZE,
    C_TIF,
    C_TS,
    C_TYPE,
    CK_ADMIN,
    CK_AMEND,
    CK_CANCEL,
    CK_CANCEL_ALL,
    CK_CLOCK_GAP,
    CK_DEPOSIT,
    CK_FUND_DEPOSIT,
    CK_LIQUIDATE,
    CK_PLACE,
    CK_SET_INDEX,
    CK_SET_INSURANCE_FLOOR,
    CK_SET_LEVERAGE,
    CK_SET_STATUS,
    CK_WITHDRAW,
    E_FEE,
    E_KIND,
    E_MARKET,
    E_OTHER,
    E_PRICE,
    EV_ACCEPTED,
    EV_AMENDED,
    EV_CANCEL_ALL_DONE,
    EV_CANCELLED,
    EV_ADMIN,
    EV_CLOCK_GAP,
    EV_DEPOSIT,
    EV_FUND_DEPOSIT,
    EV_FUNDING,
    EV_INDEX,
    EV_INSURANCE_FLOOR,
    EV_LEVERAGE,
    EV_REJECTED,
    EV_STATUS,
    EV_WITHDRAWAL,
    FIX_DAY_SHIFT,
    FIX_VINTAGE_NONE,
    FIX_VINTAGE_REVISED,
    FLAG_REDUCE_ONLY,
    FOK,
    G_ACCOUNT_HWM,
    G_DEPOSITS_MICRO,
    G_FREE_TOP,
    G_LAST_TS,
    G_NEED_EVENTS,
    G_NEXT_ORDER_ID,
    G_SEQ,
    G_WITHDRAWALS_MICRO,
    GAP_NO_FUNDING,
    GATE_ALL,
    GATE_BAND_FROZEN,
    GATE_FUNDING_FROZEN,
    GTC,
    IOC,
    LIMIT,
    LV_HEAD,
    LV_QTY,
    M_BAND_ANCHOR,
    M_BEST_ASK,
    M_BEST_BID,
    M_FIX_TICKS,
    M_FIX_VINTAGE_DATE,
    M_FUNDING_FROZEN,
    M_INDEX,
    M_INSURANCE_FLOOR_MICRO,
    M_LEVERAGE_SCALE_PPM,
    M_MARK,
    M_N_ASK_ORDERS,
    M_N_BID_ORDERS,
    M_NEXT_FUNDING_TS,
    M_NEXT_PREMIUM_TS,
    M_NEXT_SAMPLE_TS,
    M_ORACLE_GATES,
    M_STATUS,
    M_VALIDITY,
    MAP_CLID,
    MARKET,
    MAX_CLIENT_ORDER_ID,
    MAX_DEPOSITS_TOTAL_MICRO,
    MAX_FIX_DAY,
    MAX_TS_NS,
    N_EV_COLS,
    N_STATUSES,
    O_ACCOUNT,
    O_CLID,
    O_FLAGS,
    O_FREE,
    O_ID,
    O_LIVE,
    O_MARKET,
    O_NEXT,
    O_PRICE,
    O_REM,
    O_SIDE,
    POST_ONLY,
    S_BAND_BPS,
    S_DEFAULT_LEVERAGE,
    S_FUNDING_INTERVAL_NS,
    S_MAKER_FEE_PPM,
    S_MAX_CLOCK_STEP_NS,
    S_MAX_OPEN_ORDERS,
    S_MAX_SIZE,
    S_MAX_TICK,
    S_MIN_SIZE,
    S_MIN_TICK,
    S_PREMIUM_SAMPLE_NS,
    S_PROTECT_BPS,
    S_SAMPLE_NS,
    S_TAKER_FEE_PPM,
    SELL,
    STP_CANCEL_BOTH,
    STP_MASK,
    STP_SHIFT,
)
from risk.ledger import (
    MAX_TRANSFER_MICRO,
    beyond_mark_ticks,
    gated_equity_and_im,
    is_fund,
    max_leverage,
    open_lots_delta,
    resting_reserve_micro,
    scaled_max_leverage,
    unsettle_funding,
    withdrawable,
)

# result codes used inside the kernel (values from perp.codes.ResultCode)



# ---------------------------------------------------------------------------------------------
# events
# ---------------------------------------------------------------------------------------------
@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _outside_band(st, m, price):
    """A limit price further than `price_band_bps` from the band's centre (the mark, or the last fresh
    anchor while the oracle freezes the band; band = floor(centre x bps / 1e4))."""
    centre = band_centre(st, m)
    band = (centre * st.spec[m, S_BAND_BPS]) // 10_000
    return price > centre + band or price < centre - band


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _market_order_limit(st, m, side, mark):
    """A market order's limit: mark +- `market_protection_bps`, inside the price ladder."""
    prot = (mark * st.spec[m, S_PROTECT_BPS]) // 10_000
    if side == BUY:
        p = mark + prot
        hi = st.spec[m, S_MAX_TICK]
        return hi if p > hi else p
    p = mark - prot
    lo = st.spec[m, S_MIN_TICK]
    return lo if p < lo else p


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
    if is_reserved(a):
        return _reject(c, ev, n, seq, R_RESERVED_ACCOUNT)
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
    if (flags & ~ALLOWED_FLAG_BITS) != 0 or stp > STP_CANCEL_BOTH:
        return _reject(c, ev, n, seq, R_INVALID_STP)
    if clid < 0 or clid > MAX_CLIENT_ORDER_ID:
        return _reject(c, ev, n, seq, R_INVALID_CLID)
    reduce_only = (flags & FLAG_REDUCE_ONLY) != 0
    code = place_status_code(st, m, reduce_only, tif == POST_ONLY)
    if code != 0:
        return _reject(c, ev, n, seq, code)
    if size < st.spec[m, S_MIN_SIZE]:
        return _reject(c, ev, n, seq, R_SIZE_BELOW_MIN)
    if size > st.spec[m, S_MAX_SIZE]:
        return _reject(c, ev, n, seq, R_SIZE_ABOVE_MAX)
    mark = st.mkt[m, M_MARK]
    if mark <= 0:
        return _reject(c, ev, n, seq, R_NO_REFERENCE_PRICE)
    if otype == LIMIT:
        price = c[C_PRICE]
        if price < st.spec[m, S_MIN_TICK] or price > st.spec[m, S_MAX_TICK]:
            return _reject(c, ev, n, seq, R_PRICE_OUT_OF_RANGE)
        if _outside_band(st, m, price):
            return _reject(c, ev, n, seq, R_PRICE_OUTSIDE_BAND)
    else:
        price = _market_order_limit(st, m, side, mark)
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
    fee_ppm = st.spec[m, S_MAKER_FEE_PPM] if tif == POST_ONLY else st.spec[m, S_TAKER_FEE_PPM]
    if reduce_only:
        code = reduce_code(st, a, m, side, price, size, fee_ppm, may_rest)
    else:
        code = exposure_code(st, a, m, side, price, size, fee_ppm, may_rest)
    if code != 0:
        return _reject(c, ev, n, seq, code)
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
        rem, stopped, n = _match(st, m, a, oid, clid, side, price, size, stp, st.spec[m, S_TAKER_FEE_PPM], seq,
                                 ts, ev, n)
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
def _cancel(st, c, seq, ev, n):
    if not _valid_account(st, c[C_ACCOUNT]):
        return _reject(c, ev, n, seq, R_UNKNOWN_ACCOUNT)
    if is_reserved(c[C_ACCOUNT]):
        return _reject(c, ev, n, seq, R_RESERVED_ACCOUNT)
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
    if is_reserved(a):
        return _reject(c, ev, n, seq, R_RESERVED_ACCOUNT)
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
    """Amend one resting order (C_PRICE / C_SIZE: 0 = unchanged; the edge sends 0 only for an absent
    field). Validation order: account, reserved account, order reference, market, negative values,
    market status and the oracle's reduce-only gate, AMEND_NO_CHANGE, size limits, price range, band
    and crossing, then -- when it grows or reprices -- the gate as for the order it becomes, placed
    anew with the maker fee (its old lots out of the worst case meanwhile): a reduce-only order
    `reduce_code`; any other `exposure_code` (open-interest cap, position bound, pre-trade margin),
    unless it only moves the same lots to a price that gives nothing away against the mark."""
    a = c[C_ACCOUNT]
    if not _valid_account(st, a):
        return _reject(c, ev, n, seq, R_UNKNOWN_ACCOUNT)
    if is_reserved(a):
        return _reject(c, ev, n, seq, R_RESERVED_ACCOUNT)
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
    order_ro = (st.orders[slot, O_FLAGS] & FLAG_REDUCE_ONLY) != 0
    code = amend_status_code(st, m, new_size > old_rem, new_price != old_price, order_ro)
    if code != 0:
        return _reject(c, ev, n, seq, code)
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
        if _outside_band(st, m, new_price):
            return _reject(c, ev, n, seq, R_PRICE_OUTSIDE_BAND)
        best_opp = st.mkt[m, M_BEST_ASK] if side == BUY else st.mkt[m, M_BEST_BID]
        if _crosses(side, new_price, best_opp):
            return _reject(c, ev, n, seq, R_AMEND_WOULD_CROSS)
    if new_size > old_rem or new_price != old_price:
        if st.mkt[m, M_MARK] <= 0:
            return _reject(c, ev, n, seq, R_NO_REFERENCE_PRICE)
        # judged as the order it becomes, placed anew: its old lots leave the worst case meanwhile
        fee_ppm = st.spec[m, S_MAKER_FEE_PPM]
        open_lots_delta(st, slot, -old_rem)
        if order_ro:
            code = reduce_code(st, a, m, side, new_price, new_size, fee_ppm, True)
        elif new_size > old_rem or beyond_mark_ticks(side, new_price, st.mkt[m, M_MARK]) > 0:  # (never crosses)
            code = exposure_code(st, a, m, side, new_price, new_size, fee_ppm, True)
        else:
            code = 0  # the same lots, moved to a price that gives nothing away against the mark
        open_lots_delta(st, slot, old_rem)
        if code != 0:
            return _reject(c, ev, n, seq, code)
    ts = c[C_TS]
    if new_price == old_price and new_size < old_rem:
        st.levels[m, side, old_price - st.spec[m, S_MIN_TICK], LV_QTY] -= old_rem - new_size
        open_lots_delta(st, slot, new_size - old_rem)
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
    gates = c[C_FLAGS]
    if gates < 0 or (gates & ~GATE_ALL) != 0:
        return _reject(c, ev, n, seq, R_INVALID_STATUS)
    scale = c[C_SIZE] if c[C_SIZE] != 0 else 1_000_000
    if scale < 1 or scale > 1_000_000:
        return _reject(c, ev, n, seq, R_INVALID_STATUS)
    fix = c[C_ORDER_ID]
    if fix < 0:
        return _reject(c, ev, n, seq, R_PRICE_OUT_OF_RANGE)
    # a fix off the ladder (a wild pending price) is valued at the ladder's end: the anchor and its
    # gates must never be lost because the comparison price is extreme
    if fix > st.spec[m, S_MAX_TICK]:
        fix = st.spec[m, S_MAX_TICK]
    elif 0 < fix < st.spec[m, S_MIN_TICK]:
        fix = st.spec[m, S_MIN_TICK]
    if c[C_CLID] < 0:
        return _reject(c, ev, n, seq, R_INVALID_STATUS)
    vintage = c[C_SIDE]
    fix_day = c[C_TIF]
    if vintage < FIX_VINTAGE_NONE or vintage > FIX_VINTAGE_REVISED or fix_day < 0 or fix_day > MAX_FIX_DAY:
        return _reject(c, ev, n, seq, R_INVALID_STATUS)
    fix_vintage_date = (fix_day << FIX_DAY_SHIFT) | vintage
    st.mkt[m, M_INDEX] = price
    frozen = 1 if gates & GATE_FUNDING_FROZEN else 0
    st.mkt[m, M_FUNDING_FROZEN] = frozen
    st.mkt[m, M_ORACLE_GATES] = gates
    st.mkt[m, M_LEVERAGE_SCALE_PPM] = scale
    st.mkt[m, M_FIX_TICKS] = fix
    st.mkt[m, M_VALIDITY] = c[C_CLID]
    st.mkt[m, M_FIX_VINTAGE_DATE] = fix_vintage_date
    if (gates & GATE_BAND_FROZEN) == 0 or st.mkt[m, M_BAND_ANCHOR] == 0:
        st.mkt[m, M_BAND_ANCHOR] = price  # the last anchor the band may follow
    ts = c[C_TS]
    n = _emit(ev, n, EV_INDEX, seq, ts, m, -1, 0, c[C_CLID], 0, price, scale, fix, fix_vintage_date, frozen, gates)
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
    """A trader's deposit (CK_DEPOSIT, never into a venue account) or an operator's top-up of an
    insurance fund (the CK_ADMIN row of an admin fund_top_up that the edge validated, only into a fund
    account)."""
    a = c[C_ACCOUNT]
    amount = c[C_SIZE]
    if not _valid_account(st, a):
        return _reject(c, ev, n, seq, R_UNKNOWN_ACCOUNT)
    if (c[C_KIND] == CK_ADMIN) != is_fund(st, a) or (c[C_KIND] == CK_DEPOSIT and is_reserved(a)):
        return _reject(c, ev, n, seq, R_RESERVED_ACCOUNT)
    if amount <= 0:
        return _reject(c, ev, n, seq, R_NON_POSITIVE_AMOUNT)
    if amount > MAX_TRANSFER_MICRO:
        return _reject(c, ev, n, seq, R_AMOUNT_TOO_LARGE)
    # venue-wide deposits <= 2**62 bounds every balance and every money sum the kernel forms
    if st.g[G_DEPOSITS_MICRO] > MAX_DEPOSITS_TOTAL_MICRO - amount:
        return _reject(c, ev, n, seq, R_BALANCE_LIMIT)
    st.collateral_micro[a] += amount
    st.g[G_DEPOSITS_MICRO] += amount
    if a + 1 > st.g[G_ACCOUNT_HWM]:
        st.g[G_ACCOUNT_HWM] = a + 1
    kind = EV_FUND_DEPOSIT if is_reserved(a) else EV_DEPOSIT
    return _emit(ev, n, kind, seq, c[C_TS], -1, a, 0, 0, 0, 0, amount, 0, st.collateral_micro[a], 0, 0)


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _withdraw(st, c, seq, ev, n):
    a = c[C_ACCOUNT]
    amount = c[C_SIZE]
    if not _valid_account(st, a):
        return _reject(c, ev, n, seq, R_UNKNOWN_ACCOUNT)
    if is_reserved(a):
        return _reject(c, ev, n, seq, R_RESERVED_ACCOUNT)
    if amount <= 0:
        return _reject(c, ev, n, seq, R_NON_POSITIVE_AMOUNT)
    if amount > MAX_TRANSFER_MICRO:
        return _reject(c, ev, n, seq, R_AMOUNT_TOO_LARGE)
    code = account_status_code(st, a, CK_WITHDRAW)
    if code != 0:
        return _reject(c, ev, n, seq, code)
    equity, im = gated_equity_and_im(st, a, -1, 0, 0)  # a withdrawal is new risk: the oracle's gates apply
    if amount > equity - im - resting_reserve_micro(st, a):  # and what its resting orders' fills will cost
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
    if is_reserved(a):
        return _reject(c, ev, n, seq, R_RESERVED_ACCOUNT)
    if permission(st, m, CK_SET_LEVERAGE) != P_ALLOW:
        return _reject(c, ev, n, seq, R_MARKET_STATUS_FORBIDS)
    if lev <= 0:
        return _reject(c, ev, n, seq, R_LEVERAGE_NOT_POSITIVE)
    old = st.acct_mkt[a, m, AM_LEVERAGE]
    current = old if old > 0 else st.spec[m, S_DEFAULT_LEVERAGE]
    # above the tier's limit: never; above the oracle's scaled limit: only to lower leverage
    if lev > max_leverage(st, m) or (lev > scaled_max_leverage(st, m) and lev > current):
        return _reject(c, ev, n, seq, R_LEVERAGE_ABOVE_LIMIT)
    _, im_before = gated_equity_and_im(st, a, -1, 0, 0)
    st.acct_mkt[a, m, AM_LEVERAGE] = lev
    equity, im = gated_equity_and_im(st, a, -1, 0, 0)
    if im > im_before and equity - resting_reserve_micro(st, a) < im:
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
    kind = c[C_KIND]
    if kind == CK_CLOCK_GAP:
        return 2 * st.mkt.shape[0] + 4
    if _clock_code(st, c[C_TS]) != 0:
        return 4  # rejected before any advance
    base = 2 * st.mkt.shape[0] + 4 + _funding_hours_due(st, c[C_TS])
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
    """Tighter bound for a place when the quick one does not fit: walk the crossing orders. Like the
    quick bound it holds for the command's clock advance too (its funding hours; the book does not
    change in the advance, the mark may)."""
    base = 2 * st.mkt.shape[0] + 8 + _funding_hours_due(st, c[C_TS])
    m = c[C_MARKET]
    side = c[C_SIDE]
    if side != BUY and side != SELL:
        return base
    if c[C_TYPE] == LIMIT:
        limit = c[C_PRICE]
    else:  # its limit comes from the mark after the clock advance, not known yet: its size bounds it
        limit = st.spec[m, S_MAX_TICK] if side == BUY else st.spec[m, S_MIN_TICK]
    return base + 3 * _touch_bound(st, m, c[C_ACCOUNT], side, limit, c[C_SIZE])


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _clock_code(st, ts):
    """0 if the clock may advance to ts: not before the clock, inside the horizon, and at most
    `max_clock_step_s` beyond the earliest next funding hour (so one command crosses at most a couple
    of funding hours and a bounded number of samples). A real gap is crossed by `clock_gap`."""
    if ts < 0 or ts > MAX_TS_NS:
        return R_INVALID_TIMESTAMP
    if ts < st.g[G_LAST_TS]:
        return R_TIMESTAMP_REGRESSION
    for m in range(st.mkt.shape[0]):
        nf = st.mkt[m, M_NEXT_FUNDING_TS]
        if nf > 0 and ts - nf > st.spec[m, S_MAX_CLOCK_STEP_NS]:
            return R_TIMESTAMP_TOO_FAR_AHEAD
    return 0


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _clock_due(st, ts):
    """Whether advancing to ts takes any sample or pays any funding."""
    for m in range(st.mkt.shape[0]):
        ns = st.mkt[m, M_NEXT_SAMPLE_TS]
        np_ = st.mkt[m, M_NEXT_PREMIUM_TS]
        if ns == 0 or ts >= ns or np_ == 0 or ts >= np_:
            return True
    return False


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _copy_rows(src, dst):
    """dst[:, :] = src, without the allocator (the kernel runs with _nrt=False)."""
    for i in range(src.shape[0]):
        for j in range(src.shape[1]):
            dst[i, j] = src[i, j]


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _undo_advance(st, ev, n0, n1):
    """Reverse the clock advance that wrote events n0..n1: funding paid is taken back (positions
    are unchanged since), market rows and the clock restored."""
    for i in range(n0, n1):
        if ev[i, E_KIND] == EV_FUNDING:
            unsettle_funding(st, ev[i, E_MARKET], ev[i, E_PRICE], ev[i, E_FEE], ev[i, E_OTHER])
    _copy_rows(st.mkt_undo, st.mkt)


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _clock_gap(st, c, seq, ev, n):
    """Operator: the venue was down; move the clock to C_TS (any distance ahead). GAP_NO_FUNDING: the
    hour in progress pays for the samples it had (pro rata), the missed hours pay nothing and take no
    samples (the mark's basis EMA holds), and sampling restarts on the grid after C_TS."""
    ts = c[C_TS]
    if c[C_FLAGS] != GAP_NO_FUNDING:
        return _reject(c, ev, n, seq, R_INVALID_GAP_MODE)
    if ts < 0 or ts > MAX_TS_NS:
        return _reject(c, ev, n, seq, R_INVALID_TIMESTAMP)
    old = st.g[G_LAST_TS]
    if ts < old:
        return _reject(c, ev, n, seq, R_TIMESTAMP_REGRESSION)
    skipped = 0
    for m in range(st.mkt.shape[0]):
        nf = st.mkt[m, M_NEXT_FUNDING_TS]
        fi = st.spec[m, S_FUNDING_INTERVAL_NS]
        ip = st.spec[m, S_PREMIUM_SAMPLE_NS]
        if nf != 0 and ts >= nf:
            n = pay_funding_hour(st, m, nf, seq, ev, n)
            skipped += (ts - nf) // fi
        if nf != 0:
            st.mkt[m, M_NEXT_FUNDING_TS] = (ts // fi + 1) * fi
            st.mkt[m, M_NEXT_PREMIUM_TS] = (ts // ip + 1) * ip
        si = st.spec[m, S_SAMPLE_NS]
        if st.mkt[m, M_NEXT_SAMPLE_TS] != 0:
            st.mkt[m, M_NEXT_SAMPLE_TS] = (ts // si + 1) * si
    st.g[G_LAST_TS] = ts
    return _emit(ev, n, EV_CLOCK_GAP, seq, ts, -1, -1, 0, 0, 0, 0, skipped, 0, 0, 0, old)


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def process_one(st, c, ev, n):
    """One command: the gate on time, the clock advance, the command. A rejected command leaves the
    state as it was before it -- the clock too: the advance it triggered is undone (only the
    sequence number, which counts journal records, moves)."""
    seq = st.g[G_SEQ] + 1
    st.g[G_SEQ] = seq
    ts = c[C_TS]
    kind = c[C_KIND]
    if kind == CK_CLOCK_GAP:
        return _clock_gap(st, c, seq, ev, n)
    code = _clock_code(st, ts)
    if code != 0:
        return _reject(c, ev, n, seq, code)
    due = _clock_due(st, ts)
    if due:
        _copy_rows(st.mkt, st.mkt_undo)
    n0 = n
    last = st.g[G_LAST_TS]
    st.g[G_LAST_TS] = ts
    if due:
        n = _advance_clock(st, ts, seq, ev, n)
    n1 = n
    n = _dispatch(st, c, kind, seq, ev, n)
    if n == n1 + 1 and ev[n1, E_KIND] == EV_REJECTED:
        if due:
            _undo_advance(st, ev, n0, n1)
        st.g[G_LAST_TS] = last
        if n1 != n0:
            for col in range(N_EV_COLS):
                ev[n0, col] = ev[n1, col]
        n = n0 + 1
    return n


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _dispatch(st, c, kind, seq, ev, n):
    ts = c[C_TS]
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
    if kind == CK_FUND_DEPOSIT:  # retired: the only way into a fund is the audited fund_top_up below
        return _reject(c, ev, n, seq, R_FUND_DEPOSIT_RETIRED)
    if kind == CK_WITHDRAW:
        return _withdraw(st, c, seq, ev, n)
    if kind == CK_SET_LEVERAGE:
        return _set_leverage(st, c, seq, ev, n)
    if kind == CK_LIQUIDATE:
        return liquidate_sweep(st, ts, seq, ev, n)
    if kind == CK_ADMIN:
        # the edge (perp/admin.py) validated the command and applies it after this clock step; the
        # kernel's part is the clock and the gate, like any operator command (PERMIT: always allowed)
        m = c[C_MARKET]
        if m < -1 or m >= st.mkt.shape[0]:
            return _reject(c, ev, n, seq, R_UNKNOWN_MARKET)
        if m >= 0 and permission(st, m, CK_ADMIN) != P_ALLOW:
            return _reject(c, ev, n, seq, R_MARKET_STATUS_FORBIDS)
        if c[C_CLID] == ADMIN_FUND_TOP_UP:
            return _deposit(st, c, seq, ev, n)
        return _emit(ev, n, EV_ADMIN, seq, ts, m, -1, c[C_ORDER_ID], c[C_CLID], 0, ts, 0, 0, 0, 0, 0)
    if kind == CK_SET_INSURANCE_FLOOR:
        if c[C_SIZE] < 0:
            return _reject(c, ev, n, seq, R_NON_POSITIVE_AMOUNT)
        if c[C_SIZE] > MAX_DEPOSITS_TOTAL_MICRO:
            return _reject(c, ev, n, seq, R_AMOUNT_TOO_LARGE)
        only_m = c[C_MARKET]
        if only_m < -1 or only_m >= st.mkt.shape[0]:
            return _reject(c, ev, n, seq, R_UNKNOWN_MARKET)
        for m in range(st.mkt.shape[0]):
            if only_m == -1 or m == only_m:
                st.mkt[m, M_INSURANCE_FLOOR_MICRO] = c[C_SIZE]
        return _emit(ev, n, EV_INSURANCE_FLOOR, seq, ts, only_m, -1, 0, 0, 0, 0, c[C_SIZE], 0, 0, 0, 0)
    return _reject(c, ev, n, seq, R_UNKNOWN_COMMAND)


@njit(cache=True, _nrt=False, error_model="numpy")
def process_batch(st, cmds, ev, ev_start, keep_events):
    """Process command rows in order into `ev` from row `ev_start`.

    Returns (commands processed, event rows used). Stops early, before a command, when the event
    buffer could not hold that command's worst case; `g[G_NEED_EVENTS]` then says how many rows it
    needs. Without `keep_events` (recovery: nobody reads them) every command still writes its
    events -- the kernel reads its own command's rows to undo a rejected command's clock advance --
    but into the same rows from `ev_start`, so they stay in the CPU cache; (processed, ev_start)
    is returned. The state is the same either way.
    """
    n = ev_start
    cap = ev.shape[0]
    st.g[G_NEED_EVENTS] = 0
    i = 0
    while i < cmds.shape[0]:
        c = cmds[i]
        need = _event_bound(st, c)
        if c[C_KIND] == CK_LIQUIDATE and _clock_code(st, c[C_TS]) == 0:
            # the sweep's size depends on the marks after the clock advance: advance first (the
            # command's own advance is then a no-op), then bound the sweep on that state
            if cap - n < need:
                st.g[G_NEED_EVENTS] = need
                break
            n = _advance_clock(st, c[C_TS], st.g[G_SEQ] + 1, ev, n)
            st.g[G_LAST_TS] = c[C_TS]
            need = liquidation_event_bound(st, c[C_TS]) + 2 * st.mkt.shape[0] + 8
        if cap - n < need and c[C_KIND] == CK_PLACE:
            m = c[C_MARKET]
            if 0 <= m < st.mkt.shape[0] and st.mkt[m, M_MARK] > 0:
                need = _exact_place_bound(st, c)
        if cap - n < need:
            st.g[G_NEED_EVENTS] = need
            break
        n = process_one(st, c, ev, n)
        if not keep_events:
            n = ev_start
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
