"""Hand-computed scenarios for each matching rule, through the documented command structs.

Market TEST-PERP (tests/helpers.py): tick $0.01, lot 1 GPU-hour, so 1 tick x 1 lot = 10,000
micro-USD; maker fee -100 ppm (a rebate), taker fee 700 ppm; band 10%; 5 open orders per account.
"""

from __future__ import annotations

import pytest

from perp.codes import ResultCode as R
from perp.commands import Amend, Cancel, CancelAll, Deposit, Place, SetIndex, SetStatus
from perp.engine import Engine
from perp.events import (
    Accepted,
    Amended,
    BookLevel,
    CancelAllDone,
    Cancelled,
    Fill,
    Rejected,
)
from tests.helpers import RICH_MICRO, T0, small_engine

M = "TEST-PERP"


@pytest.fixture()
def eng() -> Engine:
    e = small_engine()
    e.submit([SetIndex(ts_ns=T0, market=M, price="2.00")])
    e.submit([Deposit(ts_ns=T0, account=a, amount_micro=RICH_MICRO) for a in range(101, 105)])
    return e


def place(ts, account, side, price, size, **kw):
    return Place(ts_ns=ts(), account=account, market=M, side=side, price=price, size_lots=size, **kw)


def of(events, kind):
    return [e for e in events if isinstance(e, kind)]


def test_price_time_priority_fills_best_price_first_then_oldest_first(eng, ts):
    eng.submit([place(ts, 101, "sell", "2.02", 5), place(ts, 102, "sell", "2.01", 5), place(ts, 103, "sell", "2.01", 5)])
    events = eng.submit([place(ts, 104, "buy", "2.02", 12)])
    fills = [(f.account, f.price, f.size_lots) for f in of(events, Fill) if f.liquidity == "maker"]
    # 2.01 first (account 102 arrived before account 103), then 2.02
    assert fills == [(102, "2.01", 5), (103, "2.01", 5), (101, "2.02", 2)]
    assert eng.position_lots(104, 0) == 12 and eng.position_lots(101, 0) == -2


def test_fill_fees_round_toward_the_venue_and_the_maker_rebate_toward_zero(eng, ts):
    eng.submit([place(ts, 101, "sell", "2.01", 3)])
    events = eng.submit([place(ts, 102, "buy", "2.01", 3)])
    maker, taker = of(events, Fill)
    # notional = 3 lots x 201 ticks x 10,000 micro = 6,030,000 micro-USD
    assert taker.fee_micro == 4221  # 6,030,000 x 700 / 1e6 = 4221 exactly
    assert maker.fee_micro == -603  # -6,030,000 x 100 / 1e6 = -603 exactly
    eng.submit([place(ts, 101, "sell", "2.01", 1)])
    maker, taker = of(eng.submit([place(ts, 102, "buy", "2.01", 1)]), Fill)
    # notional 2,010,000: taker 1407 exactly; rebate -201 exactly
    assert (taker.fee_micro, maker.fee_micro) == (1407, -201)


def test_ioc_fills_what_it_can_and_cancels_the_rest(eng, ts):
    eng.submit([place(ts, 101, "sell", "2.01", 4)])
    events = eng.submit([place(ts, 102, "buy", "2.03", 10, tif="ioc")])
    assert sum(f.size_lots for f in of(events, Fill) if f.account == 102) == 4
    (c,) = of(events, Cancelled)
    assert c.size_lots == 6 and c.code == R.CANCEL_IOC_REMAINDER
    assert eng.best_bid_ask(0) == (None, None)


def test_fok_that_cannot_fill_completely_changes_nothing(eng, ts):
    eng.submit([place(ts, 101, "sell", "2.01", 4)])
    before = eng.state_hash(include_clock=False)
    events = eng.submit([Place(ts_ns=ts.t, account=102, market=M, side="buy", price="2.03", size_lots=5, tif="fok")])
    assert [type(e) for e in events] == [Accepted, Cancelled]
    assert events[1].code == R.CANCEL_FOK_NOT_FILLED
    # only the order id counter moved
    assert eng.best_bid_ask(0) == (None, 201)
    assert eng.state_hash(include_clock=False) != before  # next order id consumed
    events = eng.submit([place(ts, 102, "buy", "2.03", 4, tif="fok")])
    assert sum(f.size_lots for f in of(events, Fill) if f.account == 102) == 4


def test_post_only_that_would_take_is_rejected(eng, ts):
    eng.submit([place(ts, 101, "sell", "2.01", 4)])
    (ev,) = eng.submit([place(ts, 102, "buy", "2.01", 1, tif="post_only")])
    assert isinstance(ev, Rejected) and ev.code == R.POST_ONLY_WOULD_TAKE
    events = eng.submit([place(ts, 102, "buy", "2.00", 1, tif="post_only")])
    assert isinstance(events[0], Accepted)


