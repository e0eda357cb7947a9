"""Hypothesis: arbitrary record streams (good, bad, late, out of order) never break the anchor's
invariants: it stays inside the targets it was given, obeys the hourly cap, and replays identically."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st
from oracle_factories import config, fix, hour_of

from oracle.anchor import HourlyAnchor
from oracle.records import Vintage

PRICES = ["3.0000", "3.0500", "2.9000", "3.6000", "4.4000", "1.0000", "NaN", "-1", "0", "99999"]

records = st.lists(
    st.builds(
        lambda n, price, vintage, delay_h, suppressed, source: fix(
            n, None if suppressed else price, vintage, published_ns=hour_of(n, 0, 30) + delay_h * 3600 * 10**9,
            original="3.0000" if vintage is Vintage.REVISED and not suppressed else None,
            suppressed="too few venues" if suppressed else None, source=source),
        st.integers(0, 6), st.sampled_from(PRICES), st.sampled_from(list(Vintage)), st.integers(0, 40),
        st.booleans(), st.sampled_from(["a", "b", "c"])),
    max_size=30,
).map(lambda rs: sorted(rs, key=lambda r: r.published_ts_ns))


@settings(max_examples=150, deadline=None)
@given(records, st.sampled_from([0, 2_000, 20_000]))
def test_any_record_stream_keeps_the_anchor_inside_its_targets_and_under_the_cap(stream, cap_ppm):
    cfg = config(sources=("a", "b", "c"), primary_source="a", max_hourly_move_ppm=cap_ppm, half_life_s=2 * 3600)
    points, _ = HourlyAnchor(cfg).replay(stream, hour_of(9, 0))
    lo = hi = None
    for prev, point in zip([None] + points, points):
        lo = point.fix_price_ticks if lo is None else min(lo, point.fix_price_ticks)
        hi = point.fix_price_ticks if hi is None else max(hi, point.fix_price_ticks)
        assert lo <= point.anchor_price_ticks <= hi
        if prev is not None and cap_ppm:
            cap = max(1, prev.anchor_price_ticks * cap_ppm // 1_000_000)
            assert abs(point.anchor_price_ticks - prev.anchor_price_ticks) <= cap
        if prev is not None:
            assert point.ts_ns - prev.ts_ns == 3600 * 10**9
    again, _ = HourlyAnchor(cfg).replay(stream, hour_of(9, 0))
    assert msgspec.msgpack.encode(again) == msgspec.msgpack.encode(points)
