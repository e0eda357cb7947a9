"""Units: exact decimal conversion, the named roundings, half-lives and alpha."""

from __future__ import annotations

from decimal import Decimal

import pytest

from oracle.errors import OracleCode, OracleError
from oracle.units import (
    alpha_ppb_for_half_life,
    div_toward_target,
    micro_to_ticks_half_up,
    parse_half_life_s,
    ticks_to_usd,
    usd_to_micro_ticks,
)


@pytest.mark.parametrize("text, seconds", [("6h", 21600), ("90m", 5400), ("3600s", 3600), ("1d", 86400)])
def test_half_life_accepts_seconds_minutes_hours_days(text, seconds):
    assert parse_half_life_s(text) == seconds


@pytest.mark.parametrize("text", ["6", "6hours", "-1h", "1.5h", "", "0s"])
def test_half_life_rejects_anything_else(text):
    with pytest.raises(OracleError) as info:
        parse_half_life_s(text)
    assert info.value.code is OracleCode.BAD_HALF_LIFE


def test_alpha_halves_the_gap_once_per_half_life():
    assert alpha_ppb_for_half_life(3600) == 500_000_000  # 1 - 2**-1
    alpha = alpha_ppb_for_half_life(6 * 3600)
    keep_after_6 = (Decimal(10**9 - alpha) / 10**9) ** 6
    assert abs(keep_after_6 - Decimal("0.5")) < Decimal("1e-8")
    assert alpha == alpha_ppb_for_half_life(6 * 3600)  # deterministic


def test_usd_converts_to_micro_ticks_exactly_without_floats():
    tick = Decimal("0.0001")
    assert usd_to_micro_ticks(Decimal("3.1373"), tick) == 31373_000000
    assert usd_to_micro_ticks(Decimal("0.29"), Decimal("0.01")) == 29_000000  # int(0.29 * 100) == 28
    assert usd_to_micro_ticks(Decimal("3.0000000000005"), tick) == 30000_000000  # below a micro-tick, half-even
    assert usd_to_micro_ticks(Decimal("3.00000000005"), tick) == 30000_000000  # tie: to even
    assert usd_to_micro_ticks(Decimal("3.00000000015"), tick) == 30000_000002  # tie: to even


def test_published_ticks_round_half_up_and_commute_with_whole_tick_shifts():
    assert micro_to_ticks_half_up(2_500_000) == 3 and micro_to_ticks_half_up(3_500_000) == 4
    assert micro_to_ticks_half_up(2_499_999) == 2
    for micro in range(0, 5_000_000, 250_000):
        for k in range(4):
            assert micro_to_ticks_half_up(micro + k * 10**6) == micro_to_ticks_half_up(micro) + k


def test_ema_step_rounds_toward_the_target_and_never_overshoots():
    assert div_toward_target(1, 10**9) == 1 and div_toward_target(-1, 10**9) == -1
    assert div_toward_target(0, 10**9) == 0 and div_toward_target(10**9 * 7, 10**9) == 7
    assert div_toward_target(-(10**9 * 7 + 1), 10**9) == -8


def test_ticks_print_with_the_tick_decimals():
    assert str(ticks_to_usd(31300, Decimal("0.0001"))) == "3.1300"
    assert str(ticks_to_usd(1000000, Decimal("0.0001"))) == "100.0000"