def test_market_order_stops_at_the_protection_band(eng, ts):
    # mark 2.00 (200 ticks), protection 500 bps -> a market buy fills up to 210 ticks
    eng.submit([place(ts, 101, "sell", "2.05", 2), place(ts, 101, "sell", "2.11", 2)])
    events = eng.submit([Place(ts_ns=ts(), account=102, market=M, side="buy", order_type="market", size_lots=4)])
    assert of(events, Accepted)[0].price == "2.10"
    assert sum(f.size_lots for f in of(events, Fill) if f.account == 102) == 2
    assert of(events, Cancelled)[0].size_lots == 2


def test_limit_price_outside_the_band_around_the_mark_is_rejected(eng, ts):
    (ev,) = eng.submit([place(ts, 101, "buy", "2.21", 1)])  # band: 200 +- 20 ticks
    assert ev.code == R.PRICE_OUTSIDE_BAND
    assert isinstance(eng.submit([place(ts, 101, "buy", "2.20", 1)])[0], Accepted)


def test_reduce_only_is_clipped_to_the_position_and_rejected_when_it_would_increase(eng, ts):
    (ev,) = eng.submit([place(ts, 101, "sell", "2.00", 1, reduce_only=True)])
    assert ev.code == R.REDUCE_ONLY_WOULD_INCREASE
    eng.submit([place(ts, 102, "sell", "2.00", 3), place(ts, 101, "buy", "2.00", 3)])  # account 101 long 3
    events = eng.submit([place(ts, 101, "sell", "2.05", 10, reduce_only=True)])
    assert of(events, Accepted)[0].size_lots == 3


def test_resting_reduce_only_maker_never_flips_the_position(eng, ts):
    eng.submit([place(ts, 102, "sell", "2.00", 3), place(ts, 101, "buy", "2.00", 3)])  # 101 is long 3
    eng.submit([place(ts, 101, "sell", "2.05", 3, reduce_only=True)])
    eng.submit([place(ts, 103, "buy", "1.99", 2), place(ts, 101, "sell", "1.99", 2)])  # 101 now long 1
    events = eng.submit([place(ts, 104, "buy", "2.05", 5)])
    maker_fills = [f for f in of(events, Fill) if f.account == 101]
    assert [f.size_lots for f in maker_fills] == [1]
    assert any(c.code == R.CANCEL_REDUCE_ONLY and c.account == 101 for c in of(events, Cancelled))
    assert eng.position_lots(101, 0) == 0


@pytest.mark.parametrize("mode, maker_left, taker_fills", [
    ("cancel_newest", True, 0),
    ("cancel_oldest", False, 2),
    ("cancel_both", False, 0),
])
def test_self_trade_prevention_modes(eng, ts, mode, maker_left, taker_fills):
    eng.submit([place(ts, 101, "sell", "2.01", 2), place(ts, 102, "sell", "2.02", 2)])
    events = eng.submit([place(ts, 101, "buy", "2.02", 2, stp=mode)])
    assert sum(f.size_lots for f in of(events, Fill) if f.account == 101) == taker_fills
    assert (eng.best_bid_ask(0)[1] == 201) is maker_left
    assert not any(f.account == 101 and f.liquidity == "maker" for f in of(events, Fill))  # never a self-trade


def test_amend_size_down_keeps_priority_and_price_change_loses_it(eng, ts):
    eng.submit([place(ts, 101, "buy", "1.99", 5, client_order_id=7), place(ts, 102, "buy", "1.99", 5)])
    (am, _) = eng.submit([Amend(ts_ns=ts(), account=101, market=M, client_order_id=7, size_lots=3)])
    assert isinstance(am, Amended) and am.kept_priority
    fills = of(eng.submit([place(ts, 103, "sell", "1.99", 3)]), Fill)
    assert [f.account for f in fills if f.liquidity == "maker"] == [101]
    eng.submit([CancelAll(ts_ns=ts(), account=101), CancelAll(ts_ns=ts(), account=102)])
    eng.submit([place(ts, 101, "buy", "1.98", 5, client_order_id=8), place(ts, 102, "buy", "1.98", 5)])
    events = eng.submit([Amend(ts_ns=ts(), account=101, market=M, client_order_id=8, size_lots=6)])
    assert not of(events, Amended)[0].kept_priority  # size up: back of the queue
    fills = of(eng.submit([place(ts, 103, "sell", "1.98", 5, tif="ioc")]), Fill)
    assert [f.account for f in fills if f.liquidity == "maker"] == [102]
    eng.submit([place(ts, 101, "buy", "1.97", 5, client_order_id=9), place(ts, 102, "buy", "1.97", 5)])
    eng.submit([Amend(ts_ns=ts(), account=101, market=M, client_order_id=9, price="1.96")])
    eng.submit([place(ts, 102, "buy", "1.96", 5)])
    fills = of(eng.submit([place(ts, 103, "sell", "1.96", 12, tif="ioc")]), Fill)
    # 1.98 remainder of account 101 (6 lots) first, then 1.97 (account 102), then 1.96: account 101 re-queued
    # at 1.96 before account 102 placed there, so account 101 is first at that level
    assert [(f.account, f.price) for f in fills if f.liquidity == "maker"] == [(101, "1.98"), (102, "1.97"), (101, "1.96")]


