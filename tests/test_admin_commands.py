"""Each admin command's effect at its effective time, and each invalid value refused with the field named and
nothing changed (issue 15, docs/operations.md). Default H100-PERP market: index 2.1432, 1 tick x 1 lot = 100
micro-USD, taker 500 ppm, maker 100 ppm."""

from __future__ import annotations

from perp import layout as L
from perp.codes import ResultCode
from perp.commands import (
    Cancel,
    Deposit,
    FundTopUp,
    Liquidate,
    Place,
    SetFees,
    SetFundFloor,
    SetIndex,
    SetLiquidationParams,
    SetMarketStatus,
    SetOpenInterestCap,
    SetOracleParams,
    SetPauses,
    SetStatus,
    SuppressFix,
    Withdraw,
)
from perp.engine import Engine
from perp.events import AdminApplied, Fill, FundDeposited, FundingPaid, InsuranceFloorSet, LiquidationStep, Rejected
from tests.helpers import SECOND, T0, assert_money_conserved

M = "H100-PERP"
HOUR = 3600 * SECOND
WHO = {"operator": "ops", "reason": "test"}


def venue(ts) -> Engine:
    e = Engine()
    e.submit([SetIndex(ts_ns=ts(), market=M, price="2.1432")]
             + [Deposit(ts_ns=ts(), account=a, amount_micro=10**9) for a in (101, 102, 103)])
    return e


def refused(e: Engine, cmd, code: int, field: str) -> None:
    """`cmd` is refused with `code`, naming `field`, and changes nothing but the sequence number."""
    before = e.state_hash(include_clock=False)
    audit = list(e.audit_log())
    (ev,) = e.submit([cmd])
    assert isinstance(ev, Rejected) and ev.code == code, ev
    assert e.rejection(ev.seq).field == field, e.rejection(ev.seq)
    assert e.state_hash(include_clock=False) == before and e.audit_log() == audit


def test_open_interest_cap_applies_at_once_and_refuses_new_exposure_above_it(ts):
    e = venue(ts)
    (ev,) = e.submit([SetOpenInterestCap(ts_ns=ts(), market=M, open_interest_cap_lots=10, **WHO)])
    assert isinstance(ev, AdminApplied) and not ev.pending and ev.effective_ts_ns == ev.ts_ns
    e.submit([Place(ts_ns=ts(), account=101, market=M, side="sell", price="2.1432", size_lots=11)])
    (r,) = e.submit([Place(ts_ns=ts(), account=102, market=M, side="buy", price="2.1432", size_lots=11)])
    assert isinstance(r, Rejected) and r.code == 2104  # OPEN_INTEREST_CAP
    assert e.market_params(M)["open_interest_cap_lots"] == 10
    refused(e, SetOpenInterestCap(ts_ns=ts(), market=M, open_interest_cap_lots=-1, **WHO),
            ResultCode.ADMIN_INVALID_VALUE, "open_interest_cap_lots")


def test_fees_apply_to_the_next_fill(ts):
    e = venue(ts)
    e.submit([SetFees(ts_ns=ts(), market=M, maker_fee_ppm=-50, taker_fee_ppm=300, **WHO)])
    e.submit([Place(ts_ns=ts(), account=101, market=M, side="sell", price="2.1432", size_lots=100)])
    events = e.submit([Place(ts_ns=ts(), account=102, market=M, side="buy", price="2.1432", size_lots=100)])
    maker, taker = [x for x in events if isinstance(x, Fill)]
    # notional 100 x 21,432 x 100 = 214,320,000: taker ceil(x 300 / 1e6) = 64,296, maker rebate -10,716
    assert (maker.fee_micro, taker.fee_micro) == (-10_716, 64_296)
    assert_money_conserved(e)
    refused(e, SetFees(ts_ns=ts(), market=M, maker_fee_ppm=0, taker_fee_ppm=200_000, **WHO),
            ResultCode.ADMIN_INVALID_VALUE, "taker_fee_ppm")
    refused(e, SetFees(ts_ns=ts(), market=M, maker_fee_ppm=-400, taker_fee_ppm=300, **WHO),
            ResultCode.ADMIN_INVALID_VALUE, "maker_fee_ppm")
    refused(e, SetFees(ts_ns=ts(), market=M, maker_fee_ppm=-50, taker_fee_ppm=300, fee_share_to_fund_ppm=2_000_000,
                       **WHO), ResultCode.ADMIN_INVALID_VALUE, "fee_share_to_fund_ppm")


