"""The gate (issue 9): every path that raises exposure or moves money asks the same permission, and a
refused command changes nothing -- not even the clock. One test per finding, on the embedded H100
market, with the arithmetic written out.

H100-PERP: tick $0.0001, lot 1 GPU-hour, so 1 tick x 1 lot = 100 micro-USD. At 2.1443 a lot is
2,144,300 micro-USD of notional; initial margin at 5x is 20% = 428,860 per lot; the taker fee (5 bp)
is 1,072.15 per lot, the maker fee (1 bp) 214.43 per lot, each rounded up per order.
"""

from __future__ import annotations

import numpy as np
import pytest

from perp import layout as L
from perp.codes import ResultCode
from perp.commands import (
    Amend,
    Cancel,
    ClockGap,
    Deposit,
    FundDeposit,
    Place,
    SetIndex,
    SetLeverage,
    SetStatus,
    Withdraw,
)
from perp.engine import Engine
from perp.events import (
    Accepted,
    Amended,
    ClockGapCrossed,
    FundingPaid,
    MarkChanged,
    Rejected,
)
from perp.markets import MarketSpecError, load_markets, parse_markets
from risk.errors import RiskCode
from risk.ledger import gated_equity_and_im
from tests.helpers import SECOND, T0, fund_top_up

H = "H100-PERP"
HOUR = 3600 * SECOND
A, B, C = 16, 17, 18  # trader accounts (ids below 16 are the venue's)


def frozen(eng: Engine) -> tuple[str, int]:
    """What a rejected command must leave as it was: the logical state and the clock."""
    return eng.state_hash(include_clock=False), int(eng.state.g[L.G_LAST_TS])


def rejected(events, code: int) -> bool:
    return len(events) == 1 and isinstance(events[0], Rejected) and events[0].code == int(code)


@pytest.fixture
def eng() -> Engine:
    e = Engine()
    e.submit([SetIndex(ts_ns=T0, market=H, price="2.1443")])
    return e


def buy(ts, account, lots, price="2.1443", **kw):
    return Place(ts_ns=ts, account=account, market=H, side="buy", size_lots=lots, price=price, **kw)


def sell(ts, account, lots, price="2.1443", **kw):
    return Place(ts_ns=ts, account=account, market=H, side="sell", size_lots=lots, price=price, **kw)


# ---- row 1: amend passes the same margin check as place -------------------------------------------
def test_an_amend_that_adds_lots_passes_the_same_pretrade_check_as_a_place(eng):
    eng.submit([Deposit(ts_ns=T0, account=A, amount_micro=4_290_000)])
    # 9 lots: IM 9 x 428,860 = 3,859,740 + taker fee ceil(9 x 1,072.15) = 9,650 -> 3,869,390 <= 4,290,000
    assert isinstance(eng.submit([buy(T0 + 1, A, 9)])[0], Accepted)
    eng.submit([Cancel(ts_ns=T0 + 2, account=A, order_id=1)])
    # 10 lots: 4,288,600 + 10,722 = 4,299,322 > 4,290,000: the fee alone tips it over
    assert rejected(eng.submit([buy(T0 + 3, A, 10)]), RiskCode.INSUFFICIENT_INITIAL_MARGIN)
    (acc, *_) = eng.submit([buy(T0 + 4, A, 1)])
    before = frozen(eng)
    assert rejected(eng.submit([Amend(ts_ns=T0 + 5, account=A, market=H, order_id=acc.order_id,
                                      size_lots=100_000)]), RiskCode.INSUFFICIENT_INITIAL_MARGIN)
    assert frozen(eng) == before
    # an amend is judged as the order it becomes: the maker fee of all its lots, paid when they fill
    # to 9 lots: IM 3,859,740 + maker fee ceil(9 x 214.43) = 1,930 -> 3,861,670 <= 4,290,000 -> passes
    assert isinstance(eng.submit([Amend(ts_ns=T0 + 6, account=A, market=H, order_id=acc.order_id,
                                        size_lots=9)])[0], Amended)
    # to 10 lots: IM 4,288,600 + maker fee ceil(10 x 214.43) = 2,145 -> 4,290,745 > 4,290,000: once they
    # fill, the fee would leave equity under IM (counting only the added lot's 215 let it through)
    assert rejected(eng.submit([Amend(ts_ns=T0 + 7, account=A, market=H, order_id=acc.order_id,
                                      size_lots=10)]), RiskCode.INSUFFICIENT_INITIAL_MARGIN)
    # to 11 lots: IM 4,717,460 > 4,290,000
    assert rejected(eng.submit([Amend(ts_ns=T0 + 8, account=A, market=H, order_id=acc.order_id,
                                      size_lots=11)]), RiskCode.INSUFFICIENT_INITIAL_MARGIN)


def test_an_amend_respects_the_open_interest_cap():
    spec = load_markets().market[0]
    import msgspec

    markets = msgspec.structs.replace(load_markets(), market=[msgspec.structs.replace(spec, open_interest_cap_lots=10)])
    e = Engine(markets)
    e.submit([SetIndex(ts_ns=T0, market=H, price="2.1443"), Deposit(ts_ns=T0, account=A, amount_micro=10**9),
              Deposit(ts_ns=T0, account=B, amount_micro=10**9)])
    e.submit([sell(T0 + 1, B, 9), buy(T0 + 2, A, 9)])  # open interest 9 lots: one under the cap
    (acc_b, *_) = e.submit([sell(T0 + 3, B, 1, price="2.2000")])  # opening 1: 9 + 1 <= 10, it rests
    assert isinstance(acc_b, Accepted)
    before = frozen(e)
    # growing it to 3 would open 3: 9 + 3 > 10
    assert rejected(e.submit([Amend(ts_ns=T0 + 4, account=B, market=H, order_id=acc_b.order_id, size_lots=3)]),
                    RiskCode.OPEN_INTEREST_CAP)
    assert frozen(e) == before


