"""The liquidation waterfall inside the engine kernel (the `liquidate` timer command).

One sweep, deterministic, at the marks as they stand when it starts:

1. detection: every account (but the fund's) with a position and equity < maintenance margin at
   the sweep's start is flagged; accounts that become unhealthy during the sweep wait for the next;
2. for each flagged account, in ascending id: its open orders are cancelled; then market by market
   (ascending), while the account is still below maintenance:
   - size: the whole position when the account is bankrupt (equity <= 0) or the position's
     notional is at most `liquidation_partial_above_usd`; otherwise a chunk, at least
     `liquidation_chunk_ppm` of it and enough to bring equity back to maintenance x (1 + buffer)
     (proportional estimate), with `liquidation_cooldown_s` before the next chunk;
   - a reduce-only IOC order through the book, limited at the **bankruptcy price** (the price at
     which closing the whole position leaves equity >= 0; never filled beyond it), paying no taker
     fee but the liquidation fee: `liquidation_fee_share_ppm` of the closed part's maintenance
     margin, capped at the equity left, to the insurance fund;
   - what the book cannot take within that bound goes to the **backstop**: the market's insurance
     fund (the account its spec names; 0 by default, shared) takes it over at the bankruptcy price,
     as far as its equity stays at or above the market's floor after the loss at the mark;
   - the rest is **auto-deleveraged** at the bankruptcy price against opposing profitable positions,
     highest rank first (rank = PnL% x effective leverage; ties: lowest account id), ranked once per
     sweep and market side (an in-place heapsort: O(P log P) once, then O(1) per counterparty);
     if none is left the fund takes it anyway, below its floor, and says so;
3. a flat account left with negative equity (rounding) has it paid by the fund (bad debt).

Every step is an `EV_LIQUIDATION` event (phase in E_CODE, docs/liquidation.md), so a replay says who
lost what and why. Money moves only through `risk.ledger.apply_fill` and explicit transfers between
an account's collateral and the fund's, so the ledger identity holds after the sweep.
"""

from __future__ import annotations

from numba import njit

from perp.book import _emit, _match, _refresh_mark, cancel_account_orders
from perp.kcodes import R_CANCEL_LIQUIDATION
from perp.layout import (
    AM_FEES_MICRO,
    AM_LIQ_COOLDOWN_TS,
    AM_LIQ_FLAG,
    BUY,
    EV_LIQUIDATION,
    G_ACCOUNT_HWM,
    G_ADL_HEAD,
    G_ADL_KEY,
    G_ADL_LEN,
    G_NEXT_ORDER_ID,
    LQ_ADL,
    LQ_ADL_START,
    LQ_BACKSTOP,
    LQ_BAD_DEBT,
    LQ_DONE,
    LQ_FEE,
    LQ_FUND_BELOW_FLOOR,
    LQ_ORDER,
    LQ_STARTED,
    LQ_SWEEP,
    M_INSURANCE_FLOOR_MICRO,
    M_MARK,
    M_N_ASK_ORDERS,
    M_N_BID_ORDERS,
    S_FUND_ACCOUNT,
    S_LIQ_BUFFER_PPM,
    S_LIQ_CHUNK_PPM,
    S_LIQ_COOLDOWN_NS,
    S_LIQ_FEE_SHARE_PPM,
    S_LIQ_PARTIAL_ABOVE_MICRO,
    S_MAX_TICK,
    S_MICRO_PER_TICK_LOT,
    S_MIN_TICK,
    SELL,
    STP_CANCEL_OLDEST,
    T_BOUND_MICRO,
    T_MM_DEDUCTION_MICRO,
    T_MMR_PPM,
)
from risk.intmath import mul_div_ceil, ppm_of_ceil
from risk.ledger import account_margin, apply_fill, is_fund
from risk.tiers import maintenance_margin_micro

_K = dict(cache=True, _nrt=False, error_model="numpy", forceinline=True)
_RANK_CAP = 1_000_000_000


