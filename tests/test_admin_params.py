"""Admin commands on the default H100-PERP market: funding parameters at the next funding hour, tiers at a
stated time, the what-if on a hand-built book, the audit log and market_params (issue 15, docs/operations.md).

Numbers: index 2.1432 = 21,432 ticks, 1 tick x 1 lot = 100 micro-USD, launch tiers 5x (10% MM) up to
$250k, funding hour = 3,600 s."""

from __future__ import annotations

import msgspec
import pytest

from perp.admin import AdminRejected
from perp.codes import ResultCode
from perp.commands import Deposit, Place, SetFundingParams, SetIndex, SetLiquidationParams, SetOpenInterestCap, SetTiers
from perp.engine import Engine
from perp.events import AdminApplied, AdminEffective, FundingPaid, Rejected
from risk.errors import RiskCode
from risk.tiers import LeverageTier
from tests.helpers import SECOND, T0, Clock, assert_money_conserved

M = "H100-PERP"
HOUR = 3600 * SECOND
WHO = {"operator": "alice@ops", "reason": "launch review"}


def fresh() -> Engine:
    e = Engine()
    e.submit([SetIndex(ts_ns=T0, market=M, price="2.1432")])
    return e


def funding(ts_ns: int, cap: int, clamp: int, **kw) -> SetFundingParams:
    return SetFundingParams(ts_ns=ts_ns, market=M, cap_ppb=cap, clamp_ppb=clamp, **(WHO | kw))


def tiers_cmd(ts_ns: int, tiers, **kw) -> SetTiers:
    return SetTiers(ts_ns=ts_ns, market=M, tiers=tuple(tiers), **(WHO | kw))


TIGHT = (LeverageTier(max_leverage=5, maintenance_margin_ppm=100_000, max_notional_usd=100),
         LeverageTier(max_leverage=2, maintenance_margin_ppm=250_000))


def test_funding_cap_change_is_pending_until_the_next_funding_hour_and_the_hour_in_progress_keeps_the_old_cap(ts):
    e = fresh()
    (ev,) = e.submit([funding(T0 + 10 * SECOND, 100_000, 20_000)])
    assert isinstance(ev, AdminApplied) and ev.pending and ev.effective_ts_ns == T0 + HOUR
    p = e.market_params(M)
    assert p["funding_cap_ppb"] == 500_000 and p["funding_clamp_ppb"] == 50_000  # still the old values
    assert p["pending"] == [{"seq": 2, "command": "set_funding_params", "effective_ts_ns": T0 + HOUR,
                             "changes": {"funding_cap_ppb": 100_000, "funding_clamp_ppb": 20_000}}]
    assert int(e.state.spec[0, 19]) == 500_000  # S_CAP_PPB in the kernel row: unchanged before the hour
    # the command whose clock step pays hour T0+1h: that hour under the old cap, then the change takes effect
    events = e.submit([Deposit(ts_ns=T0 + HOUR + 1, account=101, amount_micro=1_000_000)])
    kinds = [type(x).__name__ for x in events]
    assert kinds.index("FundingPaid") < kinds.index("AdminEffective")
    (eff,) = [x for x in events if isinstance(x, AdminEffective)]
    assert eff.origin_seq == 2 and eff.effective_ts_ns == T0 + HOUR and eff.command == "set_funding_params"
    p = e.market_params(M)
    assert p["funding_cap_ppb"] == 100_000 and p["funding_clamp_ppb"] == 20_000 and p["pending"] == []
    assert int(e.state.spec[0, 19]) == 100_000


def rich_book(ts) -> Engine:
    """A one-sided rich book: bids at +4.9% (inside the 5% band) for the impact notional on both sides, so the
    premium is large and every hour pays the cap; no admin change yet."""
    e = fresh()
    e.submit([Deposit(ts_ns=ts(), account=a, amount_micro=10**12) for a in (101, 102)])
    e.submit([Place(ts_ns=ts(), account=101, market=M, side="buy", price="2.2400", size_lots=2000),
              Place(ts_ns=ts(), account=102, market=M, side="sell", price="2.2450", size_lots=2000),
              Place(ts_ns=ts(), account=101, market=M, side="buy", price="2.1432", size_lots=1),
              Place(ts_ns=ts(), account=102, market=M, side="sell", price="2.1432", size_lots=1)])
    return e