def test_liquidation_params_change_the_kernel_row_at_once_and_are_bounded(ts):
    e = venue(ts)
    e.submit([SetLiquidationParams(ts_ns=ts(), market=M, liquidation_cooldown_s=60,
                                   liquidation_max_per_sweep_usd=500_000, **WHO)])
    assert int(e.state.spec[0, L.S_LIQ_COOLDOWN_NS]) == 60 * SECOND
    assert int(e.state.spec[0, L.S_LIQ_MAX_SWEEP_MICRO]) == 500_000 * 10**6
    assert [x.field for x in e.audit_log()] == ["liquidation_cooldown_s", "liquidation_max_per_sweep_usd"]
    refused(e, SetLiquidationParams(ts_ns=ts(), market=M, liquidation_max_fee_ppm=2_000_000, **WHO),
            ResultCode.ADMIN_INVALID_VALUE, "liquidation_max_fee_ppm")
    refused(e, SetLiquidationParams(ts_ns=ts(), market=M, fund_unwind_limit_bps=0, **WHO),
            ResultCode.ADMIN_INVALID_VALUE, "fund_unwind_limit_bps")
    refused(e, SetLiquidationParams(ts_ns=ts(), market=M, **WHO), ResultCode.ADMIN_NO_CHANGE,
            "liquidation_fee_share_ppm")


def test_fund_floor_and_top_up_are_the_audited_forms_of_the_operator_commands(ts):
    e = venue(ts)
    events = e.submit([SetFundFloor(ts_ns=ts(), floor_micro=5_000_000, **WHO)])
    assert [type(x) for x in events] == [InsuranceFloorSet, AdminApplied]
    assert e.ledger()["insurance_floor_micro"] == 5_000_000
    events = e.submit([FundTopUp(ts_ns=ts(), account=0, amount_micro=7_000_000, **WHO)])
    assert [type(x) for x in events] == [FundDeposited, AdminApplied]
    assert e.ledger()["insurance_fund_micro"] == 7_000_000
    assert_money_conserved(e)
    assert [(x.field, x.old, x.new) for x in e.audit_log()] == [("floor_micro", "0", "5000000"),
                                                                 ("fund_cash_micro", "0", "7000000")]
    refused(e, SetFundFloor(ts_ns=ts(), floor_micro=-1, **WHO), ResultCode.ADMIN_INVALID_VALUE, "floor_micro")
    refused(e, FundTopUp(ts_ns=ts(), account=101, amount_micro=1, **WHO), ResultCode.ADMIN_INVALID_VALUE, "account")
    refused(e, FundTopUp(ts_ns=ts(), account=0, amount_micro=0, **WHO), ResultCode.ADMIN_INVALID_VALUE,
            "amount_micro")


def test_market_status_is_audited_and_admin_commands_pass_the_gate_of_a_halted_market(ts):
    e = venue(ts)
    e.submit([SetMarketStatus(ts_ns=ts(), market=M, status="halted", **WHO)])
    (r,) = e.submit([Place(ts_ns=ts(), account=101, market=M, side="sell", price="2.1432", size_lots=1)])
    assert r.code == ResultCode.MARKET_STATUS_FORBIDS
    (ev,) = e.submit([SetOpenInterestCap(ts_ns=ts(), market=M, open_interest_cap_lots=5, **WHO)])
    assert isinstance(ev, AdminApplied)  # the admin column of the permission table: always allowed
    refused(e, SetMarketStatus(ts_ns=ts(), market=M, status="halted", **WHO), ResultCode.ADMIN_NO_CHANGE, "status")
    e.submit([SetStatus(ts_ns=ts(), market=M, status="active")])
    assert e.market_params(M)["status"] == "active"


def test_pausing_trading_refuses_place_and_amend_but_not_cancel(ts):
    e = venue(ts)
    (acc, *_) = e.submit([Place(ts_ns=ts(), account=101, market=M, side="sell", price="2.1500", size_lots=5)])
    e.submit([SetPauses(ts_ns=ts(), market=M, paused=("trading",), **WHO)])
    (r,) = e.submit([Place(ts_ns=ts(), account=102, market=M, side="buy", price="2.1432", size_lots=1)])
    assert r.code == ResultCode.OPERATION_PAUSED
    events = e.submit([Cancel(ts_ns=ts(), account=101, order_id=acc.order_id)])
    assert not isinstance(events[0], Rejected)
    assert e.market_params(M)["paused"] == ["trading"]
    e.submit([SetPauses(ts_ns=ts(), market=M, paused=(), **WHO)])
    (acc, *_) = e.submit([Place(ts_ns=ts(), account=102, market=M, side="buy", price="2.1432", size_lots=1)])
    assert not isinstance(acc, Rejected)
    assert [(x.old, x.new) for x in e.audit_log()] == [("none", "trading"), ("trading", "none")]
    refused(e, SetPauses(ts_ns=ts(), market=M, paused=("naps",), **WHO), ResultCode.ADMIN_INVALID_VALUE, "paused")


