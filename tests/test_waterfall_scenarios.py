"""Issue 10, a solvent waterfall: one hand-computed scenario per row of the issue's table (each fails
on the waterfall before it), plus the gate's deferral, the fund's unwind and watch, and the sweep's
cost (default H100-PERP: 1 tick x 1 lot = 100 micro-USD, maintenance 10% up to $250k).

Fixture (tests.test_liquidation.long_2000): account 101 long 2,000 lots bought at 2.0000 from account
102 on $900 ($898 after a $2.00 taker fee); account 102 short 2,000 on $10,000; account 103 rich;
account 0 the fund, topped up by the operator's fund_top_up.

Adapted to issue 9's gate: traders are ids >= 16 (first version: 1, 2, 3, 4 -> 101, 102, 103, 104,
relative order kept for ADL ties); the fund is funded only by fund_top_up; the pre-trade rule counts
the order's fee (the 60,000-lot set-up of row 4 is re-sized for it); orders are placed inside the
price band of the mark they meet (two bids used to be refused 1009 PRICE_OUTSIDE_BAND and the scenario silently ran on an
empty book); every set-up is checked for refusals."""

from __future__ import annotations

import msgspec
import pytest

from perp import layout as L
from perp.commands import (
    Deposit,
    Liquidate,
    Place,
    SetIndex,
    SetInsuranceFloor,
    SetStatus,
)
from perp.engine import Engine
from perp.markets import load_markets
from tests.helpers import SECOND, SMALL_MARKETS, SMALL_TIERS, T0, assert_money_conserved, fund_top_up
from tests.test_liquidation import M, assert_conserved, long_2000, steps

USD = 1_000_000


def no_rejects(events):
    assert not [ev for ev in events if type(ev).__name__ == "Rejected"], events


def engine_with(**fields) -> Engine:
    base = load_markets()
    return Engine(msgspec.structs.replace(base, market=[msgspec.structs.replace(base.market[0], **fields)]))


def long_2000_on(e: Engine, fund_usd: int = 10_000) -> Engine:
    """long_2000 on an engine with another spec."""
    return long_2000(fund_usd, engine=e)


# ---- row 2: a loss hidden in a negative balance --------------------------------------------------
def test_a_self_closed_negative_balance_is_settled_by_the_fund():
    e = long_2000()
    fund_cash = e.ledger()["insurance_fund_micro"]
    # the fix gaps to 1.5000; before any sweep the trader closes the long into a 1.5000 bid
    no_rejects(e.submit([SetIndex(ts_ns=T0 + 3, market=M, price="1.5000"),
                         Place(ts_ns=T0 + 4, account=103, market=M, side="buy", size_lots=2000, price="1.5000"),
                         Place(ts_ns=T0 + 5, account=101, market=M, side="sell", size_lots=2000, price="1.5000",
                               tif="ioc", reduce_only=True)]))
    # 898 - (2.0 - 1.5) x 2,000 - 5 bp x $3,000 taker fee = 898 - 1,000 - 1.50 = -$103.50, flat
    assert e.position_lots(101, 0) == 0 and e.account(101).collateral_micro == -103_500_000
    fund_cash += 360_000  # 20% of the $1.50 taker fee and of the $0.30 maker fee
    assert e.ledger()["insurance_fund_micro"] == fund_cash
    events = e.submit([Liquidate(ts_ns=T0 + 6)])
    (bad,) = steps(events, "bad_debt")
    # the whole debt, all of it paid by the fund (above its floor of 0), nothing socialised
    assert (bad.account, bad.filled, bad.amount_micro, bad.other) == (101, 103_500_000, 103_500_000, 0)
    assert bad.extra == fund_cash - 103_500_000  # the fund's equity after (it holds no position)
    assert e.account(101).collateral_micro == 0
    assert e.ledger()["insurance_fund_micro"] == fund_cash - 103_500_000
    assert_conserved(e)


def test_a_flat_debt_past_the_floor_is_socialised_over_the_winners():
    e = long_2000(fund_usd=50)
    no_rejects(e.submit([SetIndex(ts_ns=T0 + 3, market=M, price="1.5000"),
                         Place(ts_ns=T0 + 4, account=103, market=M, side="buy", size_lots=2000, price="1.5000"),
                         Place(ts_ns=T0 + 5, account=101, market=M, side="sell", size_lots=2000, price="1.5000",
                               tif="ioc", reduce_only=True)]))
    floor = e.ledger()["insurance_fund_micro"]
    two_before = e.account(102).collateral_micro
    events = e.submit([SetInsuranceFloor(ts_ns=T0 + 6, amount_micro=floor), Liquidate(ts_ns=T0 + 7)])
    no_rejects(events)
    # the only winner is account 102 (short 2,000 from 2.0000: +$1,000 at 1.5000; equity ~$11,000,
    # maintenance $300): its weight min($1,000, equity - MM) covers the whole $103.50
    (soc,) = steps(events, "socialised")
    assert (soc.account, soc.amount_micro, soc.filled) == (102, 103_500_000, 1_000 * USD)
    (bad,) = steps(events, "bad_debt")
    assert (bad.filled, bad.amount_micro, bad.other) == (103_500_000, 0, 103_500_000)
    assert e.account(102).collateral_micro == two_before - 103_500_000 and e.account(101).collateral_micro == 0
    assert e.ledger()["insurance_fund_micro"] == floor and not steps(events, "fund_below_floor")
    assert_conserved(e)


