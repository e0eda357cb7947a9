"""Book depth, impact prices and the mark's push bound as functions (sims.bookview), against the
engine's own impact rule and the measured push of the library's hold scenario."""

from __future__ import annotations

import pytest

from perp import layout as L
from perp.book import impact_price_ut
from perp.commands import Deposit, Place
from perp.engine import Engine
from perp.markets import MarketsConfig, ticks_to_price
from sims import bookview as B
from sims.feed import OracleFeed, fix_records, start_ns
from sims.scenario import market_spec, parse_scenario

from .test_sims import SMALL


@pytest.fixture
def book_of_two_levels_each_side():
    """An index of I ticks; bids of 1,000 lots at I-10 and 3,000 at I-100; asks of 500 at I+10 and
    2,000 at I+300 (account 20 bids, 21 asks)."""
    sc = parse_scenario(SMALL)
    spec = market_spec(sc)
    eng = Engine(MarketsConfig(market=[spec]))
    feed = OracleFeed(sc, spec.symbol, spec.tick_size_usd, fix_records(sc))
    t0 = start_ns(sc)
    eng.submit([feed.set_index(feed.point_at(t0))])
    index = eng.index_ticks(0)
    px = lambda t: ticks_to_price(spec, t)  # noqa: E731
    eng.submit([Deposit(ts_ns=t0, account=20, amount_micro=10**12), Deposit(ts_ns=t0, account=21, amount_micro=10**12)]
               + [Place(ts_ns=t0, account=20, market=spec.symbol, side="buy", price=px(index - d), size_lots=q)
                  for d, q in ((10, 1_000), (100, 3_000))]
               + [Place(ts_ns=t0, account=21, market=spec.symbol, side="sell", price=px(index + d), size_lots=q)
                  for d, q in ((10, 500), (300, 2_000))])
    return eng, index


def test_levels_and_depth_within_a_distance_of_the_mid(book_of_two_levels_each_side):
    eng, i = book_of_two_levels_each_side
    bids, asks = B.levels(eng, 0)
    assert bids.tolist() == [[i - 10, 1_000], [i - 100, 3_000]] and asks.tolist() == [[i + 10, 500], [i + 300, 2_000]]
    rows = eng.open_orders()  # the live orders, summed per price: the same levels
    for side, got in ((L.BUY, bids), (L.SELL, asks)):
        mine = rows[rows[:, 1] == side]
        assert sorted(got.tolist()) == sorted([p, int(mine[mine[:, 2] == p][:, 6].sum())] for p in set(mine[:, 2].tolist()))
    mptl = 100  # micro-USD per tick-lot on H100-PERP
    near = B.depth(eng, 0, within_bps=10)  # mid = I; 10 bp of ~24,500 ticks = ~24 ticks: the inner levels
    assert near.mid_ticks == i
    assert near.bid == (1_000, 1_000 * (i - 10) * mptl) and near.ask == (500, 500 * (i + 10) * mptl)
    wide = B.depth(eng, 0, within_bps=200)  # ~490 ticks: everything
    assert wide.bid.lots == 4_000 and wide.ask == (2_500, (500 * (i + 10) + 2_000 * (i + 300)) * mptl)


def test_impact_price_is_the_engines_rule_and_fills_any_notional(book_of_two_levels_each_side):
    eng, i = book_of_two_levels_each_side
    for side, engine_side in (("buy", L.BUY), ("sell", L.SELL)):  # the spec's $1,000: the engine's own figure
        assert B.impact(eng, 0, side).avg_price_ut == impact_price_ut(eng.state, 0, engine_side)
    # $5,000 against the asks (they hold ~$6.2k): 500 lots at I+10 (~$1.2k), the rest at I+300
    need = 5_000_000_000 // 100  # tick-lots
    rest = need - 500 * (i + 10)
    lots_far = -(-rest // (i + 300))
    fill = B.impact(eng, 0, "sell", 5_000_000_000)
    assert fill.lots == 500 + lots_far
    assert fill.avg_price_ut == (500 * (i + 10) + lots_far * (i + 300)) * 1_000_000 // fill.lots
    assert B.impact(eng, 0, "sell", 10**14) is None  # more than the side holds
    # the mark's next input: impact mid - index, the engine's clamp
    bid, ask = B.impact(eng, 0, "buy"), B.impact(eng, 0, "sell")
    assert B.basis_sample_ut(eng, 0) == (bid.avg_price_ut + ask.avg_price_ut) // 2 - i * 1_000_000


def test_the_push_bound_function_matches_the_documented_figures():
    spec = market_spec(parse_scenario(SMALL))
    index = 21_432  # $2.1432 (docs/mark_price.md)
    band = index * 300 / 10_000
    assert B.push_bound_ticks(spec, index, 0) == pytest.approx(0.5, abs=0.01)  # nothing held: the rounding
    assert B.push_bound_ticks(spec, index, 60) == pytest.approx(43.4, abs=0.5)  # 60 s: 0.20%, 43 ticks
    assert B.push_bound_ticks(spec, index, 600) == pytest.approx(band / 2 + 0.5, abs=0.5)  # one half-life
    assert B.push_bound_ticks(spec, index, 10**7) == pytest.approx(band + 0.5, abs=0.01)  # never beyond the band
    # a book whose samples stay within 20 ticks moves the mark at most 20 ticks, however long it is held
    assert B.push_bound_ticks(spec, index, 10**7, sample_cap_ticks=20) == pytest.approx(20.5, abs=0.01)
    # a basis already there decays: after one half-life from 100 ticks with a book at 0, at most ~50
    assert B.push_bound_ticks(spec, index, 600, sample_cap_ticks=0, basis0_ticks=100) == pytest.approx(50.5, abs=0.5)