def test_the_new_funding_cap_bounds_the_first_hour_that_starts_after_it(ts):
    """A one-sided rich book (bids far above the index) pays the cap: the old cap's hour, then the new one's."""
    e = rich_book(ts)
    e.submit([funding(T0 + 30 * SECOND, 100_000, 50_000)])
    paid = [x for x in e.submit([SetIndex(ts_ns=T0 + HOUR + 1, market=M, price="2.1432")]) if isinstance(x, FundingPaid)]
    assert paid[0].rate_ppb == 500_000  # the hour in progress when the change was made: the old cap binds
    paid = [x for x in e.submit([SetIndex(ts_ns=T0 + 2 * HOUR + 1, market=M, price="2.1432")])
            if isinstance(x, FundingPaid)]
    assert paid[0].rate_ppb == 100_000  # the first hour under the new cap
    assert_money_conserved(e)


def test_the_new_funding_cap_bounds_the_second_hour_when_one_commands_clock_step_pays_two_hours(ts):
    """Cap cut at 00:00:30 (effective 01:00), next command at 02:00 -- exactly max_clock_step_s past the next
    funding hour, so its step pays 00:00-01:00 and 01:00-02:00: the first under the old cap, the second (it
    starts at the effective time) under the new one, as if a command at 01:00 had paid the first."""
    e = rich_book(ts)
    e.submit([funding(T0 + 30 * SECOND, 100_000, 50_000)])
    events = e.submit([SetIndex(ts_ns=T0 + 2 * HOUR, market=M, price="2.1432")])
    assert not any(isinstance(x, Rejected) for x in events)
    at = [i for i, x in enumerate(events) if isinstance(x, (FundingPaid, AdminEffective))]
    assert [type(events[i]).__name__ for i in at] == ["FundingPaid", "AdminEffective", "FundingPaid"]
    first, second = [x for x in events if isinstance(x, FundingPaid)]
    assert (first.ts_ns, first.rate_ppb) == (T0 + HOUR, 500_000)  # the hour in progress at the change: old cap
    assert (second.ts_ns, second.rate_ppb) == (T0 + 2 * HOUR, 100_000)  # the first hour under the new cap
    assert e.market_params(M)["funding_cap_ppb"] == 100_000 and e.market_params(M)["pending"] == []
    assert_money_conserved(e)
    # the same hours paid by two commands, one per hour: the same funding to the micro-dollar
    ref = rich_book(Clock())
    ref.submit([funding(T0 + 30 * SECOND, 100_000, 50_000)])
    ref.submit([SetIndex(ts_ns=T0 + HOUR, market=M, price="2.1432")])
    ref.submit([SetIndex(ts_ns=T0 + 2 * HOUR, market=M, price="2.1432")])
    got, want = e.funding_positions(), ref.funding_positions()
    assert (got.funding_micro == want.funding_micro).all() and got.funding_micro.any()
    assert e.ledger() == ref.ledger()


def test_a_refused_command_whose_step_would_cross_a_pending_funding_change_changes_nothing(ts):
    """The split of a two-hour step at the change's time belongs to the command: refused, it is undone (no
    hour paid, the clock where it was, the change pending); a command too far ahead is refused as before
    (the split never makes a step short enough to pass); the next accepted command crosses the hour."""
    e = rich_book(ts)
    e.submit([funding(T0 + 30 * SECOND, 100_000, 50_000)])
    before, clock = e.state_hash(include_clock=False), e.last_ts_ns
    step_s = e.specs[0].max_clock_step_s
    for cmd in (Deposit(ts_ns=T0 + 2 * HOUR, account=5, amount_micro=1),  # a reserved account: refused
                SetIndex(ts_ns=T0 + HOUR + step_s * SECOND + 1, market=M, price="2.1432")):  # too far ahead
        (ev,) = e.submit([cmd])
        assert isinstance(ev, Rejected), ev
        assert e.state_hash(include_clock=False) == before and e.last_ts_ns == clock
        assert len(e.market_params(M)["pending"]) == 1 and e.market_params(M)["funding_cap_ppb"] == 500_000
    paid = [x for x in e.submit([Deposit(ts_ns=T0 + 2 * HOUR, account=101, amount_micro=1)])
            if isinstance(x, FundingPaid)]
    assert [p.rate_ppb for p in paid] == [500_000, 100_000]
    assert_money_conserved(e)