# ---- row 1: the fund's floor is respected on every takeover -------------------------------------
def test_a_fund_at_its_floor_refuses_a_takeover_and_sends_it_to_adl():
    e = long_2000(fund_usd=50)
    floor = e.ledger()["insurance_fund_micro"]
    events = e.submit([SetInsuranceFloor(ts_ns=T0 + 3, amount_micro=floor),
                       SetIndex(ts_ns=T0 + 4, market=M, price="1.7000"), Liquidate(ts_ns=T0 + 5)])
    no_rejects(events)
    # equity 898 - 2,000 x 0.30 = $298 < maintenance $340: not bankrupt; the empty book takes nothing.
    # Taking 2,000 lots at the mark would cost the fund nothing but add $340 of maintenance margin:
    # equity - margin would fall below the floor, so it takes none (before: all of it, at 1.5510)
    assert not steps(events, "backstop") and not steps(events, "fund_takeover")
    (start,) = steps(events, "adl_start")
    assert (start.lots, start.price_ticks, start.amount_micro, start.other) == (2000, 17_000, floor, floor)
    (adl,) = steps(events, "adl")
    # at the mark: account 102 gives up nothing against it
    assert (adl.account, adl.lots, adl.price_ticks, adl.haircut_micro) == (102, 2000, 17_000, 0)
    (fee,) = steps(events, "fee")
    assert fee.amount_micro == 34 * USD  # min(10% of $340, 1% of $3,400)
    # the account keeps what it had above bankruptcy, less the fee: 898 - 600 - 34 = $264
    assert e.account(101).collateral_micro == 264 * USD and e.position_lots(101, 0) == 0
    assert e.position_lots(0, 0) == 0 and e.position_lots(102, 0) == 0
    assert_conserved(e)


# ---- row 3: ADL only against solvent winners ----------------------------------------------------
def _insolvent_short(e: Engine, deposit_usd: int) -> None:
    """Account 104 short 500 at 1.5000 with deposit - $502.125 of collateral: what buying 1,000 at
    2.0000 ($1.00 fee), then after the gap to 1.5000 selling 1,500 ($1.125 fee, -$500 realised) left
    before the gate refused that flip (session 12: its opening half must pass the pre-trade rule, and
    an account the gap made bankrupt cannot). One market cannot build such an account any more; cross
    margin still can (a loss in another market). So 104 opens the short on $200 (IM $150 + fee
    $0.375) and then hands the rest of the loss to account 103, collateral to collateral, as a loss
    elsewhere would: money is conserved and 104's position, cost basis and equity are the old ones."""
    no_rejects(e.submit([Deposit(ts_ns=T0 + 3, account=104, amount_micro=200 * USD),
                         SetIndex(ts_ns=T0 + 5, market=M, price="1.5000"),
                         Place(ts_ns=T0 + 6, account=103, market=M, side="buy", size_lots=500, price="1.5000"),
                         Place(ts_ns=T0 + 7, account=104, market=M, side="sell", size_lots=500, price="1.5000",
                               tif="ioc")]))
    target = deposit_usd * USD - 502_125_000
    moved = int(e.state.collateral_micro[104]) - target
    e.state.collateral_micro[104] -= moved
    e.state.collateral_micro[103] += moved


def test_an_insolvent_counterparty_is_skipped_by_adl():
    e = long_2000(fund_usd=50)
    _insolvent_short(e, 401)
    assert e.position_lots(104, 0) == -500 and e.account(104).collateral_micro == -101_125_000
    floor = e.ledger()["insurance_fund_micro"]
    no_rejects(e.submit([SetInsuranceFloor(ts_ns=T0 + 8, amount_micro=floor), SetIndex(ts_ns=T0 + 9, market=M, price="1.4000")]))
    # at 1.4000 account 104's short is profitable (+$50) but its equity is -$51.125: before, its rank hit
    # the cap and it was deleveraged first
    assert e.account(104).equity_micro == -51_125_000
    events = e.submit([Liquidate(ts_ns=T0 + 10)])
    # account 101: 898 - 2,000 x 0.60 = -$302; bankruptcy price 14,000 + 302e6 / 200,000 = 15,510
    adl_for_1 = [s for s in steps(events, "adl") if s.other == 101]
    assert [(s.account, s.lots, s.price_ticks) for s in adl_for_1] == [(102, 2000, 15_510)]
    # account 102 gives up (1.5510 - 1.4000) x 2,000 = $302 against the mark, and stays solvent
    assert adl_for_1[0].haircut_micro == 302 * USD and e.account(102).equity_micro > 0
    assert e.position_lots(101, 0) == 0 and e.account(101).equity_micro == 0
    assert_conserved(e)


def test_adl_stops_where_the_counterparty_would_become_insolvent():
    e = long_2000(fund_usd=50)
    # as above, but account 104 deposits $501: at 1.4000 its short 500 is +$50 and its equity +$48.875
    _insolvent_short(e, 501)
    floor = e.ledger()["insurance_fund_micro"]
    no_rejects(e.submit([SetInsuranceFloor(ts_ns=T0 + 8, amount_micro=floor), SetIndex(ts_ns=T0 + 9, market=M, price="1.4000")]))
    assert e.account(104).equity_micro == 48_875_000
    events = e.submit([Liquidate(ts_ns=T0 + 10)])
    # account 104 ranks first (PnL 6.7% x leverage 14.6x, against account 102's 30% x 0.25x); at a haircut of
    # $0.151 a lot it can give up 48.875 // 0.151 = 323 lots and stay solvent; account 102 takes the rest
    adl_for_1 = [s for s in steps(events, "adl") if s.other == 101]
    assert [(s.account, s.lots, s.haircut_micro) for s in adl_for_1] == [(104, 323, 48_773_000), (102, 1677, 253_227_000)]
    assert adl_for_1[0].amount_micro > adl_for_1[1].amount_micro
    assert e.account(104).equity_micro >= 0 and e.account(101).equity_micro == 0
    assert_conserved(e)