def test_amend_that_would_cross_is_rejected_and_changes_nothing(eng, ts):
    eng.submit([place(ts, 101, "sell", "2.01", 1), place(ts, 102, "buy", "1.99", 1, client_order_id=1)])
    before = eng.state_hash(include_clock=False)
    (ev,) = eng.submit([Amend(ts_ns=ts.t, account=102, market=M, client_order_id=1, price="2.01")])
    assert ev.code == R.AMEND_WOULD_CROSS
    assert eng.state_hash(include_clock=False) == before


def test_cancel_all_cancels_newest_first_and_reports_the_count(eng, ts):
    eng.submit([place(ts, 101, "buy", "1.99", 1), place(ts, 101, "buy", "1.98", 1), place(ts, 102, "buy", "1.97", 1)])
    events = eng.submit([CancelAll(ts_ns=ts(), account=101)])
    assert [c.price_ticks for c in of(events, Cancelled)] == [198, 199]
    assert of(events, CancelAllDone)[0].cancelled == 2
    assert eng.best_bid_ask(0)[0] == 197


def test_duplicate_client_order_id_and_open_order_limit(eng, ts):
    eng.submit([place(ts, 101, "buy", "1.90", 1, client_order_id=9)])
    (ev,) = eng.submit([place(ts, 101, "buy", "1.91", 1, client_order_id=9)])
    assert ev.code == R.DUPLICATE_CLIENT_ORDER_ID
    eng.submit([place(ts, 101, "buy", f"1.9{i}", 1) for i in range(1, 5)])  # 5 open now
    (ev,) = eng.submit([place(ts, 101, "buy", "1.80", 1)])
    assert ev.code == R.TOO_MANY_OPEN_ORDERS
    # IOC never rests, so the limit does not apply
    assert isinstance(eng.submit([place(ts, 101, "buy", "1.80", 1, tif="ioc")])[0], Accepted)


def test_cancel_of_someone_elses_order_is_unknown(eng, ts):
    (acc, _) = eng.submit([place(ts, 101, "buy", "1.90", 1)])
    (ev,) = eng.submit([Cancel(ts_ns=ts(), account=102, order_id=acc.order_id)])
    assert ev.code == R.UNKNOWN_ORDER
    events = eng.submit([Cancel(ts_ns=ts(), account=101, order_id=acc.order_id)])
    assert of(events, Cancelled)[0].code == R.CANCEL_BY_USER


@pytest.mark.parametrize("status, place_ok, post_only_ok, cancel_ok", [
    ("active", True, True, True),
    ("post_only", False, True, True),
    ("cancel_only", False, False, True),
    ("reduce_only", False, False, True),
    ("halted", False, False, True),
])
def test_each_market_status_accepts_only_its_commands(eng, ts, status, place_ok, post_only_ok, cancel_ok):
    (acc, _) = eng.submit([place(ts, 101, "buy", "1.90", 1)])
    eng.submit([SetStatus(ts_ns=ts(), market=M, status=status)])
    r1 = eng.submit([place(ts, 102, "buy", "1.91", 1)])[0]
    r2 = eng.submit([place(ts, 102, "buy", "1.92", 1, tif="post_only")])[0]
    r3 = eng.submit([Cancel(ts_ns=ts(), account=101, order_id=acc.order_id)])[0]
    assert isinstance(r1, Accepted) is place_ok
    assert isinstance(r2, Accepted) is post_only_ok
    assert isinstance(r3, Cancelled) is cancel_ok
    for r in (r1, r2):
        if isinstance(r, Rejected):
            assert r.code == R.MARKET_STATUS_FORBIDS


