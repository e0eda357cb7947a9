"""The insurance fund's history, derived from events, adds up to the fund account's cash; traders
see their ADL standing."""

from __future__ import annotations

from insurance_fund.ledger import fund_history
from perp.codes import ResultCode
from perp.commands import Deposit, Liquidate, Place, SetIndex
from perp.events import FundingPaid, Rejected
from tests.helpers import SECOND, T0, fund_top_up
from tests.test_liquidation import M, _shorts, long_2000


def test_the_fund_history_from_events_adds_up_to_its_cash():
    e = long_2000(fund_usd=10_000)
    start = e.ledger()["insurance_fund_micro"]  # $10,000 + its share of the set-up trade's fees
    events = []
    events += e.submit([Place(ts_ns=T0 + 3, account=103, market=M, side="buy", size_lots=500, price="1.9000"),
                        SetIndex(ts_ns=T0 + 4, market=M, price="1.5000"), Liquidate(ts_ns=T0 + 5)])
    # traders trade (fee shares), funding runs. The fund is a reserved account (issue 9, rule 1):
    # it no longer closes its backstop position through the book itself
    (r,) = e.submit([Place(ts_ns=T0 + 6, account=0, market=M, side="sell", size_lots=600, price="1.5000")])
    assert isinstance(r, Rejected) and r.code == ResultCode.RESERVED_ACCOUNT
    events += e.submit([Place(ts_ns=T0 + 7, account=103, market=M, side="buy", size_lots=600, price="1.5000"),
                        Place(ts_ns=T0 + 7, account=102, market=M, side="sell", size_lots=600, price="1.5000"),
                        Deposit(ts_ns=T0 + 3600 * SECOND, account=109, amount_micro=1)])
    history = fund_history(events, e.specs)
    assert start + history.cash_micro == e.ledger()["insurance_fund_micro"]
    kinds = history.totals()
    assert "backstop" in kinds and kinds["fee_share"] > 0 and kinds["liquidation_fee"] > 0


def test_the_fund_history_counts_the_funding_its_backstop_position_pays():
    e = long_2000(fund_usd=10_000)
    start = e.ledger()["insurance_fund_micro"]
    events = []
    events += e.submit([Place(ts_ns=T0 + 3, account=103, market=M, side="buy", size_lots=500, price="1.9000"),
                        SetIndex(ts_ns=T0 + 4, market=M, price="1.5000"), Liquidate(ts_ns=T0 + 5)])
    assert e.position_lots(0, 0) == 1_500  # the fund took the backstop position over: long
    # a rich book all hour (impact bid 4% above the index on both sides' impact notional): longs pay the cap
    events += e.submit([Deposit(ts_ns=T0 + 6, account=110, amount_micro=10**11),
                        Deposit(ts_ns=T0 + 6, account=111, amount_micro=10**11),
                        Place(ts_ns=T0 + 7, account=110, market=M, side="buy", size_lots=1000, price="1.5600"),
                        Place(ts_ns=T0 + 7, account=111, market=M, side="sell", size_lots=1000, price="1.5650")])
    events += e.submit([Deposit(ts_ns=T0 + 3600 * SECOND, account=109, amount_micro=1)])
    (paid,) = [x for x in events if isinstance(x, FundingPaid)]
    assert (paid.rate_ppb, paid.index_ticks) == (500_000, 15_000)
    history = fund_history(events, e.specs)
    # the fund's 1,500 lots pay 1,500 x 15,000 ticks x 100 micro-USD x 500,000 / 1e9 = 1,125,000 exactly
    assert history.totals()["funding"] == -1_125_000
    assert start + history.cash_micro == e.ledger()["insurance_fund_micro"]


def test_a_takeover_that_nets_the_funds_own_position_is_in_its_history_with_the_pnl_it_realises():
    """The fund takes account 101's long 2,000 at 1.7000, then account 104's short 2,000 at 1.9000:
    the second takeover closes the first position and realises its PnL in the fund's cash, which the
    history used to leave out (a zero-cash entry): 400 USD short of the fund's cash."""
    from tests.test_liquidation import steps
    from tests.test_waterfall_scenarios import no_rejects

    e = long_2000()
    start = int(e.state.collateral_micro[0])
    events = e.submit([SetIndex(ts_ns=T0 + 4, market=M, price="1.7000"), Liquidate(ts_ns=T0 + 5)])
    assert e.position_lots(0, 0) == 2000
    more = e.submit([Deposit(ts_ns=T0 + 6, account=104, amount_micro=700_000_000),
                     Place(ts_ns=T0 + 7, account=103, market=M, side="buy", size_lots=2000, price="1.7000"),
                     Place(ts_ns=T0 + 8, account=104, market=M, side="sell", size_lots=2000, price="1.7000"),
                     SetIndex(ts_ns=T0 + 9, market=M, price="1.7800"),
                     SetIndex(ts_ns=T0 + 10, market=M, price="1.8600"),
                     SetIndex(ts_ns=T0 + 11, market=M, price="1.9000"),
                     Liquidate(ts_ns=T0 + 12)])
    no_rejects(events + more)
    assert [(s.lots, s.side) for s in steps(more, "fund_takeover")] == [(2000, "sell")]
    assert e.position_lots(0, 0) == 0
    h = fund_history(events + more, e.specs)
    (netted,) = [x for x in h.entries if x.kind == "backstop" and x.amount_micro]
    assert netted.amount_micro > 0
    assert start + h.cash_micro == int(e.state.collateral_micro[0])


