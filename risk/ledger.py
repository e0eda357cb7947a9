"""Accounts inside the engine kernel: fills, deposits, withdrawals, leverage, margin, funding.

numba functions over `perp.state.EngineState`, compiled like the matching kernel (no allocator,
inlined into it). Money is int64 micro-USD; every function keeps the ledger identity

    sum(collateral) - sum(cost basis) + fee ledger == deposits - withdrawals

exactly, after every command. A market's insurance fund is the account its spec names (default 0,
shared): its collateral is the fund's balance (fee share, funding remainders, liquidation fees, top-ups as deposits; bad debt out)
and its positions are what the backstop took over. (`collateral` is the wallet balance: deposits - withdrawals +
realised PnL - fees + funding. Open positions carry their entry notional as `cost basis`; since
positions net to zero in every market, `sum(collateral) - sum(cost basis)` equals the sum of all
accounts' equity at any mark, so the identity says that no micro-dollar appears or vanishes.)

Rules (docs/risk.md):
- a fill that reduces a position realises `exit notional - removed cost basis`, where the cost
  basis removed is the position's basis x closed / |position|, rounded toward zero; a flip closes
  first and opens the rest at the fill price;
- initial margin counts resting orders at their worst case, `max(|pos + buys|, |pos - sells|)` lots
  at the mark, at the tier's rate or the account's leverage, whichever is stricter;
- an order passes the pre-trade check when it does not raise that worst case or equity stays at or
  above initial margin with it; reduce-only orders always pass;
- funding: each position pays `floor(-lots x index x micro_per_tick_lot x rate / 1e9)` (payers pay
  the ceiling, receivers get the floor); the remainder goes to the insurance fund.
"""

from __future__ import annotations

from numba import njit

from perp.layout import (
    AC_HEAD,
    AM_FEES_MICRO,
    AM_FUNDING_MICRO,
    AM_LEVERAGE,
    AM_OPEN_BUY_LOTS,
    AM_OPEN_SELL_LOTS,
    AM_REALIZED_PNL_MICRO,
    BUY,
    FLAG_REDUCE_ONLY,
    G_FEE_LEDGER_MICRO,
    GATE_MARGIN_WORSE_OF,
    M_FIX_TICKS,
    M_FROZEN_N,
    M_FUNDING_FROZEN,
    M_INDEX,
    M_LAST_RATE_PPB,
    M_LEVERAGE_SCALE_PPM,
    M_MARK,
    M_OPEN_INTEREST,
    M_ORACLE_GATES,
    M_PAUSED_OPS,
    M_PREMIUM_N,
    M_PREMIUM_SUM_PPB,
    O_ACCOUNT,
    O_ANEXT,
    O_FLAGS,
    O_MARKET,
    O_PRICE,
    O_REM,
    O_SIDE,
    PAUSE_FUNDING,
    S_CAP_PPB,
    S_CLAMP_PPB,
    S_DEFAULT_LEVERAGE,
    S_FEE_SHARE_TO_FUND_PPM,
    S_FUND_ACCOUNT,
    S_FUNDING_INTERVAL_NS,
    S_INTEREST_PPB,
    S_MAKER_FEE_PPM,
    S_MICRO_PER_TICK_LOT,
    S_PREMIUM_SAMPLE_NS,
    S_WITHDRAW_FLOOR_PPM,
    T_BOUND_MICRO,
    T_IMR_PPM,
    T_MM_DEDUCTION_MICRO,
    T_MMR_PPM,
)
from risk.funding import funding_delta_fast, rate_from_premium_sum_ppb
from risk.intmath import mul_div_ceil, mul_div_trunc, ppb_fast_max, ppm_of_ceil
from risk.tiers import initial_margin_micro, maintenance_margin_micro

MAX_TRANSFER_MICRO = 1_000_000_000_000_000  # $1bn in one deposit or withdrawal
_K = dict(cache=True, _nrt=False, error_model="numpy", forceinline=True)


@njit(**_K)
def is_fund(st, a):
    """Whether account a is some market's insurance fund."""
    for m in range(st.spec.shape[0]):
        if st.spec[m, S_FUND_ACCOUNT] == a:
            return True
    return False


@njit(**_K)
def leverage_of(st, a, m):
    lev = st.acct_mkt[a, m, AM_LEVERAGE]
    return lev if lev > 0 else st.spec[m, S_DEFAULT_LEVERAGE]


