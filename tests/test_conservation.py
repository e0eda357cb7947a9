"""Money is conserved exactly after every kind of command (hypothesis): deposits, withdrawals,
orders and fills, cancels, leverage changes, index moves and hourly funding.

    sum(collateral) - sum(cost basis) + insurance fund + fee ledger == deposits - withdrawals

and positions net to zero per market, open interest equals the lots held long, and each account's
resting lots match its orders in the book."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perp import layout as L
from perp.codes import ResultCode
from perp.gate import RESERVED_ACCOUNTS
from tests.helpers import SECOND, T0, assert_money_conserved, row, small_engine, top_up_row

HOUR = 3600 * SECOND
TRADERS = (16, 17, 18, 19, 20)  # ids below 16 are venue accounts (issue 9, rule 1); 0 is the fund
RICH = 21
IDLE = 999  # never trades: its empty cancel-all only moves the clock


def walk(out: list, prev_ts: int, ts: int) -> None:
    """The clock is bounded (issue 9, rule 2): an empty cancel-all at every funding hour between
    two commands keeps every command within max_clock_step_s of the next funding hour (as the
    sequencer's timers do), so a long step still settles each hour it crosses."""
    b = (prev_ts // HOUR + 1) * HOUR
    while b < ts:
        out.append(row(L.CK_CANCEL_ALL, b, account=IDLE, market=-1))
        b += HOUR


@st.composite
def money_streams(draw):
    ts = T0
    out = [row(L.CK_SET_INDEX, ts, market=0, price=200), row(L.CK_SET_INDEX, ts, market=1, price=160)]
    out += [row(L.CK_DEPOSIT, ts, account=a, size=draw(st.integers(10**7, 10**9))) for a in TRADERS]
    for _ in range(draw(st.integers(5, 60))):
        step = draw(st.sampled_from([0, 1, SECOND, 30 * SECOND, 20 * 60 * SECOND, HOUR + 7, 3 * HOUR]))
        kind = draw(st.sampled_from(["dep", "wd", "place", "place", "place", "place", "mkt", "cancel", "lev",
                                     "index", "frozen", "gap", "liq", "liq", "floor", "down", "ahead"]))
        if kind == "ahead":  # stamped past the clock's bound: rejected (1028), the clock stays
            out.append(row(L.CK_DEPOSIT, ts + 3 * HOUR, account=draw(st.sampled_from(TRADERS)), size=1))
            continue
        if kind == "down":  # the venue was down: the operator crosses the gap (missed hours pay nothing)
            ts += step + 3 * HOUR
            out.append(row(L.CK_CLOCK_GAP, ts, flags=L.GAP_NO_FUNDING))
            continue
        walk(out, ts, ts + step)
        ts += step
        a = draw(st.sampled_from(TRADERS))
        m = draw(st.sampled_from([0, 0, 1]))
        base = 200 if m == 0 else 160
        if kind == "dep":
            out.append(row(L.CK_DEPOSIT, ts, account=a, size=draw(st.integers(1, 5 * 10**8))))
        elif kind == "wd":
            out.append(row(L.CK_WITHDRAW, ts, account=a, size=draw(st.integers(1, 3 * 10**8))))
        elif kind in ("place", "mkt"):
            out.append(row(L.CK_PLACE, ts, account=a, market=m, side=draw(st.integers(0, 1)),
                           otype=L.MARKET if kind == "mkt" else L.LIMIT,
                           tif=L.IOC if kind == "mkt" else draw(st.sampled_from([L.GTC, L.GTC, L.IOC])),
                           price=base + draw(st.integers(-8, 8)),
                           size=draw(st.integers(2, 40)),
                           flags=draw(st.sampled_from([0, 0, 0, L.FLAG_REDUCE_ONLY]))))
        elif kind == "cancel":
            out.append(row(L.CK_CANCEL_ALL, ts, account=a, market=-1))
        elif kind == "lev":
            out.append(row(L.CK_SET_LEVERAGE, ts, account=a, market=m, size=draw(st.integers(1, 12))))
        elif kind == "gap":  # the daily fix jumps: up to +-40% in one step
            out.append(row(L.CK_SET_INDEX, ts, market=m, price=base + draw(st.integers(-64, 64))))
        elif kind == "liq":
            out.append(row(L.CK_LIQUIDATE, ts))
        elif kind == "floor":
            out.append(row(L.CK_SET_INSURANCE_FLOOR, ts, size=draw(st.sampled_from([0, 10**6, 10**9, 10**12]))))
        else:
            out.append(row(L.CK_SET_INDEX, ts, market=m, price=base + draw(st.integers(-10, 10)),
                           flags=L.INDEX_FUNDING_FROZEN if kind == "frozen" else 0))
    return np.stack(out)


@st.composite
def liquidation_streams(draw):
    """Levered accounts 1-5 against a rich account 6, then index gaps, sweeps, fund floors and more
    trading: the waterfall's every step under random paths."""
    ts = T0
    out = [row(L.CK_SET_INDEX, ts, market=0, price=200), row(L.CK_SET_INDEX, ts, market=1, price=160),
           row(L.CK_DEPOSIT, ts, account=RICH, size=10**12)]
    fund = draw(st.sampled_from([0, 10**6, 10**7, 10**9]))
    if fund:  # the fund is topped up only by the operator (issue 9, rule 1)
        out.append(top_up_row(ts, 0, fund))
    for a in TRADERS:
        out.append(row(L.CK_DEPOSIT, ts, account=a, size=draw(st.integers(3 * 10**6, 3 * 10**7))))
        m = draw(st.sampled_from([0, 0, 1]))
        base = 200 if m == 0 else 160
        side = draw(st.integers(0, 1))
        lots = draw(st.integers(2, 40))
        out.append(row(L.CK_PLACE, ts, account=RICH, market=m, side=1 - side, price=base, size=lots))
        out.append(row(L.CK_PLACE, ts, account=a, market=m, side=side, price=base, size=lots, tif=L.IOC))
    for _ in range(draw(st.integers(3, 25))):
        step = draw(st.sampled_from([1, SECOND, 31 * SECOND, HOUR]))
        walk(out, ts, ts + step)
        ts += step
        kind = draw(st.sampled_from(["gap", "gap", "liq", "liq", "liq", "floor", "place", "dep"]))
        m = draw(st.sampled_from([0, 0, 1]))
        base = 200 if m == 0 else 160
        if kind == "gap":
            out.append(row(L.CK_SET_INDEX, ts, market=m, price=base + draw(st.integers(-64, 64))))
        elif kind == "liq":
            out.append(row(L.CK_LIQUIDATE, ts))
        elif kind == "floor":
            out.append(row(L.CK_SET_INSURANCE_FLOOR, ts, size=draw(st.sampled_from([0, 10**6, 10**12]))))
        elif kind == "dep":
            a = draw(st.sampled_from((0,) + TRADERS))
            amount = draw(st.integers(1, 10**7))
            out.append(top_up_row(ts, 0, amount) if a == 0 else row(L.CK_DEPOSIT, ts, account=a, size=amount))
        else:
            out.append(row(L.CK_PLACE, ts, account=draw(st.sampled_from(TRADERS + (RICH,))), market=m,
                           side=draw(st.integers(0, 1)),
                           price=base + draw(st.integers(-20, 20)), size=draw(st.integers(1, 30)),
                           tif=draw(st.sampled_from([L.GTC, L.IOC]))))
    return np.stack(out)


def check_ledger(eng) -> None:
    s = eng.state
    assert_money_conserved(eng)
    assert eng.ledger()["fee_ledger_micro"] >= 0
    for m in range(s.mkt.shape[0]):
        pos = s.position_lots[:, m]
        assert int(pos.sum()) == 0
        assert int(np.maximum(pos, 0).sum()) == int(s.mkt[m, L.M_OPEN_INTEREST])
        flat = pos == 0
        assert not s.cost_basis_micro[flat, m].any()  # a flat position carries no cost basis
    resting = np.zeros((s.accounts.shape[0], s.mkt.shape[0], 2), np.int64)
    for m_, side, _p, _oid, acct, _clid, rem, flags in eng.open_orders().tolist():
        assert acct >= RESERVED_ACCOUNTS  # no venue account ever has an order (issue 9)
        if not flags & L.FLAG_REDUCE_ONLY:  # the lots that can open exposure (reduce-only ones cannot)
            resting[acct, m_, side] += rem
    np.testing.assert_array_equal(resting[:, :, 0], s.acct_mkt[:, :, L.AM_OPEN_BUY_LOTS])
    np.testing.assert_array_equal(resting[:, :, 1], s.acct_mkt[:, :, L.AM_OPEN_SELL_LOTS])


def check_after_sweep(eng, ev) -> None:
    """No trader ends a sweep flat with negative equity unless the fund paid it (a bad-debt step);
    every account the sweep took is done; nobody without a position was touched by ADL."""
    s = eng.state
    hwm = int(s.g[L.G_ACCOUNT_HWM])
    liq = ev[ev[:, L.E_KIND] == L.EV_LIQUIDATION]
    started = set(liq[liq[:, L.E_CODE] == L.LQ_STARTED, L.E_ACCOUNT].tolist())
    done = set(liq[liq[:, L.E_CODE] == L.LQ_DONE, L.E_ACCOUNT].tolist())
    assert started == done
    for a in range(RESERVED_ACCOUNTS, hwm):
        if not s.position_lots[a].any():
            equity = int(s.collateral_micro[a])
            assert equity >= 0 or a not in started  # a liquidated flat account ends at >= 0
    adl = liq[liq[:, L.E_CODE] == L.LQ_ADL]
    for row_ in adl:
        assert row_[L.E_SIZE] > 0 and row_[L.E_ACCOUNT] not in (0, row_[L.E_OTHER])


def run_checked(cmds, replay_batch: int) -> None:
    """Command by command with every check after each, then a replay in other batches: same hash."""
    eng = small_engine()
    for c in cmds:
        clock = int(eng.state.g[L.G_LAST_TS])
        far = clock > 0 and c[L.C_KIND] != L.CK_CLOCK_GAP and c[L.C_TS] > clock + 2 * HOUR
        before = eng.state_hash(include_clock=False) if far else None
        ev = eng.submit_rows(c[None, :])
        check_ledger(eng)
        if ev.shape[0] == 1 and ev[0, L.E_KIND] == L.EV_REJECTED:  # a rejected command never moves the clock
            assert int(eng.state.g[L.G_LAST_TS]) == clock
        if far:  # beyond the bound: rejected with its own code, nothing changed
            assert ev.shape[0] == 1 and ev[0, L.E_CODE] == ResultCode.TIMESTAMP_TOO_FAR_AHEAD
            assert eng.state_hash(include_clock=False) == before
        if c[L.C_KIND] == L.CK_LIQUIDATE:
            check_after_sweep(eng, ev)
    again = small_engine()
    again.submit_rows(cmds, batch=replay_batch)
    assert again.state_hash() == eng.state_hash()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cmds=money_streams())
def test_money_is_conserved_exactly_after_every_command(cmds):
    run_checked(cmds, replay_batch=4096)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cmds=liquidation_streams())