# ---- row 4: a chunk sized with its own fee ------------------------------------------------------
def _long_60000_at_1_7775(e: Engine) -> None:
    """Account 101 long 60,000 lots bought at 2.0000 on $24,065; the index then at 1.7775.

    The pre-trade rule counts the taker fee: 5 bp x $120,000 = $60, and IM at the default 5x is
    $24,000, so the deposit must be >= $24,060 (the $24,059.60 of the first version of this scenario
    is refused 2101). $24,065 leaves $24,005 of collateral, which at 1.7775 is again the Drift
    vector's $10 shortage (at 1.7776 it would be $9.60; see below)."""
    no_rejects(e.submit([SetIndex(ts_ns=T0, market=M, price="2.0000"),
                         fund_top_up(T0, 0, 10**10),
                         Deposit(ts_ns=T0, account=101, amount_micro=24_065_000_000),
                         Deposit(ts_ns=T0, account=102, amount_micro=10**12), Deposit(ts_ns=T0, account=103, amount_micro=10**12),
                         Place(ts_ns=T0 + 1, account=102, market=M, side="sell", size_lots=60_000, price="2.0000"),
                         Place(ts_ns=T0 + 2, account=101, market=M, side="buy", size_lots=60_000, price="2.0000"),
                         SetIndex(ts_ns=T0 + 3, market=M, price="1.7775")]))
    assert e.position_lots(101, 0) == 60_000 and e.account(101).collateral_micro == 24_005_000_000


def test_a_chunk_with_its_fee_restores_maintenance_x_1_plus_buffer():
    # buffer 0 and no minimum chunk, so that the sizing rule alone decides (the Drift vector: a $10
    # shortage at 10% maintenance and a 1% fee needs $10 / (10% - 1%) = $111.11 of notional, not $100)
    e = engine_with(liquidation_buffer_ppm=0, liquidation_chunk_ppm=0)
    _long_60000_at_1_7775(e)
    no_rejects(e.submit([Place(ts_ns=T0 + 4, account=103, market=M, side="buy", size_lots=1000, price="1.7770")]))
    view = e.account(101)
    # collateral 24,065 - $60 fee = 24,005; equity 24,005 - 60,000 x 0.2225 = $10,655;
    # maintenance 10% x 60,000 x 1.7775 = $10,665: $10 short
    assert (view.equity_micro, view.maintenance_margin_micro) == (10_655_000_000, 10_665_000_000)
    events = e.submit([Liquidate(ts_ns=T0 + 5)])
    (order,) = steps(events, "order")
    # each lot closed at the mark frees $0.17775 of margin and costs $0.017775 of fee: 10 / 0.159975 =
    # 62.51 -> 63 lots (62 x 0.159975 = 9.91845 leaves it $0.08155 short); the fee-blind rule closed
    # 10 / 0.17775 -> 57. The limit is the worst price that still restores: room 63 x 0.159975 - 10 =
    # $0.078425, / (63 x $0.0001) = 12.4 -> 12 ticks under the mark: 17,775 - 12 = 17,763
    assert (order.lots, order.price_ticks, order.filled) == (63, 17_763, 63)
    (fee,) = steps(events, "fee")
    # min(10% of 63/60,000 of $10,665, 1% of 63 x $1.7775) = min($1.119825, $1.119825)
    assert fee.amount_micro == 1_119_825
    view = e.account(101)
    # filled at 1.7770: 5 ticks x 63 lots x 100 micro = $0.0315 below the mark
    assert view.equity_micro == 10_655_000_000 - 31_500 - 1_119_825
    # 10% x 59,937 x 1.7775 = $10,653.80175 <= equity $10,653.848675
    assert view.maintenance_margin_micro == 10_653_801_750 and view.equity_micro >= view.maintenance_margin_micro
    assert_conserved(e)


def test_a_chunk_with_the_default_buffer_ends_above_maintenance_x_1_1():
    e = Engine()
    _long_60000_at_1_7775(e)
    # an empty book: the chunk is backstopped at the mark, and still restores health
    events = e.submit([Liquidate(ts_ns=T0 + 5)])
    (order,) = steps(events, "order")
    # restoring 1.1 x MM needs (1.1 x 10,665 - 10,655) / (1.1 x 0.17775 - 0.017775) = 1,076.5 / 0.17775
    # = 6,057 lots: the 20% minimum chunk (12,000) binds
    assert order.filled == 0 and order.lots == 12_000
    (take,) = steps(events, "backstop")
    assert (take.lots, take.price_ticks, take.amount_micro) == (12_000, 17_775, 0)
    (fee,) = steps(events, "fee")
    assert fee.amount_micro == 213_300_000  # 1% of 12,000 x $1.7775 (= 10% of its $2,133 maintenance)
    view = e.account(101)
    # equity 10,655 - 213.30 = $10,441.70; maintenance 10% x 48,000 x 1.7775 = $8,532
    assert (view.equity_micro, view.maintenance_margin_micro) == (10_441_700_000, 8_532_000_000)
    assert view.equity_micro * 10 >= view.maintenance_margin_micro * 11
    assert_conserved(e)


# ---- row 5: a cap on what the waterfall takes ---------------------------------------------------
def test_the_fund_takes_over_at_the_mark_and_a_capped_fee_when_the_account_is_solvent():
    e = long_2000()
    fund_cash = e.ledger()["insurance_fund_micro"]
    events = e.submit([SetIndex(ts_ns=T0 + 4, market=M, price="1.7000"), Liquidate(ts_ns=T0 + 5)])
    no_rejects(events)
    # an empty book, equity $298 of $340 maintenance (88%): before, the fund took the 2,000 lots at the
    # bankruptcy price 1.5510 and with them all $298; now it takes them at the mark
    (take,) = steps(events, "backstop")
    assert (take.lots, take.price_ticks, take.amount_micro) == (2000, 17_000, 0)
    (fund_side,) = steps(events, "fund_takeover")
    fund_view = e.account(0)
    # its equity after the takeover, before the fee it then receives
    assert fund_side.account == 0 and fund_side.other == 101 and fund_side.amount_micro == fund_view.equity_micro - 34 * USD
    assert fund_side.filled == 340 * USD  # the fund's maintenance margin after: 10% of $3,400
    (fee,) = steps(events, "fee")
    assert fee.amount_micro == 34 * USD
    assert e.account(101).collateral_micro == 264 * USD  # 298 - 34: it keeps what is above the fee
    assert e.ledger()["insurance_fund_micro"] == fund_cash + 34 * USD
    assert_conserved(e)


