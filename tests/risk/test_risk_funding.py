"""Funding: the rate rule on hand-computed tables, premium samples, freeze rule, exact zero-sum settlement."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from risk.errors import RiskCode, RiskError
from risk.funding import (
    DEFAULT_CAP_PPB,
    funding_rate_for_hour_ppb,
    hourly_rate_ppb,
    hourly_rate_ppb_kernel,
    predicted_rate_ppb,
    premium_ppb,
    settle_funding_market,
)
from risk.intmath import INT64_MAX, PPB

I = 12_500  # interest: 0.01% per 8 h = 0.00125% per hour
CLAMP = 500_000  # 0.05%
BIG_CAP = 5_000_000  # 0.5%, so the clamp rows are not capped


@pytest.mark.parametrize(
    ("samples", "interest", "clamp", "cap", "rate"),
    [
        # premium within the clamp of interest: the rate is the interest
        ([100_000] * 60, I, CLAMP, BIG_CAP, 12_500),  # 100_000 + clamp(12_500 - 100_000) = 12_500
        ([0] * 59 + [6_000_000], I, CLAMP, BIG_CAP, 12_500),  # average 100_000
        # premium exactly at the clamp: interest - P = -500_000, not clamped
        ([512_500] * 60, I, CLAMP, BIG_CAP, 12_500),
        ([512_501] * 60, I, CLAMP, BIG_CAP, 12_501),  # one past: P - clamp
        # premium above the clamp: P - clamp
        ([2_000_000] * 60, I, CLAMP, BIG_CAP, 1_500_000),
        # premium below the clamp: negative rate P + clamp
        ([-2_000_000] * 60, I, CLAMP, BIG_CAP, -1_500_000),
        ([-400_000] * 60, I, CLAMP, BIG_CAP, 12_500),  # -400_000 + 412_500
        ([-600_000] * 60, I, CLAMP, BIG_CAP, -100_000),  # -600_000 + 500_000
        # at the cap, both signs
        ([10_000_000] * 60, I, CLAMP, BIG_CAP, BIG_CAP),  # 9_500_000 capped
        ([-10_000_000] * 60, I, CLAMP, BIG_CAP, -BIG_CAP),
        ([5_500_000] * 60, I, CLAMP, BIG_CAP, BIG_CAP),  # 5_000_000 exactly at the cap
        ([2_000_000] * 60, I, CLAMP, DEFAULT_CAP_PPB, 500_000),  # the default 0.05% cap
        # zero interest
        ([300_000] * 60, 0, CLAMP, BIG_CAP, 0),
        ([800_000] * 60, 0, CLAMP, BIG_CAP, 300_000),
        ([-800_000] * 60, 0, CLAMP, BIG_CAP, -300_000),
        ([0] * 60, 0, CLAMP, BIG_CAP, 0),
        # zero clamp: the rate is the average premium, rounded half away from zero
        ([1, 2], 0, 0, BIG_CAP, 2),  # 1.5 -> 2
        ([-1, -2], 0, 0, BIG_CAP, -2),  # -1.5 -> -2
        ([1, 1, 2], 0, 0, BIG_CAP, 1),  # 1.33 -> 1
        ([1, 2, 2], 0, 0, BIG_CAP, 2),  # 1.67 -> 2
        # zero cap: no funding
        ([2_000_000] * 60, I, CLAMP, 0, 0),
    ],
)
def test_hourly_rate_matches_the_hand_computed_table(samples, interest, clamp, cap, rate):
    assert hourly_rate_ppb(samples, interest, clamp, cap) == rate
    assert hourly_rate_ppb(np.array(samples, dtype=np.int64), interest, clamp, cap) == rate
    arr = np.array(samples, dtype=np.int64)
    assert hourly_rate_ppb_kernel(arr, arr.size, interest, clamp, cap) == rate


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(-10**10, 10**10), min_size=1, max_size=120), st.integers(-10**8, 10**8),
       st.integers(0, 10**8), st.integers(0, 10**9))
def test_rate_kernel_equals_the_pure_rule_and_is_sign_symmetric_and_bounded(samples, interest, clamp, cap):
    rate = hourly_rate_ppb(samples, interest, clamp, cap)
    arr = np.array(samples, dtype=np.int64)
    assert hourly_rate_ppb_kernel(arr, arr.size, interest, clamp, cap) == rate
    assert hourly_rate_ppb([-s for s in samples], -interest, clamp, cap) == -rate
    assert abs(rate) <= cap
    exact_avg = Fraction(sum(samples), len(samples))
    assert abs(rate - exact_avg) <= clamp + Fraction(1, 2) or abs(rate) == cap


@pytest.mark.parametrize(
    ("samples", "error", "code"),
    [
        ([], "premium_samples_ppb", RiskCode.FUNDING_NO_SAMPLES),
        ([1.5], "premium_samples_ppb[0]", RiskCode.FUNDING_NON_INTEGER_SAMPLE),
        ([1, True], "premium_samples_ppb[1]", RiskCode.FUNDING_NON_INTEGER_SAMPLE),
    ],
)
def test_bad_samples_are_rejected_with_a_code(samples, error, code):
    with pytest.raises(RiskError) as err:
        hourly_rate_ppb(samples, 0, CLAMP, BIG_CAP)
    assert err.value.code == code and err.value.where == error


def test_negative_clamp_or_cap_is_rejected():
    for clamp, cap in ((-1, 1), (1, -1)):
        with pytest.raises(RiskError) as err:
            hourly_rate_ppb([0], 0, clamp, cap)
        assert err.value.code == RiskCode.FUNDING_NEGATIVE_BOUND


def test_predicted_rate_uses_the_samples_so_far_and_interest_before_the_first():
    assert predicted_rate_ppb([], I, CLAMP, BIG_CAP) == I
    assert predicted_rate_ppb([2_000_000, 2_000_000], I, CLAMP, BIG_CAP) == 1_500_000


@pytest.mark.parametrize(
    ("samples", "frozen_at_hour", "full", "rate"),
    [
        ([2_000_000] * 60, False, 60, 1_500_000),  # nothing frozen: the rule
        ([2_000_000] * 60, True, 60, 0),  # frozen at the hour: nothing paid
        ([], False, 60, 0),  # frozen all hour (60 frozen sample times)
        ([2_000_000] * 30, False, 60, 750_000),  # frozen half the hour (30): half the rate
        ([-2_000_000] * 20, False, 60, -500_000),  # unfrozen a third (40 frozen): -1_500_000 / 3, toward zero
        ([1_000_100], False, 3, 166_700),  # rate 500_100, one sample of a 3-sample hour (2 frozen): 166_700 exactly
        ([1_000_100] * 2, False, 3, 333_400),  # a partial hour, nothing frozen: 500_100 x 2 // 3
    ],
)
def test_funding_accrues_only_while_the_anchor_is_not_frozen(samples, frozen_at_hour, full, rate):
    assert funding_rate_for_hour_ppb(samples, frozen_at_hour, I, CLAMP, BIG_CAP, samples_in_full_hour=full) == rate


def test_a_partial_hour_with_frozen_samples_is_pro_rated_by_a_full_hours_samples():
    # a market listed at 00:30 (30 samples), 5 of them frozen: rate x 25 / 60, not x 25 / 30
    assert funding_rate_for_hour_ppb([2_000_000] * 25, False, I, CLAMP, BIG_CAP) == 1_500_000 * 25 // 60


IDX = 20_000  # ticks
UT = 1_000_000  # micro-ticks per tick


@pytest.mark.parametrize(
    ("bid_ut", "ask_ut", "premium"),
    [
        (20_100 * UT, 20_200 * UT, 5_000_000),  # book above the index: +100 / 20_000 = +0.5%
        (19_800 * UT, 19_900 * UT, -5_000_000),  # book below: -0.5%
        (19_990 * UT, 20_010 * UT, 0),  # index inside the impact spread
        (20_000 * UT, 20_000 * UT, 0),
        (0, 20_200 * UT, 0),  # bid side lacks the impact notional
        (20_100 * UT, 0, 0),  # ask side lacks it
        (-1, -1, 0),
        (20_000 * UT + 20, 20_100 * UT, 1),  # 20 micro-ticks / 20_000 ticks = 1 ppb
        (20_000 * UT + 19, 20_100 * UT, 0),  # 0.95 ppb rounds toward zero
        (19_900 * UT, 20_000 * UT - 19, 0),
        (19_900 * UT, 20_000 * UT - 20, -1),
    ],
)
def test_premium_sample_matches_the_hand_computed_table(bid_ut, ask_ut, premium):
    assert premium_ppb(bid_ut, ask_ut, IDX) == premium


def test_premium_needs_a_positive_index():
    with pytest.raises(ValueError):
        premium_ppb(UT, UT, 0)


def test_settlement_rounds_each_side_against_itself_on_a_hand_table():
    # anchor 20_000 ticks, 100 micro-USD per tick-lot: 2_000_000 micro-USD ($2) per lot; rate 333_333 ppb
    lots = np.array([[3], [-1], [-2], [0]], dtype=np.int64)
    out = np.zeros(4, dtype=np.int64)
    remainder = settle_funding_market(lots, 0, 20_000, 100, 333_333, out)
    # long owes 6_000_000 * 0.000333333 = 1_999.998 -> pays 2_000 (ceiling)
    # shorts are owed 666.666 -> 666 and 1_333.332 -> 1_333 (floor)
    assert list(out) == [-2_000, 666, 1_333, 0]
    assert remainder == 1 and out.sum() + remainder == 0


def test_negative_rate_makes_shorts_pay():
    lots = np.array([[3], [-3]], dtype=np.int64)
    out = np.zeros(2, dtype=np.int64)
    remainder = settle_funding_market(lots, 0, 20_000, 100, -333_333, out)
    assert list(out) == [1_999, -2_000] and remainder == 1


@st.composite
def balanced_market(draw):
    anchor = draw(st.one_of(st.integers(1, 10**7), st.just(10**7)))
    k = draw(st.one_of(st.integers(1, 10**4), st.just(10**4)))
    per_lot = anchor * k
    n = draw(st.integers(2, 40))
    limit = (INT64_MAX - PPB) // per_lot // n  # so every position, and the netting one, is in range
    lots = draw(st.lists(st.one_of(st.integers(-limit, limit), st.sampled_from([limit, -limit, 0, 1, -1])),
                         min_size=n - 1, max_size=n - 1))
    lots.append(-sum(lots))
    rate = draw(st.one_of(st.integers(-PPB, PPB), st.sampled_from([PPB, -PPB, 1, -1, 0, 500_000])))
    return np.array(lots, dtype=np.int64).reshape(-1, 1), anchor, k, rate


@settings(max_examples=300, deadline=None)
@given(balanced_market())
def test_funding_settlement_is_exactly_zero_sum_with_a_small_non_negative_remainder(market):
    lots, anchor, k, rate = market
    out = np.zeros(lots.shape[0], dtype=np.int64)
    remainder = settle_funding_market(lots, 0, anchor, k, rate, out)
    exact = [Fraction(-int(x) * anchor * k * rate, PPB) for x in lots[:, 0]]
    assert [int(d) for d in out] == [e.__floor__() for e in exact]  # payer ceiling, receiver floor
    assert sum(int(d) for d in out) + int(remainder) == 0
    assert 0 <= remainder < max(1, int(np.count_nonzero(lots)))
