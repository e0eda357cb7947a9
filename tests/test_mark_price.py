"""Mark price = index + EMA(impact mid - index), sampled each second of command time, bounded.

Default H100-PERP: index 2.1432 (21,432 ticks), impact notional $1,000 (about 467 lots), half-life
600 s, mark band 3% (642 ticks)."""

from __future__ import annotations

import math

import pytest

from perp import layout as L
from perp.commands import CancelAll, Deposit, Place, SetIndex
from perp.engine import Engine
from perp.events import CancelAllDone
from perp.markets import mark_alpha_ppm
from tests.helpers import SECOND, T0

M = "H100-PERP"
INDEX = 21432
HOUR = 3600 * SECOND


def quote(e: Engine, ts: int, account: int, bid: str, ask: str, lots: int = 1000) -> None:
    e.submit([Place(ts_ns=ts, account=account, market=M, side="buy", price=bid, size_lots=lots),
              Place(ts_ns=ts, account=account, market=M, side="sell", price=ask, size_lots=lots)])


def tick_clock(e: Engine, ts: int) -> None:
    """Any command moves the clock; an empty cancel-all changes nothing else. The clock is bounded
    (issue 9, rule 2: at most max_clock_step_s = 1 h past the next funding hour), so a long wait
    walks it an hour at a time; the mark samples follow command time, not command count, so the
    walk takes exactly the samples one jump would have taken."""
    last = int(e.state.g[L.G_LAST_TS])
    while ts - last > HOUR:
        last += HOUR
        assert isinstance(e.submit([CancelAll(ts_ns=last, account=999)])[-1], CancelAllDone)
    assert isinstance(e.submit([CancelAll(ts_ns=ts, account=999)])[-1], CancelAllDone)


@pytest.fixture()
def eng() -> Engine:
    e = Engine()
    e.submit([SetIndex(ts_ns=T0, market=M, price="2.1432")])
    e.submit([Deposit(ts_ns=T0, account=a, amount_micro=10**12) for a in (101, 102, 166)])
    return e


def test_mark_is_the_index_while_the_book_has_never_been_two_sided(eng):
    assert eng.mark_ticks(0) == INDEX
    eng.submit([Place(ts_ns=T0 + 1, account=101, market=M, side="buy", price="2.2000", size_lots=1000)])
    tick_clock(eng, T0 + 900 * SECOND)
    assert eng.mark_ticks(0) == INDEX  # every sample of a one-sided book is 0, and so is the EMA


