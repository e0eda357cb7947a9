"""Admin `list_market`: a new market from a full spec on a running engine (issue 15). It trades, pays funding
and liquidates like a market of the markets file, leaves the old market's rows untouched, survives journal
replay and snapshot recovery with the same state hash, and an invalid spec is refused with its field named
and nothing changed. The new market A100-PERP: tick $0.0001 x 1 GPU-hour = 100 micro-USD per tick-lot, its
own insurance fund (account 1), tiers 5x up to $250k then 2x (maintenance 10% / 25%)."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from perp import layout as L
from perp.codes import ResultCode
from perp.commands import CancelAll, Deposit, ListMarket, Liquidate, Place, SetFundFloor, SetIndex, decode_command
from perp.engine import Engine
from perp.events import AdminApplied, Fill, FundingPaid, LiquidationStep, Rejected
from perp.markets import MarketSpec
from perp.sequencer import JournaledEngine, recover, recover_detailed
from risk.tiers import LeverageTier
from tests.helpers import SECOND, T0, assert_money_conserved

H100 = "H100-PERP"
A100 = "A100-PERP"
HOUR = 3600 * SECOND
WHO = {"operator": "ops", "reason": "launch A100"}
A100_SPEC = MarketSpec(
    symbol=A100, series="GPUM.A100.SXM.SPOT", tick_size_usd="0.0001", lot_gpu_hours="1", min_price_usd="0.0100",
    max_price_usd="10.0000", insurance_fund_account=1, fee_share_to_fund_ppm=200_000,
    tier=(LeverageTier(max_leverage=5, maintenance_margin_ppm=100_000, max_notional_usd=250_000),
          LeverageTier(max_leverage=2, maintenance_margin_ppm=250_000)))


def h100_venue(ts) -> Engine:
    """H100 at 2.1432 with 101 long 100 lots from 102 and a resting bid of 103's."""
    e = Engine()
    e.submit([SetIndex(ts_ns=ts(), market=H100, price="2.1432")]
             + [Deposit(ts_ns=ts(), account=a, amount_micro=10**9) for a in (101, 102, 103, 201, 202)]
             + [Place(ts_ns=ts(), account=102, market=H100, side="sell", price="2.1432", size_lots=100),
                Place(ts_ns=ts(), account=101, market=H100, side="buy", price="2.1432", size_lots=100),
                Place(ts_ns=ts(), account=103, market=H100, side="buy", price="2.1000", size_lots=50)])
    return e


def old_market_rows(e: Engine, m: int = 0) -> dict[str, np.ndarray]:
    st = e.state
    return {"spec": st.spec[m].copy(), "tiers": st.tiers[m].copy(), "levels": st.levels[m].copy(),
            "positions": st.position_lots[:, m].copy(), "cost": st.cost_basis_micro[:, m].copy(),
            "acct_mkt": st.acct_mkt[:, m].copy(), "open": st.accounts[:, L.AC_OPEN + m].copy()}