def test_an_order_priced_away_from_the_mark_counts_its_immediate_loss(eng):
    # a sell at 2.1443 - 5% band edge would give away (mark - price) per lot the moment it fills
    eng.submit([Deposit(ts_ns=T0, account=A, amount_micro=4_290_000)])
    # at the mark: 9 lots pass (see above); at 2.0400 (1,043 ticks under) the loss is 9 x 104,300 = 938,700
    assert rejected(eng.submit([sell(T0 + 1, A, 9, price="2.0400")]), RiskCode.INSUFFICIENT_INITIAL_MARGIN)
    assert isinstance(eng.submit([sell(T0 + 2, A, 9)])[0], Accepted)


def _long_nine(eng) -> None:
    """A long 9 lots at 2.1443 from B: collateral 4,290,000 - taker fee 9,650 = 4,280,350, IM 3,859,740."""
    eng.submit([Deposit(ts_ns=T0, account=A, amount_micro=4_290_000),
                Deposit(ts_ns=T0, account=B, amount_micro=10**13)])
    eng.submit([sell(T0 + 1, B, 9, tif="post_only"), buy(T0 + 2, A, 9)])
    assert int(eng.state.position_lots[A, 0]) == 9


def test_an_amend_that_moves_a_bid_through_the_mark_passes_the_same_gate_as_a_place(eng):
    eng.submit([Deposit(ts_ns=T0, account=A, amount_micro=4_290_000)])
    # 9 lots at 2.2400, 957 ticks over the mark, give away 9 x 95,700 = 861,300 when they fill:
    # 4,290,000 - maker fee 1,930 - 861,300 = 3,426,770 < IM 3,859,740 -> a place is refused ...
    assert rejected(eng.submit([buy(T0 + 1, A, 9, price="2.2400", tif="post_only")]),
                    RiskCode.INSUFFICIENT_INITIAL_MARGIN)
    (acc, *_) = eng.submit([buy(T0 + 2, A, 9, tif="post_only")])
    assert isinstance(acc, Accepted)
    before = frozen(eng)
    # ... and so is the amend that moves the resting bid there (it used to run no margin check)
    assert rejected(eng.submit([Amend(ts_ns=T0 + 3, account=A, market=H, order_id=acc.order_id, price="2.2400")]),
                    RiskCode.INSUFFICIENT_INITIAL_MARGIN)
    assert frozen(eng) == before
    # moving it away from the mark gives nothing away: the same lots, always allowed
    assert isinstance(eng.submit([Amend(ts_ns=T0 + 4, account=A, market=H, order_id=acc.order_id,
                                        price="2.1000")])[0], Amended)


def test_a_withdrawal_leaves_the_loss_set_aside_for_a_resting_bid_through_the_mark(eng):
    """A bid of 9 at 2.2400 (957 ticks over the mark) passes the place gate with its maker fee
    ceil(9 x 2,240) = 2,016 and its loss of 861,300 counted; a withdrawal may take equity - IM - both,
    not more: otherwise the fill at an unchanged mark would leave the account under IM. Lowering
    leverage keeps them aside too."""
    deposit = 3_859_740 + 2_016 + 861_300 + 2_000  # IM of 9 lots + maker fee + the loss + 2,000 spare
    eng.submit([Deposit(ts_ns=T0, account=A, amount_micro=deposit),
                Deposit(ts_ns=T0, account=B, amount_micro=10**12)])
    assert isinstance(eng.submit([buy(T0 + 1, A, 9, price="2.2400", tif="post_only")])[0], Accepted)
    assert eng.account(A).withdrawable_micro == 2_000
    before = frozen(eng)
    assert rejected(eng.submit([Withdraw(ts_ns=T0 + 2, account=A, amount_micro=deposit - 3_859_740)]),
                    RiskCode.WITHDRAWAL_BELOW_INITIAL_MARGIN)
    assert rejected(eng.submit([SetLeverage(ts_ns=T0 + 3, account=A, market=H, leverage=4)]),
                    RiskCode.INSUFFICIENT_INITIAL_MARGIN)
    assert frozen(eng) == before
    assert type(eng.submit([Withdraw(ts_ns=T0 + 4, account=A, amount_micro=2_000)])[0]).__name__ == "Withdrawn"
    eng.submit([sell(T0 + 5, B, 9, price="2.2400")])
    equity, im = gated_equity_and_im(eng.state, A, -1, 0, 0)
    assert int(eng.state.position_lots[A, 0]) == 9 and equity >= im