def _decayed(ema_ut: int, samples: int) -> int:
    """The kernel's integer EMA step toward a 0 input (truncated, at least one micro-tick)."""
    alpha = mark_alpha_ppm(1, 600)
    for _ in range(samples):
        if ema_ut == 0:
            break
        step = max(1, abs(ema_ut) * alpha // 1_000_000)
        ema_ut += -step if ema_ut > 0 else step
    return ema_ut


def test_an_emptied_side_never_snaps_the_mark_the_basis_decays_at_its_half_life(eng):
    # issue 9, rule 3: a one-sided book samples a basis of 0, so the EMA decays toward the index
    eng.submit([Place(ts_ns=T0 + 1, account=101, market=M, side="buy", price="2.1500", size_lots=1000),
                Place(ts_ns=T0 + 1, account=102, market=M, side="sell", price="2.1600", size_lots=1000)])
    t = T0 + 20_000 * SECOND
    tick_clock(eng, t)
    assert eng.mark_ticks(0) == INDEX + 118
    ema = int(eng.state.mkt[0, L.M_BASIS_EMA_UT])
    eng.submit([CancelAll(ts_ns=t + 1, account=102)])  # the ask side empties (no sample is due)
    assert eng.best_bid_ask(0)[1] is None
    assert eng.mark_ticks(0) == INDEX + 118  # no snap to the index
    tick_clock(eng, t + 1 + 600 * SECOND)  # one half-life: 600 one-second samples of 0
    expected = _decayed(ema, 600)
    assert int(eng.state.mkt[0, L.M_BASIS_EMA_UT]) == expected
    assert eng.mark_ticks(0) == INDEX + (expected + 500_000) // 1_000_000
    assert abs(eng.mark_ticks(0) - (INDEX + 59)) <= 1  # half the basis
    tick_clock(eng, t + 1 + 1200 * SECOND)
    assert abs(eng.mark_ticks(0) - (INDEX + 30)) <= 1  # a quarter
    tick_clock(eng, t + 30_000 * SECOND)
    assert eng.mark_ticks(0) == INDEX and int(eng.state.mkt[0, L.M_BASIS_EMA_UT]) == 0


def test_basis_converges_at_the_rate_its_half_life_implies(eng):
    quote(eng, T0 + 1, 101, "2.1500", "2.1600")  # impact mid 2.1550: +118 ticks over the index
    tick_clock(eng, T0 + 600 * SECOND)  # one half-life of samples
    assert abs(eng.mark_ticks(0) - (INDEX + 59)) <= 1
    tick_clock(eng, T0 + 1200 * SECOND)
    assert abs(eng.mark_ticks(0) - (INDEX + 88)) <= 1  # 118 x 3/4
    tick_clock(eng, T0 + 20_000 * SECOND)
    assert eng.mark_ticks(0) == INDEX + 118


def test_the_basis_term_is_bounded_to_the_mark_band(eng):
    quote(eng, T0 + 1, 101, "2.2400", "2.2450")  # +4.6% over the index
    tick_clock(eng, T0 + 50_000 * SECOND)
    assert eng.mark_ticks(0) == INDEX + INDEX * 300 // 10_000


def test_a_thin_quote_inside_the_spread_does_not_move_the_mark(eng):
    quote(eng, T0 + 1, 101, "2.1400", "2.1464")  # symmetric around the index: basis 0
    eng.submit([Place(ts_ns=T0 + 2, account=102, market=M, side="buy", price="2.1460", size_lots=1)])
    tick_clock(eng, T0 + 3_000 * SECOND)
    # the impact bid needs ~467 lots: one lot at 2.1460 shifts it by well under a tick
    assert abs(eng.mark_ticks(0) - INDEX) <= 1


@pytest.mark.parametrize("hold_s", [60, 600, 1800])
def test_a_pushed_book_moves_the_mark_no_more_than_the_proven_bound(eng, hold_s):
    # an attacker lifts both sides 1000 ticks (4.7%) with more than the impact notional and holds it
    quote(eng, T0 + 1, 166, "2.2432", "2.2442", lots=600)
    tick_clock(eng, T0 + 1 + hold_s * SECOND)
    # docs/mark_price.md: after n one-second samples the basis is at most
    #   band x (1 - (1 - alpha)^n) + 1/2 tick    (alpha = the integer per-sample weight, 1155 ppm)
    alpha = mark_alpha_ppm(1, 600) / 1e6
    band_ticks = INDEX * 300 / 10_000  # samples are bounded to the exact band (642.96 ticks)
    bound = band_ticks * (1 - (1 - alpha) ** hold_s) + 0.5
    moved = eng.mark_ticks(0) - INDEX
    assert 0 < moved <= bound
    assert bound < band_ticks * (1 - math.pow(2, -hold_s / 600)) + 1.5  # ~ the half-life formula
    # in words: holding a 4.7% push for 60 s moves the mark at most 0.2%; for 10 minutes, 1.5%


def test_samples_follow_command_time_not_command_count(eng):
    other = Engine()
    other.submit([SetIndex(ts_ns=T0, market=M, price="2.1432"), Deposit(ts_ns=T0, account=101, amount_micro=10**12)])
    quote(eng, T0 + 1, 101, "2.1500", "2.1600")
    quote(other, T0 + 1, 101, "2.1500", "2.1600")
    for k in range(1, 301):  # one engine sees a command every second, the other one at the end
        tick_clock(eng, T0 + k * SECOND)
    tick_clock(other, T0 + 300 * SECOND)
    assert eng.mark_ticks(0) == other.mark_ticks(0) > INDEX