def test_a_listed_market_trades_pays_funding_and_liquidates_with_money_conserved(ts):
    e = h100_venue(ts)
    before = old_market_rows(e)
    mkt_before = e.state.mkt[0].copy()
    (ev,) = [x for x in e.submit([ListMarket(ts_ns=ts(), spec=A100_SPEC, **WHO)]) if isinstance(x, AdminApplied)]
    assert ev.command == "list_market" and ev.market == A100 and not ev.pending and ev.effective_ts_ns == ev.ts_ns
    assert e.market_index(A100) == 1 and e.specs[1] == A100_SPEC and e.state.mkt.shape[0] == 2
    assert [(a.field, a.market) for a in e.audit_log()] == [("spec", A100), ("status", A100)]
    assert e.market_params(A100)["tiers"][0]["max_leverage"] == 5
    funds = e.ledger()["insurance_funds_micro"]
    assert set(funds) == {0, 1} and funds[1] == 0  # the new market's own fund (0 has H100's fee share)
    # the old market: every row it had, unchanged (its mark moves with the clock only)
    now = old_market_rows(e)
    for name, arr in before.items():
        got = now[name][: arr.shape[0]] if name != "levels" else now[name][:, : arr.shape[1]]
        assert np.array_equal(got, arr), name
    assert np.array_equal(e.state.mkt[0, [L.M_BEST_BID, L.M_BEST_ASK, L.M_OPEN_INTEREST]],
                          mkt_before[[L.M_BEST_BID, L.M_BEST_ASK, L.M_OPEN_INTEREST]])

    # trade on it: 202 buys 1000 lots from 201 at 1.2000; 104 goes long 100 lots with $25
    out = e.submit([SetIndex(ts_ns=ts(), market=A100, price="1.2000"),
                    Deposit(ts_ns=ts(), account=104, amount_micro=25_000_000),
                    Place(ts_ns=ts(), account=201, market=A100, side="sell", price="1.2000", size_lots=1100),
                    Place(ts_ns=ts(), account=202, market=A100, side="buy", price="1.2000", size_lots=1000),
                    Place(ts_ns=ts(), account=104, market=A100, side="buy", price="1.2000", size_lots=100)])
    fills = [x for x in out if isinstance(x, Fill)]
    assert {x.market for x in fills} == {A100} and sum(x.size_lots for x in fills if x.account == 201) == 1100
    assert e.position_lots(202, 1) == 1000 and e.position_lots(201, 1) == -1100 and e.position_lots(104, 1) == 100
    assert e.position_lots(101, 0) == 100  # H100 positions untouched
    assert_money_conserved(e)

    # funding on it: $1,250 bid 4% above the index all hour (the impact notional is $1,000) -> the longs
    # pay the capped rate at the hour
    e.submit([Place(ts_ns=ts(), account=202, market=A100, side="buy", price="1.2500", size_lots=1000),
              Place(ts_ns=ts(), account=201, market=A100, side="sell", price="1.2550", size_lots=1000)])
    out = e.submit([SetIndex(ts_ns=T0 + HOUR + 1, market=A100, price="1.2000")])
    paid = {x.market: x for x in out if isinstance(x, FundingPaid)}
    assert set(paid) == {H100, A100}
    assert paid[A100].samples == 60 and paid[A100].rate_ppb == A100_SPEC.funding_cap_ppb
    # 1,100 lots long x 12,000 ticks x 100 micro x 5e-4 = 660,000 micro paid by the longs
    assert paid[A100].paid_micro == 1100 * 12_000 * 100 * 500_000 // 10**9
    fp = e.funding_positions(np.array([201, 202]))
    assert fp.funding_micro[1, 1] == -600_000 and fp.funding_micro[0, 1] > 0 and not fp.funding_micro[:, 0].any()
    assert_money_conserved(e)

    # liquidation on it: the funding orders cancelled, the index falls to 1.0000; 104 (equity ~ $5 < 10% of
    # $100) is closed into 203's bid at 0.9950 (above its bankruptcy price, ~0.951)
    e.submit([CancelAll(ts_ns=T0 + HOUR + 2, account=a, market=A100) for a in (201, 202)]
             + [Deposit(ts_ns=T0 + HOUR + 3, account=203, amount_micro=10**9),
                SetIndex(ts_ns=T0 + HOUR + 4, market=A100, price="1.0000"),
                Place(ts_ns=T0 + HOUR + 5, account=203, market=A100, side="buy", price="0.9950", size_lots=100)])
    assert e.account(104).equity_micro < e.account(104).maintenance_margin_micro
    out = e.submit([Liquidate(ts_ns=T0 + HOUR + 6)])
    steps = [x for x in out if isinstance(x, LiquidationStep)]
    assert [x.account for x in steps if x.phase == "started"] == [104]
    assert [(x.phase, x.market, x.filled) for x in steps if x.phase == "order"] == [("order", A100, 100)]
    (fee,) = [x.amount_micro for x in steps if x.phase == "fee" and x.market == A100]
    assert e.position_lots(104, 1) == 0 and e.position_lots(203, 1) == 100
    # the liquidation fee (10% of the closed part's maintenance margin, $1.03) went to A100's own fund
    assert fee == 1_030_000 and e.ledger()["insurance_funds_micro"][1] >= fee
    assert e.position_lots(101, 0) == 100
    assert_money_conserved(e)