@pytest.mark.parametrize("grow_by_amend", [True, False])
def test_resting_reduce_only_orders_give_an_opening_order_no_room(grow_by_amend):
    """Reduce-only orders fill at most what reduces, so they carry no margin and add nothing to the
    worst case the gate compares. When they counted, 100 reduce-only sells (each clipped to the
    whole position) or one grown by amend made a 900-lot buy "not raise" the worst case: A held 910
    lots on $4.3 of equity."""
    e = Engine()
    e.submit([SetIndex(ts_ns=T0, market=H, price="2.1443"),
              Deposit(ts_ns=T0, account=A, amount_micro=10 * 428_860 + 20_000),
              Deposit(ts_ns=T0, account=B, amount_micro=10**13)])
    e.submit([sell(T0 + 1, B, 10, tif="post_only"), buy(T0 + 2, A, 10)])
    ts = T0 + 3
    if grow_by_amend:
        (acc, *_) = e.submit([sell(ts, A, 10, price="2.2000", reduce_only=True)])
        assert isinstance(e.submit([Amend(ts_ns=ts + 1, account=A, market=H, order_id=acc.order_id,
                                          size_lots=1_000)])[0], Amended)
        ts += 2
    else:
        for _ in range(100):
            assert isinstance(e.submit([sell(ts, A, 10, price="2.2000", reduce_only=True)])[0], Accepted)
            ts += 1
    assert int(e.state.acct_mkt[A, 0, L.AM_OPEN_SELL_LOTS]) == 0  # no lots that could open
    e.submit([sell(ts, B, 900, tif="post_only")])
    before = frozen(e)
    assert rejected(e.submit([buy(ts + 1, A, 900)]), RiskCode.INSUFFICIENT_INITIAL_MARGIN)
    assert frozen(e) == before
    assert int(e.state.position_lots[A, 0]) == 10


def test_a_flip_pays_the_pretrade_check_for_its_opening_half(eng):
    """Long 9 -> short 9 leaves max(|pos + buys|, |pos - sells|) at 9, but the fee and the loss of
    selling 18 lots at 2.0400 (1,043 ticks under the mark) come out of the margin of the new short:
    4,280,350 - fee ceil(18 x 1,020) = 18,360 - loss 18 x 104,300 = 1,877,400 = 2,384,590 < IM
    3,859,740. Opening the same short from flat is refused too."""
    _long_nine(eng)
    eng.submit([buy(T0 + 3, B, 18, price="2.0400", tif="post_only")])  # B (colluding) bids at the band edge
    before = frozen(eng)
    assert rejected(eng.submit([sell(T0 + 4, A, 18, price="2.0400", tif="ioc")]), RiskCode.INSUFFICIENT_INITIAL_MARGIN)
    assert frozen(eng) == before


def test_a_flip_split_over_a_resting_order_and_a_taker_pays_the_pretrade_check(eng):
    """A rests a sell of its whole position (it only reduces: passes), then sells 9 more through the
    mark: if both fill, A is short, so the second one is an opening order -- 4,280,350 - fee 9,180 -
    loss 938,700 = 3,332,470 < IM 3,859,740. At the mark it passes (4,280,350 - 9,650 >= IM)."""
    _long_nine(eng)
    assert isinstance(eng.submit([sell(T0 + 3, A, 9, price="2.2000")])[0], Accepted)
    eng.submit([buy(T0 + 4, B, 9, price="2.0400", tif="post_only")])
    before = frozen(eng)
    assert rejected(eng.submit([sell(T0 + 5, A, 9, price="2.0400", tif="ioc")]), RiskCode.INSUFFICIENT_INITIAL_MARGIN)
    assert frozen(eng) == before


@pytest.mark.parametrize("reduce_only", [False, True])
def test_a_close_through_the_mark_cannot_take_an_account_past_bankruptcy(eng, reduce_only):
    """After the index falls to 1.7500 (a daily fix gap), A's 9 lots are worth 3,548,700 less:
    equity 731,650, under maintenance but not yet swept. Selling them to a colluding bid at 1.6630
    (870 ticks under the mark, inside the 5% band) would lose 783,000 and leave A bankrupt with B
    holding the gain: refused. Closing at the mark is always possible, under maintenance too."""
    _long_nine(eng)
    eng.submit([SetIndex(ts_ns=T0 + 3, market=H, price="1.7500")])
    assert int(eng.state.mkt[0, L.M_MARK]) == 17_500
    assert gated_equity_and_im(eng.state, A, -1, 0, 0)[0] == 731_650
    eng.submit([buy(T0 + 4, B, 9, price="1.6630", tif="post_only")])
    before = frozen(eng)
    assert rejected(eng.submit([sell(T0 + 5, A, 9, price="1.6630", tif="ioc", reduce_only=reduce_only)]),
                    RiskCode.INSUFFICIENT_INITIAL_MARGIN)
    assert frozen(eng) == before
    eng.submit([Cancel(ts_ns=T0 + 6, account=B, order_id=eng.open_orders()[-1][3])])
    eng.submit([buy(T0 + 7, B, 9, price="1.7500", tif="post_only")])
    fills = eng.submit([sell(T0 + 8, A, 9, price="1.7500", tif="ioc", reduce_only=reduce_only)])
    assert isinstance(fills[0], Accepted) and int(eng.state.position_lots[A, 0]) == 0


# ---- row 2: the oracle's gates reach the engine ----------------------------------------------------
def test_the_oracle_reduce_only_gate_refuses_new_risk_and_lets_positions_close(eng):
    eng.submit([Deposit(ts_ns=T0, account=A, amount_micro=10**9), Deposit(ts_ns=T0, account=B, amount_micro=10**9)])
    eng.submit([sell(T0 + 1, B, 5), buy(T0 + 2, A, 5)])
    eng.submit([SetIndex(ts_ns=T0 + 3, market=H, price="2.1443", reduce_only=True, validity="stale",
                         leverage_scale_ppm=250_000, funding_frozen=True)])
    assert rejected(eng.submit([buy(T0 + 4, A, 1)]), ResultCode.ORACLE_REDUCE_ONLY)
    assert isinstance(eng.submit([sell(T0 + 5, A, 2, reduce_only=True)])[0], Accepted)


