"""The numba sweep equals the numpy reference, settles funding like the per-market kernel, lists the
unhealthy accounts in order, and gives the same answer on any number of threads."""

from __future__ import annotations

import numba
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from risk.funding import settle_funding_market
from risk.intmath import INT64_MAX, PPB, PPB_FLOOR_OFFSET, PPM
from risk.sweep import MM_FAST_MAX_MICRO, N_CHUNKS, risk_sweep, risk_sweep_numpy
from risk.tiers import LeverageTier, default_tiers, pack_tiers, validate_tiers

CAP = 2**59  # every |notional|, |basis| and collateral below this keeps every sum inside int64


def _tiers(n_mkt):
    other = validate_tiers("B", [LeverageTier(max_leverage=10, maintenance_margin_ppm=50_000, max_notional_usd=10),
                                 LeverageTier(max_leverage=3, maintenance_margin_ppm=300_000)])
    return pack_tiers([default_tiers()["H100-PERP"], other, default_tiers()["H100-PERP"]][:n_mkt])


@st.composite
def books(draw):
    n_mkt = draw(st.integers(1, 3))
    n_acc = draw(st.integers(1, 40))
    mark = [draw(st.integers(1, 10**6)) for _ in range(n_mkt)]
    k = [draw(st.integers(1, 10**6)) for _ in range(n_mkt)]
    anchor = [draw(st.integers(1, 10**6)) for _ in range(n_mkt)]
    lots = np.zeros((n_acc, n_mkt), dtype=np.int64)
    basis = np.zeros((n_acc, n_mkt), dtype=np.int64)
    for m in range(n_mkt):
        # funding is valued at the anchor and summed over all accounts: keep that sum inside int64 too
        limit = CAP // (max(mark[m], anchor[m]) * k[m] * n_acc)
        for a in range(n_acc):
            lots[a, m] = draw(st.one_of(st.integers(-limit, limit), st.sampled_from([0, 0, limit, -limit, 1])))
            basis[a, m] = draw(st.one_of(st.integers(-CAP, CAP), st.just(int(lots[a, m]) * mark[m] * k[m])))
    collateral = np.array(draw(st.lists(st.integers(-CAP, CAP), min_size=n_acc, max_size=n_acc)), dtype=np.int64)
    rate = np.array(draw(st.lists(st.one_of(st.integers(-PPB, PPB), st.sampled_from([0, 500_000, -PPB])),
                                  min_size=n_mkt, max_size=n_mkt)), dtype=np.int64)
    anchor = np.array(anchor, dtype=np.int64)
    settle = draw(st.booleans())
    return (collateral, lots, basis, np.array(mark, np.int64), np.array(k, np.int64), rate, anchor, settle)


def _run(fn, book, tiers):
    collateral, lots, basis, mark, k, rate, anchor, settle = book
    n_acc, n_mkt = lots.shape
    coll = collateral.copy()
    outs = [np.full(n_acc, -7, np.int64) for _ in range(4)]  # equity, maintenance, funding, unhealthy
    count, remainder = fn(coll, lots, basis, mark, k, tiers.bound_micro, tiers.mmr_ppm, tiers.mm_deduction_micro,
               settle, rate, anchor, *outs)
    return (count, remainder), coll, outs


@settings(max_examples=150, deadline=None)
@given(books())
def test_numba_sweep_equals_the_numpy_reference(book):
    tiers = _tiers(book[1].shape[1])
    count, coll, outs = _run(risk_sweep, book, tiers)
    ref_count, ref_coll, ref_outs = _run(risk_sweep_numpy, book, tiers)
    assert count == ref_count
    assert np.array_equal(coll, ref_coll)
    for got, want in zip(outs[:3], ref_outs[:3]):
        assert np.array_equal(got, want)
    assert np.array_equal(outs[3][: count[0]], ref_outs[3][: count[0]])
    settle = book[-1]
    if not settle:  # funding output and collateral untouched, no remainder
        assert np.array_equal(coll, book[0]) and (outs[2] == -7).all() and count[1] == 0