def test_the_fee_is_capped_at_a_share_of_the_closed_notional():
    # a 50% share of maintenance margin would be $170 (5% of notional); the cap is 1% of $3,400.
    # The bid is placed after the index moves: at 1.7000 against a 2.0000 mark it was outside the
    # 5% price band (rejected), and the position went to the fund instead of through the book
    e = long_2000_on(engine_with(liquidation_fee_share_ppm=500_000))
    no_rejects(e.submit([SetIndex(ts_ns=T0 + 3, market=M, price="1.7000"),
                         Place(ts_ns=T0 + 4, account=103, market=M, side="buy", size_lots=3000, price="1.7000")]))
    events = e.submit([Liquidate(ts_ns=T0 + 5)])
    (order,) = steps(events, "order")
    assert (order.lots, order.filled) == (2000, 2000) and not steps(events, "backstop")
    (fee,) = steps(events, "fee")
    assert (fee.amount_micro, fee.lots) == (34 * USD, 2000)
    # 898 - (2.0000 - 1.7000) x 2,000 realised - $34
    assert e.account(101).collateral_micro == (898 - 600 - 34) * USD
    assert_conserved(e)


def test_the_fee_never_takes_what_is_below_the_bankruptcy_level():
    e = long_2000()
    fund_equity = e.account(0).equity_micro
    # 1.5500: equity 898 - 2,000 x 0.45 = -$2; the fee would be $31 (1% of $3,100) but the account has
    # nothing above bankruptcy. The 1.5000 bid (placed once the mark is 1.5500, inside the band) is
    # below the bankruptcy price 15,500 + 2e6 / 200,000 = 15,510, so the order fills nothing there
    no_rejects(e.submit([SetIndex(ts_ns=T0 + 3, market=M, price="1.5500"),
                         Place(ts_ns=T0 + 4, account=103, market=M, side="buy", size_lots=3000, price="1.5000")]))
    events = e.submit([Liquidate(ts_ns=T0 + 5)])
    (order,) = steps(events, "order")
    assert (order.price_ticks, order.filled) == (15_510, 0)
    (take,) = steps(events, "backstop")
    assert (take.lots, take.price_ticks, take.amount_micro) == (2000, 15_510, 2 * USD)  # the fund's $2 loss
    assert not steps(events, "fee")
    assert e.account(101).equity_micro == 0 and e.account(101).collateral_micro == 0
    assert e.account(0).equity_micro == fund_equity - 2 * USD
    assert_conserved(e)


# ---- row 6: rate limits for a cascade ----------------------------------------------------------
def _two_longs(e: Engine) -> None:
    """Accounts 101 and 104 each long 2,000 at 2.0000 ($898 after fees), against account 102."""
    no_rejects(e.submit([Deposit(ts_ns=T0 + 3, account=104, amount_micro=900 * USD),
                         Deposit(ts_ns=T0 + 3, account=102, amount_micro=10_000 * USD),
                         Place(ts_ns=T0 + 3, account=102, market=M, side="sell", size_lots=2000, price="2.0000"),
                         Place(ts_ns=T0 + 3, account=104, market=M, side="buy", size_lots=2000, price="2.0000"),
                         SetIndex(ts_ns=T0 + 5, market=M, price="1.7000"),
                         Place(ts_ns=T0 + 5, account=103, market=M, side="buy", size_lots=5000, price="1.7000")]))


def test_the_per_sweep_limit_defers_part_of_a_cascade_to_the_next_sweep():
    # $3,400 a sweep: one 2,000-lot position at 1.7000
    e = long_2000_on(engine_with(liquidation_max_per_sweep_usd=3_400))
    _two_longs(e)
    first = e.submit([Liquidate(ts_ns=T0 + 6)])
    (order,) = steps(first, "order")
    assert (order.account, order.filled) == (101, 2000)
    (limited,) = steps(first, "rate_limited")
    assert (limited.account, limited.lots, limited.amount_micro, limited.limit) == (104, 2000, 0, "notional_per_sweep")
    assert e.position_lots(104, 0) == 2000 and e.position_lots(101, 0) == 0
    (sweep,) = steps(first, "sweep")
    assert sweep.extra == 1  # one position waits
    second = e.submit([Liquidate(ts_ns=T0 + 7)])
    assert [(s.account, s.filled) for s in steps(second, "order")] == [(104, 2000)]
    assert not steps(second, "rate_limited")
    assert_conserved(e)


def test_the_oracle_throttle_cuts_the_limits_to_a_quarter():
    # $13,600 a sweep, a quarter of it while throttled: again one position per sweep
    e = long_2000_on(engine_with(liquidation_max_per_sweep_usd=13_600))
    _two_longs(e)
    e.state.mkt[0, L.M_ORACLE_GATES] |= L.GATE_LIQ_THROTTLED  # what set_index sets from the oracle's gates
    first = e.submit([Liquidate(ts_ns=T0 + 6)])
    assert [s.account for s in steps(first, "order")] == [101]
    (limited,) = steps(first, "rate_limited")
    assert (limited.account, limited.filled) == (104, 1)  # filled = 1: the throttle was on
    e.state.mkt[0, L.M_ORACLE_GATES] &= ~L.GATE_LIQ_THROTTLED
    assert [s.account for s in steps(e.submit([Liquidate(ts_ns=T0 + 7)]), "order")] == [104]
    assert_conserved(e)