@njit(**_K)
def max_leverage(st, m):
    """The first tier's leverage limit (the most any account may choose), exactly as stated: a tier of
    `max_leverage = L` stores imr = ceil(1e6 / L), and L is the largest leverage whose own rate
    ceil(1e6 / L) is not below imr (so 3x stays 3x although 1e6 / 333334 < 3)."""
    imr = st.tiers[m, 0, T_IMR_PPM]
    lev = 1_000_000 // imr
    if (1_000_000 + lev) // (lev + 1) >= imr:  # ceil(1e6 / (lev + 1)) >= imr
        lev += 1
    return lev


@njit(**_K)
def scaled_max_leverage(st, m):
    """The most leverage new risk may use now: the tier limit x the oracle's leverage scale (at least 1x)."""
    lev = max_leverage(st, m)
    scale = st.mkt[m, M_LEVERAGE_SCALE_PPM]
    if 0 < scale < 1_000_000:
        lev = (lev * scale) // 1_000_000
        if lev < 1:
            lev = 1
    return lev


@njit(**_K)
def apply_fill(st, a, m, signed_lots, price, fee):
    """Book one side of a fill: position, cost basis, realised PnL, the fee, open interest."""
    k = st.spec[m, S_MICRO_PER_TICK_LOT]
    pos = st.position_lots[a, m]
    basis = st.cost_basis_micro[a, m]
    new_pos = pos + signed_lots
    if pos == 0 or (pos > 0) == (signed_lots > 0):
        basis += signed_lots * price * k
    else:
        apos = pos if pos > 0 else -pos
        q = signed_lots if signed_lots > 0 else -signed_lots
        close = q if q < apos else apos
        removed = mul_div_trunc(basis, close, apos)
        realized = (close if pos > 0 else -close) * price * k - removed
        basis -= removed
        st.collateral_micro[a] += realized
        st.acct_mkt[a, m, AM_REALIZED_PNL_MICRO] += realized
        if q > apos:  # flipped: the rest opens at this price (basis is 0 after the full close)
            basis = new_pos * price * k
    st.position_lots[a, m] = new_pos
    st.cost_basis_micro[a, m] = basis
    if new_pos != 0 and st.active[a, 1] == 0:  # the liquidation sweep's list (perp/state.py `active`)
        row = st.active[0, 0] + 1
        st.active[0, 0] = row
        st.active[row, 0] = a
        st.active[a, 1] = row
    st.collateral_micro[a] -= fee
    st.acct_mkt[a, m, AM_FEES_MICRO] += fee
    to_fund = (fee * st.spec[m, S_FEE_SHARE_TO_FUND_PPM]) // 1_000_000 if fee > 0 else 0
    st.collateral_micro[st.spec[m, S_FUND_ACCOUNT]] += to_fund
    st.g[G_FEE_LEDGER_MICRO] += fee - to_fund
    st.mkt[m, M_OPEN_INTEREST] += (new_pos if new_pos > 0 else 0) - (pos if pos > 0 else 0)


@njit(**_K)
def position_im(st, m, lots_abs, leverage):
    notional = lots_abs * st.mkt[m, M_MARK] * st.spec[m, S_MICRO_PER_TICK_LOT]
    return initial_margin_micro(notional, m, leverage, st.tiers[:, :, T_BOUND_MICRO], st.tiers[:, :, T_IMR_PPM])


@njit(**_K)
def worst_case_lots(pos, buys, sells):
    up = pos + buys
    down = pos - sells
    up = up if up >= 0 else -up
    down = down if down >= 0 else -down
    return up if up > down else down


