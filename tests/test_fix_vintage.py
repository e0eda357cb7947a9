"""The last usable fix's vintage and date (issue 15: "the latest fix with its vintage"): carried by
set_index, stored per market in the state arrays (mkt[m, M_FIX_VINTAGE_DATE], integer codes), covered
by the state hash, kept by snapshots and journal replay, and shown by the engine's market view."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from perp import layout as L
from perp.codes import ResultCode
from perp.commands import CommandFormatError, SetIndex
from perp.engine import Engine
from perp.events import IndexSet, Rejected
from perp.markets import load_markets
from perp.sequencer import JournaledEngine, recover
from tests.helpers import SECOND, T0

M = "H100-PERP"
MARKETS = load_markets()


def index(ts: int, vintage: str | None, day: str | None, fix: str = "2.1432") -> SetIndex:
    return SetIndex(ts_ns=ts, market=M, price="2.1432", fix_price=fix, fix_vintage=vintage, fix_date=day)


def test_set_index_stores_the_fix_vintage_and_date_and_the_view_and_event_show_them():
    e = Engine(MARKETS)
    (ev, *_) = e.submit([index(T0, "final", "2026-11-30")])
    assert isinstance(ev, IndexSet) and (ev.fix_vintage, ev.fix_date) == ("final", "2026-11-30")
    mv = e.market_view(0)
    assert (mv.fix_ticks, mv.fix_vintage, mv.fix_date) == (21432, "final", dt.date(2026, 11, 30))
    packed = int(e.state.mkt[0, L.M_FIX_VINTAGE_DATE])
    assert packed == (dt.date(2026, 11, 30).toordinal() << L.FIX_DAY_SHIFT) | L.FIX_VINTAGE_FINAL
    e.submit([index(T0 + SECOND, "revised", "2026-11-30")])
    assert e.market_view(0).fix_vintage == "revised"
    e.submit([SetIndex(ts_ns=T0 + 2 * SECOND, market=M, price="2.1432")])  # an older feed: not given
    mv = e.market_view(0)
    assert (mv.fix_vintage, mv.fix_date) == (None, None) and int(e.state.mkt[0, L.M_FIX_VINTAGE_DATE]) == 0


def test_the_state_hash_covers_the_vintage_and_the_date():
    hashes = set()
    for vintage, day in [("provisional", "2026-11-30"), ("final", "2026-11-30"), ("final", "2026-11-29"),
                         (None, None)]:
        e = Engine(MARKETS)
        e.submit([index(T0, vintage, day)])
        hashes.add(e.state_hash())
    assert len(hashes) == 4


def test_snapshot_and_journal_replay_keep_the_vintage(tmp_path):
    path = tmp_path / "j.bin"
    live = JournaledEngine.open(path, markets=MARKETS, fsync="never")
    live.submit_rows(live.engine.encode([index(T0, "provisional", "2026-11-30")]))
    live.snapshot(tmp_path / "s.snap")
    live.submit_rows(live.engine.encode([index(T0 + SECOND, "final", "2026-11-30")]))
    live.close()
    from_snapshot = Engine.from_snapshot(tmp_path / "s.snap")
    assert from_snapshot.market_view(0).fix_vintage == "provisional"
    for restored in (recover(path, markets=MARKETS), recover(path, snapshot=tmp_path / "s.snap")):
        assert restored.state_hash() == live.engine.state_hash()
        mv = restored.market_view(0)
        assert (mv.fix_vintage, mv.fix_date) == ("final", dt.date(2026, 11, 30))


def test_a_bad_vintage_or_date_is_refused_and_changes_nothing():
    e = Engine(MARKETS)
    e.submit([index(T0, "final", "2026-11-30")])
    with pytest.raises(CommandFormatError, match="fix_date"):
        e.encode([index(T0 + 1, "final", "2026-13-01")])
    with pytest.raises(CommandFormatError, match="fix_date"):
        e.encode([index(T0 + 1, "final", "20261130")])
    before = e.state_hash(include_clock=False), e.last_ts_ns
    good = e.encode([index(T0 + 1, "final", "2026-12-01")])[0]
    for col, value in [(L.C_SIDE, 4), (L.C_SIDE, -1), (L.C_TIF, -1), (L.C_TIF, L.MAX_FIX_DAY + 1)]:
        bad = good.copy()
        bad[col] = value
        (ev,) = e.decode(e.submit_rows(bad[None, :]))
        assert isinstance(ev, Rejected) and ev.code == ResultCode.INVALID_STATUS, (col, value)
        assert (e.state_hash(include_clock=False), e.last_ts_ns) == before
    assert e.market_view(0).fix_date == dt.date(2026, 11, 30)
    np.testing.assert_array_equal(good[[L.C_SIDE, L.C_TIF]], [L.FIX_VINTAGE_FINAL, dt.date(2026, 12, 1).toordinal()])