def test_the_per_minute_limit_waits_for_the_next_minute():
    e = long_2000_on(engine_with(liquidation_max_per_minute_usd=3_400))
    _two_longs(e)
    first = e.submit([Liquidate(ts_ns=T0 + 6)])
    assert [s.account for s in steps(first, "order")] == [101]
    assert steps(e.submit([Liquidate(ts_ns=T0 + 7)]), "rate_limited")[0].limit == "notional_per_minute"
    assert [s.account for s in steps(e.submit([Liquidate(ts_ns=T0 + 60 * SECOND)]), "order")] == [104]
    assert_conserved(e)


def test_a_whole_close_cut_by_the_rate_limit_continues_at_the_next_sweep():
    """A position under the partial threshold is closed whole; when the per-sweep limit cuts it, the
    rest waits for the next sweep (what `rate_limited` says), not for the 30 s cooldown, which only
    follows a partial chunk. Before, any closed lots set the cooldown and the account, still below
    maintenance, was skipped until it ran out."""
    # $4,800 a sweep: 1.5 positions of 2,000 lots at 1.6000
    e = long_2000_on(engine_with(liquidation_max_per_sweep_usd=4_800))
    no_rejects(e.submit([Deposit(ts_ns=T0 + 3, account=104, amount_micro=900 * USD),
                         Place(ts_ns=T0 + 3, account=102, market=M, side="sell", size_lots=2000, price="2.0000"),
                         Place(ts_ns=T0 + 3, account=104, market=M, side="buy", size_lots=2000, price="2.0000"),
                         SetIndex(ts_ns=T0 + 5, market=M, price="1.6000"),
                         Place(ts_ns=T0 + 5, account=103, market=M, side="buy", size_lots=5000, price="1.6000")]))
    first = e.submit([Liquidate(ts_ns=T0 + 6)])
    no_rejects(first)
    assert [(s.account, s.filled) for s in steps(first, "order")] == [(101, 2000), (104, 1000)]
    assert [(s.account, s.lots, s.limit) for s in steps(first, "rate_limited")] == [(104, 1000, "notional_per_sweep")]
    v = e.account(104)
    assert e.position_lots(104, 0) == 1000 and 0 < v.equity_micro < v.maintenance_margin_micro  # unhealthy, solvent
    assert e.state.acct_mkt[104, 0, L.AM_LIQ_COOLDOWN_TS] == 0  # no cooldown after a cut-short whole close
    second = e.submit([Liquidate(ts_ns=T0 + 6 + SECOND)])  # a fresh per-sweep budget, well inside 30 s
    no_rejects(second)
    assert [(s.account, s.lots, s.filled) for s in steps(second, "order")] == [(104, 1000, 1000)]
    assert e.position_lots(104, 0) == 0
    assert_conserved(e)


def test_the_insurance_loss_budget_sends_the_rest_to_adl():
    # $100 of fund losses a minute; account 101 is bankrupt by $102 at 1.5000
    e = long_2000_on(engine_with(insurance_max_loss_per_minute_usd=100))
    events = e.submit([SetIndex(ts_ns=T0 + 4, market=M, price="1.5000"), Liquidate(ts_ns=T0 + 5)])
    no_rejects(events)
    # bankruptcy price 15,510: $0.051 a lot for the fund -> 1,960 lots ($99.96) within the budget
    (take,) = steps(events, "backstop")
    assert (take.lots, take.amount_micro) == (1960, 99_960_000)
    (limited,) = steps(events, "rate_limited")
    assert (limited.lots, limited.limit) == (40, "insurance_loss_per_minute")
    assert [(s.account, s.lots) for s in steps(events, "adl")] == [(102, 40)]
    assert_conserved(e)


# ---- cross margin: each market owns the part of a bankrupt account's deficit its loss made --------
S0, S1 = "TEST-PERP", "TEST2-PERP"  # SMALL_MARKETS: 10,000 and 20,000 micro-USD per tick x lot


def _cross_long(separate_funds: bool) -> Engine:
    """Account 101 long 40 lots in each of the two small markets, on $67 ($66.864 after the taker fees
    $0.056 and $0.08), against account 102 (short 40 at 2.00 in market 0) and account 103 (short 40
    at 2.50 in market 1). With `separate_funds` market 1's fund is account 1, topped up with $1,000."""
    markets = SMALL_MARKETS
    if separate_funds:
        one, two = SMALL_MARKETS.market
        markets = msgspec.structs.replace(SMALL_MARKETS, market=[one, msgspec.structs.replace(two, insurance_fund_account=1)])
    e = Engine(markets, tiers=SMALL_TIERS)
    cmds = [SetIndex(ts_ns=T0, market=S0, price="2.00"), SetIndex(ts_ns=T0, market=S1, price="2.50"),
            fund_top_up(T0, 0, 1 * USD)]
    if separate_funds:
        cmds.append(fund_top_up(T0, 1, 1000 * USD))
    cmds += [Deposit(ts_ns=T0, account=101, amount_micro=67 * USD),
             Deposit(ts_ns=T0, account=102, amount_micro=1000 * USD),
             Deposit(ts_ns=T0, account=103, amount_micro=1000 * USD),
             Place(ts_ns=T0 + 1, account=102, market=S0, side="sell", size_lots=40, price="2.00"),
             Place(ts_ns=T0 + 2, account=101, market=S0, side="buy", size_lots=40, price="2.00"),
             Place(ts_ns=T0 + 3, account=103, market=S1, side="sell", size_lots=40, price="2.50"),
             Place(ts_ns=T0 + 4, account=101, market=S1, side="buy", size_lots=40, price="2.50")]
    no_rejects(e.submit(cmds))
    assert e.position_lots(101, 0) == 40 and e.position_lots(101, 1) == 40
    assert e.account(101).collateral_micro == 66_864_000
    return e