@settings(max_examples=60, deadline=None)
@given(books())
def test_sweep_funding_equals_the_per_market_settlement(book):
    collateral, lots, basis, mark, k, rate, anchor, _ = book
    book = (collateral, lots, basis, mark, k, rate, anchor, True)
    (_, remainder), coll, outs = _run(risk_sweep, book, _tiers(lots.shape[1]))
    total = np.zeros(lots.shape[0], np.int64)
    remainders = 0
    for m in range(lots.shape[1]):
        per_market = np.zeros(lots.shape[0], np.int64)
        remainders += settle_funding_market(lots, m, anchor[m], k[m], rate[m], per_market)
        total += per_market
    assert np.array_equal(outs[2], total)
    assert remainder == remainders and int(outs[2].sum()) + remainder == 0
    assert np.array_equal(coll, collateral + total)


def _hand_book():
    # H100-PERP tiers; mark 20_000 ticks, 100 micro-USD per tick-lot: $2 per lot
    mark = np.array([20_000], np.int64)
    k = np.array([100], np.int64)
    lots = np.array([[50_000], [-50_000], [0], [200_000]], np.int64)  # $100k, -$100k, flat, $400k
    basis = lots * 20_000 * 100
    # MM: $10k, $10k, 0, 12.5% * 400k - 6_250 = $43_750
    collateral = np.array([10_000, 9_999, 0, 43_751], np.int64) * PPM
    collateral[1] += 999_999  # one micro-USD short of $10k
    return collateral, lots, basis, mark, k


def test_accounts_below_maintenance_are_listed_in_order_on_a_hand_book():
    collateral, lots, basis, mark, k = _hand_book()
    tiers = pack_tiers([default_tiers()["H100-PERP"]])
    book = (collateral, lots, basis, mark, k, np.zeros(1, np.int64), mark.copy(), False)
    (count, _), _, outs = _run(risk_sweep, book, tiers)
    assert list(outs[1]) == [10_000 * PPM, 10_000 * PPM, 0, 43_750 * PPM]
    assert list(outs[0]) == list(collateral)  # entered at the mark: equity is collateral
    assert count == 1 and outs[3][0] == 1  # exactly at maintenance is healthy; one micro below is not


def test_sweep_results_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(3)
    n = N_CHUNKS * 50 + 7
    lots = rng.integers(-10**6, 10**6, (n, 2))
    mark = np.array([20_000, 9_000], np.int64)
    k = np.array([100, 100], np.int64)
    basis = lots * mark * k + rng.integers(-10**10, 10**10, (n, 2))
    collateral = rng.integers(0, 10**11, n)
    book = (collateral, lots, basis, mark, k, np.array([123_457, -98_765], np.int64), mark + 3, True)
    tiers = pack_tiers([default_tiers()["H100-PERP"]] * 2)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _run(risk_sweep, book, tiers)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = _run(risk_sweep, book, tiers)
    finally:
        numba.set_num_threads(before)
    assert one[0] == many[0] and one[0][0] > 0
    assert np.array_equal(one[1], many[1])
    for a, b in zip(one[2], many[2]):
        assert np.array_equal(a, b)


def test_large_positions_take_the_overflow_safe_paths_and_still_equal_the_reference():
    # tier 0 up to $100M: a $50M position is in tier 0 but past the one-division fast path
    # (notional * rate_ppm > 2**63); a $2B one is in tier 1; funding at 100% per hour overflows too
    wide = validate_tiers("W", [LeverageTier(max_leverage=5, maintenance_margin_ppm=100_000,
                                             max_notional_usd=100_000_000),
                                LeverageTier(max_leverage=2, maintenance_margin_ppm=250_000)])
    tiers = pack_tiers([wide])
    mark = np.array([20_000], np.int64)
    k = np.array([100], np.int64)  # $2 per lot
    lots = np.array([[25_000_000], [-25_000_000], [1_000_000_000], [-1_000_000_000]], np.int64)
    basis = lots * 20_000 * 100
    collateral = np.array([5_000_001, 4_999_999, 400_000_000, 0], np.int64) * PPM
    book = (collateral, lots, basis, mark, k, np.array([PPB], np.int64), mark.copy(), True)
    got = _run(risk_sweep, book, tiers)
    want = _run(risk_sweep_numpy, book, tiers)
    assert list(got[2][1]) == list(want[2][1]) == [5_000_000 * PPM, 5_000_000 * PPM,
                                                   500_000_000 * PPM - 15_000_000 * PPM,
                                                   500_000_000 * PPM - 15_000_000 * PPM]
    assert got[0] == want[0] and np.array_equal(got[1], want[1])
    for a, b in zip(got[2][:3], want[2][:3]):
        assert np.array_equal(a, b)