# rule 8 (issue 9, perp/gate.py PERMIT): shrink = a size decrease at the same price; reduce = no
# size increase for an order that is not reduce-only; cancels always pass
@pytest.mark.parametrize("status, shrink_ok, grow_ok, reprice_ok", [
    ("active", True, True, True),
    ("post_only", True, True, True),
    ("cancel_only", True, False, False),
    ("reduce_only", True, False, True),
    ("halted", False, False, False),
])
def test_each_market_status_allows_only_its_amends(eng, ts, status, shrink_ok, grow_ok, reprice_ok):
    eng.submit([place(ts, 101, "buy", "1.90", 5, client_order_id=c) for c in (1, 2, 3)])
    eng.submit([SetStatus(ts_ns=ts(), market=M, status=status)])
    shrink = eng.submit([Amend(ts_ns=ts(), account=101, market=M, client_order_id=1, size_lots=4)])[0]
    grow = eng.submit([Amend(ts_ns=ts(), account=101, market=M, client_order_id=2, size_lots=6)])[0]
    reprice = eng.submit([Amend(ts_ns=ts(), account=101, market=M, client_order_id=3, price="1.89")])[0]
    for ev, ok in ((shrink, shrink_ok), (grow, grow_ok), (reprice, reprice_ok)):
        assert isinstance(ev, Amended) is ok
        if not ok:
            assert isinstance(ev, Rejected) and ev.code == R.MARKET_STATUS_FORBIDS
    if status == "cancel_only":  # a smaller size at a new price is not a partial cancel
        (ev,) = eng.submit([Amend(ts_ns=ts(), account=101, market=M, client_order_id=1, size_lots=3, price="1.88")])
        assert ev.code == R.MARKET_STATUS_FORBIDS


def test_an_amend_that_adds_lots_passes_the_same_margin_gate_as_a_place(ts):
    from risk.errors import RiskCode

    e = small_engine()
    e.submit([SetIndex(ts_ns=T0, market=M, price="2.00"), Deposit(ts_ns=T0, account=120, amount_micro=10**6)])
    # $1 at the default 5x: one lot needs IM 200 ticks (the mark) x 10,000 micro x 20% = 400,000
    # (+ the taker fee 1.90 x 10,000 x 700 ppm = 1,330 for a place); 50 lots need 20,000,000
    assert isinstance(e.submit([place(ts, 120, "buy", "1.90", 50)])[0], Rejected)
    e.submit([place(ts, 120, "buy", "1.90", 1, client_order_id=1)])
    before = e.state_hash(include_clock=False)
    for lots in (50, 3):  # 3 lots: IM 1,200,000 > 1,000,000
        (ev,) = e.submit([Amend(ts_ns=ts.t, account=120, market=M, client_order_id=1, size_lots=lots)])
        assert isinstance(ev, Rejected) and ev.code == RiskCode.INSUFFICIENT_INITIAL_MARGIN
        assert e.state_hash(include_clock=False) == before
    # 2 lots: IM 800,000 + the maker fee on the added lot (a rebate: counts 0) <= 1,000,000
    assert isinstance(e.submit([Amend(ts_ns=ts(), account=120, market=M, client_order_id=1, size_lots=2)])[0], Amended)


@pytest.mark.parametrize("account", [0, 1, 15])
def test_reserved_accounts_cannot_trade_or_move_money(eng, ts, account):
    from perp.commands import SetLeverage, Withdraw

    (acc, _) = eng.submit([place(ts, 101, "buy", "1.90", 1, client_order_id=5)])
    before = eng.state_hash(include_clock=False)
    for cmd in (place(ts, account, "buy", "1.91", 1),
                Cancel(ts_ns=ts(), account=account, order_id=acc.order_id),
                CancelAll(ts_ns=ts(), account=account),
                Amend(ts_ns=ts(), account=account, market=M, order_id=acc.order_id, size_lots=2),
                Deposit(ts_ns=ts(), account=account, amount_micro=10**6),
                Withdraw(ts_ns=ts(), account=account, amount_micro=1),
                SetLeverage(ts_ns=ts(), account=account, market=M, leverage=2)):
        (ev,) = eng.submit([cmd])
        assert isinstance(ev, Rejected) and ev.code == R.RESERVED_ACCOUNT, cmd
    assert eng.state_hash(include_clock=False) == before
    # the first trader id is 16
    assert type(eng.submit([Deposit(ts_ns=ts(), account=16, amount_micro=10**8)])[-1]).__name__ == "Deposited"
    assert isinstance(eng.submit([place(ts, 16, "buy", "1.91", 1)])[0], Accepted)


def test_orders_before_any_index_are_rejected_for_lack_of_a_reference_price(ts):
    e = small_engine()
    (ev,) = e.submit([place(ts, 101, "buy", "2.00", 1)])
    assert ev.code == R.NO_REFERENCE_PRICE


def test_timestamps_must_not_go_backwards(eng, ts):
    (ev,) = eng.submit([Place(ts_ns=T0 - 1, account=101, market=M, side="buy", price="2.00", size_lots=1)])
    assert ev.code == R.TIMESTAMP_REGRESSION


def test_book_events_report_level_totals_after_each_change(eng, ts):
    events = eng.submit([place(ts, 101, "buy", "1.99", 2), place(ts, 102, "buy", "1.99", 3)])
    assert [(b.size_lots, b.orders) for b in of(events, BookLevel)] == [(2, 1), (5, 2)]
