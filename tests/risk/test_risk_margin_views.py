"""Withdrawable amount and the array account view (incl. liquidation price); the engine's pre-trade
boundary is tested through the engine (tests/test_engine_risk.py, tests/test_gate.py)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from risk.intmath import PPM
from risk.margin import withdrawable_micro
from risk.sweep import risk_sweep_numpy
from risk.tiers import default_tiers, pack_tiers
from risk.views import account_view

TIERS = pack_tiers([default_tiers()["H100-PERP"]] * 2)
MARK = np.array([20_000, 10_000], np.int64)  # $2.0000 and $1.0000 per GPU-hour
K = np.array([100, 100], np.int64)  # $0.0001 ticks, 1 GPU-hour lots


@pytest.mark.parametrize(
    ("collateral", "equity", "im", "gross", "expected"),
    [
        (100, 100, 0, 0, 100),  # flat: all cash
        (100, 100, 30, 0, 70),  # keep initial margin
        (100, 80, 30, 0, 50),  # a loss: equity - IM
        (100, 150, 30, 500, 100),  # profit 50, floor max(30, 50) = 50: cash 100, or 150 - 50 = 100
        (100, 200, 30, 500, 150),  # profit 100: 200 - 50 above the floor
        (100, 200, 30, 2_000, 100),  # floor 200: no profit withdrawable, the cash is
        (100, 120, 110, 0, 10),  # cash limited by IM
        (100, 20, 30, 0, 0),  # below IM: nothing
    ],
)
def test_withdrawable_keeps_initial_margin_and_pays_profit_only_above_the_floor(collateral, equity, im, gross,
                                                                               expected):
    assert withdrawable_micro(collateral, equity, im, gross, 100_000) == expected


def _arrays(collateral, lots, basis, leverage):
    return (np.array([collateral], np.int64), np.array([lots], np.int64), np.array([basis], np.int64),
            np.array([leverage], np.int64))


def test_account_view_on_a_hand_computed_two_market_account():
    coll, lots, basis, lev = _arrays(100_000 * PPM, [10_000, -5_000], [10_000 * 19_000 * 100, -5_000 * 11_000 * 100],
                                     [5, 3])
    v = account_view(0, coll, lots, basis, lev, MARK, K, TIERS)
    # long 10_000 lots at 1.9000 -> 2.0000: +$1_000; short 5_000 at 1.1000 -> 1.0000: +$500
    assert v.upnl_micro == 1_500 * PPM and v.equity_micro == 101_500 * PPM
    # IM: $20k / 5 = $4_000; $5k at 3x = ceil(5e9 * 333_334 / 1e6) = 1_666_670_000
    assert v.margin_used_micro == 4_000 * PPM + 1_666_670_000
    assert v.maintenance_margin_micro == 2_000 * PPM + 500 * PPM
    assert v.free_collateral_micro == v.equity_micro - v.margin_used_micro
    assert v.margin_ratio_ppm == -((-2_500 * PPM * PPM) // (101_500 * PPM))
    assert [p.avg_entry_micro_ticks for p in v.positions] == [19_000 * PPM, 11_000 * PPM]
    # short liquidation: 101_500e6 - 500_000 (p - 10_000) < 2_000e6 + 50_000 p  <=>  p > 190_000
    assert v.positions[1].liquidation_price_ticks == 190_001
    assert v.positions[0].liquidation_price_ticks is None  # long: healthy even at one tick


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 10**6), st.integers(-10**6, 10**6).filter(bool), st.integers(0, 10**11),
       st.integers(-5_000, 5_000))
def test_liquidation_price_is_the_exact_health_boundary(mark0, lots0, collateral, entry_offset):
    mark = np.array([mark0, 10_000], np.int64)
    basis0 = lots0 * max(1, mark0 + entry_offset) * 100
    coll, lots, basis, lev = _arrays(collateral, [lots0, 0], [basis0, 0], [5, 5])
    liq = account_view(0, coll, lots, basis, lev, mark, K, TIERS).positions[0].liquidation_price_ticks

    def unhealthy(p):
        m = np.array([p, 10_000], np.int64)
        outs = [np.zeros(1, np.int64) for _ in range(4)]
        count, _ = risk_sweep_numpy(coll.copy(), lots, basis, m, K, TIERS.bound_micro, TIERS.mmr_ppm,
                                    TIERS.mm_deduction_micro, False, np.zeros(2, np.int64), m, *outs)
        return count == 1

    if liq is None:  # never unhealthy at a positive tick near here
        assert not unhealthy(1 if lots0 > 0 else 10 * mark0 + 10_000)
    elif lots0 > 0:
        assert unhealthy(liq) and not unhealthy(liq + 1)
    else:
        assert unhealthy(liq) and (liq == 1 or not unhealthy(liq - 1))


def test_perp_bench_risk_prints_figures_and_a_json_last_line():
    import json

    from perp.cli import main

    result = CliRunner().invoke(main, ["bench", "risk", "--accounts", "5000", "--seed", "3", "--json"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert any("ms" in line for line in lines[:-1])
    figures = json.loads(lines[-1])
    assert figures["accounts"] == 5000
    assert figures["sweep_ms"] > 0 and figures["numpy_sweep_ms"] > 0
    assert isinstance(figures["ratio_vs_numpy"], float) and figures["ratio_vs_numpy"] >= 0
    assert 5000 <= figures["positions"] <= 10_000
    assert figures["funding_remainder_micro"] >= 0  # every market nets to zero: the fund receives