def _gap(e: Engine, mark0: str, mark1: str, floor_market: str | None) -> tuple[int, dict[int, int]]:
    """Set market 0's fund's floor at its whole balance (it may lose nothing), gap both indices and
    sweep; returns (the fund's balance, {account: equity before the sweep})."""
    fund_cash = int(e.state.collateral_micro[0])
    floor = SetInsuranceFloor(ts_ns=T0 + 5, amount_micro=fund_cash) if floor_market is None else \
        SetInsuranceFloor(ts_ns=T0 + 5, market=floor_market, amount_micro=fund_cash)
    no_rejects(e.submit([floor, SetIndex(ts_ns=T0 + 6, market=S0, price=mark0),
                         SetIndex(ts_ns=T0 + 6, market=S1, price=mark1)]))
    return fund_cash, {a: e.account(a).equity_micro for a in (0, 1, 101, 102, 103)}


def test_a_cross_margin_deficit_goes_to_adl_of_the_losing_markets_winner_not_past_the_fund_floor():
    e = _cross_long(separate_funds=False)
    fund_cash, before = _gap(e, "2.40", "1.20", None)
    # 66.864 + 40 x 40 x 0.01 (market 0: +$16) - 40 x 130 x 0.02 (market 1: -$104) = -$21.136
    assert before[101] == -21_136_000
    events = e.submit([Liquidate(ts_ns=T0 + 7)])
    no_rejects(events)
    # market 0 is profitable: it owns none of the deficit and closes at the mark (240); nobody can
    # take it there but the fund (no profitable short), which loses nothing at the mark
    orders = {(s.market, s.price_ticks) for s in steps(events, "order") if s.account == 101}
    assert orders == {(S0, 240), (S1, 147)}
    (below,) = steps(events, "fund_below_floor")[:1]
    assert (below.market, below.account, below.lots, below.price_ticks, below.amount_micro) == (S0, 101, 40, 240, 0)
    # market 1 owns the whole $21.136: bankruptcy price 120 + ceil(21.136 / (40 x 0.02)) = 147; the
    # fund (at its floor) takes nothing there, account 103 (short 40 at 2.50) is deleveraged and
    # gives up 27 ticks x 40 lots x $0.02 = $21.60 against the mark
    adl = [(s.market, s.account, s.lots, s.price_ticks, s.haircut_micro, s.other) for s in steps(events, "adl")]
    assert adl == [(S1, 103, 40, 147, 21_600_000, 101)]
    assert not steps(events, "backstop")
    assert e.account(0).equity_micro == fund_cash  # the fund holds 40 lots of market 0 worth the mark
    assert e.account(103).equity_micro == before[103] - 21_600_000
    assert e.account(102).equity_micro == before[102]
    v = e.account(101)
    assert not e.state.position_lots[101].any() and v.collateral_micro == 21_600_000 - 21_136_000  # the tick's rounding
    assert_money_conserved(e)


def test_a_cross_margin_deficit_is_paid_by_the_losing_markets_own_fund():
    e = _cross_long(separate_funds=True)
    f0, before = _gap(e, "2.40", "1.20", S0)
    events = e.submit([Liquidate(ts_ns=T0 + 7)])
    no_rejects(events)
    # market 1's fund (account 1) takes 40 lots at 147 for what is worth 120: $21.60 of the $21.136
    (take,) = steps(events, "backstop")
    assert (take.market, take.lots, take.price_ticks, take.amount_micro) == (S1, 40, 147, 21_600_000)
    (takeover,) = steps(events, "fund_takeover")
    assert (takeover.market, takeover.account) == (S1, 1)
    assert e.account(1).equity_micro == before[1] - 21_600_000
    # market 0's fund, at its floor, loses nothing (it holds market 0's 40 lots at the mark)
    assert e.account(0).equity_micro == f0
    assert not steps(events, "adl") and e.account(103).equity_micro == before[103]
    assert not e.state.position_lots[101].any() and e.account(101).collateral_micro == 464_000
    assert_money_conserved(e)


def test_a_deficit_of_two_losing_markets_is_split_pro_rata_to_their_losses():
    e = _cross_long(separate_funds=False)
    fund_cash, before = _gap(e, "1.83", "1.20", None)
    # losses at the mark: market 0 40 x 17 x 0.01 = $6.80, market 1 $104; equity
    # 66.864 - 6.80 - 104 = -$43.936; shares floor(43.936 x 6.8 / 110.8) = $2.696317 and
    # floor(43.936 x 104 / 110.8) = $41.239682, the remaining micro-dollar to the largest loser
    # (market 1): $41.239683
    assert before[101] == -43_936_000
    assert 2_696_317 + 41_239_683 == 43_936_000
    events = e.submit([Liquidate(ts_ns=T0 + 7)])
    no_rejects(events)
    # bankruptcy prices: 183 + ceil(2.696317 / 0.40) = 190; 120 + ceil(41.239683 / 0.80) = 172; each
    # market's share goes to its own winner (account 102 short in 0, account 103 short in 1)
    adl = [(s.market, s.account, s.lots, s.price_ticks, s.haircut_micro) for s in steps(events, "adl")]
    assert adl == [(S0, 102, 40, 190, 7 * 400_000), (S1, 103, 40, 172, 52 * 800_000)]
    assert not steps(events, "fund_below_floor") and e.account(0).equity_micro == fund_cash
    assert e.account(101).collateral_micro == 2_800_000 + 41_600_000 - 43_936_000
    assert_money_conserved(e)