def test_set_funding_params_rejects_each_invalid_value_naming_the_field_and_changes_nothing():
    e = fresh()
    before = e.state_hash(include_clock=False)
    cases = [
        (funding(T0 + 1, -1, 0), "cap_ppb", ResultCode.ADMIN_INVALID_VALUE),
        (funding(T0 + 1, 1_000_000_001, 0), "cap_ppb", ResultCode.ADMIN_INVALID_VALUE),
        (funding(T0 + 1, 500_000, -5), "clamp_ppb", ResultCode.ADMIN_INVALID_VALUE),
        (funding(T0 + 1, 500_000, 50_000), "cap_ppb", ResultCode.ADMIN_NO_CHANGE),
        (funding(T0 + 1, 100_000, 50_000, operator=""), "operator", ResultCode.ADMIN_BAD_IDENTITY),
        (funding(T0 + 1, 100_000, 50_000, reason=" "), "reason", ResultCode.ADMIN_BAD_IDENTITY),
        (funding(T0 + 1, 100_000, 50_000, reason="x" * 501), "reason", ResultCode.ADMIN_BAD_IDENTITY),
        (funding(T0 + 1, 100_000, 50_000, operator="bob\n"), "operator", ResultCode.ADMIN_BAD_IDENTITY),
    ]
    for cmd, field, code in cases:
        seq = e.seq
        (ev,) = e.submit([cmd])
        assert isinstance(ev, Rejected) and ev.code == code and ev.command == "set_funding_params", (field, ev)
        why = e.rejection(ev.seq)
        assert why.field == field and field.split("_")[0] in why.message, why
        assert e.seq == seq + 1  # only the sequence number moved
        assert e.state_hash(include_clock=False) == before and e.audit_log() == []
    assert e.market_params(M)["pending"] == []
    # the check without submitting says the same
    assert e.check_admin(funding(T0 + 1, -1, 0)).field == "cap_ppb"
    assert e.check_admin(funding(T0 + 1, 100_000, 0)) is None


@pytest.mark.parametrize("cmd, field", [
    # each passes the command's int64 type and validate_spec's old "not negative", and overflowed int64 once
    # scaled into the spec row (x 1e9 ns, x 1e6 micro-USD): the batch raised after the spec in force was replaced
    (SetLiquidationParams(ts_ns=T0 + 1, market=M, liquidation_cooldown_s=10**10, **WHO), "liquidation_cooldown_s"),
    (SetLiquidationParams(ts_ns=T0 + 1, market=M, liquidation_partial_above_usd=10**13, **WHO),
     "liquidation_partial_above_usd"),
    (SetLiquidationParams(ts_ns=T0 + 1, market=M, liquidation_buffer_ppm=2_000_000, **WHO), "liquidation_buffer_ppm"),
    (SetOpenInterestCap(ts_ns=T0 + 1, market=M, open_interest_cap_lots=2**62, **WHO), "open_interest_cap_lots"),
])
def test_a_value_beyond_its_int64_safe_bound_is_refused_naming_the_field_and_changes_nothing(cmd, field):
    e = fresh()
    before = e.state_hash(include_clock=False)
    params, row = e.market_params(M), e.state.spec[0].copy()
    assert e.check_admin(cmd).code == ResultCode.ADMIN_INVALID_VALUE
    (ev,) = e.submit([cmd])
    assert isinstance(ev, Rejected) and ev.code == ResultCode.ADMIN_INVALID_VALUE, ev
    assert e.rejection(ev.seq).field == field and field in e.rejection(ev.seq).message
    assert e.state_hash(include_clock=False) == before and e.audit_log() == []
    assert e.market_params(M) == params and (e.state.spec[0] == row).all()


def test_set_spec_builds_the_rows_before_it_replaces_the_spec_in_force():
    from perp.admin import set_spec
    from perp.markets import MarketSpecError

    e = fresh()
    spec, row = e.specs[0], e.state.spec[0].copy()
    with pytest.raises(MarketSpecError, match="liquidation_cooldown_s"):
        set_spec(e, 0, msgspec.structs.replace(spec, liquidation_cooldown_s=10**10))
    assert e.specs[0] is spec and e.admin.specs[0] is spec and (e.state.spec[0] == row).all()


def test_a_cap_below_the_interest_leg_is_refused_by_the_spec_loaders_rule():
    e = Engine()
    spec = msgspec.structs.replace(e.specs[0], funding_interest_ppb=10_000)
    from perp.markets import MarketsConfig

    e = Engine(MarketsConfig(market=[spec]))
    (ev,) = e.submit([funding(T0, 5_000, 0)])
    assert ev.code == ResultCode.ADMIN_INVALID_VALUE and "funding_interest_ppb" in e.rejection(ev.seq).message