@njit(**_K)
def _equity_im(st, a, add_m, add_side, add_lots, gated):
    """(equity, initial margin incl. resting orders and the prospective order).

    With `gated`, the oracle's gates for each market apply (new risk, withdrawals, leverage changes):
    GATE_MARGIN_WORSE_OF values each position at the worse for the account of the mark and the last
    usable fix (a long at the lower, a short at the higher; initial margin at the higher), and a
    leverage scale below 1x raises that market's initial margin to IM x 1e6 / scale. Maintenance margin
    and liquidation never use the gates: they stay at the mark."""
    equity = st.collateral_micro[a]
    im = 0
    for m in range(st.mkt.shape[0]):
        pos = st.position_lots[a, m]
        k = st.spec[m, S_MICRO_PER_TICK_LOT]
        mark = st.mkt[m, M_MARK]
        value_px = mark
        margin_px = mark
        scale = 1_000_000
        if gated:
            fix = st.mkt[m, M_FIX_TICKS]
            if (st.mkt[m, M_ORACLE_GATES] & GATE_MARGIN_WORSE_OF) != 0 and fix > 0:
                if (pos > 0 and fix < mark) or (pos < 0 and fix > mark):
                    value_px = fix
                if fix > mark:
                    margin_px = fix
            sc = st.mkt[m, M_LEVERAGE_SCALE_PPM]
            if 0 < sc < 1_000_000:
                scale = sc
        equity += pos * value_px * k - st.cost_basis_micro[a, m]
        buys = st.acct_mkt[a, m, AM_OPEN_BUY_LOTS]
        sells = st.acct_mkt[a, m, AM_OPEN_SELL_LOTS]
        if m == add_m:
            if add_side == BUY:
                buys += add_lots
            else:
                sells += add_lots
        worst = worst_case_lots(pos, buys, sells)
        if worst != 0:
            notional = worst * margin_px * k
            pim = initial_margin_micro(notional, m, leverage_of(st, a, m), st.tiers[:, :, T_BOUND_MICRO],
                                       st.tiers[:, :, T_IMR_PPM])
            if scale < 1_000_000:
                pim = mul_div_ceil(pim, 1_000_000, scale)
            im += pim
    return equity, im


@njit(**_K)
def equity_and_im(st, a, add_m, add_side, add_lots):
    """(equity, initial margin incl. resting orders and the prospective order) at the marks, without
    the maintenance and withdrawal figures of `account_margin`."""
    return _equity_im(st, a, add_m, add_side, add_lots, False)


@njit(**_K)
def gated_equity_and_im(st, a, add_m, add_side, add_lots):
    """`equity_and_im` under the oracle's gates (what new risk must cover)."""
    return _equity_im(st, a, add_m, add_side, add_lots, True)


@njit(**_K)
def account_margin(st, a, add_m, add_side, add_lots):
    """(equity, initial margin incl. resting orders and an optional prospective order on market add_m,
    maintenance margin, withdrawal floor), micro-USD, at the marks."""
    equity, im = equity_and_im(st, a, add_m, add_side, add_lots)
    mm = 0
    floor = 0
    for m in range(st.mkt.shape[0]):
        pos = st.position_lots[a, m]
        if pos != 0:
            notional = (pos if pos > 0 else -pos) * st.mkt[m, M_MARK] * st.spec[m, S_MICRO_PER_TICK_LOT]
            mm += maintenance_margin_micro(notional, m, st.tiers[:, :, T_BOUND_MICRO], st.tiers[:, :, T_MMR_PPM],
                                           st.tiers[:, :, T_MM_DEDUCTION_MICRO])
            floor += ppm_of_ceil(notional, st.spec[m, S_WITHDRAW_FLOOR_PPM])
    return equity, im, mm, floor


@njit(**_K)
def detection_figures(st, a, tier_bound_micro, tier_mmr_ppm, tier_mm_deduction_micro):
    """(equity, maintenance margin, positions held, profitable positions) of account a at the marks,
    in one pass over its markets: equity and maintenance exactly `account_margin`'s first and third
    values, without its initial-margin and withdrawal-floor work (resting orders, leverage and a
    second tier lookup per position); a position is profitable when its value at the mark exceeds
    its cost basis. The liquidation detection sweep visits every listed account each second and
    needs only these; it passes the tier views (`st.tiers[:, :, T_*]`) made once for the whole sweep
    rather than once per account."""
    equity = st.collateral_micro[a]
    mm = 0
    held = 0
    profitable = 0
    for m in range(st.mkt.shape[0]):
        pos = st.position_lots[a, m]
        basis = st.cost_basis_micro[a, m]
        equity -= basis
        if pos != 0:
            held += 1
            value = pos * st.mkt[m, M_MARK] * st.spec[m, S_MICRO_PER_TICK_LOT]
            equity += value
            if value > basis:
                profitable += 1
            mm += maintenance_margin_micro(value if value > 0 else -value, m, tier_bound_micro, tier_mmr_ppm,
                                           tier_mm_deduction_micro)
    return equity, mm, held, profitable


@njit(**_K)
def equity_and_mm(st, a):
    """(equity, maintenance margin) of account a at the marks (`detection_figures`' first two)."""
    equity, mm, _, _ = detection_figures(st, a, st.tiers[:, :, T_BOUND_MICRO], st.tiers[:, :, T_MMR_PPM],
                                         st.tiers[:, :, T_MM_DEDUCTION_MICRO])
    return equity, mm


