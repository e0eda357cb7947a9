"""Two or more sources: the anchor uses their median, flags divergence and falls back to the primary."""

from __future__ import annotations

from oracle_factories import at, fix, hour_of, run

from oracle.validity import Validity

THREE = {"sources": ("a", "b", "c"), "primary_source": "a", "max_source_spread_ppm": 20_000}


def test_three_agreeing_sources_give_their_median():
    records = [fix(0, "3.0000", source="a"), fix(0, "3.0300", source="b"), fix(0, "3.0100", source="c")]
    _, points, rejections = run(records, hour_of(0, 3), **THREE)
    assert rejections == []
    point = at(points, 0, 1)
    assert point.validity is Validity.FRESH and point.fix_price_ticks == 30100
    assert "median_of_sources:a,b,c" in point.notes


def test_two_agreeing_sources_give_their_midpoint_rounded_half_up():
    records = [fix(0, "3.0000", source="a"), fix(0, "3.0001", source="b")]
    _, points, _ = run(records, hour_of(0, 3), sources=("a", "b"), primary_source="a")
    assert at(points, 0, 1).anchor_micro_ticks == 30000_500000  # (30000 + 30001) / 2 ticks, exact in micro-ticks
    assert at(points, 0, 1).fix_price_ticks == 30001  # 30000.5 ticks published half up


def test_diverging_sources_flag_diverged_and_fall_back_to_the_primary():
    records = [fix(0, "3.0000", source="a"), fix(0, "3.3000", source="b"), fix(0, "3.1000", source="c")]
    _, points, _ = run(records, hour_of(0, 3), **THREE)
    point = at(points, 0, 1)
    assert point.validity is Validity.DIVERGED and point.fix_price_ticks == 30000
    assert "fallback_to_primary:a" in point.notes and point.gates.funding_frozen


def test_divergence_without_a_live_primary_uses_the_median_of_the_others():
    records = [fix(0, "3.0000", source="a"), fix(2, "3.3000", source="b"), fix(2, "3.1000", source="c")]
    _, points, _ = run(records, hour_of(2, 3), **THREE)
    point = at(points, 2, 1)  # a's fix is 48.5 h old: stale, so b and c decide
    assert point.validity is Validity.DIVERGED and point.fix_price_ticks == 32000
    assert "primary_unavailable" in point.notes


def test_a_stale_source_drops_out_and_the_live_one_drives_the_anchor():
    records = [fix(0, "3.0000", source="a"), fix(0, "3.0100", source="b"), fix(1, "3.0200", source="b"),
               fix(2, "3.0300", source="b")]
    _, points, _ = run(records, hour_of(2, 3), sources=("a", "b"), primary_source="a")
    assert at(points, 1, 1).fix_price_ticks == 30100  # median of a (3.0000) and b (3.0200)
    point = at(points, 2, 1)
    assert point.validity is Validity.FRESH and point.fix_price_ticks == 30300


def test_all_sources_stale_holds_the_primary_and_says_stale():
    records = [fix(0, "3.0000", source="a"), fix(0, "3.0200", source="b")]
    _, points, _ = run(records, hour_of(2, 3), sources=("a", "b"), primary_source="a")
    point = at(points, 2, 1)
    assert point.validity is Validity.STALE and point.fix_price_ticks == 30000
