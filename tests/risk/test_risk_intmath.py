"""Overflow-safe multiply-divide and checked operations against Python's big integers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from risk.intmath import (
    INT64_MAX,
    INT64_MIN,
    PPB,
    PPM,
    PPM_FAST_MAX_MICRO,
    SPLIT_DIVISOR_MAX,
    checked_add,
    checked_mul,
    checked_sub,
    mul_div_ceil,
    mul_div_floor,
    mul_div_trunc,
    ppb_fast_max,
    ppb_of_floor,
    ppb_of_floor_fast,
    ppm_of_ceil,
    ppm_of_ceil_fast,
    ppm_ratio_floor_capped,
)

int64s = st.integers(INT64_MIN, INT64_MAX)
edges = st.sampled_from([0, 1, -1, 2, -2, INT64_MAX, INT64_MIN, INT64_MAX - 1, INT64_MIN + 1,
                         2**32, -(2**32), 3_037_000_499, -3_037_000_500])
any_int64 = st.one_of(int64s, edges)


@st.composite
def mul_div_args(draw):
    d = draw(st.one_of(st.integers(1, SPLIT_DIVISOR_MAX), st.sampled_from([1, PPM, PPB, SPLIT_DIVISOR_MAX])))
    b = draw(st.integers(-d, d))
    a = draw(st.one_of(st.integers(INT64_MIN + d, INT64_MAX - d),
                       st.sampled_from([INT64_MIN + d, INT64_MAX - d, 0, -1, 1])))
    return a, b, d


def _floor(a: int, b: int, d: int) -> int:
    return (a * b) // d


def _ceil(a: int, b: int, d: int) -> int:
    return -((-(a * b)) // d)


@settings(max_examples=400, deadline=None)
@given(mul_div_args())
def test_mul_div_rounds_exactly_like_big_integers(args):
    a, b, d = args
    assert mul_div_floor(a, b, d) == _floor(a, b, d)
    assert mul_div_ceil(a, b, d) == _ceil(a, b, d)
    exact_trunc = abs(a * b) // d * (1 if a * b >= 0 else -1)
    assert mul_div_trunc(a, b, d) == exact_trunc


def test_mul_div_survives_products_far_beyond_int64():
    a = INT64_MAX - PPB  # a * rate overflows int64 by ~9 orders of magnitude
    assert mul_div_floor(a, -PPB + 1, PPB) == (a * (-PPB + 1)) // PPB
    assert mul_div_ceil(a, 999_999, PPM) == -((-(a * 999_999)) // PPM)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, INT64_MAX - PPM), st.integers(0, PPM))
def test_ppm_of_ceil_is_the_ceiling_of_the_margin_product(amount, rate):
    assert ppm_of_ceil(amount, rate) == _ceil(amount, rate, PPM)


@settings(max_examples=300, deadline=None)
@given(st.integers(INT64_MIN + PPB, INT64_MAX - PPB), st.integers(-PPB, PPB))
def test_ppb_of_floor_is_the_floor_of_the_funding_product(amount, rate):
    assert ppb_of_floor(amount, rate) == _floor(amount, rate, PPB)


def _fits(x: int) -> bool:
    return INT64_MIN <= x <= INT64_MAX


@settings(max_examples=500, deadline=None)
@given(any_int64, any_int64)
def test_checked_ops_flag_exactly_the_results_that_do_not_fit(a, b):
    for fn, exact in ((checked_add, a + b), (checked_sub, a - b), (checked_mul, a * b)):
        value, ok = fn(a, b)
        assert ok == _fits(exact), (fn.__name__, a, b)
        assert value == (exact if ok else 0)


def test_checked_mul_accepts_the_exact_int64_minimum():
    assert checked_mul(-(2**62), 2) == (INT64_MIN, True)
    assert checked_mul(2**62, 2) == (0, False)
    assert checked_mul(INT64_MIN, -1) == (0, False)
    assert checked_mul(INT64_MIN, 1) == (INT64_MIN, True)


def _around(bound):
    return st.one_of(st.integers(max(0, bound - 5), bound), st.integers(0, bound))


@settings(max_examples=500, deadline=None)
@given(st.data(), st.one_of(st.integers(0, PPM), st.sampled_from([0, 1, PPM - 1, PPM])))
def test_the_unsigned_margin_ceiling_equals_the_exact_one_over_its_whole_domain(data, rate):
    amount = data.draw(_around(PPM_FAST_MAX_MICRO))
    assert ppm_of_ceil_fast(amount, rate) == -((-amount * rate) // PPM) == ppm_of_ceil(amount, rate)


@settings(max_examples=500, deadline=None)
@given(st.data(), st.one_of(st.integers(-PPB, PPB), st.sampled_from([1, -1, 2, -3, PPB, -PPB, 500_000, -500_000])))
def test_the_unsigned_funding_floor_equals_the_exact_one_up_to_its_bound(data, rate):
    bound = min(ppb_fast_max(rate), INT64_MAX - PPB)
    amount = data.draw(_around(bound)) * data.draw(st.sampled_from([1, -1]))
    assert ppb_of_floor_fast(amount, rate) == (amount * rate) // PPB == ppb_of_floor(amount, rate)


@settings(max_examples=400, deadline=None)
@given(st.data(), st.one_of(st.integers(1, 10**7), st.integers(INT64_MAX // PPM - 10**6, INT64_MAX // PPM + 10**6),
                            st.integers(1, INT64_MAX), st.sampled_from([1, PPM, INT64_MAX // PPM + 1, INT64_MAX])))
def test_a_ppm_ratio_is_the_exact_floor_of_two_micro_amounts_up_to_its_cap(data, den):
    """The ADL rank's two factors (PnL over cost basis, notional over equity), for every int64
    divisor, including those whose remainder x 1e6 would not fit int64."""
    num = data.draw(st.one_of(st.integers(0, min(INT64_MAX, den * 1001)), st.integers(0, INT64_MAX),
                              st.sampled_from([0, den - 1, den, INT64_MAX])))
    cap = data.draw(st.sampled_from([10**9, 0, INT64_MAX - PPM]))
    assert ppm_ratio_floor_capped(num, den, cap) == min(num * PPM // den, cap)
