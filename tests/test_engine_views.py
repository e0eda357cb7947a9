"""The public read-only views the gateway uses instead of the engine's state arrays."""

from __future__ import annotations

import numpy as np

from perp.bench import make_stream
from perp.engine import Engine
from perp.markets import load_markets, tier_schedule

MARKETS = load_markets()


def test_tier_rows_are_the_markets_tiers_with_the_last_one_unbounded():
    eng = Engine(MARKETS)
    spec = MARKETS.market[0]
    rows = eng.tier_rows(0)
    schedule = tier_schedule(spec)
    assert len(rows) == len(schedule.tiers) >= 1  # not the packed table's padding
    assert rows[-1].bound_micro is None and all(r.bound_micro is not None for r in rows[:-1])
    assert [r.imr_ppm for r in rows] == list(schedule.imr_ppm)
    assert [r.mmr_ppm for r in rows] == list(schedule.mmr_ppm)
    assert [r.mm_deduction_micro for r in rows] == list(schedule.mm_deduction_micro)
    assert [r.bound_micro for r in rows[:-1]] == list(schedule.bound_micro[:-1])


def test_market_view_and_clock_follow_the_commands():
    eng = Engine(MARKETS)
    assert eng.last_ts_ns == 0 and eng.market_view(0).open_interest_lots == 0
    stream = make_stream(2_000, seed=3, index_ticks=21432, accounts=30)
    eng.submit_rows(stream)
    assert eng.last_ts_ns == int(stream[-1, 1])
    mv = eng.market_view(0)
    assert mv.open_interest_lots > 0 and mv.next_funding_ts_ns > eng.last_ts_ns
    assert eng.funding_due(mv.next_funding_ts_ns - 1) == [] and eng.funding_due(mv.next_funding_ts_ns) == [0]


def test_funding_positions_are_copies_of_every_account_or_the_ones_asked():
    eng = Engine(MARKETS)
    eng.submit_rows(make_stream(2_000, seed=4, index_ticks=21432, accounts=30))
    every = eng.funding_positions()
    assert every.position_lots.shape == every.funding_micro.shape == (every.accounts.size, len(MARKETS.market))
    assert every.position_lots[:, 0].sum() == 0  # longs = shorts
    held = every.accounts[every.position_lots[:, 0] != 0]
    some = eng.funding_positions(np.append(held[:3], [10**9]))  # an id beyond the tables is dropped
    assert some.accounts.tolist() == held[:3].tolist()
    some.position_lots[:] = 0
    assert eng.position_lots(int(held[0]), 0) != 0  # a copy: the engine is untouched
