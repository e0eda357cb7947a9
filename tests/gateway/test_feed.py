"""The index feed of `perp serve` sends the oracle's own set_index commands: validity and every gate."""

from __future__ import annotations

from decimal import Decimal

import msgspec

from gateway.feed import IndexFeed, IndexFeeds
from perp.commands import SetIndex, SetOracleParams
from perp.engine import Engine
from perp.markets import load_markets
from tests.helpers import T0

HOUR = 3_600_000_000_000
CAP_PPM = 10_000  # the oracle's default hourly move cap: 1%
WHO = {"operator": "ops", "reason": "feed test"}


def ticks(cmd: SetIndex) -> int:
    return int(Decimal(cmd.price) / Decimal(load_markets().market[0].tick_size_usd))


def assert_capped(prices: list[int]) -> None:
    """Each anchor within the oracle's cap of the one before it: max(1, prev x 1% ) whole ticks."""
    for k, (a, b) in enumerate(zip(prices, prices[1:])):
        assert abs(b - a) <= max(1, a * CAP_PPM // 1_000_000), f"step {k}: {a} -> {b} ticks"


def test_the_feed_carries_the_oracles_validity_and_gates_for_each_step():
    spec = load_markets().market[0]
    feed = IndexFeed.from_csv(spec, days=3)
    cmds = [feed.point(k) for k in range(len(feed.path))]
    assert all(isinstance(c, SetIndex) and c.ts_ns == 0 and c.market == spec.symbol for c in cmds)
    assert {c.validity for c in cmds} <= {"fresh", "revised", "aging", "suppressed", "diverged", "too_volatile",
                                         "non_positive", "stale"}
    assert all(1 <= c.leverage_scale_ppm <= 1_000_000 for c in cmds)


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


def test_at_the_end_of_the_shipped_history_the_feed_holds_the_last_anchor_and_ages_into_stale_instead_of_wrapping():
    """Step k+1 is never the start of the path again (a +46% jump on the H100 path, every 5x short gone): the
    oracle steps on with no new fix -- the anchor holds, the fix ages, and past 48 h the anchor is stale and
    freezes funding, as for a real feed that stopped."""
    feed = IndexFeed.from_csv(load_markets().market[0])
    n = len(feed.path)
    tail = [feed.point(k) for k in range(n - 3, n + 72)]
    assert_capped([ticks(c) for c in tail])
    assert tail[3].fix_date == tail[2].fix_date and abs(ticks(tail[3]) - ticks(tail[2])) <= 1  # held
    assert ticks(tail[-1]) == ticks(tail[-1 - 24]) == int(Decimal(tail[-1].fix_price) * 10_000)  # on the last fix
    assert tail[2].validity == "fresh" and tail[-1].validity == "stale" and tail[-1].funding_frozen
    assert feed.point(n + 5) == tail[3 + 5] and feed.point(2 * n) == tail[-1]  # held ever after, stale


def test_an_operator_half_life_change_steps_on_from_the_last_anchor_sent_as_the_oracle_reconfigures():
    """The next step after a half-life change is the oracle's own anchor reconfigured at the last point sent
    (HourlyAnchor.reconfigure: from the next hour, past anchors never rewritten), within the cap -- not the
    path recomputed as if the new half-life had always applied (+1.57% against a 236-tick cap here)."""
    from oracle.anchor import AnchorConfig, HourlyAnchor
    from oracle.readers import default_csv_path, read_csv_fixes

    spec = load_markets().market[0]
    e = Engine()
    feed = IndexFeed.from_csv(spec)
    k = 3290  # an hour after a fix moved
    sent = [feed.point(j) for j in range(k - 3, k)]
    e.submit([SetOracleParams(ts_ns=T0, market=spec.symbol, half_life_s=3600, **WHO)])
    assert feed.follow(e)
    after = [feed.point(j) for j in range(k, k + 6)]
    assert_capped([ticks(c) for c in sent + after])
    # the reference: the oracle's anchor over the same fixes, reconfigured after hour k - 1
    fixes = read_csv_fixes(default_csv_path(), spec.series).records
    upto, until = feed.path[k - 1][0], feed.path[k + 5][0]
    anchor = HourlyAnchor(AnchorConfig(series_id=spec.series, tick_size_usd=spec.tick_size_usd, half_life_s=21_600))
    anchor.replay([f for f in fixes if f.published_ts_ns <= upto], upto)
    anchor.reconfigure(half_life_s=3600)
    points, _ = anchor.replay([f for f in fixes if upto < f.published_ts_ns <= until], until)
    want = [msgspec.convert(anchor.set_index_command(p, spec.symbol), SetIndex) for p in points]
    assert [msgspec.structs.replace(c, ts_ns=0) for c in want] == after
    assert sent == [msgspec.structs.replace(c, ts_ns=0) for _, _, c in feed.path[k - 3:k]]  # sent: unchanged


def _run(engine: Engine, feeds: IndexFeeds, steps, resumed: bool = False) -> list[int]:
    """Journal each step's set_index into the engine, an hour after its clock; the index after each step."""
    from perp.events import Rejected

    out = []
    for step in steps:
        for cmd, _ in feeds.rows(engine, step, resumed):
            events = engine.submit([msgspec.structs.replace(cmd, ts_ns=(engine.last_ts_ns or T0) + HOUR)])
            assert not any(isinstance(x, Rejected) for x in events), events
        resumed = False
        out.append(engine.index_ticks(0))
    return out


def test_a_restarted_feed_continues_from_the_anchor_the_engine_holds_within_the_cap():
    """After a recovery the feed places itself on the journal's last set_index (the engine's) and steps on
    from there -- also when the restart comes after the end of the history, where a new walk would start
    again from the path's wall-clock position -- and after an operator's change, where the history is no
    longer the one it walked, the index is walked from the one held within the cap."""
    spec = load_markets().market[0]
    n = len(IndexFeed.from_csv(spec).path)
    e = Engine()
    before = _run(e, IndexFeeds([IndexFeed.from_csv(spec)]), range(n - 3, n + 2))
    held = e.index_ticks(0)
    after = _run(e, IndexFeeds([IndexFeed.from_csv(spec)]), range(n + 9, n + 14), resumed=True)  # a new process
    assert after[0] == held  # the step it restarted in: nothing new (the engine holds it)
    assert_capped(before + after)
    # an operator cuts the half-life to 1 h an hour after a fix moved, then the venue restarts: its new feed's
    # history (as if 1 h had always applied) does not hold the anchor sent, and is 1.57% away from it
    k = 3290
    e2 = Engine()
    first = _run(e2, IndexFeeds([IndexFeed.from_csv(spec)]), range(k - 3, k))
    e2.submit([SetOracleParams(ts_ns=e2.last_ts_ns + 1, market=spec.symbol, half_life_s=3600, **WHO)])
    again = _run(e2, IndexFeeds([IndexFeed.from_csv(spec)]), range(k, k + 30), resumed=True)
    assert_capped(first + again)