@njit(**_K)
def order_fee_micro(st, m, price, lots, fee_ppm):
    """ceil(price x lots x micro_per_tick_lot x fee_ppm / 1e6), 0 for a rebate: at the order's limit,
    so at least what it pays."""
    return ppm_of_ceil(price * lots * st.spec[m, S_MICRO_PER_TICK_LOT], fee_ppm) if fee_ppm > 0 else 0


@njit(**_K)
def pretrade_ok(st, a, m, side, price, lots, fee_ppm, loss_micro):
    """The pre-trade rule for an order that opens exposure (perp.gate.exposure_code says which do):
    under the oracle's gates,

        equity - fee - immediate loss >= initial margin (resting orders and this order counted)

    where fee is `order_fee_micro` and the immediate loss `loss_micro` is what the order gives away
    against the mark: the caller walks the book as matching would (perp.book.taker_loss_tick_lots)
    -- fills at their own prices, a resting remainder at its limit. At the boundary it passes."""
    equity, im = gated_equity_and_im(st, a, m, side, lots)
    return equity - order_fee_micro(st, m, price, lots, fee_ppm) - loss_micro >= im


@njit(**_K)
def solvent_after(st, a, m, price, lots, fee_ppm, loss_micro):
    """The rule for an order that only reduces but gives away against the mark (`loss_micro` > 0):
    under the oracle's gates, `equity - fee - immediate loss >= 0` -- it may use the whole margin,
    never more than the account has. At the boundary it passes."""
    equity, _ = gated_equity_and_im(st, a, -1, 0, 0)
    return equity - order_fee_micro(st, m, price, lots, fee_ppm) - loss_micro >= 0


@njit(**_K)
def beyond_mark_ticks(side, price, mark):
    """How far an order's limit lies through the mark (ticks, >= 0): above it for a bid, below it for
    an ask -- what each of its lots gives away against the mark when it fills at that limit."""
    away = price - mark if side == BUY else mark - price
    return away if away > 0 else 0


@njit(**_K)
def resting_reserve_micro(st, a):
    """What account a's resting orders will cost when they fill at their limits, at the marks now:
    for each, its maker fee (`order_fee_micro`; a rebate counts 0) and what it gives away against
    the mark -- (price - mark) x lots x k for a bid above its mark, (mark - price) x lots x k for an
    ask below it (reduce-only orders too). The place gate charged both to the order (fee and
    `perp.book.taker_loss_tick_lots`' resting remainder at its limit); withdrawals and leverage
    changes keep them set aside on top of initial margin, so they cannot take out what the fills
    will cost. Walks the account's own order list (AC_HEAD, O_ANEXT)."""
    reserve = 0
    slot = st.accounts[a, AC_HEAD]
    while slot != -1:
        m = st.orders[slot, O_MARKET]
        mark = st.mkt[m, M_MARK]
        price = st.orders[slot, O_PRICE]
        lots = st.orders[slot, O_REM]
        reserve += order_fee_micro(st, m, price, lots, st.spec[m, S_MAKER_FEE_PPM])
        if mark > 0:
            reserve += beyond_mark_ticks(st.orders[slot, O_SIDE], price, mark) * lots * st.spec[m, S_MICRO_PER_TICK_LOT]
        slot = st.orders[slot, O_ANEXT]
    return reserve


@njit(**_K)
def withdrawable(st, a):
    """The most account a may withdraw now: cash down to initial margin, and unrealised profit only
    above max(initial margin, withdraw floor x notional): max(0, min(E - IM, max(cash, E - floor))),
    with what the resting orders' fills will cost (`resting_reserve_micro`) counted in IM."""
    equity, im, _, floor = account_margin(st, a, -1, 0, 0)
    im += resting_reserve_micro(st, a)
    if floor < im:
        floor = im
    collateral = st.collateral_micro[a]
    cash = collateral if collateral < equity else equity
    above_floor = equity - floor
    best = cash if cash > above_floor else above_floor
    if equity - im < best:
        best = equity - im
    return best if best > 0 else 0