def test_money_is_conserved_exactly_through_liquidations_backstops_and_adl(cmds):
    run_checked(cmds, replay_batch=7)


def test_the_liquidation_streams_reach_every_step_of_the_waterfall():
    from hypothesis import Phase, find

    def reaches(phases_wanted):
        def cond(cmds):
            ev = small_engine().submit_rows(cmds)
            return phases_wanted <= set(ev[ev[:, L.E_KIND] == L.EV_LIQUIDATION, L.E_CODE].tolist())
        return cond

    for wanted in ({L.LQ_STARTED, L.LQ_ORDER, L.LQ_FEE}, {L.LQ_BACKSTOP}, {L.LQ_ADL_START, L.LQ_ADL}):
        find(liquidation_streams(), reaches(wanted),
             settings=settings(max_examples=3000, database=None, deadline=None, phases=[Phase.generate]))


def test_the_streams_reach_fills_funding_and_withdrawals():
    """The strategy is not vacuous: over a fixed sample it produces every money-moving event."""
    from hypothesis import Phase, find

    def rich(cmds):
        eng = small_engine()
        ev = eng.submit_rows(cmds)
        kinds = set(int(k) for k in ev[:, L.E_KIND])
        paid = ev[(ev[:, L.E_KIND] == L.EV_FUNDING), L.E_SIZE]
        too_far = ev[(ev[:, L.E_KIND] == L.EV_REJECTED) & (ev[:, L.E_CODE] == ResultCode.TIMESTAMP_TOO_FAR_AHEAD)]
        return ({L.EV_FILL, L.EV_WITHDRAWAL, L.EV_DEPOSIT, L.EV_CLOCK_GAP} <= kinds and paid.size > 0 and paid.max() > 0
                and too_far.size > 0)

    cmds = find(money_streams(), rich,
                settings=settings(max_examples=2000, database=None, deadline=None, phases=[Phase.generate]))  # no shrinking
    eng = small_engine()
    for c in cmds:
        eng.submit_rows(c[None, :])
        check_ledger(eng)
