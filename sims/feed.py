"""The index path of a scenario as a stream of fix records, fed through the oracle's own HourlyAnchor.

`fix_records` turns the real daily fixes (GPU Markets, gpumarkets.dev, CC BY 4.0) plus the
scenario's scripted events into `oracle.records.FixRecord`s in publication order. `OracleFeed`
ingests them on the oracle's schedule (a record published at t acts from the first whole hour after
t) and renders each hour's point with `HourlyAnchor.set_index_command` -- validity and every gate
come from the oracle, never from the simulator.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import msgspec

from oracle.anchor import AnchorConfig, AnchorPoint, HourlyAnchor
from oracle.readers import CSV_SOURCE, default_csv_path, read_csv_fixes
from oracle.records import FixRecord, Vintage, scheduled_strike_ns
from perp.commands import SetIndex
from sims.scenario import Scenario

HOUR_NS = 3_600_000_000_000
DAY_NS = 24 * HOUR_NS


def start_ns(sc: Scenario) -> int:
    """The engine's first hour: 01:00 UTC of the start date (the first hour after its 00:30 fix)."""
    return scheduled_strike_ns(sc.index.start) + HOUR_NS // 2


def _scaled(price: str, factor: Decimal, tick: Decimal) -> str:
    return str((Decimal(price) * factor).quantize(tick, rounding=ROUND_HALF_UP))


def fix_records(sc: Scenario, csv_path: Path | None = None, tick_usd: str = "0.0001") -> list[FixRecord]:
    """Records from `start - warmup_days` to the end of the run, scripted events applied, sorted by
    publication time (stable)."""
    ip = sc.index
    tick = Decimal(tick_usd)
    real = read_csv_fixes(csv_path or default_csv_path(), ip.series).records
    by_date = {r.fix_date: r for r in real}
    first = ip.start - dt.timedelta(days=ip.warmup_days)
    n_days = (sc.hours + 23) // 24 + 1
    days = [first + dt.timedelta(days=k) for k in range(ip.warmup_days + n_days)]
    missing = [d for d in days if d not in by_date]
    if missing:
        raise ValueError(f"index.start: the series has no fix for {missing[0]} (data runs "
                         f"{real[0].fix_date} to {real[-1].fix_date})")
    factor = {d: Decimal(1) for d in days}
    out: list[FixRecord] = []
    drop: set[dt.date] = set()
    suppressed: set[dt.date] = set()
    two_vintages: set[dt.date] = set()  # gapped fixes published provisional, then final
    revisions: dict = {}  # fix date -> the revised event
    for ev in ip.events:
        d0 = ip.start + dt.timedelta(days=ev.day)
        if ev.kind in ("gap", "staircase"):
            steps = 1 if ev.kind == "gap" else ev.steps
            every = 1 if ev.kind == "gap" else ev.every_days
            for s in range(steps):
                ds = d0 + dt.timedelta(days=s * every)
                for d in days:
                    if d >= ds:
                        factor[d] *= Decimal(1) + Decimal(str(ev.move))
            if ev.kind == "gap" and ev.vintage == "provisional+final":
                two_vintages.add(d0)
        elif ev.kind == "stale":
            drop.update(d0 + dt.timedelta(days=k) for k in range(ev.days))
        elif ev.kind == "suppressed":
            suppressed.update(d0 + dt.timedelta(days=k) for k in range(ev.days))
        elif ev.kind == "revised":
            revisions[d0] = ev
    for d in days:
        if d in drop:
            continue
        base = by_date[d]
        strike = scheduled_strike_ns(d)
        common = dict(series_id=ip.series, fix_date=d, strike_ts_ns=strike, source=CSV_SOURCE)
        price = _scaled(base.price_usd, factor[d], tick) if base.price_usd else None
        if d in suppressed or price is None:
            out.append(FixRecord(**common, published_ts_ns=strike, vintage=Vintage.FINAL, price_usd=None,
                                 suppression_reason="scenario: too few venues reported"))
            continue
        if d in revisions:
            ev = revisions[d]
            wrong = _scaled(price, Decimal(1) + Decimal(str(ev.move)), tick)
            out.append(FixRecord(**common, published_ts_ns=strike, vintage=Vintage.PROVISIONAL, price_usd=wrong))
            out.append(FixRecord(**common, published_ts_ns=strike + ev.revise_after_h * HOUR_NS,
                                 vintage=Vintage.REVISED, price_usd=price, original_price_usd=wrong))
        elif d in two_vintages:
            out.append(FixRecord(**common, published_ts_ns=strike, vintage=Vintage.PROVISIONAL, price_usd=price))
            out.append(FixRecord(**common, published_ts_ns=strike + DAY_NS - HOUR_NS, vintage=Vintage.FINAL,
                                 price_usd=price))
        else:
            out.append(FixRecord(**common, published_ts_ns=strike, vintage=Vintage.FINAL, price_usd=price))
    out.sort(key=lambda r: r.published_ts_ns)
    return out


class OracleFeed:
    """The oracle's HourlyAnchor fed with a record stream on its own hourly schedule."""

    def __init__(self, sc: Scenario, market: str, tick_size_usd: str, records: list[FixRecord]):
        cfg = AnchorConfig(series_id=sc.index.series, tick_size_usd=tick_size_usd, half_life_s=sc.oracle.half_life_s,
                           max_hourly_move_ppm=sc.oracle.max_hourly_move_ppm,
                           max_fix_jump_ppm=sc.oracle.max_fix_jump_ppm, sources=(CSV_SOURCE,),
                           primary_source=CSV_SOURCE)
        self.anchor = HourlyAnchor(cfg)
        self.market = market
        self.records = records
        self._next = 0
        self.rejections: list = []

    def follow(self, engine) -> None:
        """Take the operators' oracle parameters and suppressed fixes from the engine (admin commands,
        journaled with the stream), so that a replay of the same commands renders the same anchors."""
        import datetime as dt

        overrides = engine.oracle_overrides(self.market)
        if any(getattr(self.anchor.config, k) != v for k, v in overrides.items()):
            self.anchor.reconfigure(**overrides)
        self.anchor.set_manual_suppressions(dt.date.fromisoformat(d) for d in engine.suppressed_fixes(self.market))

    def point_at(self, hour_ns: int) -> AnchorPoint | None:
        """Ingest every record published before `hour_ns`, step the anchor through it; the point of
        that hour (None before the first usable fix)."""
        last = None
        while self._next < len(self.records) and self.records[self._next].published_ts_ns < hour_ns:
            rec = self.records[self._next]
            pts = self.anchor.advance_to(rec.published_ts_ns - 1)
            last = pts[-1] if pts else last
            rej = self.anchor.ingest(rec)
            if rej is not None:
                self.rejections.append(rej)
            self._next += 1
        pts = self.anchor.advance_to(hour_ns)
        if pts and pts[-1].ts_ns == hour_ns:
            return pts[-1]
        return None

    def set_index(self, point: AnchorPoint) -> SetIndex:
        return msgspec.convert(self.anchor.set_index_command(point, self.market), SetIndex)
