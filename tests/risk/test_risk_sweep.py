"""The numba sweep equals the numpy reference, settles funding like the per-market kernel, lists the
unhealthy accounts in order, and gives the same answer on any number of threads."""

from __future__ import annotations

import numba
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from risk.funding import settle_funding_market
from risk.intmath import PPB, PPM
from risk.sweep import N_CHUNKS, risk_sweep, risk_sweep_numpy
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
