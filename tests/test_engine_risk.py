"""Risk inside the engine, on the default H100-PERP market (index 21,432 ticks, 1 tick x 1 lot =
100 micro-USD, launch tiers 5x / 4x / 2x): pre-trade margin at the boundary, withdrawals, leverage,
open-interest cap, realised PnL, and hourly funding on hand-computed tables."""

from __future__ import annotations

import pytest

from perp.commands import Deposit, Place, SetIndex, SetLeverage, Withdraw
from perp.engine import Engine
from perp.events import FundingPaid, Rejected
from risk.errors import RiskCode
from risk.funding import funding_rate_for_hour_ppb
from tests.helpers import SECOND, T0, assert_money_conserved

M = "H100-PERP"
IM_PER_LOT = 428_640  # 21,432 ticks x 100 micro x 20% (5x)


def fresh(markets=None) -> Engine:
    e = Engine(markets)
    e.submit([SetIndex(ts_ns=T0, market=M, price="2.1432")])
    return e


def buy(ts, a, lots, price="2.1432", **kw):
    return Place(ts_ns=ts(), account=a, market=M, side="buy", price=price, size_lots=lots, **kw)


def sell(ts, a, lots, price="2.1432", **kw):
    return Place(ts_ns=ts(), account=a, market=M, side="sell", price=price, size_lots=lots, **kw)


# rule (issue 9): equity - fee - immediate loss >= IM. A 10-lot buy at 2.1000 (below the mark, so
# no immediate loss) pays the taker fee 21,000 ticks x 10 lots x 100 micro x 500 ppm = 10,500.
FEE_10_AT_2_10 = 10_500


def test_pretrade_margin_one_lot_under_passes_and_one_lot_over_fails(ts):
    e = fresh()
    # equity 4,296,900 - fee 10,500 = 4,286,400 = IM of 10 lots: exactly at the boundary
    e.submit([Deposit(ts_ns=ts(), account=101, amount_micro=10 * IM_PER_LOT + FEE_10_AT_2_10)])
    # 11 lots: IM 11 x 428,640 = 4,715,040 + fee 11,550 > 4,296,900
    (r,) = e.submit([buy(ts, 101, 11, "2.1000")])
    assert isinstance(r, Rejected) and r.code == RiskCode.INSUFFICIENT_INITIAL_MARGIN
    events = e.submit([buy(ts, 101, 10, "2.1000")])  # exactly at initial margin with the fee: accepted
    assert not isinstance(events[0], Rejected)
    # the resting 10 lots count: one more buy lot is over (IM 4,715,040 + fee 1,050 > 4,296,900)...
    (r,) = e.submit([buy(ts, 101, 1, "2.1000")])
    assert r.code == RiskCode.INSUFFICIENT_INITIAL_MARGIN
    # a sell of 10 does not raise the worst case max(|0 + 10|, |0 - 10|), but it may open (a short, if
    # it fills first): its own fee must fit too -- the taker fee 11,000 > the 10,500 left above IM ...
    (r,) = e.submit([sell(ts, 101, 10, "2.2000")])
    assert r.code == RiskCode.INSUFFICIENT_INITIAL_MARGIN
    # ... the maker fee of a post-only sell, 2,200, fits
    assert not isinstance(e.submit([sell(ts, 101, 10, "2.2000", tif="post_only")])[0], Rejected)


def test_pretrade_margin_counts_the_fee_one_micro_short_fails(ts):
    e = fresh()
    e.submit([Deposit(ts_ns=ts(), account=101, amount_micro=10 * IM_PER_LOT + FEE_10_AT_2_10 - 1)])
    (r,) = e.submit([buy(ts, 101, 10, "2.1000")])  # 4,296,899 - 10,500 = 4,286,399 < 4,286,400
    assert isinstance(r, Rejected) and r.code == RiskCode.INSUFFICIENT_INITIAL_MARGIN
    # a post-only order pays the maker fee instead: 21,000,000 x 100 ppm = 2,100 -> it fits
    assert not isinstance(e.submit([buy(ts, 101, 10, "2.1000", tif="post_only")])[0], Rejected)


