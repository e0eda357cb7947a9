"""The anchor over the 180 real GPU Markets fixes (CC BY 4.0): range, half-life, cap, determinism."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import msgspec
import pytest

from oracle.anchor import AnchorConfig, HourlyAnchor
from oracle.readers import csv_series, read_csv_fixes
from oracle.records import FixRecord, Vintage, scheduled_strike_ns
from oracle.units import DAY_NS, HOUR_NS, PPB, usd_to_micro_ticks


@pytest.fixture(scope="module")
def csv_path(shared_data_dir):
    return shared_data_dir / "gpumarkets" / "daily_fixings.csv"


def _replay(records, **overrides):
    config = AnchorConfig(series_id=records[0].series_id, **overrides)
    anchor = HourlyAnchor(config)
    points, rejections = anchor.replay(records, records[-1].strike_ts_ns + DAY_NS - 1)
    assert rejections == []
    return anchor, points


def test_the_csv_holds_180_days_of_13_series_as_final_fixes(csv_path):
    series = csv_series(csv_path)
    assert len(series) == 13
    read = read_csv_fixes(csv_path, "GPUM.H100.SXM.SPOT")
    assert read.rejections == [] and len(read.records) == 180
    assert {r.vintage for r in read.records} == {Vintage.FINAL}
    assert read.records[0].fix_date == dt.date(2025, 10, 21) and read.records[-1].fix_date == dt.date(2026, 4, 18)


def test_anchor_stays_inside_the_range_of_the_fixes_it_has_seen_on_every_series(csv_path):
    for series in csv_series(csv_path):
        records = read_csv_fixes(csv_path, series).records
        _, points = _replay(records, half_life_s=6 * 3600)
        assert len(points) == 180 * 24
        tick = Decimal("0.0001")
        seen_lo = seen_hi = None
        by_strike = iter(records)
        pending = next(by_strike)
        for point in points:
            while pending is not None and pending.published_ts_ns <= point.ts_ns:
                micro = usd_to_micro_ticks(Decimal(pending.price_usd), tick)
                seen_lo = micro if seen_lo is None else min(seen_lo, micro)
                seen_hi = micro if seen_hi is None else max(seen_hi, micro)
                pending = next(by_strike, None)
            assert seen_lo <= point.anchor_micro_ticks <= seen_hi, (series, point.ts_ns)


def test_anchor_converges_to_a_constant_fix_at_the_rate_its_half_life_implies(csv_path):
    real = read_csv_fixes(csv_path, "GPUM.H100.SXM.SPOT").records
    last = real[-1].fix_date
    constant = [FixRecord(series_id=real[0].series_id, fix_date=last + dt.timedelta(days=d),
                          strike_ts_ns=scheduled_strike_ns(last + dt.timedelta(days=d)),
                          published_ts_ns=scheduled_strike_ns(last + dt.timedelta(days=d)),
                          vintage=Vintage.FINAL, source="gpumarkets.dev", price_usd="4.0000")
                for d in range(1, 13)]
    anchor, points = _replay(real + constant, half_life_s=6 * 3600, max_hourly_move_ppm=0)  # the EMA alone
    first_hour = scheduled_strike_ns(constant[0].fix_date) + HOUR_NS // 2
    path = [p.anchor_micro_ticks for p in points if p.ts_ns >= first_hour - HOUR_NS]
    target = 40000 * 10**6
    gap0 = target - path[0]
    assert gap0 > 0
    keep = Decimal(PPB - anchor.alpha_ppb) / PPB
    for n in range(1, 49):
        bound = Decimal(gap0) * keep**n
        assert bound - n <= target - path[n] <= bound, n
    # one half-life (6 steps) halves the gap, to within the ppb rounding of alpha and 6 micro-ticks
    assert abs(Decimal(target - path[6]) / gap0 - Decimal("0.5")) < Decimal("1e-6")
    assert path[-1] == target  # rounding toward the target reaches a constant fix exactly


@pytest.mark.parametrize("cap_ppm", [1_000, 2_500])
def test_anchor_never_moves_more_than_the_cap_in_one_hour(csv_path, cap_ppm):
    binding = 0
    for series in csv_series(csv_path):
        records = read_csv_fixes(csv_path, series).records
        _, points = _replay(records, half_life_s=3600, max_hourly_move_ppm=cap_ppm)
        for prev, cur in zip(points, points[1:]):
            cap_ticks = max(1, prev.anchor_price_ticks * cap_ppm // 1_000_000)
            assert abs(cur.anchor_micro_ticks - prev.anchor_micro_ticks) <= cap_ticks * 10**6
            assert abs(cur.anchor_price_ticks - prev.anchor_price_ticks) <= cap_ticks
            binding += "cap_binding" in cur.notes
    assert binding > 0  # the cap did bite on the real path, so the bound above was exercised


def test_same_records_give_the_same_points_byte_for_byte(csv_path):
    records = read_csv_fixes(csv_path, "GPUM.B200.SXM.SPOT").records
    first_anchor, first = _replay(records, max_hourly_move_ppm=3_000)
    second_anchor, second = _replay(list(records), max_hourly_move_ppm=3_000)
    assert msgspec.msgpack.encode(first) == msgspec.msgpack.encode(second)
    assert first_anchor.state_hash() == second_anchor.state_hash()


def test_resuming_in_pieces_reaches_the_same_state_as_one_replay(csv_path):
    records = read_csv_fixes(csv_path, "GPUM.A100.SXM.SPOT").records
    whole, points = _replay(records)
    pieces = HourlyAnchor(AnchorConfig(series_id="GPUM.A100.SXM.SPOT"))
    collected = []
    for record in records:
        collected += pieces.advance_to(record.published_ts_ns - 1)
        assert pieces.ingest(record) is None
    collected += pieces.advance_to(records[-1].strike_ts_ns + DAY_NS - 1)
    assert collected == points and pieces.state_hash() == whole.state_hash()


def test_the_default_hourly_move_cap_walks_a_large_gap_in_at_most_one_percent_an_hour(csv_path):
    real = read_csv_fixes(csv_path, "GPUM.H100.SXM.SPOT").records
    last = real[-1].fix_date
    gap = [FixRecord(series_id=real[0].series_id, fix_date=last + dt.timedelta(days=d),
                     strike_ts_ns=scheduled_strike_ns(last + dt.timedelta(days=d)),
                     published_ts_ns=scheduled_strike_ns(last + dt.timedelta(days=d)),
                     vintage=Vintage.FINAL, source="gpumarkets.dev", price_usd="1.5000")  # about -30%
           for d in range(1, 4)]
    _, capped = _replay(real + gap, half_life_s=6 * 3600)
    _, free = _replay(real + gap, half_life_s=6 * 3600, max_hourly_move_ppm=0)
    moves = [abs(b.anchor_micro_ticks - a.anchor_micro_ticks) / a.anchor_micro_ticks
             for a, b in zip(capped, capped[1:])]
    assert max(moves) <= 0.0101  # 1% of the anchor, in whole ticks
    free_moves = [abs(b.anchor_micro_ticks - a.anchor_micro_ticks) / a.anchor_micro_ticks
                  for a, b in zip(free, free[1:])]
    assert max(free_moves) > 0.03  # without the cap the first hour of a -30% gap moves > 3%
    # on the real path alone the cap never binds
    _, real_capped = _replay(real, half_life_s=6 * 3600)
    _, real_free = _replay(real, half_life_s=6 * 3600, max_hourly_move_ppm=0)
    assert [p.anchor_micro_ticks for p in real_capped] == [p.anchor_micro_ticks for p in real_free]
