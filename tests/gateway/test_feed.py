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