def test_a_scaled_leverage_gate_raises_initial_margin_for_new_risk_only(eng):
    eng.submit([Deposit(ts_ns=T0, account=A, amount_micro=4_290_000)])
    # at scale 0.5 IM per lot doubles to 857,720: 9 lots need 7,719,480 > 4,290,000
    eng.submit([SetIndex(ts_ns=T0 + 1, market=H, price="2.1443", leverage_scale_ppm=500_000, validity="suppressed")])
    assert rejected(eng.submit([buy(T0 + 2, A, 9)]), RiskCode.INSUFFICIENT_INITIAL_MARGIN)
    # 4 lots: 3,430,880 + fee ceil(4 x 1,072.15) = 4,289 -> 3,435,169 passes
    assert isinstance(eng.submit([buy(T0 + 3, A, 4)])[0], Accepted)
    # the choosable leverage is scaled too: 5x x 0.5 = 2x; lowering to it is allowed, raising above it is not
    assert not isinstance(eng.submit([SetLeverage(ts_ns=T0 + 4, account=B, market=H, leverage=2)])[0], Rejected)
    assert rejected(eng.submit([SetLeverage(ts_ns=T0 + 5, account=B, market=H, leverage=3)]),
                    RiskCode.LEVERAGE_ABOVE_TIER_LIMIT)


def test_a_frozen_order_band_stays_centred_on_the_last_fresh_anchor(eng):
    eng.submit([Deposit(ts_ns=T0, account=A, amount_micro=10**9)])
    # a stale anchor walks to 2.0000 with the band frozen: the band stays 2.1443 +- 5% = [2.0371, 2.2515]
    eng.submit([SetIndex(ts_ns=T0 + 1, market=H, price="2.0000", order_band_frozen=True, validity="stale")])
    assert rejected(eng.submit([buy(T0 + 2, A, 1, price="1.9500")]), ResultCode.PRICE_OUTSIDE_BAND)
    assert isinstance(eng.submit([buy(T0 + 3, A, 1, price="2.0400")])[0], Accepted)
    # a fresh anchor moves the band again: 2.0000 +- 5% = [1.9000, 2.1000]
    eng.submit([SetIndex(ts_ns=T0 + 4, market=H, price="2.0000")])
    assert isinstance(eng.submit([buy(T0 + 5, A, 1, price="1.9500")])[0], Accepted)


def test_margin_on_the_worse_of_anchor_and_fix_values_a_long_at_the_lower(eng):
    eng.submit([Deposit(ts_ns=T0, account=A, amount_micro=2_000_000), Deposit(ts_ns=T0, account=B, amount_micro=10**9)])
    eng.submit([sell(T0 + 1, B, 4), buy(T0 + 2, A, 4)])  # long 4 at 2.1443: IM 1,715,440
    # a pending fix at 2.0000: the long is worth (2.0000 - 2.1443) x 4 lots = -577,200 less
    eng.submit([SetIndex(ts_ns=T0 + 3, market=H, price="2.1443", margin_on_worse_of_anchor_and_fix=True,
                         fix_price="2.0000", validity="revised")])
    # equity now 2,000,000 - fees(ceil(4 x 1,072.15) = 4,289) - 577,200 = 1,418,511 < IM: no withdrawal at all
    assert rejected(eng.submit([Withdraw(ts_ns=T0 + 4, account=A, amount_micro=1)]), RiskCode.WITHDRAWAL_BELOW_INITIAL_MARGIN)
    eng.submit([SetIndex(ts_ns=T0 + 5, market=H, price="2.1443")])  # fresh again: valued at the mark
    assert not rejected(eng.submit([Withdraw(ts_ns=T0 + 6, account=A, amount_micro=1)]), RiskCode.WITHDRAWAL_BELOW_INITIAL_MARGIN)


# ---- row 4: reserved accounts ------------------------------------------------------------------------
@pytest.mark.parametrize("account", [0, 1, 15])
def test_venue_accounts_cannot_act_through_trader_commands(eng, account):
    cmds = [Deposit(ts_ns=T0 + 1, account=account, amount_micro=10**6), buy(T0 + 1, account, 1),
            Withdraw(ts_ns=T0 + 1, account=account, amount_micro=1),
            SetLeverage(ts_ns=T0 + 1, account=account, market=H, leverage=2),
            Cancel(ts_ns=T0 + 1, account=account, order_id=1)]
    for cmd in cmds:
        before = frozen(eng)
        assert rejected(eng.submit([cmd]), ResultCode.RESERVED_ACCOUNT), cmd
        assert frozen(eng) == before


def test_only_a_fund_takes_a_fund_top_up(eng):
    (ev, _applied) = eng.submit([fund_top_up(T0 + 1, 0, 10**9)])
    assert ev.fund_cash_after_micro == 10**9
    for account in (A, 5):  # a trader, a venue account that is no market's fund
        (refused,) = eng.submit([fund_top_up(T0 + 2, account, 1)])
        assert isinstance(refused, Rejected) and refused.code == ResultCode.ADMIN_INVALID_VALUE
        assert eng.rejection(refused.seq).field == "account"
    assert eng.money_conserved() and eng.ledger()["insurance_fund_micro"] == 10**9