def test_a_listed_market_shares_the_floor_of_the_fund_it_names(ts):
    e = h100_venue(ts)
    e.submit([SetFundFloor(ts_ns=ts(), floor_micro=5_000_000, **WHO)])
    spec = msgspec.structs.replace(A100_SPEC, insurance_fund_account=0)
    e.submit([ListMarket(ts_ns=ts(), spec=spec, status="post_only", **WHO)])
    assert e.market_params(A100)["insurance_floor_micro"] == 5_000_000
    assert e.market_params(A100)["status"] == "post_only"


def session(t0: int = T0) -> list:
    spec_json = msgspec.json.encode(ListMarket(ts_ns=t0 + 6, spec=A100_SPEC, **WHO))
    return [SetIndex(ts_ns=t0, market=H100, price="2.1432"),
            Deposit(ts_ns=t0 + 1, account=101, amount_micro=10**9),
            Deposit(ts_ns=t0 + 2, account=102, amount_micro=10**9),
            Place(ts_ns=t0 + 3, account=101, market=H100, side="buy", price="2.1400", size_lots=500),
            Place(ts_ns=t0 + 4, account=102, market=H100, side="sell", price="2.1400", size_lots=200),
            decode_command(spec_json),  # the JSON form an operator sends
            SetIndex(ts_ns=t0 + 7, market=A100, price="1.2000"),
            Place(ts_ns=t0 + 8, account=101, market=A100, side="sell", price="1.2000", size_lots=300),
            Place(ts_ns=t0 + 9, account=102, market=A100, side="buy", price="1.2010", size_lots=120),
            SetIndex(ts_ns=t0 + HOUR + 1, market=A100, price="1.2100"),
            Place(ts_ns=t0 + HOUR + 2, account=102, market=A100, side="buy", price="1.2000", size_lots=80)]


def test_journal_replay_and_snapshot_recovery_reproduce_a_listing_exactly(tmp_path):
    jpath, sdir = tmp_path / "venue.journal", tmp_path / "snaps"
    cmds = session()
    j = JournaledEngine.open(jpath, snapshot_dir=sdir)
    for c in cmds[:5]:
        j.submit_rows(j.engine.encode([c]))
    snap_before = j.snapshot()  # before the listing: recovery replays it
    for c in cmds[5:8]:
        j.submit_rows(j.engine.encode([c]))
    snap_after = j.snapshot()  # after it: the snapshot holds two markets
    for c in cmds[8:]:
        j.submit_rows(j.engine.encode([c]))
    live = j.engine
    j.close()
    assert live.position_lots(102, 1) == 200 and live.market_index(A100) == 1
    again = recover(jpath)
    assert again.state_hash() == live.state_hash() and again.audit_log() == live.audit_log()
    for snap in (snap_before, snap_after):
        rec = recover_detailed(jpath, snapshot=snap)
        assert rec.engine.state_hash() == live.state_hash(), snap
        assert rec.engine.market_index(A100) == 1 and rec.engine.specs[1] == A100_SPEC
    # the venue restarted on its data (what `perp serve` does at start) takes orders on the new market
    j2 = JournaledEngine.open(jpath, snapshot_dir=sdir)
    assert j2.engine.state_hash() == live.state_hash()
    out = j2.engine.decode(j2.submit_rows(j2.engine.encode(
        [Place(ts_ns=T0 + HOUR + 3, account=102, market=A100, side="buy", price="1.2000", size_lots=10)])))
    assert [x.size_lots for x in out if isinstance(x, Fill) and x.account == 102] == [10]  # 101 still asks 100 lots
    j2.close()


def test_the_state_hash_covers_the_listed_market():
    a, b, plain = Engine(), Engine(), Engine()
    base = [SetIndex(ts_ns=T0, market=H100, price="2.1432")]
    for e in (a, b, plain):
        e.submit(base)
    a.submit([ListMarket(ts_ns=T0 + 1, spec=A100_SPEC, **WHO)])
    b.submit([ListMarket(ts_ns=T0 + 1, spec=msgspec.structs.replace(A100_SPEC, taker_fee_ppm=600), **WHO)])
    assert len({a.state_hash(), b.state_hash(), plain.state_hash()}) == 3
    same = Engine()
    same.submit(base + [ListMarket(ts_ns=T0 + 1, spec=A100_SPEC, **WHO)])
    assert same.state_hash() == a.state_hash()