@pytest.mark.parametrize("short_by, ok", [(0, True), (1, False)])
def test_pretrade_margin_counts_the_immediate_loss_of_a_buy_above_the_mark(ts, short_by, ok):
    e = fresh()
    # buy 10 at 2.1500, 68 ticks above the mark 21,432: immediate loss 68 x 10 x 100 = 68,000;
    # fee 21,500 x 10 x 100 x 500 ppm = 10,750; IM (at the mark) 4,286,400 -> needs 4,365,150
    e.submit([Deposit(ts_ns=ts(), account=101, amount_micro=10 * IM_PER_LOT + 10_750 + 68_000 - short_by)])
    r = e.submit([buy(ts, 101, 10, "2.1500")])[0]
    assert isinstance(r, Rejected) is not ok
    if not ok:
        assert r.code == RiskCode.INSUFFICIENT_INITIAL_MARGIN


def test_reduce_only_orders_pass_whatever_the_margin(ts):
    e = fresh()
    # 10 lots at the index: IM 4,286,400 + taker fee 21,432 x 10 x 100 x 500 ppm = 10,716
    e.submit([Deposit(ts_ns=ts(), account=101, amount_micro=10 * IM_PER_LOT + 10_716),
              Deposit(ts_ns=ts(), account=102, amount_micro=10**12)])
    e.submit([sell(ts, 102, 10), buy(ts, 101, 10)])  # account 101 long 10, fully used
    assert e.account(101).free_collateral_micro == 0  # the fee was counted before the fill
    # the index (and the mark, one-sided book, basis 0) dips to 2.1400: equity 4,286,400 - 32,000
    # is below IM 4,280,000
    e.submit([SetIndex(ts_ns=ts(), market=M, price="2.1400")])
    assert e.account(101).free_collateral_micro < 0
    # an order that does not raise the worst case passes even below initial margin...
    assert not isinstance(e.submit([sell(ts, 101, 5, "2.2000")])[0], Rejected)
    # ...one that would flip the position past it does not (worst case |10 - 30| = 20 > 10)...
    (r,) = e.submit([sell(ts, 101, 25, "2.2000")])
    assert r.code == RiskCode.INSUFFICIENT_INITIAL_MARGIN
    # ...and reduce-only always passes (clipped to the position)
    events = e.submit([sell(ts, 101, 25, "2.2000", reduce_only=True, client_order_id=9)])
    assert not isinstance(events[0], Rejected) and events[0].size_lots == 10


def test_realised_pnl_average_entry_and_fees(ts):
    e = fresh()
    e.submit([Deposit(ts_ns=ts(), account=a, amount_micro=10**10) for a in (101, 102, 103)])
    e.submit([sell(ts, 102, 10, "2.1400"), buy(ts, 101, 10, "2.1400")])  # 101 long 10 @ 2.1400
    e.submit([sell(ts, 102, 10, "2.1500"), buy(ts, 101, 10, "2.1500")])  # 101 long 20 @ 2.1450 avg
    (pos,) = e.account(101).positions
    assert pos.lots == 20 and pos.avg_entry_micro_ticks == 21_450_000_000
    e.submit([buy(ts, 103, 5, "2.1600"), sell(ts, 101, 5, "2.1600")])  # 101 sells 5 @ 2.1600
    (pos,) = e.account(101).positions
    # realised = 5 lots x (21,600 - 21,450) ticks x 100 micro = 75,000
    assert pos.realized_pnl_micro == 75_000 and pos.lots == 15 and pos.avg_entry_micro_ticks == 21_450_000_000
    # account 101 took liquidity each time: 500 ppm of 21,400,000, 21,500,000 and 10,800,000 micro-USD
    assert pos.fees_micro == 10_700 + 10_750 + 5_400
    assert_money_conserved(e)


