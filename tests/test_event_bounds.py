"""The kernel writes event rows without bounds checks (numba, no allocator), so the bound it checks
before each command is what keeps it inside its buffer: `process_batch` stops before a command whose
bound does not fit. These tests prove the bounds are upper bounds of what a command really emits --
the quick one and the exact one a place falls back to -- including the command's own clock advance
(its funding hours, a mark that moves before a market order takes its limit from it)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perp import layout as L
from perp.engine import Engine
from perp.kernel import _event_bound, _exact_place_bound, new_event_buffer, process_batch
from perp.markets import parse_markets
from tests.helpers import SECOND, SMALL_MARKETS_TOML, T0, row, rows, small_engine
from tests.test_gate_invariants import gate_streams

MAKERS = list(range(16, 40))
TAKER = 99


def _emitted_within_bounds(e: Engine, c: np.ndarray) -> tuple[int, int, int]:
    """(rows the command wrote, its quick bound, its exact place bound or -1), run into a buffer with
    room to spare."""
    quick = int(_event_bound(e.state, c))
    exact = -1
    m = int(c[L.C_MARKET])
    if int(c[L.C_KIND]) == L.CK_PLACE and 0 <= m < e.state.mkt.shape[0] and e.state.mkt[m, L.M_MARK] > 0:
        exact = int(_exact_place_bound(e.state, c))
    big = new_event_buffer(quick + 4096)
    k, n = process_batch(e.state, c[None, :], big, 0, True)
    assert k == 1
    return int(n), quick, exact


def test_a_market_order_is_bounded_at_the_mark_after_its_own_clock_advance():
    """30 s after the book was built, the mark walks from 200 towards the impact mid in the command's
    clock advance; the market order's limit comes from the new mark and reaches levels a bound taken
    at the old mark (27 rows) did not count: it wrote 36."""
    e = small_engine()
    cmds = [row(L.CK_SET_INDEX, T0, market=0, price=200)]
    cmds += [row(L.CK_DEPOSIT, T0, account=a, size=10**10) for a in MAKERS + [TAKER]]
    cmds.append(row(L.CK_PLACE, T0 + 1, account=16, market=0, side=L.BUY, price=205, size=5, tif=L.POST_ONLY))
    for i, p in enumerate(range(206, 221)):
        cmds.append(row(L.CK_PLACE, T0 + 2 + i, account=MAKERS[1 + i], market=0, side=L.SELL, price=p, size=1,
                        tif=L.POST_ONLY))
    e.submit_rows(rows(*cmds))
    mark_before = int(e.state.mkt[0, L.M_MARK])
    c = row(L.CK_PLACE, T0 + 30 * SECOND, account=TAKER, market=0, side=L.BUY, otype=L.MARKET, tif=L.IOC, size=50)
    n, quick, exact = _emitted_within_bounds(e, c)
    assert int(e.state.mkt[0, L.M_MARK]) > mark_before
    assert n <= exact <= quick


def test_a_place_is_bounded_with_the_funding_hours_its_clock_advance_pays():
    """A market paying funding every 60 s, one command an hour later: 60 funding events come before
    the place; the exact bound used to leave them out (21 rows for 71 written)."""
    toml = SMALL_MARKETS_TOML.replace('symbol = "TEST-PERP"', 'symbol = "TEST-PERP"\nfunding_interval_s = 60', 1)
    e = Engine(parse_markets(toml, "tests"))
    cmds = [row(L.CK_SET_INDEX, T0, market=0, price=200)]
    cmds += [row(L.CK_DEPOSIT, T0, account=a, size=10**10) for a in MAKERS + [TAKER]]
    for i, p in enumerate((201, 202, 203)):
        cmds.append(row(L.CK_PLACE, T0 + 1 + i, account=MAKERS[i], market=0, side=L.SELL, price=p, size=1,
                        tif=L.POST_ONLY))
    e.submit_rows(rows(*cmds))
    c = row(L.CK_PLACE, T0 + 3600 * SECOND, account=TAKER, market=0, side=L.BUY, price=203, size=3, tif=L.IOC)
    n, quick, exact = _emitted_within_bounds(e, c)
    assert n > 60
    assert n <= exact <= quick


def test_a_batch_stops_before_a_command_whose_bound_does_not_fit_and_never_writes_past_its_buffer():
    e = small_engine()
    cmds = [row(L.CK_SET_INDEX, T0, market=0, price=200)]
    cmds += [row(L.CK_DEPOSIT, T0, account=a, size=10**10) for a in MAKERS + [TAKER]]
    for i, p in enumerate(range(201, 221)):
        cmds.append(row(L.CK_PLACE, T0 + 1 + i, account=MAKERS[i], market=0, side=L.SELL, price=p, size=1,
                        tif=L.POST_ONLY))
    e.submit_rows(rows(*cmds))
    big = new_event_buffer(400)
    cap = 30
    c = row(L.CK_PLACE, T0 + 30 * SECOND, account=TAKER, market=0, side=L.BUY, otype=L.MARKET, tif=L.IOC, size=50)
    k, n = process_batch(e.state, c[None, :], big[:cap], 0, True)
    assert (k, n) == (0, 0) and int(e.state.g[L.G_NEED_EVENTS]) > cap
    assert not big[cap:].any()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(gate_streams(), st.data())
def test_every_command_emits_at_most_its_bounds(cmds, data):
    toml = SMALL_MARKETS_TOML
    if data.draw(st.booleans()):
        toml = toml.replace('symbol = "TEST-PERP"', 'symbol = "TEST-PERP"\nfunding_interval_s = 60', 1)
    e = Engine(parse_markets(toml, "tests"))
    for c in cmds:
        n, quick, exact = _emitted_within_bounds(e, c)
        assert n <= quick, (int(c[L.C_KIND]), n, quick)
        if exact >= 0:
            assert n <= exact, (n, exact)