def _book(ts) -> Engine:
    """Four longs of 100 lots bought at 2.1432 from account 200, then the index drops to 1.9000:
    each long loses 100 x 2,432 ticks x 100 = 24,320,000 and paid a taker fee of 107,160; notional at the
    mark 100 x 19,000 x 100 = 190,000,000. At the launch tiers (5x, 10%): MM 19,000,000, IM 38,000,000.
    At TIGHT (5x/10% up to $100, then 2x/25%): MM 47,500,000 - 100 x 150,000 = 32,500,000, IM 95,000,000."""
    e = fresh()
    deposits = {101: 25_000_000 + 24_427_160,   # equity 25.0M: above MM now, below MM at TIGHT -> mm
                102: 60_000_000 + 24_427_160,   # equity 60.0M: above IM now, below IM at TIGHT -> im
                103: 150_000_000 + 24_427_160,  # equity 150M: fine at both
                104: 42_971_160}                # equity 18.544M: already below MM now -> not counted
    e.submit([Deposit(ts_ns=ts(), account=a, amount_micro=d) for a, d in deposits.items()]
             + [Deposit(ts_ns=ts(), account=200, amount_micro=10**10)])
    e.submit([Place(ts_ns=ts(), account=200, market=M, side="sell", price="2.1432", size_lots=400)])
    for a in deposits:
        (acc, *_) = e.submit([Place(ts_ns=ts(), account=a, market=M, side="buy", price="2.1432", size_lots=100)])
        assert not isinstance(acc, Rejected), acc
    e.submit([SetIndex(ts_ns=ts(), market=M, price="1.9000")])
    equities = {a: e.account(a).equity_micro for a in deposits}
    assert equities == {101: 25_000_000, 102: 60_000_000, 103: 150_000_000, 104: 18_544_000}
    assert e.account(101).maintenance_margin_micro == 19_000_000
    return e


def test_what_if_counts_the_accounts_a_tier_change_would_put_below_margin_on_a_hand_built_book(ts):
    e = _book(ts)
    before = e.state_hash()
    wi = e.what_if_tiers(M, TIGHT)
    assert (wi.accounts_below_mm, wi.notional_below_mm_micro) == (1, 190_000_000)  # account 101
    assert (wi.accounts_below_im, wi.notional_below_im_micro) == (1, 190_000_000)  # account 102
    assert wi.effective_ts_ns == T0 + HOUR
    assert e.state_hash() == before  # nothing changed
    # loosening hurts nobody; dicts are accepted as well as structs
    loose = [{"max_notional_usd": None, "max_leverage": 5, "maintenance_margin_ppm": 50_000}]
    wi = e.what_if_tiers(M, loose)
    assert (wi.accounts_below_mm, wi.accounts_below_im) == (0, 0)


def test_set_tiers_with_a_nonzero_what_if_needs_confirm_then_applies_at_the_stated_time(ts):
    e = _book(ts)
    t = ts()
    (ev,) = e.submit([tiers_cmd(t, TIGHT, effective_ts_ns=t + 60 * SECOND)])
    assert isinstance(ev, Rejected) and ev.code == ResultCode.ADMIN_CONFIRM_REQUIRED
    why = e.rejection(ev.seq)
    assert why.field == "confirm" and why.what_if.accounts_below_mm == 1 and why.what_if.accounts_below_im == 1
    assert e.audit_log() == []
    (ev,) = e.submit([tiers_cmd(ts(), TIGHT, effective_ts_ns=t + 60 * SECOND, confirm=True)])
    assert isinstance(ev, AdminApplied) and ev.pending and ev.effective_ts_ns == t + 60 * SECOND
    assert e.account(101).maintenance_margin_micro == 19_000_000  # not yet
    # a command before the effective time still runs under the old tiers
    e.submit([Deposit(ts_ns=t + 59 * SECOND, account=300, amount_micro=1)])
    assert e.account(101).maintenance_margin_micro == 19_000_000
    events = e.submit([Deposit(ts_ns=t + 60 * SECOND, account=300, amount_micro=1)])
    assert isinstance(events[0], AdminEffective)  # applied before the command at the effective time
    assert e.account(101).maintenance_margin_micro == 32_500_000
    assert e.market_params(M)["tiers"] == [msgspec.to_builtins(x) for x in TIGHT]
    entries = e.audit_log(M)
    assert [(x.command, x.field, x.operator, x.reason, x.effective_ts_ns) for x in entries] == [
        ("set_tiers", "tiers", "alice@ops", "launch review", t + 60 * SECOND)]
    assert '"max_leverage":2' in entries[0].new and '"max_notional_usd":250000' in entries[0].old