def _bad(**changes) -> MarketSpec:
    return msgspec.structs.replace(A100_SPEC, **changes)


@pytest.mark.parametrize("cmd_kw, code, field", [
    ({"spec": _bad(symbol=H100)}, ResultCode.ADMIN_INVALID_VALUE, "spec.symbol"),
    ({"spec": _bad(symbol="A100 PERP")}, ResultCode.ADMIN_INVALID_VALUE, "spec.symbol"),
    ({"spec": _bad(insurance_fund_account=16)}, ResultCode.ADMIN_INVALID_VALUE, "spec.insurance_fund_account"),
    ({"spec": _bad(insurance_fund_account=-1)}, ResultCode.ADMIN_INVALID_VALUE, "spec.insurance_fund_account"),
    ({"spec": _bad(tier=())}, ResultCode.ADMIN_INVALID_VALUE, "spec.tier"),
    ({"spec": _bad(tier=(LeverageTier(max_leverage=3, maintenance_margin_ppm=100_000, max_notional_usd=1000),
                         LeverageTier(max_leverage=5, maintenance_margin_ppm=100_000)))},
     None, "spec.tier[1].max_leverage"),
    ({"spec": _bad(tier=(LeverageTier(max_leverage=5, maintenance_margin_ppm=300_000),))},
     None, "spec.tier[0].maintenance_margin_ppm"),
    ({"spec": _bad(default_leverage=10)}, ResultCode.ADMIN_INVALID_VALUE, "spec.default_leverage"),
    ({"spec": _bad(tick_size_usd="0.000001", lot_gpu_hours="0.5")}, ResultCode.ADMIN_INVALID_VALUE,
     "spec.tick_size_usd"),
    ({"spec": _bad(min_price_usd="11.0000")}, ResultCode.ADMIN_INVALID_VALUE, "spec.min_price_usd"),
    ({"spec": _bad(funding_cap_ppb=2_000_000_000)}, ResultCode.ADMIN_INVALID_VALUE, "spec.funding_cap_ppb"),
    ({"spec": _bad(maker_fee_ppm=-600)}, ResultCode.ADMIN_INVALID_VALUE, "spec.maker_fee_ppm"),
    ({"spec": _bad(max_order_lots=10**12)}, ResultCode.ADMIN_INVALID_VALUE, "spec.max_order_lots"),
    # values whose scaled spec row does not fit int64 (they once raised in the batch, after the journal had them)
    ({"spec": _bad(withdraw_floor_ppm=2**63)}, ResultCode.ADMIN_INVALID_VALUE, "spec.withdraw_floor_ppm"),
    ({"spec": _bad(liquidation_partial_above_usd=10**13)}, ResultCode.ADMIN_INVALID_VALUE,
     "spec.liquidation_partial_above_usd"),
    ({"spec": _bad(liquidation_cooldown_s=10**10)}, ResultCode.ADMIN_INVALID_VALUE, "spec.liquidation_cooldown_s"),
    ({"spec": _bad(impact_notional_usd="1e30")}, ResultCode.ADMIN_INVALID_VALUE, "spec.impact_notional_usd"),
    ({"spec": A100_SPEC, "operator": " "}, ResultCode.ADMIN_BAD_IDENTITY, "operator"),
])
def test_an_invalid_listing_is_refused_with_its_field_and_changes_nothing(ts, cmd_kw, code, field):
    e = h100_venue(ts)
    before = e.state_hash(include_clock=False)
    shapes = [a.shape for a in e.state]
    kw = {**WHO, **cmd_kw}
    (ev,) = e.submit([ListMarket(ts_ns=ts(), **kw)])
    assert isinstance(ev, Rejected), ev
    why = e.rejection(ev.seq)
    assert why.field == field, why
    if code is not None:
        assert ev.code == code, why
    else:  # a tier rule: risk.tiers' own code (2001-2012)
        assert 2001 <= ev.code <= 2012, why
    assert e.state_hash(include_clock=False) == before and e.audit_log() == []
    assert [a.shape for a in e.state] == shapes and len(e.specs) == 1 and A100 not in e.encoder.market_index
    with pytest.raises(Exception):
        e.encode([Place(ts_ns=ts(), account=101, market=A100, side="buy", price="1.0000", size_lots=1)])