@numba.njit(cache=True)
def _engine_like_batch(collateral, lots, basis, mark, k, bound, mmr, ded, rate, anchor, eq, mm, fund, bad):
    # what the engine's batch kernel does at the hour: a jitted caller around the parallel sweep
    return risk_sweep(collateral, lots, basis, mark, k, bound, mmr, ded, True, rate, anchor, eq, mm, fund, bad)


def test_the_sweep_can_be_called_from_inside_another_kernel():
    rng = np.random.default_rng(5)
    n = 3_000
    lots = rng.integers(-10**4, 10**4, (n, 2))
    mark = np.array([20_000, 9_000], np.int64)
    k = np.array([100, 100], np.int64)
    basis = lots * mark * k + rng.integers(-10**9, 10**9, (n, 2))
    book = (rng.integers(0, 10**10, n), lots, basis, mark, k, np.array([500_000, -1], np.int64), mark - 5, True)
    tiers = pack_tiers([default_tiers()["H100-PERP"]] * 2)
    want = _run(risk_sweep_numpy, book, tiers)
    coll = book[0].copy()
    outs = [np.zeros(n, np.int64) for _ in range(4)]
    got = _engine_like_batch(coll, lots, basis, mark, k, tiers.bound_micro, tiers.mmr_ppm,
                             tiers.mm_deduction_micro, book[5], book[6], *outs)
    assert got == want[0]
    assert np.array_equal(coll, want[1]) and np.array_equal(outs[0], want[2][0])