def test_set_tiers_effective_zero_means_the_next_funding_hour(ts):
    e = fresh()
    loose = [LeverageTier(max_leverage=5, maintenance_margin_ppm=50_000)]
    (ev,) = e.submit([tiers_cmd(T0 + 5 * SECOND, loose)])
    assert ev.effective_ts_ns == T0 + HOUR and ev.pending
    assert e.market_params(M)["pending"][0]["effective_ts_ns"] == T0 + HOUR


def test_a_refused_command_at_the_effective_time_leaves_the_pending_change_pending(ts):
    e = fresh()
    loose = [LeverageTier(max_leverage=5, maintenance_margin_ppm=50_000)]
    e.submit([tiers_cmd(T0 + 5 * SECOND, loose, effective_ts_ns=T0 + 10 * SECOND)])
    before = e.state_hash(include_clock=False)
    (ev,) = e.submit([Deposit(ts_ns=T0 + 10 * SECOND, account=5, amount_micro=1)])  # reserved account: refused
    assert isinstance(ev, Rejected)
    assert e.state_hash(include_clock=False) == before and len(e.market_params(M)["pending"]) == 1
    events = e.submit([Deposit(ts_ns=T0 + 11 * SECOND, account=101, amount_micro=1)])
    assert isinstance(events[0], AdminEffective) and e.market_params(M)["pending"] == []


def test_set_tiers_rejects_each_invalid_table_naming_the_tier_field(ts):
    e = fresh()
    bad = [
        ([], RiskCode.TIER_EMPTY, "tier"),
        ([LeverageTier(5, 100_000, 1000), LeverageTier(4, 125_000, 1000), LeverageTier(2, 250_000)],
         RiskCode.TIER_BOUNDS_NOT_INCREASING, "tiers[1].max_notional_usd"),
        ([LeverageTier(5, 200_000)], RiskCode.TIER_MAINTENANCE_NOT_BELOW_INITIAL, "tiers[0].maintenance_margin_ppm"),
        ([LeverageTier(5, 100_000, 1000), LeverageTier(10, 40_000)], RiskCode.TIER_LEVERAGE_RISES,
         "tiers[1].max_leverage"),
        ([LeverageTier(5, 100_000, 1000)], RiskCode.TIER_LAST_NOT_OPEN_ENDED, "tiers[0].max_notional_usd"),
        ([LeverageTier(0, 100_000)], RiskCode.TIER_NOT_POSITIVE, "tiers[0].max_leverage"),
    ]
    before = e.state_hash(include_clock=False)
    for tiers, code, field in bad:
        (ev,) = e.submit([tiers_cmd(ts(), tiers, confirm=True)])
        assert isinstance(ev, Rejected) and ev.code == code, (field, ev)
        assert e.rejection(ev.seq).field == field
        assert e.state_hash(include_clock=False) == before
    # the spec loader's own rule: default leverage 5 above the first tier's 3x
    (ev,) = e.submit([tiers_cmd(ts(), [LeverageTier(3, 100_000)], confirm=True)])
    assert ev.code == ResultCode.ADMIN_INVALID_VALUE and "default_leverage" in e.rejection(ev.seq).message
    with pytest.raises(AdminRejected) as refused:  # the what-if refuses it the same way (one validation)
        e.what_if_tiers(M, [LeverageTier(3, 100_000)])
    assert (refused.value.error.code, refused.value.error.field) == (ev.code, e.rejection(ev.seq).field)
    (ev,) = e.submit([tiers_cmd(ts(), [LeverageTier(5, 50_000)], effective_ts_ns=T0 - 1)])
    assert ev.code == ResultCode.ADMIN_BAD_EFFECTIVE_TIME and e.rejection(ev.seq).field == "effective_ts_ns"
    with pytest.raises(ValueError, match="tiers\\[0\\]|tier"):
        e.what_if_tiers(M, [LeverageTier(5, 200_000)])
    assert e.state_hash(include_clock=False) == before and e.audit_log() == []


def test_audit_log_records_who_when_what_old_new_why_and_when_effective(ts):
    e = fresh()
    e.submit([funding(T0 + 7, 250_000, 50_000, operator="carol", reason="lower the cap")])
    (entry,) = e.audit_log()
    assert entry == type(entry)(seq=2, ts_ns=T0 + 7, operator="carol", command="set_funding_params", market=M,
                                field="cap_ppb", old="500000", new="250000", reason="lower the cap",
                                effective_ts_ns=T0 + HOUR)
    assert e.audit_log("OTHER-PERP") == []