@njit(**_K)
def _has_position(st, a):
    for m in range(st.mkt.shape[0]):
        if st.position_lots[a, m] != 0:
            return True
    return False


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
def adl_rank(st, c, m):
    """ADL priority of account c's position in m: PnL% x effective leverage, in ppm x ppm / 1e6
    (each factor capped at 1e9); -1 when the position is not profitable."""
    pos = st.position_lots[c, m]
    if pos == 0:
        return -1
    notional = pos * st.mkt[m, M_MARK] * st.spec[m, S_MICRO_PER_TICK_LOT]
    basis = st.cost_basis_micro[c, m]
    upnl = notional - basis
    if upnl <= 0:
        return -1
    basis_usd = (basis if basis > 0 else -basis) // 1_000_000
    pnl_ppm = upnl // (basis_usd if basis_usd > 0 else 1)
    equity, _, _, _ = account_margin(st, c, -1, 0, 0)
    equity_usd = equity // 1_000_000
    gross = notional if notional > 0 else -notional
    lev_ppm = gross // (equity_usd if equity_usd > 0 else 1)
    if pnl_ppm > _RANK_CAP:
        pnl_ppm = _RANK_CAP
    if lev_ppm > _RANK_CAP:
        lev_ppm = _RANK_CAP
    return pnl_ppm * lev_ppm // 1_000_000


@njit(**_K)
def _transfer(st, frm, to, m, signed_lots_from, price):
    """Move a position between two accounts at `price`, fee-free (backstop and ADL)."""
    apply_fill(st, frm, m, signed_lots_from, price, 0)
    apply_fill(st, to, m, -signed_lots_from, price, 0)


@njit(**_K)
def _before(q, i, j):
    """Row i of the ADL queue goes before row j: higher rank first, then lower account id."""
    return q[i, 0] > q[j, 0] or (q[i, 0] == q[j, 0] and q[i, 1] < q[j, 1])


@njit(**_K)
def _sift_down(q, start, end):
    root = start
    while True:
        child = 2 * root + 1
        if child > end:
            return
        # a max-heap on "goes after", so that popping the maximum to the end sorts the queue
        if child + 1 <= end and _before(q, child, child + 1):
            child += 1
        if _before(q, root, child):
            for col in range(2):
                tmp = q[root, col]
                q[root, col] = q[child, col]
                q[child, col] = tmp
            root = child
        else:
            return