def test_withdrawals_stop_at_initial_margin_and_profit_only_above_the_floor(ts):
    e = fresh()
    e.submit([Deposit(ts_ns=ts(), account=a, amount_micro=10**10) for a in (101, 102)])
    e.submit([Deposit(ts_ns=ts(), account=103, amount_micro=150 * IM_PER_LOT)])
    e.submit([sell(ts, 102, 100), buy(ts, 103, 100)])  # 103 long 100 lots at the index
    view = e.account(103)
    (r,) = e.submit([Withdraw(ts_ns=ts(), account=103, amount_micro=view.equity_micro - view.initial_margin_micro + 1)])
    assert r.code == RiskCode.WITHDRAWAL_BELOW_INITIAL_MARGIN
    (r,) = e.submit([Withdraw(ts_ns=ts(), account=103, amount_micro=0)])
    assert r.code == RiskCode.NON_POSITIVE_AMOUNT
    w = e.account(103).withdrawable_micro
    ok = e.submit([Withdraw(ts_ns=ts(), account=103, amount_micro=w)])
    assert ok[-1].collateral_micro == view.collateral_micro - w
    assert_money_conserved(e)


def test_unrealised_profit_is_withdrawable_only_above_the_floor(ts):
    e = fresh()
    e.submit([Deposit(ts_ns=ts(), account=a, amount_micro=10**11) for a in (101, 102)])
    e.submit([Deposit(ts_ns=ts(), account=103, amount_micro=1_000_000_000)])  # $1,000
    e.submit([sell(ts, 102, 1000), buy(ts, 103, 1000)])  # $2,143 long
    # the market rises 4% (index walked up): a profit of ~$86 on paper
    e.submit([SetIndex(ts_ns=ts(), market=M, price="2.2289")])
    v = e.account(103)
    assert v.upnl_micro > 0 and v.equity_micro > v.collateral_micro
    # cash is below the IM-limited amount, so withdrawable = max(cash-limited, equity - floor)
    floor = max(v.initial_margin_micro, -(-abs(v.positions[0].notional_micro) * 100_000 // 1_000_000))
    cash = min(v.collateral_micro, v.equity_micro)
    assert v.withdrawable_micro == max(0, min(v.equity_micro - v.initial_margin_micro, max(cash, v.equity_micro - floor)))
    (r,) = e.submit([Withdraw(ts_ns=ts(), account=103, amount_micro=v.withdrawable_micro + 1)])
    assert r.code in (RiskCode.WITHDRAWAL_ABOVE_WITHDRAWABLE, RiskCode.WITHDRAWAL_BELOW_INITIAL_MARGIN)


def test_leverage_is_chosen_per_market_up_to_the_first_tier(ts):
    e = fresh()
    # at 2x (50%) 4 lots at 2.1000 need IM 4 x 21,432 x 100 x 50% = 4,286,400 + taker fee
    # 21,000 x 4 x 100 x 500 ppm = 4,200
    e.submit([Deposit(ts_ns=ts(), account=101, amount_micro=10 * IM_PER_LOT + 4_200)])
    (r,) = e.submit([SetLeverage(ts_ns=ts(), account=101, market=M, leverage=6)])
    assert r.code == RiskCode.LEVERAGE_ABOVE_TIER_LIMIT
    (r,) = e.submit([SetLeverage(ts_ns=ts(), account=101, market=M, leverage=0)])
    assert r.code == RiskCode.LEVERAGE_NOT_POSITIVE
    (r,) = e.submit([SetLeverage(ts_ns=ts(), account=101, market=M, leverage=5)])  # the tier's own maximum
    assert not isinstance(r, Rejected)
    e.submit([SetLeverage(ts_ns=ts(), account=101, market=M, leverage=2)])  # 50%: exactly 4 lots fit
    assert isinstance(e.submit([buy(ts, 101, 5, "2.1000")])[0], Rejected)
    assert not isinstance(e.submit([buy(ts, 101, 4, "2.1000")])[0], Rejected)
    # raising leverage back is always allowed; lowering it below what the orders need is not
    (r,) = e.submit([SetLeverage(ts_ns=ts(), account=101, market=M, leverage=1)])
    assert r.code == RiskCode.INSUFFICIENT_INITIAL_MARGIN


def test_open_interest_cap_rejects_opening_orders_and_lets_reducing_ones_pass(ts):
    import msgspec

    from perp.markets import load_markets

    spec = msgspec.structs.replace(load_markets().market[0], open_interest_cap_lots=100)
    e = fresh(msgspec.structs.replace(load_markets(), market=[spec]))
    e.submit([Deposit(ts_ns=ts(), account=a, amount_micro=10**11) for a in (101, 102, 103)])
    e.submit([sell(ts, 102, 80), buy(ts, 101, 80)])  # open interest 80
    (r,) = e.submit([buy(ts, 103, 30, "2.1000")])
    assert r.code == RiskCode.OPEN_INTEREST_CAP
    assert not isinstance(e.submit([buy(ts, 103, 20, "2.1000")])[0], Rejected)
    assert not isinstance(e.submit([sell(ts, 101, 50, "2.2000")])[0], Rejected)  # reduces account 101


def _maker_quoting_and_a_long_of_7(t: int, index: str = "2.1432", bid: str = "2.1500", ask: str = "2.1600",
                                   frozen: bool = False) -> Engine:
    """A market whose first command is at t: account 101 quotes 1,000 lots a side, 102 buys 7 at the ask."""
    e = Engine()
    e.submit([SetIndex(ts_ns=t, market=M, price=index, funding_frozen=frozen),
              Deposit(ts_ns=t, account=101, amount_micro=10**11), Deposit(ts_ns=t, account=102, amount_micro=10**11)])
    e.submit([Place(ts_ns=t + 1, account=101, market=M, side="buy", price=bid, size_lots=1000),
              Place(ts_ns=t + 1, account=101, market=M, side="sell", price=ask, size_lots=1000),
              Place(ts_ns=t + 2, account=102, market=M, side="buy", order_type="market", size_lots=7)])
    return e


def _funding_setup(frozen: bool = False) -> tuple[Engine, list]:
    e = _maker_quoting_and_a_long_of_7(T0, frozen=frozen)
    before = (e.account(101).collateral_micro, e.account(102).collateral_micro, e.ledger()["insurance_fund_micro"])
    events = e.submit([Deposit(ts_ns=T0 + 3600 * SECOND, account=109, amount_micro=1)])  # the clock reaches the hour
    return e, events, before


def test_hourly_funding_on_a_hand_computed_table():
    e, events, (c1, c2, fund) = _funding_setup()
    (f,) = [ev for ev in events if isinstance(ev, FundingPaid)]
    # impact bid 21,500, impact ask 21,600 against index 21,432: premium = 68 / 21,432 = 3,172,825 ppb;
    # rate = premium + clamp(0 - premium, +-50,000) = 3,122,825 -> capped at 500,000 ppb (0.05%)
    assert (f.rate_ppb, f.samples, f.index_ticks) == (500_000, 60, 21432)
    # the long (account 102, 7 lots) pays 7 x 21,432 x 100 x 0.0005 = 7,501.2 -> 7,502 (ceiling);
    # the short (account 101) receives 7,501 (floor); 1 micro-USD goes to the insurance fund
    assert (f.paid_micro, f.remainder_micro) == (7_502, 1)
    assert e.account(102).collateral_micro == c2 - 7_502
    assert e.account(101).collateral_micro == c1 + 7_501
    assert e.ledger()["insurance_fund_micro"] == fund + 1
    assert e.account(102).positions[0].funding_micro == -7_502
    assert_money_conserved(e)


def test_a_markets_first_partial_hour_pays_only_for_its_samples():
    # issue 9, rule 4: the market's first command is at 00:58, so the hour ending at 01:00 has two
    # premium samples (00:59, 01:00) of the 60 a full hour has: rate = 500,000 x 2 // 60 = 16,666 ppb
    e = _maker_quoting_and_a_long_of_7(T0 + 58 * 60 * SECOND)
    c2 = e.account(102).collateral_micro
    events = e.submit([Deposit(ts_ns=T0 + 3600 * SECOND, account=109, amount_micro=1)])
    (f,) = [ev for ev in events if isinstance(ev, FundingPaid)]
    assert (f.samples, f.rate_ppb) == (2, 500_000 * 2 // 60) == (2, 16_666)
    # the long pays 7 x 21,432 x 100 x 16,666 / 1e9 = 250.03 -> 251 (ceiling), not a full hour's 7,502
    assert f.paid_micro == 251 and e.account(102).collateral_micro == c2 - 251
    assert_money_conserved(e)


def test_the_engine_pays_the_reference_rate_for_a_partial_hour_with_frozen_samples():
    """risk.funding.funding_rate_for_hour_ppb is the engine's rule: a market listed at 00:30 has 30
    samples in its first hour; 5 of them frozen by the oracle leave 25 of a full hour's 60."""
    minute = 60 * SECOND
    e = _maker_quoting_and_a_long_of_7(T0 + 30 * minute, index="2.0000", bid="2.0010", ask="2.0020")
    e.submit([SetIndex(ts_ns=T0 + 45 * minute, market=M, price="2.0000", funding_frozen=True, validity="suppressed")])
    e.submit([SetIndex(ts_ns=T0 + 50 * minute, market=M, price="2.0000")])
    events = e.submit([Deposit(ts_ns=T0 + 3600 * SECOND, account=109, amount_micro=1)])
    (f,) = [ev for ev in events if isinstance(ev, FundingPaid)]
    assert f.samples == 30  # 00:31 .. 01:00; frozen 00:46 .. 00:50
    # impact bid 20,010 against index 20,000 (the ask is above it): premium = 10 / 20,000 = 500,000 ppb;
    # rate = 500,000 + clamp(0 - 500,000, +-50,000) = 450,000, x 25 unfrozen // 60 in a full hour = 187,500
    spec = e.specs[0]
    reference = funding_rate_for_hour_ppb([500_000] * 25, False, spec.funding_interest_ppb,
                                          spec.funding_clamp_ppb, spec.funding_cap_ppb)
    assert f.rate_ppb == reference == 450_000 * 25 // 60 == 187_500
    assert_money_conserved(e)


def test_funding_is_zero_while_the_oracle_freezes_it():
    e, events, (c1, c2, _) = _funding_setup(frozen=True)
    (f,) = [ev for ev in events if isinstance(ev, FundingPaid)]
    assert f.frozen and f.rate_ppb == 0 and f.paid_micro == 0
    assert (e.account(101).collateral_micro, e.account(102).collateral_micro) == (c1, c2)


def test_a_thin_book_does_not_steer_funding():
    e = Engine()
    e.submit([SetIndex(ts_ns=T0, market=M, price="2.1432"), Deposit(ts_ns=T0, account=101, amount_micro=10**11)])
    # one side far above the index but smaller than the impact notional ($1,000 = ~467 lots)
    e.submit([Place(ts_ns=T0 + 1, account=101, market=M, side="buy", price="2.2000", size_lots=100),
              Place(ts_ns=T0 + 1, account=101, market=M, side="sell", price="2.2100", size_lots=100)])
    events = e.submit([Deposit(ts_ns=T0 + 3600 * SECOND, account=109, amount_micro=1)])
    (f,) = [ev for ev in events if isinstance(ev, FundingPaid)]
    assert f.rate_ppb == 0  # every sample was 0 (interest 0, clamp toward it)


def test_the_vectorised_sweep_and_the_detection_shortcut_agree_with_the_engine_on_every_account():
    from perp.bench import make_stream
    from risk.ledger import account_margin, equity_and_mm

    e = Engine()
    e.submit_rows(make_stream(20_000, seed=3, index_ticks=21432, accounts=300))
    # move the index 4% down so that some accounts are close to or below maintenance
    e.submit([SetIndex(ts_ns=int(e.state.g[2]) + 1, market=M, price="2.0575")])  # g[G_LAST_TS]
    sweep = e.risk_sweep()
    for a in range(sweep.equity_micro.shape[0]):
        equity, _, mm, _ = account_margin(e.state, a, -1, 0, 0)
        assert (sweep.equity_micro[a], sweep.maintenance_micro[a]) == (equity, mm)
        assert equity_and_mm(e.state, a) == (equity, mm)  # the detection sweep's shortcut
    expected = [a for a in range(sweep.equity_micro.shape[0]) if sweep.equity_micro[a] < sweep.maintenance_micro[a]]
    assert sweep.unhealthy.tolist() == expected


def test_funding_in_the_engine_pays_what_the_sweep_computes():
    import numpy as np

    from perp import layout as L
    from risk.sweep import risk_sweep

    e, events, _ = _funding_setup()
    (f,) = [ev for ev in events if isinstance(ev, FundingPaid)]
    st = e.state
    hwm = int(st.g[L.G_ACCOUNT_HWM])
    coll = np.zeros(hwm, np.int64)  # funding deltas alone
    out = np.zeros(hwm, np.int64)
    scratch = np.zeros(hwm, np.int64)
    _, remainder = risk_sweep(coll, st.position_lots[:hwm].copy(), np.zeros_like(st.cost_basis_micro[:hwm]),
                              np.ascontiguousarray(st.mkt[:, L.M_MARK]),
                              np.ascontiguousarray(st.spec[:, L.S_MICRO_PER_TICK_LOT]),
                              np.ascontiguousarray(st.tiers[:, :, L.T_BOUND_MICRO]),
                              np.ascontiguousarray(st.tiers[:, :, L.T_MMR_PPM]),
                              np.ascontiguousarray(st.tiers[:, :, L.T_MM_DEDUCTION_MICRO]), True,
                              np.array([f.rate_ppb]), np.ascontiguousarray(st.mkt[:, L.M_INDEX]),
                              scratch.copy(), scratch.copy(), out, scratch.copy())
    np.testing.assert_array_equal(out, st.acct_mkt[:hwm, 0, L.AM_FUNDING_MICRO])
    assert remainder == f.remainder_micro


def test_set_index_carries_the_oracles_gates_into_the_engine_and_its_event(ts):
    # issue 9, rule 9: the gates ride on SetIndex, are stored per market and come back on IndexSet
    import msgspec

    from perp import layout as L
    from perp.codes import ResultCode
    from perp.commands import Command
    from perp.events import IndexSet

    cmd = msgspec.json.decode(
        b'{"type":"set_index","ts_ns":%d,"market":"H100-PERP","price":"2.1432","reduce_only":true,'
        b'"leverage_scale_ppm":500000,"order_band_frozen":true,"fix_price":"2.2000","validity":"stale",'
        b'"margin_on_worse_of_anchor_and_fix":true,"liquidations_throttled":true}' % T0, type=Command)
    e = Engine()
    (ev, *_) = e.submit([cmd])
    assert isinstance(ev, IndexSet)
    bits = L.GATE_REDUCE_ONLY | L.GATE_BAND_FROZEN | L.GATE_MARGIN_WORSE_OF | L.GATE_LIQ_THROTTLED
    assert (ev.gates, ev.leverage_scale_ppm, ev.fix_price_ticks, ev.validity, ev.funding_frozen) == (
        bits, 500_000, 22_000, "stale", False)
    mkt = e.state.mkt[0]
    assert (mkt[L.M_ORACLE_GATES], mkt[L.M_LEVERAGE_SCALE_PPM], mkt[L.M_FIX_TICKS]) == (bits, 500_000, 22_000)
    # the reduce-only gate applies to the next order
    e.submit([Deposit(ts_ns=ts(), account=101, amount_micro=10**10)])
    (r,) = e.submit([buy(ts, 101, 1, "2.1000")])
    assert isinstance(r, Rejected) and r.code == ResultCode.ORACLE_REDUCE_ONLY
    # a fresh anchor with no gates lifts them
    e.submit([SetIndex(ts_ns=ts(), market=M, price="2.1432")])
    assert e.state.mkt[0, L.M_ORACLE_GATES] == 0 and e.state.mkt[0, L.M_LEVERAGE_SCALE_PPM] == 1_000_000
    assert not isinstance(e.submit([buy(ts, 101, 1, "2.1000")])[0], Rejected)


def test_a_command_far_ahead_is_rejected_and_a_clock_gap_pays_no_missed_hours():
    # issue 9, rule 2: the clock may move at most max_clock_step_s (1 h) past the next funding hour
    from perp.codes import ResultCode
    from perp.commands import ClockGap
    from perp.events import ClockGapCrossed

    day = 24 * 3600 * SECOND
    e, _, _ = _funding_setup()  # the clock is at 01:00; the next funding hour is 02:00
    clock = int(e.state.g[2])  # G_LAST_TS
    c2 = e.account(102).collateral_micro
    before = e.state_hash(include_clock=False)
    (r,) = e.submit([Deposit(ts_ns=T0 + 30 * day, account=102, amount_micro=1)])
    assert isinstance(r, Rejected) and r.code == ResultCode.TIMESTAMP_TOO_FAR_AHEAD
    assert int(e.state.g[2]) == clock and e.state_hash(include_clock=False) == before
    # one nanosecond past 03:00 (= 02:00 + max_clock_step_s) is past the bound too
    (r,) = e.submit([Deposit(ts_ns=T0 + 3 * 3600 * SECOND + 1, account=102, amount_micro=1)])
    assert isinstance(r, Rejected) and r.code == ResultCode.TIMESTAMP_TOO_FAR_AHEAD
    assert int(e.state.g[2]) == clock and e.state_hash(include_clock=False) == before
    # a command inside the bound whose clock advance settles 02:00 but that is then rejected: the
    # hour's funding is undone with the advance (only the sequence number moves)
    (r,) = e.submit([Withdraw(ts_ns=T0 + 2 * 3600 * SECOND + 1, account=102, amount_micro=10**15)])
    assert isinstance(r, Rejected) and r.code == RiskCode.WITHDRAWAL_BELOW_INITIAL_MARGIN
    assert int(e.state.g[2]) == clock and e.state_hash(include_clock=False) == before
    assert e.account(102).collateral_micro == c2
    # the same advance under an accepted command pays the hour 01:00-02:00 (60 samples)
    events = e.submit([Deposit(ts_ns=T0 + 2 * 3600 * SECOND + 1, account=109, amount_micro=1)])
    (f,) = [ev for ev in events if isinstance(ev, FundingPaid)]
    assert f.paid_micro == 7_502 and e.account(102).collateral_micro == c2 - 7_502
    c2 -= 7_502
    # the operator crosses the gap: the hour in progress (02:00-03:00) had no sample yet and pays
    # nothing, nor do the 717 hours skipped
    events = e.submit([ClockGap(ts_ns=T0 + 30 * day)])
    (gap,) = [ev for ev in events if isinstance(ev, ClockGapCrossed)]
    assert gap.skipped_funding_hours == (30 * day - 3 * 3600 * SECOND) // (3600 * SECOND) == 717
    assert sum(f.paid_micro for f in events if isinstance(f, FundingPaid)) == 0
    assert e.account(102).collateral_micro == c2
    # the first hour after the gap is a full one again: 60 samples, 7 lots pay 7,502 as before
    events = e.submit([Deposit(ts_ns=T0 + 30 * day + 3600 * SECOND, account=109, amount_micro=1)])
    (f,) = [ev for ev in events if isinstance(ev, FundingPaid)]
    assert (f.samples, f.rate_ppb, f.paid_micro) == (60, 500_000, 7_502)
    assert_money_conserved(e)


def test_an_explicit_zero_leverage_scale_is_not_read_as_1x():
    from perp import layout as L
    from perp.commands import CommandFormatError

    e = Engine()
    e.submit([SetIndex(ts_ns=T0, market=M, price="2.1432", leverage_scale_ppm=500_000)])
    try:
        events = e.submit([SetIndex(ts_ns=T0 + 1, market=M, price="2.1432", leverage_scale_ppm=0)])
    except CommandFormatError:
        return  # refused at the edge: fine
    # a scale of 0 is not "no scale": the command is refused and the 0.5x scale stays
    assert isinstance(events[0], Rejected) and e.state.mkt[0, L.M_LEVERAGE_SCALE_PPM] == 500_000