def test_the_retired_fund_deposit_is_refused_with_its_code_and_changes_nothing(eng):
    """One path into a fund: the unaudited fund_deposit (a typed command or a raw CK_FUND_DEPOSIT row,
    into a fund or anywhere) is refused 1033 and leaves every balance and the audit log as they were."""
    before = frozen(eng)
    for account in (0, A):
        assert rejected(eng.submit([FundDeposit(ts_ns=T0 + 1, account=account, amount_micro=10**9)]),
                        ResultCode.FUND_DEPOSIT_RETIRED)
        assert frozen(eng) == before
    raw = eng.encode([FundDeposit(ts_ns=T0 + 1, account=0, amount_micro=10**9)])
    assert raw[0, L.C_KIND] == L.CK_FUND_DEPOSIT
    assert eng.decode(eng.submit_rows(raw))[0].code == ResultCode.FUND_DEPOSIT_RETIRED
    assert frozen(eng) == before and eng.ledger()["insurance_fund_micro"] == 0 and eng.audit_log() == []


# ---- row 5: a bounded clock that a rejection never moves --------------------------------------------
def test_a_rejected_command_far_ahead_moves_no_clock_and_settles_no_funding(eng):
    eng.submit([Deposit(ts_ns=T0, account=A, amount_micro=10**9), Deposit(ts_ns=T0, account=B, amount_micro=10**9)])
    eng.submit([sell(T0 + 1, B, 5), buy(T0 + 2, A, 5)])
    before = frozen(eng)
    events = eng.submit([Cancel(ts_ns=T0 + 30 * 24 * HOUR, account=-1, order_id=1)])
    assert rejected(events, ResultCode.TIMESTAMP_TOO_FAR_AHEAD)
    assert frozen(eng) == before
    assert isinstance(eng.submit([buy(T0 + 3, A, 1)])[0], Accepted)  # correctly timed orders still go in


def test_a_rejected_command_that_crosses_a_funding_hour_is_undone_with_its_funding(eng):
    eng.submit([Deposit(ts_ns=T0, account=A, amount_micro=10**9), Deposit(ts_ns=T0, account=B, amount_micro=10**9)])
    eng.submit([sell(T0 + 1, B, 5, price="2.1500"), buy(T0 + 2, A, 5, price="2.1400"),
                sell(T0 + 3, B, 5), buy(T0 + 4, A, 5)])  # a position and a book with a premium
    before = frozen(eng)
    collateral = eng.state.collateral_micro.copy()
    events = eng.submit([buy(T0 + HOUR + 5 * SECOND, A, 10**6)])  # crosses the hour, then refused
    assert rejected(events, RiskCode.INSUFFICIENT_INITIAL_MARGIN)
    assert frozen(eng) == before and np.array_equal(eng.state.collateral_micro, collateral)
    events = eng.submit([buy(T0 + HOUR + 6 * SECOND, A, 1, price="2.1300")])  # accepted: the hour is paid now
    assert any(isinstance(e, FundingPaid) for e in events)
    assert eng.money_conserved()


@pytest.mark.parametrize("ts", [2**62, 2**63 - 1, -1])
def test_timestamps_outside_the_horizon_are_refused_at_once(eng, ts):
    before = frozen(eng)
    assert rejected(eng.submit([buy(ts, A, 1)]), ResultCode.INVALID_TIMESTAMP)
    assert frozen(eng) == before


def test_a_real_gap_is_crossed_by_a_journaled_operator_command_that_pays_no_missed_funding(eng):
    eng.submit([Deposit(ts_ns=T0, account=A, amount_micro=10**9), Deposit(ts_ns=T0, account=B, amount_micro=10**9)])
    eng.submit([sell(T0 + 1, B, 5, price="2.1600"), buy(T0 + 2, A, 5, price="2.1500"),
                sell(T0 + 3, B, 5), buy(T0 + 4, A, 5)])
    year = 365 * 24 * HOUR
    assert rejected(eng.submit([Deposit(ts_ns=T0 + year, account=A, amount_micro=1)]),
                    ResultCode.TIMESTAMP_TOO_FAR_AHEAD)
    events = eng.submit([ClockGap(ts_ns=T0 + year)])
    gap = [e for e in events if isinstance(e, ClockGapCrossed)]
    assert gap and gap[0].skipped_funding_hours == 365 * 24 - 1
    paid = [e for e in events if isinstance(e, FundingPaid)]
    assert len(paid) == 1  # only the hour in progress, for the samples it had
    assert not isinstance(eng.submit([Deposit(ts_ns=T0 + year + 1, account=A, amount_micro=1)])[0], Rejected)
    assert eng.money_conserved()


# ---- row 6: money that cannot wrap -------------------------------------------------------------------
def test_deposits_stop_before_any_sum_could_wrap_and_the_ledger_is_summed_exactly():
    e = Engine()
    cmds = [Deposit(ts_ns=T0 + i, account=A, amount_micro=10**15) for i in range(4_700)]
    events = e.submit(cmds)
    refused = [ev for ev in events if isinstance(ev, Rejected)]
    # 2**62 / 1e15 = 4,611.7: deposit 4,612 would pass the venue's bound
    assert len(refused) == 4_700 - 4_611 and all(ev.code == 2150 for ev in refused)
    assert int(e.state.collateral_micro[A]) == 4_611 * 10**15 > 0
    assert e.money_conserved()


