"""The oracle's operator parameters and manual fix suppression (admin commands, issue 15): journaled in the
engine, applied by the feed at the edge -- the oracle's own HourlyAnchor -- which reads them from the engine."""

from __future__ import annotations

import pytest

from oracle.anchor import HourlyAnchor
from oracle.errors import OracleError
from oracle.records import Vintage
from oracle.units import HOUR_NS
from oracle.validity import Validity
from perp.commands import SetOracleParams, SuppressFix
from perp.engine import Engine
from sims.feed import OracleFeed, fix_records, start_ns
from sims.scenario import parse_scenario
from tests.oracle.oracle_factories import config, day, fix, hour_of
from tests.sims.test_sims import SMALL

WHO = {"operator": "ops", "reason": "one venue reported"}


def _points(anchor: HourlyAnchor, records, until_ns: int):
    points, _ = anchor.replay(records, until_ns)
    return {p.ts_ns: p for p in points}


def test_reconfigure_changes_the_half_life_from_the_next_hour_and_is_validated():
    records = [fix(0, "2.0000"), fix(1, "2.4000")]
    slow = HourlyAnchor(config(half_life_s=6 * 3600, max_hourly_move_ppm=0))
    fast = HourlyAnchor(config(half_life_s=6 * 3600, max_hourly_move_ppm=0))
    a = _points(slow, records, hour_of(1, 3))
    b = _points(fast, records, hour_of(1, 1))
    fast.reconfigure(half_life_s=3600)
    b |= {p.ts_ns: p for p in fast.advance_to(hour_of(1, 3))}
    assert a[hour_of(1, 1)] == b[hour_of(1, 1)]  # past anchors are never rewritten
    # one hour at a 1 h half-life moves half the gap; at 6 h about 11%
    assert b[hour_of(1, 2)].anchor_price_ticks > a[hour_of(1, 2)].anchor_price_ticks
    with pytest.raises(OracleError):
        fast.reconfigure(fresh_max_age_s=100 * 3600)
    assert fast.config.half_life_s == 3600  # a refused change leaves the config as it was


def test_a_manually_suppressed_fix_holds_the_last_target_and_lifting_it_restores_the_fix():
    records = [fix(0, "2.0000"), fix(1, "2.4000")]
    held = HourlyAnchor(config())
    held.set_manual_suppressions([day(1)])
    pts = _points(held, records, hour_of(1, 6))
    p = pts[hour_of(1, 6)]
    assert Validity.SUPPRESSED in p.flags and p.fix_price_ticks == 20_000  # the day-0 fix still drives it
    held.set_manual_suppressions([])  # lifted
    p = held.advance_to(hour_of(1, 7))[-1]
    assert Validity.SUPPRESSED not in p.flags and p.fix_price_ticks == 24_000


def test_a_revision_of_a_manually_suppressed_day_keeps_it_suppressed_and_lifting_it_restores_the_revision():
    records = [fix(0, "2.0000"), fix(1, "2.4000"),
               fix(1, "2.5000", Vintage.REVISED, original="2.4000", published_ns=hour_of(1, 10, 15))]
    held = HourlyAnchor(config())
    held.set_manual_suppressions([day(1)])
    pts = _points(held, records, hour_of(1, 14))
    for hh in (9, 12, 14):  # before and after the in-window revision: the day-0 fix still drives it
        p = pts[hour_of(1, hh)]
        assert Validity.SUPPRESSED in p.flags and p.fix_price_ticks == 20_000, (hh, p.fix_price_ticks, p.flags)
    held.set_manual_suppressions([])  # lifted: the revision, the newest record of the day, is back
    p = held.advance_to(hour_of(1, 15))[-1]
    assert Validity.SUPPRESSED not in p.flags and p.fix_price_ticks == 25_000


def test_the_sims_feed_follows_the_engines_oracle_parameters_and_suppressions():
    sc = parse_scenario(SMALL.replace("hours = 6", "hours = 48"))
    feed = OracleFeed(sc, "H100-PERP", "0.0001", fix_records(sc))
    t0 = start_ns(sc)
    eng = Engine()
    feed.follow(eng)  # nothing set: the feed keeps its own (the scenario's) config
    assert feed.anchor.config.half_life_s == sc.oracle.half_life_s
    eng.submit([SetOracleParams(ts_ns=t0, market="H100-PERP", half_life_s=7200, **WHO),
                SuppressFix(ts_ns=t0, market="H100-PERP", fix_date=sc.index.start.isoformat(), **WHO)])
    assert eng.oracle_overrides("H100-PERP") == {"half_life_s": 7200}
    feed.follow(eng)
    assert feed.anchor.config.half_life_s == 7200
    point = feed.point_at(t0 + 2 * HOUR_NS)
    assert Validity.SUPPRESSED in point.flags


def test_the_serve_feed_follows_the_operators_half_life_and_suppressed_fixes_from_the_engine():
    """`perp serve`'s index feed (gateway.feed.IndexFeed) recomputes its anchor path when an admin
    command changes the oracle's parameters or suppresses a fix, and only then."""
    import datetime as dt

    from gateway.feed import IndexFeed
    from oracle.readers import default_csv_path, read_csv_fixes

    eng = Engine()
    spec = eng.specs[0]
    feed = IndexFeed.from_csv(spec, days=30)
    default = [cmd.price for _, _, cmd in feed.path]
    assert feed.follow(eng) is False  # nothing set by operators: the path it started with
    t0 = 1_767_225_600_000_000_000
    eng.submit([SetOracleParams(ts_ns=t0, market=spec.symbol, half_life_s=3600, **WHO)])
    assert feed.follow(eng) is True
    fast = [cmd.price for _, _, cmd in feed.path]
    assert len(fast) == len(default) and fast != default  # a 1 h half-life follows the fixes faster
    assert feed.follow(eng) is False  # unchanged parameters: no recomputation
    last_strike_ns = max(r.strike_ts_ns for r in read_csv_fixes(default_csv_path(), spec.series).records)
    day = dt.datetime.fromtimestamp(last_strike_ns // 1_000_000_000, dt.timezone.utc).date().isoformat()
    eng.submit([SuppressFix(ts_ns=t0 + 1, market=spec.symbol, fix_date=day, **WHO)])
    assert feed.follow(eng) is True
    assert feed.path[-1][2].validity == "suppressed"  # the last day's fix is held and flagged