@njit(**_K)
def funding_rate_now(st, m):
    """The rate the hour's samples so far give (the published prediction; the rate at the hour)."""
    n = st.mkt[m, M_PREMIUM_N]
    if n == 0 or st.mkt[m, M_INDEX] <= 0:
        return 0
    rate = rate_from_premium_sum_ppb(st.mkt[m, M_PREMIUM_SUM_PPB], n, st.spec[m, S_INTEREST_PPB],
                                     st.spec[m, S_CLAMP_PPB], st.spec[m, S_CAP_PPB])
    # an hour pays only for the samples it has: rate x (unfrozen samples) / (samples in a full
    # hour), rounded toward zero -- a market's first, partial hour, frozen samples and the hour a
    # clock gap cut short all pay pro rata
    full = st.spec[m, S_FUNDING_INTERVAL_NS] // st.spec[m, S_PREMIUM_SAMPLE_NS]
    if n < full:
        q = ((rate if rate >= 0 else -rate) * n) // full
        rate = q if rate >= 0 else -q
    return rate


@njit(**_K)
def settle_funding(st, m):
    """Pay the hour's funding on market m. Returns (rate ppb, paid by payers, remainder to the fund,
    samples). Resets the hour's samples."""
    rate = funding_rate_now(st, m)
    if st.mkt[m, M_FUNDING_FROZEN] or (st.mkt[m, M_PAUSED_OPS] & PAUSE_FUNDING) != 0:
        rate = 0  # frozen (or paused by an operator) at the hour: nothing is paid, the samples are discarded
    samples = st.mkt[m, M_PREMIUM_N] + st.mkt[m, M_FROZEN_N]
    paid = 0
    received = 0
    if rate != 0:
        per_lot = st.mkt[m, M_INDEX] * st.spec[m, S_MICRO_PER_TICK_LOT]
        fast_max = ppb_fast_max(rate)
        # every account holding a position is on the active list: O(positions), not O(highest id)
        for i in range(1, st.active[0, 0] + 1):
            a = st.active[i, 0]
            lots = st.position_lots[a, m]
            if lots != 0:
                d = funding_delta_fast(lots, per_lot, rate, fast_max)
                st.collateral_micro[a] += d
                st.acct_mkt[a, m, AM_FUNDING_MICRO] += d
                if d < 0:
                    paid -= d
                else:
                    received += d
    remainder = paid - received
    st.collateral_micro[st.spec[m, S_FUND_ACCOUNT]] += remainder
    st.mkt[m, M_PREMIUM_SUM_PPB] = 0
    st.mkt[m, M_PREMIUM_N] = 0
    st.mkt[m, M_FROZEN_N] = 0
    st.mkt[m, M_LAST_RATE_PPB] = rate
    return rate, paid, remainder, samples


@njit(**_K)
def open_lots_delta(st, slot, delta):
    """The resting lots of the order in `slot` change by `delta` (rest, fill, cancel, amend).

    Invariant: `AM_OPEN_BUY_LOTS` / `AM_OPEN_SELL_LOTS` are the account's resting lots on that side
    that can open exposure -- every resting order except reduce-only ones, which fill at most what
    still reduces the position and are cancelled when nothing does. So reduce-only orders carry no
    initial margin and add nothing to the worst case the gate compares (perp.gate.exposure_code):
    they cannot shelter an opening order on the other side."""
    if (st.orders[slot, O_FLAGS] & FLAG_REDUCE_ONLY) != 0:
        return
    col = AM_OPEN_BUY_LOTS if st.orders[slot, O_SIDE] == BUY else AM_OPEN_SELL_LOTS
    st.acct_mkt[st.orders[slot, O_ACCOUNT], st.orders[slot, O_MARKET], col] += delta


@njit(**_K)
def unsettle_funding(st, m, index_ticks, rate, remainder):
    """Undo one `settle_funding` of market m that paid `rate` at `index_ticks` (positions unchanged
    since): every delta reversed exactly, the remainder taken back from the fund. Used when the
    command whose clock advance paid it is rejected (a rejected command never moves the clock)."""
    if rate != 0:
        per_lot = index_ticks * st.spec[m, S_MICRO_PER_TICK_LOT]
        fast_max = ppb_fast_max(rate)
        for i in range(1, st.active[0, 0] + 1):
            a = st.active[i, 0]
            lots = st.position_lots[a, m]
            if lots != 0:
                d = funding_delta_fast(lots, per_lot, rate, fast_max)
                st.collateral_micro[a] -= d
                st.acct_mkt[a, m, AM_FUNDING_MICRO] -= d
    st.collateral_micro[st.spec[m, S_FUND_ACCOUNT]] -= remainder
