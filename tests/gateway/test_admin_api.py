"""The admin API over the gateway (gateway/admin.py): every admin method answers an admin key with
engine state consistent with one sequence number, and refuses `read` and `trade` keys (4107)."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from gateway.client import GatewayError
from gateway.errors import GatewayCode as G
from gateway.limits import WallClock
from perp.codes import ResultCode
from perp.commands import Liquidate
from risk.tiers import LeverageTier
from tests.gateway.conftest import ALICE, BOB, MARKET, MINUTE_NS, ManualTime, run, venue
from tests.helpers import fund_top_up

ADMIN_QUERIES = ("admin.overview", "admin.fund_history", "admin.accounts_at_risk", "admin.audit_log")
_TIERS = [{"max_leverage": 5, "maintenance_margin_ppm": 100_000, "max_notional_usd": None}]
# valid params for every admin method (params are parsed before the permission is checked)
VALID_PARAMS = {"admin.deposit": {"account": BOB, "amount_micro": 1},
                "admin.market_params": {"market": MARKET},
                "admin.what_if_tiers": {"market": MARKET, "tiers": _TIERS},
                "admin.set_tiers": {"market": MARKET, "tiers": _TIERS, "reason": "x", "confirm": True},
                "admin.set_funding_params": {"market": MARKET, "cap_ppb": 1, "clamp_ppb": 1, "reason": "x"},
                "admin.submit": {"command": {"type": "set_fees", "market": MARKET, "maker_fee_ppm": 1,
                                             "taker_fee_ppm": 1, "reason": "x"}}} | {m: {} for m in ADMIN_QUERIES}


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
            await v.gw.submit_system([fund_top_up(0, fund, 5_000_000_000)])  # $5,000
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


def test_the_insurance_fund_history_is_public_without_a_logon_and_equals_the_admin_series(tmp_path):
    async def body():
        async with venue(tmp_path) as v, v.client("admin") as admin, v.client(None) as anon:
            fund = v.gw.specs[0].insurance_fund_account
            await v.gw.submit_system([fund_top_up(0, fund, 1_000_000_000)])
            public = await anon.request("query.insurance_fund", {"fund": fund})
            assert public == await admin.request("admin.fund_history", {"fund": fund})
            assert public["funds"][0]["points"][-1][2] == int(v.gw.engine.state.collateral_micro[fund])

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


# ---- the engine's admin commands through the gateway --------------------------------------------
async def cross_effective_time(v, clock: ManualTime, effective_ts_ns: int) -> None:
    """Move the server's clock past `effective_ts_ns` in ten-minute steps, each a journaled timer tick."""
    while clock.now < effective_ts_ns:
        clock.now += 10 * MINUTE_NS
        await v.gw.submit_system([Liquidate(ts_ns=0)])


async def alice_4x_long(v, admin, alice, bob) -> None:
    """alice: $4,000 long (2000 lots at $2.0000) on $1,000; bob short the same on $1M."""
    await admin.deposit(ALICE, 1_000_000_000)
    await admin.deposit(BOB, 1_000_000_000_000)
    await bob.place(MARKET, "sell", 2000, price="2.0000")
    await alice.place(MARKET, "buy", 2000, price="2.0000")


def _tiers(v) -> list[dict]:
    return v.gw.engine.market_params(MARKET)["tiers"]


def test_set_funding_params_is_pending_until_the_next_funding_hour_then_in_force(tmp_path):
    clock = ManualTime()

    async def body():
        async with venue(tmp_path, clock=WallClock(0, clock)) as v, v.client("admin") as admin:
            before = await admin.request("admin.market_params", {"market": MARKET})
            ack = await admin.request("admin.set_funding_params", {"market": MARKET, "cap_ppb": 27_500,
                                                                    "clamp_ppb": 20_000, "reason": "match the traded perp"})
            assert ack["command"] == "set_funding_params" and ack["market"] == MARKET and ack["pending"]
            assert ack["effective_ts_ns"] == before["next_funding_ts_ns"] > ack["ts_ns"]
            assert ack["entries"] == 2  # cap and clamp
            params = await admin.request("admin.market_params", {"market": MARKET})
            assert params["funding_cap_ppb"] == before["funding_cap_ppb"]  # not yet
            (pending,) = params["pending"]
            assert pending["seq"] == ack["seq"] and pending["effective_ts_ns"] == ack["effective_ts_ns"]
            assert pending["changes"] == {"funding_cap_ppb": 27_500, "funding_clamp_ppb": 20_000}
            await cross_effective_time(v, clock, ack["effective_ts_ns"])
            params = await admin.request("admin.market_params", {"market": MARKET})
            assert (params["funding_cap_ppb"], params["funding_clamp_ppb"], params["pending"]) == (27_500, 20_000, [])
            ov = await admin.request("admin.overview")
            assert ov["markets"][0]["funding_cap_ppb"] == 27_500  # what the engine's kernel uses

    run(body())