def test_an_operator_top_up_is_in_the_fund_history():
    e = long_2000(fund_usd=10_000)
    start = e.ledger()["insurance_fund_micro"]
    events = e.submit([fund_top_up(T0 + 8, 0, 123_456)])
    assert e.ledger()["insurance_fund_micro"] == start + 123_456
    history = fund_history(events, e.specs)
    assert history.totals().get("top_up") == 123_456
    assert start + history.cash_micro == e.ledger()["insurance_fund_micro"]


def test_every_trader_sees_their_adl_rank_and_quintile():
    e = long_2000(fund_usd=50)
    _shorts(e, {104: 1_000, 105: 5_000})
    e.submit([SetIndex(ts_ns=T0 + 20, market=M, price="1.9000")])
    four, five, two = e.adl_standing(104), e.adl_standing(105), e.adl_standing(102)
    # all three shorts are in profit; account 104 is the most levered, account 102 the least
    assert (four.place, five.place, two.place) == (1, 2, 3) and four.of == 3
    assert (four.quintile, two.quintile) == (1, 4)
    assert e.adl_standing(101).place is None  # a losing long is not in the queue
    assert e.adl_standing(109).side == "flat"


def test_markets_can_keep_separate_insurance_funds():
    import msgspec

    from perp.commands import SetInsuranceFloor
    from perp.engine import Engine
    from tests.helpers import SMALL_MARKETS, SMALL_TIERS

    one, two = SMALL_MARKETS.market
    markets = msgspec.structs.replace(SMALL_MARKETS, market=[
        one, msgspec.structs.replace(two, insurance_fund_account=1, fee_share_to_fund_ppm=500_000)])
    e = Engine(markets, tiers=SMALL_TIERS)
    e.submit([SetIndex(ts_ns=T0, market="TEST-PERP", price="2.00"), SetIndex(ts_ns=T0, market="TEST2-PERP", price="2.00"),
              fund_top_up(T0, 0, 10**9), fund_top_up(T0, 1, 10**9),
              Deposit(ts_ns=T0, account=105, amount_micro=10**10),
              # IM 25% (4x) of $160 = $40, plus the taker fee 160,000,000 x 400 ppm = 64,000 (issue 9, rule 5)
              Deposit(ts_ns=T0, account=106, amount_micro=4 * 10**7 + 64_000),
              SetInsuranceFloor(ts_ns=T0, market="TEST2-PERP", amount_micro=10**8)])
    assert e.ledger()["insurance_funds_micro"] == {0: 10**9, 1: 10**9}
    # account 106 goes long 40 lots of TEST2 (2 GPU-hours a lot: $160 of notional) on $40
    e.submit([Place(ts_ns=T0 + 1, account=105, market="TEST2-PERP", side="sell", size_lots=40, price="2.00"),
              Place(ts_ns=T0 + 2, account=106, market="TEST2-PERP", side="buy", size_lots=40, price="2.00")])
    funds = e.ledger()["insurance_funds_micro"]
    assert funds[0] == 10**9 and funds[1] > 10**9  # TEST2's fee share went to fund 1 only
    events = e.submit([SetIndex(ts_ns=T0 + 3, market="TEST2-PERP", price="1.50"), Liquidate(ts_ns=T0 + 4)])
    (backstop,) = [s for s in events if getattr(s, "phase", "") == "backstop"]
    assert backstop.market == "TEST2-PERP" and e.position_lots(1, 1) == 40 and e.position_lots(0, 1) == 0
    assert e.ledger()["insurance_funds_micro"][0] == 10**9
    assert fund_history(events, e.specs, fund=1).cash_micro == e.ledger()["insurance_funds_micro"][1] - funds[1]
