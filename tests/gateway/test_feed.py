"""The index feed of `perp serve` sends the oracle's own set_index commands: validity and every gate."""

from __future__ import annotations

from gateway.feed import IndexFeed
from perp.commands import SetIndex
from perp.markets import load_markets


def test_the_feed_carries_the_oracles_validity_and_gates_for_each_step():
    spec = load_markets().market[0]
    feed = IndexFeed.from_csv(spec, days=3)
    cmds = [feed.point(k) for k in range(len(feed.path))]
    assert all(isinstance(c, SetIndex) and c.ts_ns == 0 and c.market == spec.symbol for c in cmds)
    assert {c.validity for c in cmds} <= {"fresh", "revised", "aging", "suppressed", "diverged", "too_volatile",
                                         "non_positive", "stale"}
    assert all(1 <= c.leverage_scale_ppm <= 1_000_000 for c in cmds)
    # the feed wraps around the path on the wall clock
    assert feed.point(len(feed.path)) == cmds[0]


def test_the_feeds_hold_one_feed_per_market_whose_series_the_csv_has_in_market_order():
    import msgspec
    from structlog.testing import capture_logs

    from gateway.feed import IndexFeeds
    from perp.engine import Engine

    h100 = load_markets().market[0]
    b200 = msgspec.structs.replace(h100, symbol="B200-PERP", series="GPUM.B200.SXM.SPOT")
    gone = msgspec.structs.replace(h100, symbol="X-PERP", series="GPUM.NOT.A.SERIES")
    with capture_logs() as logs:
        feeds = IndexFeeds.from_csv([h100, gone, b200], days=3)
    assert feeds.markets == ["H100-PERP", "B200-PERP"]
    assert [(e["market"], e["series"]) for e in logs if e["event"] == "index_feed_no_series"] == [
        ("X-PERP", "GPUM.NOT.A.SERIES")]
    engine = Engine(msgspec.structs.replace(load_markets(), market=[h100, gone, b200]))
    sent = feeds.rows(engine, 5)
    assert [c.market for c, _ in sent] == ["H100-PERP", "B200-PERP"]
    assert all((r == engine.encoder.row(c)).all() for c, r in sent)
    # a single injected feed is one feed; none is no feed
    assert IndexFeeds.of(IndexFeed.from_csv(h100, days=3)).markets == ["H100-PERP"]
    assert IndexFeeds.of(None) is None and IndexFeeds.of([]) is None


def test_after_a_recovery_the_feeds_leave_out_what_the_engine_holds_per_market():
    import msgspec

    from gateway.feed import IndexFeeds
    from perp.engine import Engine

    h100 = load_markets().market[0]
    b200 = msgspec.structs.replace(h100, symbol="B200-PERP", series="GPUM.B200.SXM.SPOT")
    engine = Engine(msgspec.structs.replace(load_markets(), market=[h100, b200]))
    feeds = IndexFeeds.from_csv([h100, b200], days=3)
    (first, _), (second, _) = feeds.rows(engine, 7)
    engine.submit([msgspec.structs.replace(first, ts_ns=10**18)])  # H100's point of step 7 is in force
    assert [c.market for c, _ in feeds.rows(engine, 7, resumed=True)] == ["B200-PERP"]
    assert [c.market for c, _ in feeds.rows(engine, 7)] == ["H100-PERP", "B200-PERP"]  # not resumed: both