@njit(**_K)
def _sort_queue(q, n):
    """In-place heapsort of the first n rows into ADL order (no allocation)."""
    for start in range((n - 2) // 2, -1, -1):
        _sift_down(q, start, n - 1)
    for end in range(n - 1, 0, -1):
        for col in range(2):
            tmp = q[0, col]
            q[0, col] = q[end, col]
            q[end, col] = tmp
        _sift_down(q, 0, end - 1)


@njit(**_K)
def _adl_queue(st, m, sign):
    """Build (in st.adl_scratch) the ADL queue of market m against positions of `sign`: every opposing profitable position,
    ranked once per sweep (PnL% x leverage, highest first; ties: lowest account id)."""
    key = m * 2 + (1 if sign > 0 else 0) + 1
    if st.g[G_ADL_KEY] != key:
        q = st.adl_scratch
        k = 0
        for c in range(st.g[G_ACCOUNT_HWM]):
            pos = st.position_lots[c, m]
            if pos == 0 or (pos > 0) == (sign > 0) or is_fund(st, c):
                continue
            r = adl_rank(st, c, m)
            if r < 0:
                continue
            q[k, 0] = r
            q[k, 1] = c
            k += 1
        _sort_queue(q, k)
        st.g[G_ADL_KEY] = key
        st.g[G_ADL_LEN] = k
        st.g[G_ADL_HEAD] = 0


@njit(**_K)
def _backstop_and_adl(st, a, m, sign, lots, p_b, equity_before, seq, ts, ev, n):
    k = st.spec[m, S_MICRO_PER_TICK_LOT]
    mark = st.mkt[m, M_MARK]
    loss_per_lot = (p_b - mark) * k * sign  # the fund pays p_b for what is worth the mark
    taker_side = BUY if sign > 0 else SELL  # what the fund or an ADL counterparty does: buys a long
    fund = st.spec[m, S_FUND_ACCOUNT]
    fund_equity, _, _, _ = account_margin(st, fund, -1, 0, 0)
    floor = st.mkt[m, M_INSURANCE_FLOOR_MICRO]
    if loss_per_lot <= 0:
        take = lots
    else:
        room = fund_equity - floor
        take = room // loss_per_lot if room > 0 else 0
        if take > lots:
            take = lots
    if take > 0:
        _transfer(st, a, fund, m, -sign * take, p_b)
        fund_after, _, _, _ = account_margin(st, fund, -1, 0, 0)
        n = _emit(ev, n, EV_LIQUIDATION, seq, ts, m, a, 0, 0, taker_side, p_b, take, 0, loss_per_lot * take,
                  LQ_BACKSTOP, fund_after)
        lots -= take
    if lots > 0:
        fund_equity, _, _, _ = account_margin(st, fund, -1, 0, 0)
        n = _emit(ev, n, EV_LIQUIDATION, seq, ts, m, a, 0, 0, 0, p_b, lots, equity_before, fund_equity,
                  LQ_ADL_START, floor)
    if lots > 0:
        _adl_queue(st, m, sign)
        queue = st.adl_scratch
        head = st.g[G_ADL_HEAD]
        while lots > 0 and head < st.g[G_ADL_LEN]:
            rank = queue[head, 0]
            c = queue[head, 1]
            pos_c = st.position_lots[c, m]
            if c == a or pos_c == 0 or (pos_c > 0) == (sign > 0):
                head += 1  # closed (or flipped) since the queue was ranked
                continue
            q = pos_c if pos_c > 0 else -pos_c
            if q > lots:
                q = lots
            else:
                head += 1  # this position is used up
            _transfer(st, a, c, m, -sign * q, p_b)
            lots -= q
            n = _emit(ev, n, EV_LIQUIDATION, seq, ts, m, c, 0, 0, taker_side, p_b, q, lots, rank, LQ_ADL, a)
        st.g[G_ADL_HEAD] = head
    if lots > 0:  # no profitable counterparty left: the fund takes the rest, below its floor
        _transfer(st, a, fund, m, -sign * lots, p_b)
        fund_after, _, _, _ = account_margin(st, fund, -1, 0, 0)
        n = _emit(ev, n, EV_LIQUIDATION, seq, ts, m, a, 0, 0, taker_side, p_b, lots, 0, loss_per_lot * lots,
                  LQ_FUND_BELOW_FLOOR, fund_after)
    return n


@njit(**_K)
def _liquidate_position(st, a, m, equity, mm, bankrupt, seq, ts, ev, n):
    pos = st.position_lots[a, m]
    apos = pos if pos > 0 else -pos
    sign = 1 if pos > 0 else -1
    k = st.spec[m, S_MICRO_PER_TICK_LOT]
    notional = apos * st.mkt[m, M_MARK] * k
    if bankrupt or notional <= st.spec[m, S_LIQ_PARTIAL_ABOVE_MICRO]:
        q = apos
    else:
        target = mm + ppm_of_ceil(mm, st.spec[m, S_LIQ_BUFFER_PPM])
        per_ppm = (target + 999_999) // 1_000_000
        frac_ppm = (target - equity + per_ppm - 1) // per_ppm
        if frac_ppm > 1_000_000:
            frac_ppm = 1_000_000
        q = mul_div_ceil(apos, frac_ppm, 1_000_000)
        chunk = mul_div_ceil(apos, st.spec[m, S_LIQ_CHUNK_PPM], 1_000_000)
        if q < chunk:
            q = chunk
        if q < 1:
            q = 1
        if q > apos:
            q = apos
    p_b = bankruptcy_price(st, a, m, equity)
    mm_position = maintenance_margin_micro(notional, m, st.tiers[:, :, T_BOUND_MICRO], st.tiers[:, :, T_MMR_PPM],
                                           st.tiers[:, :, T_MM_DEDUCTION_MICRO])
    oid = st.g[G_NEXT_ORDER_ID]
    st.g[G_NEXT_ORDER_ID] = oid + 1
    side = SELL if pos > 0 else BUY
    rem, _, n = _match(st, m, a, oid, 0, side, p_b, q, STP_CANCEL_OLDEST, 0, seq, ts, ev, n)
    filled = q - rem
    n = _emit(ev, n, EV_LIQUIDATION, seq, ts, m, a, oid, 0, side, p_b, q, filled, 0, LQ_ORDER, 0)
    if filled > 0:
        fee = ppm_of_ceil(mul_div_ceil(mm_position, filled, apos), st.spec[m, S_LIQ_FEE_SHARE_PPM])
        eq_now, _, _, _ = account_margin(st, a, -1, 0, 0)
        if fee > eq_now:
            fee = eq_now if eq_now > 0 else 0
        if fee > 0:
            st.collateral_micro[a] -= fee
            st.acct_mkt[a, m, AM_FEES_MICRO] += fee
            st.collateral_micro[st.spec[m, S_FUND_ACCOUNT]] += fee
            n = _emit(ev, n, EV_LIQUIDATION, seq, ts, m, a, 0, 0, 0, 0, 0, 0, fee, LQ_FEE, 0)
    if rem > 0:
        # what the book could not take goes to the backstop and ADL at the bankruptcy price of what
        # is left, from the equity left now: the account ends at ~0, the counterparties get the
        # best price that still leaves no bad debt
        equity, _, _, _ = account_margin(st, a, -1, 0, 0)
        p_b = bankruptcy_price(st, a, m, equity)
        n = _backstop_and_adl(st, a, m, sign, rem, p_b, equity, seq, ts, ev, n)
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
    n = _emit(ev, n, EV_LIQUIDATION, seq, ts, -1, a, 0, 0, 0, 0, 0, 0, equity, LQ_STARTED, mm)
    _, n = cancel_account_orders(st, a, -1, R_CANCEL_LIQUIDATION, seq, ts, ev, n)
    fund = -1
    for m in range(st.mkt.shape[0]):
        if st.position_lots[a, m] == 0:
            continue
        if fund < 0:
            fund = st.spec[m, S_FUND_ACCOUNT]  # bad debt: the fund of the first market it held
        equity, _, mm, _ = account_margin(st, a, -1, 0, 0)
        if equity >= mm:
            break
        bankrupt = equity <= 0
        if not bankrupt and ts < st.acct_mkt[a, m, AM_LIQ_COOLDOWN_TS]:
            continue
        n = _liquidate_position(st, a, m, equity, mm, bankrupt, seq, ts, ev, n)
    equity, _, mm, _ = account_margin(st, a, -1, 0, 0)
    if equity < 0 and not _has_position(st, a):
        debt = -equity
        st.collateral_micro[a] += debt
        st.collateral_micro[fund if fund >= 0 else st.spec[0, S_FUND_ACCOUNT]] -= debt
        n = _emit(ev, n, EV_LIQUIDATION, seq, ts, -1, a, 0, 0, 0, 0, 0, 0, debt, LQ_BAD_DEBT, 0)
        equity = 0
    return _emit(ev, n, EV_LIQUIDATION, seq, ts, -1, a, 0, 0, 0, 0, 0, 0, equity, LQ_DONE, mm)


@njit(**_K)
def flag_unhealthy(st, ts):
    """Flag (AM_LIQ_FLAG) every account to liquidate now. Returns (flagged, checked, their open
    orders, positions held by anyone)."""
    flagged = 0
    checked = 0
    open_orders = 0
    positions = 0
    n_mkt = st.mkt.shape[0]
    for a in range(st.g[G_ACCOUNT_HWM]):
        st.acct_mkt[a, 0, AM_LIQ_FLAG] = 0
        if is_fund(st, a):
            continue
        held = 0
        for m in range(n_mkt):
            if st.position_lots[a, m] != 0:
                held += 1
        if held == 0:
            continue
        positions += held
        checked += 1
        equity, _, mm, _ = account_margin(st, a, -1, 0, 0)
        if equity < mm and _eligible(st, a, equity, ts):
            st.acct_mkt[a, 0, AM_LIQ_FLAG] = 1
            flagged += 1
            for m in range(n_mkt):
                open_orders += st.accounts[a, 1 + m]
    return flagged, checked, open_orders, positions


@njit(**_K)
def liquidation_event_bound(st, ts):
    """Most events the sweep can emit from this state (it flags the accounts it will take)."""
    flagged, _, open_orders, positions = flag_unhealthy(st, ts)
    n_mkt = st.mkt.shape[0]
    book = 0
    for m in range(n_mkt):
        book += st.mkt[m, M_N_BID_ORDERS] + st.mkt[m, M_N_ASK_ORDERS]
    steps = flagged * n_mkt
    return 8 + 2 * n_mkt + flagged * 4 + steps * 6 + 2 * open_orders + 3 * (book + steps) + 2 * (steps + positions)


@njit(**_K)
def liquidate_sweep(st, ts, seq, ev, n):
    """The sweep (see the module docstring). Marks stay as they are during it and are refreshed at
    its end (liquidation orders may have emptied a side of a book)."""
    flagged, checked, _, _ = flag_unhealthy(st, ts)
    st.g[G_ADL_KEY] = 0  # ADL queues are ranked afresh each sweep
    done = 0
    for a in range(st.g[G_ACCOUNT_HWM]):
        if st.acct_mkt[a, 0, AM_LIQ_FLAG] == 0:
            continue
        st.acct_mkt[a, 0, AM_LIQ_FLAG] = 0
        n = _liquidate_account(st, a, seq, ts, ev, n)
        done += 1
    n = _emit(ev, n, EV_LIQUIDATION, seq, ts, -1, -1, 0, 0, 0, 0, done, checked, 0, LQ_SWEEP, flagged)
    for m in range(st.mkt.shape[0]):
        n = _refresh_mark(st, m, seq, ts, ev, n)
    return n