# ---- issue 9 (a): the gate defers liquidation ----------------------------------------------------
@pytest.mark.parametrize("status", ["halted", "post_only", "cancel_only"])
def test_a_halted_market_defers_its_liquidations_and_says_so(status):
    e = long_2000()
    no_rejects(e.submit([Place(ts_ns=T0 + 3, account=103, market=M, side="buy", size_lots=3000, price="1.9000"),
                         SetIndex(ts_ns=T0 + 4, market=M, price="1.7000"), SetStatus(ts_ns=T0 + 5, market=M, status=status)]))
    before = e.state_hash(include_clock=False)
    orders_before = e.open_orders().copy()
    events = e.submit([Liquidate(ts_ns=T0 + 6)])
    (deferred,) = steps(events, "deferred")
    assert (deferred.market, deferred.lots, deferred.other) == (M, 1, L.__dict__[f"ST_{status.upper()}"])
    for phase in ("started", "order", "backstop", "adl", "fund_takeover", "fund_unwind"):
        assert not steps(events, phase)
    assert e.position_lots(101, 0) == 2000 and (e.open_orders() == orders_before).all()
    # only the rate-limit windows moved
    mkt = e.state.mkt
    assert int(mkt[0, L.M_LIQ_WAITING]) == 1
    events = e.submit([SetStatus(ts_ns=T0 + 7, market=M, status="active"), Liquidate(ts_ns=T0 + 8)])
    no_rejects(events)
    assert [s.filled for s in steps(events, "order")] == [2000]
    assert before != e.state_hash(include_clock=False)
    assert_conserved(e)


def test_a_reduce_only_market_still_liquidates_and_the_fund_still_takes_over():
    e = long_2000()
    events = e.submit([SetIndex(ts_ns=T0 + 4, market=M, price="1.7000"),
                       SetStatus(ts_ns=T0 + 5, market=M, status="reduce_only"), Liquidate(ts_ns=T0 + 6)])
    no_rejects(events)
    assert not steps(events, "deferred") and [s.lots for s in steps(events, "fund_takeover")] == [2000]
    assert not steps(events, "fund_unwind")  # but it does not unwind there
    assert_conserved(e)


# ---- the fund is watched: unwound through the book, deleveraged below its floor ------------------
def _fund_holds_2000_long() -> Engine:
    e = long_2000()
    no_rejects(e.submit([SetIndex(ts_ns=T0 + 4, market=M, price="1.7000"), Liquidate(ts_ns=T0 + 5)]))
    assert e.position_lots(0, 0) == 2000
    return e


def test_the_fund_unwinds_its_backstop_positions_through_the_book_in_paced_chunks():
    e = _fund_holds_2000_long()
    # at most $1,700 a minute: 1,000 lots at 1.7000 per minute
    row = e.state.spec[0]
    row[L.S_FUND_UNWIND_MINUTE_MICRO] = 1_700 * USD
    no_rejects(e.submit([Place(ts_ns=T0 + 6, account=103, market=M, side="buy", size_lots=5000, price="1.6900")]))
    events = e.submit([Liquidate(ts_ns=T0 + 7)])
    (unwind,) = steps(events, "fund_unwind")
    # limited at the mark - 1%: 17,000 - 170 = 16,830; the 1.6900 bid takes 1,000 lots
    assert (unwind.account, unwind.lots, unwind.filled, unwind.price_ticks) == (0, 1000, 1000, 16_830)
    assert unwind.amount_micro == e.account(0).equity_micro and unwind.other == 1000
    (paced,) = steps(events, "rate_limited")
    assert (paced.account, paced.limit, paced.lots) == (-1, "fund_unwind_per_minute", 1000)
    assert not steps(e.submit([Liquidate(ts_ns=T0 + 8)]), "fund_unwind")  # the minute's pace is used
    later = e.submit([Liquidate(ts_ns=T0 + 60 * SECOND)])
    assert [s.filled for s in steps(later, "fund_unwind")] == [1000] and e.position_lots(0, 0) == 0
    assert_conserved(e)


def test_the_fund_does_not_unwind_in_reduce_only_or_halted_markets():
    e = _fund_holds_2000_long()
    no_rejects(e.submit([Place(ts_ns=T0 + 6, account=103, market=M, side="buy", size_lots=5000, price="1.6900")]))
    # each status at its own time (the same timestamps twice made the second SetStatus a 1024
    # TIMESTAMP_REGRESSION, so "halted" was never tested)
    for i, status in enumerate(("reduce_only", "halted")):
        events = e.submit([SetStatus(ts_ns=T0 + 7 + 2 * i, market=M, status=status), Liquidate(ts_ns=T0 + 8 + 2 * i)])
        no_rejects(events)
        assert int(e.state.mkt[0, L.M_STATUS]) == L.__dict__[f"ST_{status.upper()}"]
        assert not steps(events, "fund_unwind") and e.position_lots(0, 0) == 2000
    # and back to active it does unwind into the 1.6900 bid (limit 1.7000 - 1% = 1.6830)
    events = e.submit([SetStatus(ts_ns=T0 + 11, market=M, status="active"), Liquidate(ts_ns=T0 + 12)])
    no_rejects(events)
    assert [s.filled for s in steps(events, "fund_unwind")] == [2000] and e.position_lots(0, 0) == 0
    assert_conserved(e)


def test_a_fund_below_its_floor_has_its_positions_deleveraged():
    e = _fund_holds_2000_long()
    equity = e.account(0).equity_micro
    events = e.submit([SetInsuranceFloor(ts_ns=T0 + 6, amount_micro=equity + 1), Liquidate(ts_ns=T0 + 7)])
    no_rejects(events)
    (below,) = steps(events, "fund_below_floor")
    assert (below.account, below.lots, below.other, below.filled) == (0, 2000, equity, equity + 1)
    # at the mark against account 102's profitable short (2,000 from 2.0000)
    assert [(s.account, s.lots, s.price_ticks, s.other) for s in steps(events, "adl")] == [(102, 2000, 17_000, 0)]
    assert e.position_lots(0, 0) == 0 and e.position_lots(102, 0) == 0
    assert e.account(0).equity_micro == equity  # closing at the mark: the fund's equity is what it was
    assert_conserved(e)


