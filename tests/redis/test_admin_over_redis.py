"""Admin commands through the scaled-out venue: an admin command's payload (its text and tier list,
perp.commands.admin_payload) travels with its row in NS:cmd and in the engine's NS:seq record, so
the engine, every gateway's replica and a recovery from the stream all apply the same change."""

from __future__ import annotations

from gateway import redis_journal as RJ
from gateway.client import GatewayClient
from tests.gateway.conftest import run
from tests.redis.conftest import MARKET, NS, start_venue, wait_engine_idle


def test_an_admin_change_through_one_gateway_is_in_force_on_the_engine_the_other_gateway_and_a_recovery(
        redis_server, procs, tmp_path):
    creds, _eng, ga, gb = start_venue(redis_server, procs, tmp_path)

    async def body():
        async with GatewayClient(ga.url, creds["admin"]) as a, GatewayClient(gb.url, creds["admin"]) as b:
            ack = await a.request("admin.set_funding_params", {"market": MARKET, "cap_ppb": 27_500,
                                                                "clamp_ppb": 20_000, "reason": "match the traded perp"})
            assert ack["command"] == "set_funding_params" and ack["pending"] and ack["entries"] == 2
            # the other gateway's replica applied the same record: the same pending change and audit log
            log_b = await b.request("admin.audit_log", {"market": MARKET})
            while not log_b["entries"]:
                log_b = await b.request("admin.audit_log", {"market": MARKET})
            assert [(e["field"], e["new"], e["reason"]) for e in log_b["entries"]] == [
                ("cap_ppb", "27500", "match the traded perp"),
                ("clamp_ppb", "20000", "match the traded perp")]
            params_b = await b.request("admin.market_params", {"market": MARKET})
            assert params_b["pending"][0]["changes"] == {"funding_cap_ppb": 27_500, "funding_clamp_ppb": 20_000}
            return ack["seq"]

    seq = run(body(), 120)
    st = wait_engine_idle(redis_server.url, seq)
    r = redis_server.client()
    rec = RJ.recover(r, RJ.Keys(NS))  # the stream alone: the payload is in the engine's record
    assert rec.engine.state_hash() == st["state_hash"]
    assert [(e.field, e.new) for e in rec.engine.audit_log(MARKET)] == [("cap_ppb", "27500"), ("clamp_ppb", "20000")]
    r.close()