def test_set_tiers_that_hurt_need_confirmation_and_the_refusal_carries_the_what_if(tmp_path):
    async def body():
        async with venue(tmp_path, deposits=False) as v, v.client("admin") as admin, v.client("alice") as alice, \
                v.client("bob") as bob:
            await alice_4x_long(v, admin, alice, bob)
            old = _tiers(v)
            new = [dict(old[0], max_notional_usd=1_000)] + old[1:]  # the 5x tier up to $1,000 only
            w = await admin.request("admin.what_if_tiers", {"market": MARKET, "tiers": new})
            # by hand: alice's $4,000 is now in the 4x tier, initial margin 25% = $1,000 > her equity
            # ($1,000 less the taker fee); bob ($1M) is fine; nobody is under maintenance (12.5% = $500)
            assert (w["accounts_below_im"], w["notional_below_im_micro"]) == (1, 4_000_000_000)
            assert (w["accounts_below_mm"], w["notional_below_mm_micro"]) == (0, 0)
            assert w == msgspec.to_builtins(v.gw.engine.what_if_tiers(MARKET, tuple(
                msgspec.convert(t, LeverageTier) for t in new)))
            hash0 = v.gw.engine.state_hash(include_clock=False)
            with pytest.raises(GatewayError) as exc:
                await admin.request("admin.set_tiers", {"market": MARKET, "tiers": new, "reason": "shrink the 5x tier"})
            assert exc.value.code == G.ENGINE_REJECTED and exc.value.engine_code == 5102  # ADMIN_CONFIRM_REQUIRED
            assert exc.value.what_if["accounts_below_im"] == 1
            assert v.gw.engine.state_hash(include_clock=False) == hash0 and v.gw.engine.audit_log() == []
            ack = await admin.request("admin.set_tiers", {"market": MARKET, "tiers": new, "reason": "shrink the 5x tier",
                                                          "confirm": True})
            assert ack["command"] == "set_tiers" and ack["pending"]
            (pending,) = v.gw.engine.market_params(MARKET)["pending"]
            assert pending["tiers"] == new and pending["effective_ts_ns"] == ack["effective_ts_ns"]

    run(body())


def test_set_tiers_at_a_stated_time_takes_effect_then_and_the_audit_log_names_the_key(tmp_path):
    clock = ManualTime()

    async def body():
        async with venue(tmp_path, clock=WallClock(0, clock)) as v, v.client("admin") as admin:
            old = _tiers(v)
            new = [dict(old[0], maintenance_margin_ppm=old[0]["maintenance_margin_ppm"] - 10_000)] + old[1:]
            at = clock.now + 25 * MINUTE_NS
            ack = await admin.request("admin.set_tiers", {"market": MARKET, "tiers": new, "reason": "lower mm",
                                                          "effective_ts_ns": at})
            assert ack["effective_ts_ns"] == at and ack["pending"]
            await cross_effective_time(v, clock, at)
            assert _tiers(v) == new
            log = await admin.request("admin.audit_log", {"market": MARKET})
            (entry,) = [e for e in log["entries"] if e["command"] == "set_tiers"]
            assert entry["seq"] == ack["seq"] and entry["field"] == "tiers" and entry["reason"] == "lower mm"
            assert entry["operator"] == f"{v.creds['admin'].key} (admin)"  # the key that logged on, never a claim
            assert entry["effective_ts_ns"] == at and entry["old"] != entry["new"]
            assert log["entries"] == msgspec.to_builtins(v.gw.engine.audit_log(MARKET))
            later = await admin.request("admin.audit_log", {"since_seq": ack["seq"]})
            assert later["entries"] == []

    run(body())