def _exact_reference(collateral, lots, basis, mark, k, tiers, settle, rate, anchor):
    """The sweep in Python integers (no int64 anywhere): what every fast path must equal."""
    n_acc, n_mkt = lots.shape
    coll, equity, maint, funding, bad = [], [], [], [], []
    for a in range(n_acc):
        e, mm, f = 0, 0, 0
        for m in range(n_mkt):
            value = int(lots[a, m]) * int(mark[m]) * int(k[m])
            e += value - int(basis[a, m])
            x = abs(value)
            i = next(j for j, b in enumerate(tiers.bound_micro[m]) if x <= int(b))
            mm += -((-x * int(tiers.mmr_ppm[m, i])) // PPM) - int(tiers.mm_deduction_micro[m, i])
            if settle:
                f += (-int(lots[a, m]) * int(anchor[m]) * int(k[m]) * int(rate[m])) // PPB
        c = int(collateral[a]) + f
        coll.append(c)
        equity.append(c + e)
        maint.append(mm)
        funding.append(f)
        if c + e < mm:
            bad.append(a)
    return coll, equity, maint, funding, bad


def _near(bound, spread=3):
    return st.integers(max(0, bound - spread), bound + spread)


@st.composite
def boundary_books(draw):
    """One or two markets (the kernel's generic and two-market loops) at mark = anchor = k = 1
    (notional = lots), positions drawn around the fast paths' bounds: funding's PPB_FLOOR_OFFSET // |rate|,
    margin's MM_FAST_MAX_MICRO and the tier bounds."""
    n_mkt = draw(st.integers(1, 2))
    rates = [draw(st.one_of(st.sampled_from([0, 1, -1, PPB, -PPB, 500_000, -500_000, 3, -7]),
                            st.integers(-PPB, PPB))) for _ in range(n_mkt)]
    limit = INT64_MAX - PPB  # the kernel's precondition on |lots * price * k|
    wide = validate_tiers("W", [LeverageTier(max_leverage=5, maintenance_margin_ppm=100_000,
                                             max_notional_usd=20_000_000),
                                LeverageTier(max_leverage=2, maintenance_margin_ppm=250_000,
                                             max_notional_usd=9_000_000_000),
                                LeverageTier(max_leverage=1, maintenance_margin_ppm=999_999)])
    tiers = pack_tiers([wide] * n_mkt)
    n_acc = draw(st.integers(1, 12))
    lots = np.zeros((n_acc, n_mkt), dtype=np.int64)
    for m, rate in enumerate(rates):
        fund_bound = PPB_FLOOR_OFFSET // abs(rate) if rate else limit
        magnitudes = st.one_of(_near(fund_bound), _near(MM_FAST_MAX_MICRO), _near(int(tiers.bound_micro[m, 0])),
                               _near(int(tiers.bound_micro[m, 1])), st.integers(0, limit), _near(limit, 0))
        # the kernel's other precondition: every balance and sum inside int64 (an account's maintenance
        # <= its notionals' sum, |funding| <= 2**61 / n_acc)
        top = min(limit // n_mkt, (2**61 // n_acc) * PPB // max(abs(rate), 1))
        for a in range(n_acc):
            lots[a, m] = min(draw(magnitudes), top) * draw(st.sampled_from([1, -1]))
    basis = lots.copy()  # entered at the mark: equity is the collateral, no sum near the int64 edge
    collateral = np.array([draw(st.integers(-2**60, 2**60)) for _ in range(n_acc)], dtype=np.int64)
    one = np.ones(n_mkt, np.int64)
    return (collateral, lots, basis, one, one.copy(), np.array(rates, np.int64), one.copy(),
            draw(st.booleans())), tiers


@settings(max_examples=300, deadline=None)
@given(boundary_books())
def test_fast_paths_equal_exact_integers_at_their_bounds(drawn):
    book, tiers = drawn
    collateral, lots, basis, mark, k, rate, anchor, settle = book
    (count, remainder), coll, outs = _run(risk_sweep, book, tiers)
    want_coll, want_equity, want_maint, want_funding, want_bad = _exact_reference(
        collateral, lots, basis, mark, k, tiers, settle, rate, anchor)
    assert [int(x) for x in coll] == want_coll
    assert [int(x) for x in outs[0]] == want_equity
    assert [int(x) for x in outs[1]] == want_maint
    assert [int(x) for x in outs[3][:count]] == want_bad
    if settle:
        assert [int(x) for x in outs[2]] == want_funding and remainder == -sum(want_funding)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from([(False, True), (True, False), (True, True), (False, False)]))
def test_fund_rows_and_gated_markets_sweep_like_the_reference(seed, frozen):
    # the bench's state: fund rows 0-15 (two holding taken-over positions), a maker on the other side,
    # and the oracle's gate freezing some markets' funding this hour (their rate enters as 0)
    from risk.bench import (ANCHOR_TICKS, FUNDING_RATE_PPB, MARK_TICKS, MICRO_PER_TICK_LOT,
                            gated_funding_rates_ppb, make_accounts)

    collateral, lots, basis = make_accounts(300, seed)
    rates = gated_funding_rates_ppb(FUNDING_RATE_PPB, np.array(frozen))
    tiers = pack_tiers([default_tiers()["H100-PERP"]] * 2)
    book = (collateral, lots, basis, MARK_TICKS, MICRO_PER_TICK_LOT, rates, ANCHOR_TICKS, True)
    (count, remainder), coll, outs = _run(risk_sweep, book, tiers)
    want = _exact_reference(collateral, lots, basis, MARK_TICKS, MICRO_PER_TICK_LOT, tiers, True, rates,
                            ANCHOR_TICKS)
    assert [int(x) for x in coll] == want[0]
    assert [int(x) for x in outs[0]] == want[1] and [int(x) for x in outs[1]] == want[2]
    assert [int(x) for x in outs[2]] == want[3] and [int(x) for x in outs[3][:count]] == want[4]
    assert outs[1][0] > 0 and outs[1][1] > 0  # the funds' taken-over positions are margined
    for m in np.nonzero(np.array(frozen))[0]:  # a frozen market moves no money
        only = rates.copy()
        only[[j for j in range(2) if j != m]] = 0
        (_, rem_m), coll_m, outs_m = _run(risk_sweep, (*book[:5], only, ANCHOR_TICKS, True), tiers)
        assert rem_m == 0 and (outs_m[2] == 0).all() and np.array_equal(coll_m, collateral)
    assert remainder == -sum(want[3])
