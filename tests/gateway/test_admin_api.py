"""The admin API over the gateway (gateway/admin.py): every admin method answers an admin key with
engine state consistent with one sequence number, and refuses `read` and `trade` keys (4107)."""

from __future__ import annotations

import pytest

from gateway.client import GatewayError
from gateway.errors import GatewayCode as G
from perp.commands import FundDeposit
from tests.gateway.conftest import ALICE, BOB, MARKET, run, venue

ADMIN_QUERIES = ("admin.overview", "admin.fund_history", "admin.accounts_at_risk")
# valid params for every admin method (params are parsed before the permission is checked)
VALID_PARAMS = {"admin.deposit": {"account": BOB, "amount_micro": 1}} | {m: {} for m in ADMIN_QUERIES}


@pytest.mark.parametrize("who", ["alice", "reader"])
def test_every_admin_method_refuses_a_key_without_the_admin_permission(tmp_path, who):
    from gateway.protocol import METHODS

    admin_methods = sorted(m for m, (_, perm) in METHODS.items() if perm == "admin")
    assert set(admin_methods) == set(VALID_PARAMS)

    async def body():
        async with venue(tmp_path) as v, v.client(who) as c:
            seq = v.gw.engine.seq
            for method in admin_methods:
                with pytest.raises(GatewayError) as exc:
                    await c.request(method, VALID_PARAMS[method])
                assert exc.value.code == G.PERMISSION_DENIED, method
            assert v.gw.engine.seq == seq  # nothing was sequenced

    run(body())


def test_admin_methods_need_a_logon(tmp_path):
    async def body():
        async with venue(tmp_path, deposits=False) as v, v.client(None) as anon:
            for method in ADMIN_QUERIES:
                with pytest.raises(GatewayError) as exc:
                    await anon.request(method, {})
                assert exc.value.code == G.NOT_LOGGED_IN

    run(body())


def test_overview_shows_each_market_s_mark_anchor_funding_and_open_interest(tmp_path):
    async def body():
        async with venue(tmp_path) as v, v.client("admin") as admin, v.client("alice") as alice, \
                v.client("bob") as bob:
            await bob.place(MARKET, "sell", 100, price="2.0000")
            await alice.place(MARKET, "buy", 100, price="2.0000")
            ov = await admin.request("admin.overview")
            assert ov["seq"] == v.gw.engine.seq
            h100 = next(m for m in ov["markets"] if m["market"] == MARKET)
            spec = v.gw.specs[v.gw.market_index[MARKET]]
            assert h100["index"] == "2.0000"  # the pinned feed's anchor
            assert h100["mark"] is not None
            assert h100["oracle_validity"] == "fresh"
            assert h100["open_interest_lots"] == 100
            assert h100["funding_cap_ppb"] == spec.funding_cap_ppb
            assert h100["funding_clamp_ppb"] == spec.funding_clamp_ppb
            assert abs(h100["funding_so_far_ppb"]) <= spec.funding_cap_ppb
            assert h100["insurance_floor_micro"] == v.gw.engine.ledger()["insurance_floor_micro"]
            assert [m["market"] for m in ov["markets"]] == [s.symbol for s in v.gw.specs]

    run(body())


def test_fund_history_records_a_top_up_as_cash_and_equity_with_the_floor(tmp_path):
    async def body():
        async with venue(tmp_path) as v, v.client("admin") as admin:
            fund = v.gw.specs[0].insurance_fund_account
            before = await admin.request("admin.fund_history", {"fund": fund})
            (series,) = before["funds"]
            cash0 = series["cash_micro"]
            await v.gw.submit_system([FundDeposit(ts_ns=0, account=fund, amount_micro=5_000_000_000)])  # $5,000
            after = await admin.request("admin.fund_history", {"fund": fund, "since_seq": before["seq"]})
            (series,) = after["funds"]
            assert series["fund"] == fund and MARKET in series["markets"]
            assert series["cash_micro"] == cash0 + 5_000_000_000 == int(v.gw.engine.state.collateral_micro[fund])
            assert series["floor_micro"] == v.gw.engine.ledger()["insurance_floor_micro"]
            seq, ts_ns, cash, equity = series["points"][-1]
            assert seq == v.gw.engine.seq and cash == cash0 + 5_000_000_000 and equity == cash  # no positions
            assert all(p[0] > before["seq"] for p in series["points"])
            with pytest.raises(GatewayError) as exc:
                await admin.request("admin.fund_history", {"fund": 16})
            assert exc.value.code == G.BAD_PARAMS

    run(body())


def test_accounts_at_risk_lists_the_most_leveraged_account_first_with_its_margin_ratio(tmp_path):
    async def body():
        async with venue(tmp_path, deposits=False) as v, v.client("admin") as admin, v.client("alice") as alice, \
                v.client("bob") as bob:
            await admin.deposit(ALICE, 1_000_000_000)  # $1,000
            await admin.deposit(BOB, 1_000_000_000_000)  # $1M
            await bob.place(MARKET, "sell", 2000, price="2.0000")
            await alice.place(MARKET, "buy", 2000, price="2.0000")  # $4,000 long on $1,000; bob short on $1M
            res = await admin.request("admin.accounts_at_risk", {"limit": 5})
            assert [a["account"] for a in res["accounts"]] == [ALICE, BOB]
            top = res["accounts"][0]
            view = v.gw.engine.account(ALICE)
            assert top["equity_micro"] == view.equity_micro
            assert top["maintenance_margin_micro"] == view.maintenance_margin_micro
            assert top["margin_ratio_ppm"] == view.margin_ratio_ppm
            assert top["margin_ratio_ppm"] > res["accounts"][1]["margin_ratio_ppm"]
            assert top["positions"] == [{"market": MARKET, "lots": 2000,
                                         "liquidation_price": top["positions"][0]["liquidation_price"]}]
            assert top["positions"][0]["liquidation_price"] is not None
            one = await admin.request("admin.accounts_at_risk", {"limit": 1})
            assert [a["account"] for a in one["accounts"]] == [ALICE]

    run(body())