def test_pausing_withdrawals_refuses_accounts_exposed_to_the_market(ts):
    e = venue(ts)
    e.submit([Place(ts_ns=ts(), account=101, market=M, side="sell", price="2.1432", size_lots=10),
              Place(ts_ns=ts(), account=102, market=M, side="buy", price="2.1432", size_lots=10)])
    e.submit([SetPauses(ts_ns=ts(), paused=("withdrawals",), **WHO)])  # every market
    (r,) = e.submit([Withdraw(ts_ns=ts(), account=101, amount_micro=1)])
    assert r.code == ResultCode.OPERATION_PAUSED
    (ok,) = e.submit([Withdraw(ts_ns=ts(), account=103, amount_micro=1)])  # no position, no orders
    assert not isinstance(ok, Rejected)


def test_pausing_funding_pays_nothing_for_the_paused_samples(ts):
    e = venue(ts)
    e.submit([Place(ts_ns=ts(), account=101, market=M, side="buy", price="2.2400", size_lots=2000),
              Place(ts_ns=ts(), account=102, market=M, side="sell", price="2.2450", size_lots=2000),
              Place(ts_ns=ts(), account=103, market=M, side="sell", price="2.2400", size_lots=1)])
    e.submit([SetPauses(ts_ns=T0 + 10 * SECOND, market=M, paused=("funding",), **WHO)])
    (paid,) = [x for x in e.submit([SetIndex(ts_ns=T0 + HOUR + 1, market=M, price="2.1432")])
               if isinstance(x, FundingPaid)]
    assert paid.rate_ppb == 0 and paid.paid_micro == 0 and paid.samples == 60
    assert_money_conserved(e)


def test_pausing_liquidation_defers_the_sweep(ts):
    e = venue(ts)
    e.submit([Deposit(ts_ns=ts(), account=104, amount_micro=43_000_000),
              Place(ts_ns=ts(), account=101, market=M, side="sell", price="2.1432", size_lots=100),
              Place(ts_ns=ts(), account=104, market=M, side="buy", price="2.1432", size_lots=100),
              SetIndex(ts_ns=ts(), market=M, price="1.9000")])  # 104 below maintenance
    e.submit([SetPauses(ts_ns=ts(), market=M, paused=("liquidation",), **WHO)])
    phases = [x.phase for x in e.submit([Liquidate(ts_ns=ts())]) if isinstance(x, LiquidationStep)]
    assert "deferred" in phases and "started" not in phases
    assert e.position_lots(104, 0) == 100
    e.submit([SetPauses(ts_ns=ts(), market=M, paused=(), **WHO)])
    phases = [x.phase for x in e.submit([Liquidate(ts_ns=ts())]) if isinstance(x, LiquidationStep)]
    assert "started" in phases
    assert_money_conserved(e)


def test_oracle_params_and_fix_suppression_are_recorded_for_the_feed(ts):
    e = venue(ts)
    assert e.oracle_params(M)["half_life_s"] == 6 * 3600
    e.submit([SetOracleParams(ts_ns=ts(), market=M, half_life_s=3 * 3600, max_hourly_move_ppm=5_000, **WHO)])
    assert e.oracle_params(M) | {} == {"half_life_s": 10_800, "max_hourly_move_ppm": 5_000,
                                       "fresh_max_age_s": 26 * 3600, "stale_after_s": 48 * 3600}
    refused(e, SetOracleParams(ts_ns=ts(), market=M, max_hourly_move_ppm=2_000_000, **WHO),
            ResultCode.ADMIN_INVALID_VALUE, "max_hourly_move_ppm")
    refused(e, SetOracleParams(ts_ns=ts(), market=M, fresh_max_age_s=50 * 3600, **WHO),
            ResultCode.ADMIN_INVALID_VALUE, "fresh_max_age_s")
    e.submit([SuppressFix(ts_ns=ts(), market=M, fix_date="2026-01-01", operator="ops", reason="one venue only")])
    assert e.suppressed_fixes(M) == ["2026-01-01"]
    refused(e, SuppressFix(ts_ns=ts(), market=M, fix_date="2026-13-01", **WHO), ResultCode.ADMIN_INVALID_VALUE,
            "fix_date")
    refused(e, SuppressFix(ts_ns=ts(), market=M, fix_date="2026-01-01", **WHO), ResultCode.ADMIN_NO_CHANGE,
            "fix_date")
    e.submit([SuppressFix(ts_ns=ts(), market=M, fix_date="2026-01-01", lift=True, **WHO)])
    assert e.suppressed_fixes(M) == []
    assert [x.field for x in e.audit_log()] == ["half_life_s", "max_hourly_move_ppm", "suppressed_fix",
                                                "suppressed_fix"]


def test_an_admin_command_obeys_the_clock_like_any_command(ts):
    e = venue(ts)
    t = ts()
    e.submit([Deposit(ts_ns=t, account=101, amount_micro=1)])
    cmd = SetOpenInterestCap(ts_ns=t - 5, market=M, open_interest_cap_lots=10, **WHO)
    before = e.state_hash(include_clock=False)
    (ev,) = e.submit([cmd])
    assert ev.code == ResultCode.TIMESTAMP_REGRESSION and ev.command == "set_open_interest_cap"
    assert e.state_hash(include_clock=False) == before and e.audit_log() == []
