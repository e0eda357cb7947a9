"""Leverage tiers: launch values, continuity at every bound, each validation error, kernel == reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from risk.errors import RiskCode, RiskError
from risk.intmath import INT64_MAX, PPM
from risk.tiers import (
    MAX_TIERS,
    LeverageTier,
    default_tiers,
    initial_margin_micro,
    maintenance_margin_micro,
    pack_tiers,
    parse_tiers_toml,
    validate_tiers,
)

USD = PPM  # micro-USD per USD


def test_launch_tiers_are_5x_4x_2x_with_maintenance_half_of_initial():
    s = default_tiers()["H100-PERP"]
    assert [t.max_leverage for t in s.tiers] == [5, 4, 2]
    assert s.bound_micro == (250_000 * USD, 1_000_000 * USD, INT64_MAX)
    assert s.imr_ppm == (200_000, 250_000, 500_000)
    assert s.mmr_ppm == (100_000, 125_000, 250_000)
    # deduction[1] = 250_000 USD * (12.5% - 10%) = $6,250; deduction[2] = 6_250 + 1_000_000 * 12.5% = $131,250
    assert s.mm_deduction_micro == (0, 6_250 * USD, 131_250 * USD)


def test_launch_maintenance_margin_on_hand_computed_notionals():
    s = default_tiers()["H100-PERP"]
    assert s.maintenance_margin_micro(100_000 * USD) == 10_000 * USD  # 10%
    assert s.maintenance_margin_micro(500_000 * USD) == 56_250 * USD  # 12.5% * 500k - 6,250
    assert s.maintenance_margin_micro(2_000_000 * USD) == 368_750 * USD  # 25% * 2M - 131,250
    assert s.maintenance_margin_micro(1) == 1  # ceil(0.1 micro-USD): rounded against the account


def _random_schedule(draw_leverages, draw_mmr_fracs, draw_bounds):
    tiers = []
    for i, lev in enumerate(draw_leverages):
        imr = -(-PPM // lev)
        tiers.append(LeverageTier(max_leverage=lev, maintenance_margin_ppm=draw_mmr_fracs[i],
                                  max_notional_usd=None if i == len(draw_leverages) - 1 else draw_bounds[i]))
        assert draw_mmr_fracs[i] < imr
    return tiers


@st.composite
def schedules(draw, market="X"):
    n = draw(st.integers(1, MAX_TIERS))
    levs = sorted(draw(st.lists(st.integers(1, 100), min_size=n, max_size=n)), reverse=True)
    mmrs = []
    floor = 1
    for lev in levs:
        imr = -(-PPM // lev)
        if floor >= imr:  # cannot keep maintenance non-decreasing below this initial rate
            return validate_tiers(market, [LeverageTier(max_leverage=1, maintenance_margin_ppm=500_000)])
        mmr = draw(st.integers(floor, imr - 1))
        mmrs.append(mmr)
        floor = mmr
    bounds = sorted(draw(st.sets(st.integers(1, 10**9), min_size=n - 1, max_size=n - 1)))
    return validate_tiers(market, _random_schedule(levs, mmrs, bounds))


@settings(max_examples=200, deadline=None)
@given(schedules())
def test_maintenance_margin_is_continuous_at_every_bound(s):
    for i, bound in enumerate(s.bound_micro[:-1]):
        # both neighbouring tiers' formulas give the same integer at the bound
        lower = -((-bound * s.mmr_ppm[i]) // PPM) - s.mm_deduction_micro[i]
        upper = -((-bound * s.mmr_ppm[i + 1]) // PPM) - s.mm_deduction_micro[i + 1]
        assert lower == upper == s.maintenance_margin_micro(bound)
        # one micro-USD past the bound moves MM by at most one micro-USD (no jump)
        assert 0 <= s.maintenance_margin_micro(bound + 1) - s.maintenance_margin_micro(bound) <= 1


@settings(max_examples=200, deadline=None)
@given(schedules(), st.lists(st.integers(0, INT64_MAX - PPM), min_size=2, max_size=6), st.integers(1, 200))
def test_kernel_margins_equal_the_python_reference_and_mm_never_falls(s, notionals, leverage):
    packed = pack_tiers([s, s])
    previous = None
    for n in sorted(notionals):
        mm = maintenance_margin_micro(n, 1, packed.bound_micro, packed.mmr_ppm, packed.mm_deduction_micro)
        assert mm == s.maintenance_margin_micro(n)
        assert 0 <= mm <= s.initial_margin_micro(n, leverage)  # equal only through rounding up
        assert initial_margin_micro(n, 1, leverage, packed.bound_micro, packed.imr_ppm) == \
            s.initial_margin_micro(n, leverage)
        if previous is not None:
            assert mm >= previous
        previous = mm


def test_initial_margin_uses_the_users_leverage_up_to_the_tier_limit():
    packed = pack_tiers([default_tiers()["H100-PERP"]])
    im = lambda n, lev: initial_margin_micro(n, 0, lev, packed.bound_micro, packed.imr_ppm)  # noqa: E731
    assert im(100_000 * USD, 5) == 20_000 * USD  # tier limit 5x
    assert im(100_000 * USD, 2) == 50_000 * USD  # user chose 2x: 50%
    assert im(100_000 * USD, 3) == 33_333_400_000  # ceil(1e6/3) = 333_334 ppm
    assert im(100_000 * USD, 20) == 20_000 * USD  # above the limit: the tier's 20% wins
    assert im(500_000 * USD, 5) == 125_000 * USD  # tier 2 caps at 4x
    assert im(2_000_000 * USD, 5) == 1_000_000 * USD  # above $1M: 2x


def test_packed_tiers_pad_with_the_last_tier_and_end_open():
    s = default_tiers()["H100-PERP"]
    packed = pack_tiers([s])
    assert packed.bound_micro.shape == (1, MAX_TIERS) and packed.bound_micro.dtype == np.int64
    assert list(packed.bound_micro[0, :3]) == list(s.bound_micro)
    assert (packed.bound_micro[0, 2:] == INT64_MAX).all()
    assert (packed.mmr_ppm[0, 2:] == 250_000).all()
    assert packed.n_tiers[0] == 3


def T(lev, mmr, bound=None):
    return LeverageTier(max_leverage=lev, maintenance_margin_ppm=mmr, max_notional_usd=bound)


@pytest.mark.parametrize(
    ("tiers", "code", "where"),
    [
        ([], RiskCode.TIER_EMPTY, "M.tier"),
        ([T(5, 100_000, i + 1) for i in range(MAX_TIERS)] + [T(5, 100_000)], RiskCode.TIER_TOO_MANY, "M.tier"),
        ([T(0, 100_000)], RiskCode.TIER_NOT_POSITIVE, "M.tier[0].max_leverage"),
        ([T(5, 0)], RiskCode.TIER_NOT_POSITIVE, "M.tier[0].maintenance_margin_ppm"),
        ([T(5, 100_000, 0), T(2, 200_000)], RiskCode.TIER_NOT_POSITIVE, "M.tier[0].max_notional_usd"),
        ([T(5, 100_000, 1_000), T(4, 100_000, 1_000), T(2, 200_000)], RiskCode.TIER_BOUNDS_NOT_INCREASING,
         "M.tier[1].max_notional_usd"),
        ([T(5, 100_000, 1_000), T(4, 100_000, 500), T(2, 200_000)], RiskCode.TIER_BOUNDS_NOT_INCREASING,
         "M.tier[1].max_notional_usd"),
        ([T(5, 100_000, 1_000)], RiskCode.TIER_LAST_NOT_OPEN_ENDED, "M.tier[0].max_notional_usd"),
        ([T(5, 100_000), T(2, 200_000)], RiskCode.TIER_OPEN_ENDED_NOT_LAST, "M.tier[0].max_notional_usd"),
        ([T(4, 100_000, 1_000), T(5, 100_000)], RiskCode.TIER_LEVERAGE_RISES, "M.tier[1].max_leverage"),
        ([T(5, 200_000)], RiskCode.TIER_MAINTENANCE_NOT_BELOW_INITIAL, "M.tier[0].maintenance_margin_ppm"),
        ([T(5, 100_000, 1_000), T(4, 250_000)], RiskCode.TIER_MAINTENANCE_NOT_BELOW_INITIAL,
         "M.tier[1].maintenance_margin_ppm"),
        ([T(5, 100_000, 1_000), T(4, 90_000)], RiskCode.TIER_MAINTENANCE_FALLS, "M.tier[1].maintenance_margin_ppm"),
        ([T(5, 100_000, 10**13), T(2, 200_000)], RiskCode.TIER_BOUND_TOO_LARGE, "M.tier[0].max_notional_usd"),
    ],
)
def test_each_invalid_tier_table_is_rejected_with_its_code_and_field(tiers, code, where):
    with pytest.raises(RiskError) as err:
        validate_tiers("M", tiers)
    assert err.value.code == code
    assert err.value.where == where
    assert where in str(err.value) and str(int(code)) in str(err.value)


def test_equal_leverage_in_consecutive_tiers_is_allowed():
    s = validate_tiers("M", [T(5, 100_000, 1_000), T(5, 150_000)])
    assert s.mm_deduction_micro == (0, 1_000 * 50_000)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[[market]]\nmarket = "M"\n[[market.tier]]\nmax_leverage = 5\nmaintenance_margin_ppm = 1\ncolour = 1\n',
         "colour"),
        ('[[market]]\nmarket = "M"\n[[market.tier]]\nmax_leverage = 5.0\nmaintenance_margin_ppm = 1\n', "int"),
        ('[[market]]\nmarket = "M"\n[[market.tier]]\nmax_leverage = 5\n', "maintenance_margin_ppm"),
        ("[[market]\n", "toml"),
    ],
)
def test_malformed_tier_toml_is_a_decode_error(text, fragment):
    with pytest.raises(RiskError) as err:
        parse_tiers_toml(text)
    assert err.value.code == RiskCode.TIER_DECODE
    assert fragment in str(err.value).lower() or fragment in err.value.where


def test_a_market_listed_twice_is_rejected():
    one = '[[market]]\nmarket = "M"\n[[market.tier]]\nmax_leverage = 5\nmaintenance_margin_ppm = 100000\n'
    with pytest.raises(RiskError) as err:
        parse_tiers_toml(one + one)
    assert err.value.code == RiskCode.TIER_DUPLICATE_MARKET


def test_tier_file_loads_from_disk(tmp_path):
    from risk.tiers import load_tiers

    path = tmp_path / "tiers.toml"
    path.write_text('[[market]]\nmarket = "H100-PERP"\n'
                    '[[market.tier]]\nmax_notional_usd = 250_000\nmax_leverage = 5\nmaintenance_margin_ppm = 100_000\n'
                    '[[market.tier]]\nmax_notional_usd = 1_000_000\nmax_leverage = 4\nmaintenance_margin_ppm = 125_000\n'
                    '[[market.tier]]\nmax_leverage = 2\nmaintenance_margin_ppm = 250_000\n')
    assert load_tiers(path) == default_tiers()