def test_invalid_admin_values_are_refused_with_the_field_named_and_change_nothing(tmp_path):
    async def body():
        async with venue(tmp_path) as v, v.client("admin") as admin:
            old = _tiers(v)
            params0 = v.gw.engine.market_params(MARKET)
            hash0 = v.gw.engine.state_hash(include_clock=False)
            bad_tiers = [dict(old[0], maintenance_margin_ppm=0)] + old[1:]
            for method, params, field in (
                ("admin.what_if_tiers", {"market": MARKET, "tiers": bad_tiers}, "maintenance_margin_ppm"),
                ("admin.set_tiers", {"market": MARKET, "tiers": bad_tiers, "reason": "bad"}, "maintenance_margin_ppm"),
                ("admin.set_funding_params", {"market": MARKET, "cap_ppb": -5, "clamp_ppb": 0, "reason": "bad"}, "cap"),
                ("admin.set_funding_params", {"market": MARKET, "cap_ppb": 10_000, "clamp_ppb": 0, "reason": ""},
                 "reason"),
            ):
                with pytest.raises(GatewayError) as exc:
                    await admin.request(method, params)
                assert exc.value.code == G.ENGINE_REJECTED and exc.value.engine_code, method
                assert field in (exc.value.field or ""), (method, exc.value)
            for method, params in (("admin.set_tiers", {"market": "NOPE", "tiers": old, "reason": "x"}),
                                   ("admin.market_params", {"market": "NOPE"})):
                with pytest.raises(GatewayError) as exc:
                    await admin.request(method, params)
                assert exc.value.code == G.UNKNOWN_MARKET
            with pytest.raises(GatewayError) as exc:  # a tier field the engine does not know: the parser's 4003
                await admin.request("admin.set_tiers", {"market": MARKET, "tiers": [{"leverage": 5}], "reason": "x"})
            assert exc.value.code == G.BAD_PARAMS
            assert v.gw.engine.state_hash(include_clock=False) == hash0
            assert v.gw.engine.market_params(MARKET) == params0 and v.gw.engine.audit_log() == []

    run(body())


def test_admin_submit_runs_any_admin_command_with_the_key_as_operator(tmp_path):
    async def body():
        async with venue(tmp_path) as v, v.client("admin") as admin:
            ack = await admin.request("admin.submit", {"command": {
                "type": "set_fees", "market": MARKET, "maker_fee_ppm": 50, "taker_fee_ppm": 400, "reason": "promo"}})
            assert ack["command"] == "set_fees"
            entries = [e for e in v.gw.engine.audit_log(MARKET) if e.seq == ack["seq"]]
            assert entries and all(e.operator == f"{v.creds['admin'].key} (admin)" for e in entries)
            for bad in ({"type": "set_fees", "market": MARKET, "reason": "x"},  # fees missing
                        {"type": "no_such_command", "reason": "x"},
                        {"type": "set_fees", "market": MARKET, "maker_fee_ppm": 1, "taker_fee_ppm": 1, "reason": "x",
                         "operator": "someone else"}):  # the operator is the key, not a field the client sets
                with pytest.raises(GatewayError) as exc:
                    await admin.request("admin.submit", {"command": bad})
                assert exc.value.code in (G.BAD_PARAMS, G.ENGINE_REJECTED)
            assert [e.seq for e in v.gw.engine.audit_log()] == [ack["seq"]] * len(entries)
            fund = v.gw.engine.specs[0].insurance_fund_account
            seq0, cash0 = v.gw.engine.seq, v.gw.engine.ledger()["insurance_fund_micro"]
            with pytest.raises(GatewayError) as exc:  # the retired unaudited path into a fund: coded, nothing sequenced
                await admin.request("admin.submit", {"command": {"type": "fund_deposit", "account": fund,
                                                                 "amount_micro": 10**6, "reason": "x"}})
            assert (exc.value.code, exc.value.engine_code) == (G.BAD_PARAMS, ResultCode.FUND_DEPOSIT_RETIRED)
            assert (v.gw.engine.seq, v.gw.engine.ledger()["insurance_fund_micro"]) == (seq0, cash0)
            ack = await admin.request("admin.submit", {"command": {"type": "fund_top_up", "account": fund,
                                                                   "amount_micro": 10**6, "reason": "seed the fund"}})
            assert v.gw.engine.ledger()["insurance_fund_micro"] == cash0 + 10**6
            (top_up,) = [e for e in v.gw.engine.audit_log() if e.seq == ack["seq"]]
            assert (top_up.field, int(top_up.new) - int(top_up.old), top_up.reason) == ("fund_cash_micro", 10**6,
                                                                                          "seed the fund")

    run(body())


def test_accounts_at_risk_shares_one_sweep_a_second_and_says_which_seq_it_shows(tmp_path):
    async def body():
        async with venue(tmp_path, deposits=False) as v, v.client("admin") as admin, v.client("alice") as alice, \
                v.client("bob") as bob:
            await alice_4x_long(v, admin, alice, bob)
            api, t0 = v.gw.admin, time.monotonic_ns()
            first = api._at_risk_cached(5, t0)
            assert first.seq == v.gw.engine.seq and [a.account for a in first.accounts] == [ALICE, BOB]
            await admin.deposit(ALICE, 3_000_000_000)  # alice is safer now; the engine's seq moves on
            shared = api._at_risk_cached(2, t0 + 500_000_000)
            assert shared.seq == first.seq < v.gw.engine.seq and shared.accounts == first.accounts[:2]
            fresh = api._at_risk_cached(5, t0 + 1_500_000_000)
            assert fresh.seq == v.gw.engine.seq
            assert fresh.accounts[0].margin_ratio_ppm < first.accounts[0].margin_ratio_ppm
            assert api._at_risk_cached(50, t0 + 1_600_000_000).seq == v.gw.engine.seq  # more than it holds: a sweep

    run(body())