def test_the_fund_history_reports_its_equity_over_time():
    from insurance_fund.ledger import fund_history

    e = long_2000()
    events = e.submit([SetIndex(ts_ns=T0 + 4, market=M, price="1.7000"), Liquidate(ts_ns=T0 + 5)])
    no_rejects(events)
    history = fund_history(events, e.specs)
    series = history.equity_series()
    assert series and series[-1][2] == e.account(0).equity_micro


# ---- issue 9 (c): the sweep visits the accounts that exist ---------------------------------------
def test_a_deposit_to_a_high_account_id_does_not_enter_the_sweep():
    e = long_2000()
    far = 262_143
    no_rejects(e.submit([Deposit(ts_ns=T0 + 3, account=far, amount_micro=1)]))
    assert int(e.state.g[L.G_ACCOUNT_HWM]) == far + 1
    listed = sorted(int(a) for a in e.state.active[1:int(e.state.active[0, 0]) + 1, 0])
    assert listed == [101, 102]  # the accounts holding positions; the deposit is not listed
    events = e.submit([Liquidate(ts_ns=T0 + 4)])
    (sweep,) = steps(events, "sweep")
    assert sweep.filled == 2  # checked: the two accounts with positions, not 262,144


# ---- the waterfall's spec fields ----------------------------------------------------------------
def test_the_waterfall_limits_are_spec_fields_with_defaults_and_bounds():
    from perp.markets import MarketSpec, MarketSpecError, spec_row, validate_spec

    shipped = load_markets().market[0]
    defaults = MarketSpec(symbol="X", series="S", tick_size_usd="0.0001", lot_gpu_hours="1",
                          min_price_usd="0.0100", max_price_usd="20.0000")
    for field in ("liquidation_max_fee_ppm", "liquidation_max_per_sweep_usd", "liquidation_max_per_minute_usd",
                  "insurance_max_loss_per_minute_usd", "liquidation_throttle_ppm", "fund_unwind_chunk_usd",
                  "fund_unwind_limit_bps", "fund_unwind_per_minute_usd"):
        assert getattr(shipped, field) == getattr(defaults, field), field  # markets.toml states the defaults
    r = spec_row(shipped)
    assert (r[L.S_LIQ_MAX_FEE_PPM], r[L.S_LIQ_MAX_SWEEP_MICRO], r[L.S_LIQ_THROTTLE_PPM]) == (10_000, 2 * 10**12, 250_000)
    assert (r[L.S_FUND_UNWIND_CHUNK_MICRO], r[L.S_FUND_UNWIND_LIMIT_BPS]) == (50_000 * USD, 100)
    for field, value in (("liquidation_max_fee_ppm", -1), ("liquidation_throttle_ppm", 1_000_001),
                         ("liquidation_max_per_sweep_usd", -5), ("fund_unwind_limit_bps", 0),
                         ("insurance_max_loss_per_minute_usd", 10**13)):
        with pytest.raises(MarketSpecError, match=field):
            validate_spec(msgspec.structs.replace(shipped, **{field: value}))


def test_the_active_list_survives_a_snapshot(tmp_path):
    e = long_2000()
    e.snapshot(tmp_path / "s.snap")
    r = Engine.from_snapshot(tmp_path / "s.snap")
    assert sorted(r.state.active[1:int(r.state.active[0, 0]) + 1, 0].tolist()) == [101, 102]
    assert r.state_hash() == e.state_hash()
    # the restored engine's sweep visits the same accounts and liquidates the same way
    cmds = [SetIndex(ts_ns=T0 + 4, market=M, price="1.7000"), Liquidate(ts_ns=T0 + 5)]
    (live,), (restored,) = steps(e.submit(cmds), "sweep"), steps(r.submit(cmds), "sweep")
    assert live.filled == restored.filled == 2 and live.lots == restored.lots == 1
    assert r.state_hash() == e.state_hash()


def _snapshot_without_active(st, path) -> None:
    """A PERPSNP2 file as main wrote it before the merge of issue 10: the same arrays, no `active`
    (perp/state.py's layout: magic, u32 meta length, msgpack meta, raw arrays, blake2b-256)."""
    import hashlib
    import struct

    import numpy as np

    from perp import state as S

    names = [n for n in S.STATE_FIELDS if n != "active"]
    arrays = [np.ascontiguousarray(getattr(st, n), dtype="<i8") for n in names]
    head = msgspec.msgpack.encode(S.SnapshotMeta(
        2, int(st.g[L.G_SEQ]), S.state_hash(st),  # the state hash does not cover the list
        tuple(S.SnapshotArray(n, "<i8", tuple(int(d) for d in a.shape)) for n, a in zip(names, arrays)), {}))
    body = b"".join([S.SNAPSHOT_MAGIC, struct.pack("<I", len(head)), head, *(a.tobytes() for a in arrays)])
    path.write_bytes(body + hashlib.blake2b(body, digest_size=32).digest())


def test_a_snapshot_without_the_active_list_restores_it(tmp_path):
    from perp import state as S

    e = long_2000()
    _snapshot_without_active(e.state, tmp_path / "old.snap")
    st, _ = S.load_snapshot(tmp_path / "old.snap")
    assert sorted(st.active[1:int(st.active[0, 0]) + 1, 0].tolist()) == [101, 102]
    assert S.state_hash(st) == S.state_hash(e.state)  # the kernel arrays (the fund's top-up audit is the admin state's)
