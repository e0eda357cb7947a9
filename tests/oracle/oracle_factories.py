"""Builders for fix records and anchors in the oracle tests (a test series on 2026-01-01 onward)."""

from __future__ import annotations

import datetime as dt

from oracle.anchor import AnchorConfig, AnchorPoint, HourlyAnchor
from oracle.records import FixRecord, Vintage, scheduled_strike_ns
from oracle.units import HOUR_NS, NS_PER_S

SERIES = "GPUM.TEST.SPOT"
SOURCE = "gpumarkets.dev"
DAY0 = dt.date(2026, 1, 1)


def day(n: int) -> dt.date:
    return DAY0 + dt.timedelta(days=n)


def hour_of(n: int, hh: int, mm: int = 0) -> int:
    """ts_ns of day ``n`` at hh:mm UTC."""
    return scheduled_strike_ns(day(n)) - 30 * 60 * NS_PER_S + hh * HOUR_NS + mm * 60 * NS_PER_S


def fix(n: int, price: str | None, vintage: Vintage = Vintage.PROVISIONAL, *, published_ns: int | None = None,
        strike_ns: int | None = None, source: str = SOURCE, original: str | None = None,
        suppressed: str | None = None, series: str = SERIES) -> FixRecord:
    strike = scheduled_strike_ns(day(n)) if strike_ns is None else strike_ns
    if published_ns is None:
        published_ns = strike + (24 * HOUR_NS if vintage is Vintage.FINAL else 0)
    return FixRecord(series_id=series, fix_date=day(n), strike_ts_ns=strike, published_ts_ns=published_ns,
                     vintage=vintage, source=source, price_usd=price, original_price_usd=original,
                     suppression_reason=suppressed)


def config(**overrides) -> AnchorConfig:
    base = {"series_id": SERIES, "half_life_s": 6 * 3600}
    base.update(overrides)
    return AnchorConfig(**base)


def run(records: list[FixRecord], until_ns: int, **overrides):
    """Replay and index the points by ts_ns; returns (anchor, points_by_ts, rejections)."""
    anchor = HourlyAnchor(config(**overrides))
    points, rejections = anchor.replay(records, until_ns)
    return anchor, {p.ts_ns: p for p in points}, rejections


def at(points: dict[int, AnchorPoint], n: int, hh: int) -> AnchorPoint:
    return points[hour_of(n, hh)]