def test_the_console_page_is_served_with_headers_that_keep_it_from_being_framed(tmp_path):
    import urllib.request

    async def body():
        async with venue(tmp_path, deposits=False) as v:
            http = v.url.replace("ws://", "http://")

            def get(path):
                with urllib.request.urlopen(http + path, timeout=10) as r:
                    return r.status, dict(r.headers), r.read()

            loop = asyncio.get_running_loop()
            status, headers, page = await loop.run_in_executor(None, get, "/console")
            assert status == 200 and headers["Content-Type"].startswith("text/html")
            assert b'<script src="/console/console.js">' in page
            assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
            assert headers["X-Frame-Options"] == "DENY"
            for path, ctype in (("/console/console.js", "text/javascript"), ("/console/console.css", "text/css")):
                status, headers, data = await loop.run_in_executor(None, get, path)
                assert status == 200 and headers["Content-Type"].startswith(ctype) and len(data) > 1000

    run(body())


def test_an_admin_value_beyond_int64_is_refused_the_venue_serves_on_and_restarts_over_an_old_journal(tmp_path):
    """Values that pass the command's types but overflow the int64 spec row once scaled: each refused 4400 /
    5101 naming its field, nothing changed, the gateway still serving (they once stopped it, exit 3, with the
    spec in force half-replaced). The journal the old gateway left (the command written, the batch raising)
    is recovered at start, and after a restart the refused commands replay as the same refusals."""
    from perp.commands import AdminCommand
    from perp.journal import admin_payloads_of
    from perp.markets import load_markets
    from perp.sequencer import JournaledEngine

    bad = {"type": "set_liquidation_params", "market": MARKET, "liquidation_cooldown_s": 10**10, "reason": "typo"}
    data = tmp_path / "data"
    data.mkdir()
    old = JournaledEngine.open(data / "journal.bin")  # the old gateway's journal: the command, never run
    rows = old.engine.encode([msgspec.convert({**bad, "ts_ns": time.time_ns() - 10**9, "operator": "ops"},
                                             AdminCommand)])
    old.journal.append(rows, admin_payloads_of(rows, old.engine.encoder.payloads))
    old.journal.close()
    listing = msgspec.to_builtins(load_markets().market[0]) | {"symbol": "X-PERP"}

    async def body():
        async with venue(tmp_path) as v, v.client("admin") as admin, v.client("alice") as alice:
            assert v.gw.engine.rejection(1).field == "liquidation_cooldown_s"  # the old journal's command
            params0 = v.gw.engine.market_params(MARKET)
            hash0 = v.gw.engine.state_hash(include_clock=False)
            row0 = v.gw.engine.state.spec[0].copy()
            for command, field in ((bad, "liquidation_cooldown_s"),
                                   ({"type": "list_market", "reason": "x",
                                     "spec": listing | {"withdraw_floor_ppm": 2**63}}, "spec.withdraw_floor_ppm"),
                                   ({"type": "list_market", "reason": "x",
                                     "spec": listing | {"liquidation_partial_above_usd": 10**13}},
                                    "spec.liquidation_partial_above_usd"),
                                   ({"type": "list_market", "reason": "x",
                                     "spec": listing | {"impact_notional_usd": "1e30"}}, "spec.impact_notional_usd")):
                with pytest.raises(GatewayError) as exc:
                    await admin.request("admin.submit", {"command": command})
                assert (exc.value.code, exc.value.engine_code, exc.value.field) == (
                    G.ENGINE_REJECTED, ResultCode.ADMIN_INVALID_VALUE, field), exc.value
            assert not v.gw.broken
            assert v.gw.engine.state_hash(include_clock=False) == hash0 and (v.gw.engine.state.spec[0] == row0).all()
            assert v.gw.engine.market_params(MARKET) == params0 and v.gw.engine.audit_log() == []
            assert len(v.gw.engine.specs) == 1
            ack = await alice.place(MARKET, "buy", 1, price="1.9000")  # still serving
            assert ack.status == "resting"
            keys, hash1 = (v.keys, v.creds), v.gw.engine.state_hash()
        async with venue(tmp_path, deposits=False, keys=keys) as v2:
            assert v2.gw.engine.state_hash() == hash1 and not v2.gw.broken

    run(body(), 90)