def test_a_wrapped_sum_can_never_read_as_conserved():
    e = Engine()
    e.submit([Deposit(ts_ns=T0, account=A, amount_micro=10**15)])
    for a in (B, C, 19, 20):  # four balances of 2**62: their int64 sum wraps to exactly 0
        e.state.collateral_micro[a] = 2**62
    assert int(e.state.collateral_micro.sum()) == 10**15  # what an int64 sum would call conserved
    assert e.ledger()["collateral_micro"] == 10**15 + 2**64
    assert not e.money_conserved()


WIDE_TOML = """
[[market]]
symbol = "WIDE-PERP"
series = "WIDE.SERIES"
tick_size_usd = "1"
lot_gpu_hours = "1"
min_price_usd = "1"
max_price_usd = "4000000"
min_order_lots = 1
max_order_lots = 23
price_band_bps = 10000
market_protection_bps = 10000
maker_fee_ppm = 0
taker_fee_ppm = 0
max_open_orders = 100
impact_notional_usd = "10"
mark_sample_interval_s = 1
mark_ema_half_life_s = 5
mark_band_bps = 10000
default_leverage = 10
[[market.tier]]
max_leverage = 10
maintenance_margin_ppm = 50_000
"""


def test_open_interest_is_capped_where_every_loss_it_can_make_still_sums_inside_int64():
    """A market without a configured cap and a ladder from $1 to $4M: a lot's notional at the top is
    4e12 micro-USD, so the cap in force is INT64_MAX // (4e12 x 256) = 9,007 lots. Shorts opened at
    the bottom and closed at the top leave flat debts the fund pays past its floor; with 66 accounts
    at the per-account bound they summed past int64 and the fund's balance wrapped upwards. At the
    cap the debts sum exactly and the fund pays them; one lot more is refused (2104)."""
    from perp.markets import max_open_interest_lots, parse_markets, tier_schedule
    from tests.helpers import know_top_ups, row, top_up_row

    mk = parse_markets(WIDE_TOML, "tests")
    cap = max_open_interest_lots(mk.market[0])
    assert cap == (2**63 - 1) // (4_000_000 * 1_000_000 * 256) == 9_007
    e = Engine(mk, tiers={s.symbol: tier_schedule(s) for s in mk.market})
    assert int(e.state.spec[0, L.S_OI_CAP_LOTS]) == cap < int(e.state.spec[0, L.S_MAX_POSITION_LOTS])
    long_, short = A, B
    cmds = [row(L.CK_SET_INDEX, T0, market=0, price=1), top_up_row(T0, 0, 10**9),
            row(L.CK_DEPOSIT, T0, account=long_, size=10**10), row(L.CK_DEPOSIT, T0, account=short, size=10**10)]
    chunks = [23] * (cap // 23) + [cap % 23]
    for q in chunks:
        cmds += [row(L.CK_PLACE, T0, account=long_, market=0, side=L.BUY, price=1, size=q),
                 row(L.CK_PLACE, T0, account=short, market=0, side=L.SELL, price=1, size=q, tif=L.IOC)]
    ev = know_top_ups(e).submit_rows(np.stack(cmds))
    assert not (ev[:, L.E_KIND] == L.EV_REJECTED).any()
    assert int(e.state.mkt[0, L.M_OPEN_INTEREST]) == cap
    before = frozen(e)
    extra = e.submit_rows(np.stack([row(L.CK_PLACE, T0, account=short, market=0, side=L.SELL, price=1, size=1)]))
    assert extra[0, L.E_KIND] == L.EV_REJECTED and extra[0, L.E_CODE] == RiskCode.OPEN_INTEREST_CAP
    assert frozen(e) == before
    ts = T0 + 1
    closes = [row(L.CK_SET_INDEX, ts, market=0, price=4_000_000)]
    for q in chunks:  # the short buys back at the top from the long closing: a fair price, always allowed
        closes += [row(L.CK_PLACE, ts, account=long_, market=0, side=L.SELL, price=4_000_000, size=q,
                       flags=L.FLAG_REDUCE_ONLY),
                   row(L.CK_PLACE, ts, account=short, market=0, side=L.BUY, price=4_000_000, size=q, tif=L.IOC,
                       flags=L.FLAG_REDUCE_ONLY)]
    assert not (e.submit_rows(np.stack(closes))[:, L.E_KIND] == L.EV_REJECTED).any()
    debt = -int(e.state.collateral_micro[short])
    assert debt == cap * (4_000_000 - 1) * 1_000_000 - 10**10
    fund = int(e.state.collateral_micro[0])
    e.submit_rows(np.stack([row(L.CK_LIQUIDATE, ts + 1)]))
    assert int(e.state.collateral_micro[short]) == 0
    assert int(e.state.collateral_micro[0]) == fund - debt  # paid below its floor, exactly: no wrap
    assert e.money_conserved()


# ---- row 7: emptying one side never snaps the mark ------------------------------------------------------
def test_taking_one_side_of_the_book_does_not_move_the_mark_in_that_command(eng):
    eng.submit([Deposit(ts_ns=T0, account=A, amount_micro=10**9), Deposit(ts_ns=T0, account=B, amount_micro=10**9)])
    # a book 1% over the index on both sides, held for ten minutes: the basis EMA climbs toward +1%
    eng.submit([buy(T0 + 1, A, 2_000, price="2.1600"), sell(T0 + 2, B, 2_000, price="2.1700")])
    eng.submit([Deposit(ts_ns=T0 + 600 * SECOND + k, account=C, amount_micro=10**9) for k in range(1)])
    mark = eng.mark_ticks(0)
    assert mark > 21_443
    events = eng.submit([Place(ts_ns=T0 + 600 * SECOND + 5, account=C, market=H, side="buy", size_lots=2_000,
                               order_type="market")])  # takes the whole ask side
    assert eng.best_bid_ask(0)[1] is None
    assert not any(isinstance(e, MarkChanged) for e in events) and eng.mark_ticks(0) == mark
    # then it decays toward the index at the half-life: after one half-life half the basis is left
    eng.submit([Deposit(ts_ns=T0 + 1200 * SECOND + 5, account=C, amount_micro=1)])
    left = eng.mark_ticks(0) - 21_443
    assert abs(left - (mark - 21_443) / 2) <= 2


# ---- rows 8-10: spec rules ----------------------------------------------------------------------------
SPEC = """
[[market]]
symbol = "X-PERP"
series = "S"
tick_size_usd = "0.0001"
lot_gpu_hours = "1"
min_price_usd = "0.01"
max_price_usd = "20"
{extra}
[[market.tier]]
max_notional_usd = 100_000
max_leverage = 3
maintenance_margin_ppm = 150_000
[[market.tier]]
max_leverage = 2
maintenance_margin_ppm = 250_000
"""


def test_a_rebate_that_the_fund_share_would_make_the_fee_ledger_pay_is_refused_at_load():
    with pytest.raises(MarketSpecError, match="fee ledger"):
        parse_markets(SPEC.format(extra="maker_fee_ppm = -500\ntaker_fee_ppm = 500\nfee_share_to_fund_ppm = 200000\n"
                                        "default_leverage = 3"))
    parse_markets(SPEC.format(extra="maker_fee_ppm = -400\ntaker_fee_ppm = 500\nfee_share_to_fund_ppm = 200000\n"
                                    "default_leverage = 3"))


def test_a_three_x_tier_lets_an_account_choose_three_x():
    e = Engine(parse_markets(SPEC.format(extra="default_leverage = 3")))
    e.submit([SetIndex(ts_ns=T0, market="X-PERP", price="2.0000"), Deposit(ts_ns=T0, account=A, amount_micro=10**6)])
    (ev,) = e.submit([SetLeverage(ts_ns=T0 + 1, account=A, market="X-PERP", leverage=3)])
    assert not isinstance(ev, Rejected)
    assert rejected(e.submit([SetLeverage(ts_ns=T0 + 2, account=A, market="X-PERP", leverage=4)]),
                    RiskCode.LEVERAGE_ABOVE_TIER_LIMIT)


def test_a_funding_cap_above_one_hundred_percent_is_refused_at_load():
    with pytest.raises(MarketSpecError, match="funding_cap_ppb"):
        parse_markets(SPEC.format(extra="default_leverage = 3\nfunding_cap_ppb = 1000000001"))


def test_a_market_without_tiers_does_not_load():
    with pytest.raises(MarketSpecError, match="tier"):
        parse_markets(SPEC.split("[[market.tier]]")[0].format(extra=""))


def test_the_first_partial_funding_hour_pays_only_for_its_samples():
    e = Engine()
    t = T0 + 58 * 60 * SECOND  # the market's first command at 00:58
    e.submit([SetIndex(ts_ns=t, market=H, price="2.1443"), Deposit(ts_ns=t, account=A, amount_micro=10**9),
              Deposit(ts_ns=t, account=B, amount_micro=10**9),
              sell(t + 1, B, 1_000, price="2.2000"), buy(t + 2, A, 1_000, price="2.1900"),  # premium ~ +2.4%: capped
              sell(t + 3, B, 10), buy(t + 4, A, 10)])
    events = e.submit([Deposit(ts_ns=T0 + HOUR + 1, account=C, amount_micro=1)])
    (paid,) = [ev for ev in events if isinstance(ev, FundingPaid)]
    assert paid.samples == 2  # 00:59 and 01:00
    # the full-hour rate would be the cap, 500,000 ppb; two samples of sixty pay 2/60 of it
    assert paid.rate_ppb == 500_000 * 2 // 60


def test_config_show_is_one_document_with_every_market_and_its_tiers():
    import json

    from click.testing import CliRunner

    from perp.cli import main

    out = CliRunner().invoke(main, ["config", "show"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    (market,) = doc["market"]
    assert market["symbol"] == H and [t["max_leverage"] for t in market["tier"]] == [5, 4, 2]
    assert doc["gate"]["reserved_accounts_below"] == 16
    assert {row["status"] for row in doc["gate"]["permissions"]} == {"active", "post_only", "cancel_only",
                                                                      "reduce_only", "halted"}


def test_market_status_permissions_follow_the_gate_table(eng):
    from perp.gate import permit_table

    eng.submit([Deposit(ts_ns=T0, account=A, amount_micro=10**9)])
    (acc, *_) = eng.submit([buy(T0 + 1, A, 10, price="2.1000")])
    table = {r["status"]: r for r in permit_table()}
    t = T0 + 2
    for status, row in table.items():
        eng.submit([SetStatus(ts_ns=t, market=H, status=status)])
        t += 1
        before = frozen(eng)
        ev = eng.submit([buy(t, A, 1, price="2.1000")])
        t += 1
        assert (row["place"] == "allow") == isinstance(ev[0], Accepted), status
        if isinstance(ev[0], Accepted):
            eng.submit([Cancel(ts_ns=t, account=A, order_id=ev[0].order_id)])
            t += 1
        else:
            assert frozen(eng) == before
        grow = eng.submit([Amend(ts_ns=t, account=A, market=H, order_id=acc.order_id, size_lots=11)])
        t += 1
        assert (row["amend"] == "allow") == isinstance(grow[0], Amended), status
        if isinstance(grow[0], Amended):
            eng.submit([Amend(ts_ns=t, account=A, market=H, order_id=acc.order_id, size_lots=10)])
            t += 1
        wd = eng.submit([Withdraw(ts_ns=t, account=A, amount_micro=1)])
        t += 1
        assert (row["withdraw"] == "allow") == (not isinstance(wd[0], Rejected)), status


# ---- row 2 end to end: the oracle's own gates drive the engine ------------------------------------------
def test_a_stale_oracle_makes_the_engine_reduce_only_through_its_own_set_index_commands():
    import msgspec

    from oracle.anchor import AnchorConfig, HourlyAnchor
    from tests.oracle.oracle_factories import fix, hour_of

    e = Engine()
    anchor = HourlyAnchor(AnchorConfig(series_id="GPUM.TEST.SPOT", half_life_s=6 * 3600))
    for n in range(3):  # three daily fixes, then the publisher goes silent
        assert anchor.ingest(fix(n, "2.1443")) is None
    first = True
    validity = None
    for point in anchor.advance_to(hour_of(5, 6)):  # 2 days and 6 hours after the last fix
        cmd = msgspec.convert(anchor.set_index_command(point, H), SetIndex)
        e.submit([cmd])
        if first:
            e.submit([Deposit(ts_ns=point.ts_ns, account=A, amount_micro=10**9),
                      Deposit(ts_ns=point.ts_ns, account=B, amount_micro=10**9)])
            e.submit([sell(point.ts_ns + 1, B, 5), buy(point.ts_ns + 2, A, 5)])
            first = False
        validity = point.validity
    assert validity.value == "stale"
    t = hour_of(5, 6) + 1
    assert rejected(e.submit([buy(t, A, 1)]), ResultCode.ORACLE_REDUCE_ONLY)  # no new risk...
    assert isinstance(e.submit([sell(t + 1, A, 1, reduce_only=True)])[0], Accepted)  # ...closing still works
    assert int(e.state.mkt[0, L.M_LEVERAGE_SCALE_PPM]) == 250_000
    assert e.state.mkt[0, L.M_ORACLE_GATES] & L.GATE_FUNDING_FROZEN


def test_a_market_order_counts_the_loss_of_the_fills_it_would_get_not_its_protection_limit(eng):
    eng.submit([Deposit(ts_ns=T0, account=A, amount_micro=4_290_000), Deposit(ts_ns=T0, account=B, amount_micro=10**9)])
    eng.submit([sell(T0 + 1, B, 9), sell(T0 + 2, B, 9, price="2.3000")])  # 9 lots at the mark, more 7% above
    # 9 lots fill at the mark: no loss; the fee is counted at the protection limit (mark + 3% = 2.2086):
    # ceil(9 x 22,086 x 100 x 500 / 1e6) = 9,939; IM 3,859,740 -> 3,869,679 <= 4,290,000
    events = eng.submit([Place(ts_ns=T0 + 3, account=A, market=H, side="buy", size_lots=9, order_type="market")])
    assert isinstance(events[0], Accepted) and eng.position_lots(A, 0) == 9
    # had it been charged its protection limit (3% x 9 lots = 578,961 more) it would have been refused
    assert 4_290_000 - 3_869_679 < 9 * (22_086 - 21_443) * 100


def test_the_oracle_throttle_gate_reaches_the_liquidation_sweep_through_set_index(eng):
    from perp.gate import liquidation_throttled

    assert not liquidation_throttled(eng.state, 0)
    eng.submit([SetIndex(ts_ns=T0 + 1, market=H, price="2.1443", liquidations_throttled=True, validity="diverged")])
    assert liquidation_throttled(eng.state, 0)
    eng.submit([SetIndex(ts_ns=T0 + 2, market=H, price="2.1443")])
    assert not liquidation_throttled(eng.state, 0)


def test_the_documented_permission_table_is_the_one_the_engine_runs():
    from pathlib import Path

    from perp.gate import permit_table

    doc = (Path(__file__).resolve().parents[1] / "docs" / "risk.md").read_text()
    section = doc[doc.index("## The gate"):doc.index("## Units and roundings")]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()
            if line.strip().startswith("|") and not line.strip().startswith("|--")]
    header, body = rows[0], rows[1:]
    assert header[0] == "status"
    names = {"allow": "allow", "deny": "deny", "reduce": "reduce", "shrink": "shrink", "defer": "defer",
             "post-only": "post_only"}
    columns = {"place": "place", "amend": "amend", "cancel": "cancel", "leverage": "set_leverage",
               "deposit": "deposit", "withdraw": "withdraw", "liquidate": "liquidate",
               "fund takeover": "fund_takeover", "fund unwind": "fund_unwind", "admin": "admin"}
    documented = {r[0]: {columns[h]: names[v] for h, v in zip(header[1:], r[1:], strict=True)} for r in body}
    engine = {r["status"]: {k: r[k] for k in columns.values()} for r in permit_table()}
    assert documented == engine
