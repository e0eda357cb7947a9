"""`list_market` through a running `perp serve` (gateway/admin.py `admin.submit`): the engine lists the market at
once and the running gateway serves it from the next frame (its per-market views grow after the listing batch):
an order on the new symbol reaches the engine, which refuses it until an index is fed for it (1010); the gateway
crosses the funding hour (the new market pays its own, empty, hour) and the old market trades on; after a restart
on the same data directory the gateway serves the new market the same way."""

from __future__ import annotations

import msgspec
import pytest

from gateway.client import GatewayError
from gateway.errors import GatewayCode as G
from gateway.limits import WallClock
from tests.gateway.conftest import MARKET, run, venue
from tests.test_admin_list_market import A100, A100_SPEC

HOUR_NS = 3600 * 10**9


def test_a_market_listed_on_a_running_venue_is_served_at_once_and_after_a_restart(tmp_path):
    import time

    from perp.commands import Liquidate
    from perp.events import FundingPaid

    offset = [0]
    clock = WallClock(0, source=lambda: time.time_ns() + offset[0])  # moved past the funding hour below
    window = {"recv_window_ms": 3 * 3600 * 1000}  # the clients' clocks stay behind the moved server clock

    async def body():
        async with venue(tmp_path, clock=clock, **window) as v:
            keys = (v.keys, v.creds)
            async with v.client("admin") as admin, v.client("alice") as alice, v.client("bob") as bob:
                ack = await admin.request("admin.submit", {"command": {
                    "type": "list_market", "spec": msgspec.to_builtins(A100_SPEC), "reason": "launch A100"}})
                assert ack["command"] == "list_market" and not ack["pending"] and ack["entries"] == 2
                assert v.gw.engine.market_index(A100) == 1
                audit = await admin.request("admin.audit_log", {})
                assert [(e["command"], e["market"], e["field"]) for e in audit["entries"]][-2:] == [
                    ("list_market", A100, "spec"), ("list_market", A100, "status")]
                with pytest.raises(GatewayError) as exc:
                    await alice.place(A100, "buy", 10, price="1.2000")
                # served at once: the order reaches the engine, which has no index for A100 yet (1010)
                assert exc.value.code != G.UNKNOWN_MARKET and exc.value.engine_code == 1010
                book = await bob.subscribe_book(A100)
                assert book.levels() == ([], [])
                await bob.place(MARKET, "sell", 5, price="2.0000")
                await alice.place(MARKET, "buy", 5, price="2.0000")  # the old market trades on
                assert v.gw.engine.position_lots(20, 0) == 5
                # the funding hour: both markets pay theirs; the running gateway carries on
                now = time.time_ns()
                offset[0] = (now // HOUR_NS + 1) * HOUR_NS + 10**9 - now
                evs = await v.gw.submit_system([Liquidate(ts_ns=0)])
                paid = [e for e in evs if isinstance(e, FundingPaid)]
                assert len(paid) == 2  # H100's, and A100's empty hour
                assert (await admin.request("admin.overview"))["seq"] == v.gw.engine.seq
                await v.gw.submit_system([Liquidate(ts_ns=0)])
            engine_hash = v.gw.engine.state_hash()
        async with venue(tmp_path, deposits=False, keys=keys, clock=clock, **window) as v2:
            assert v2.gw.engine.state_hash() == engine_hash
            assert v2.gw.market_index[A100] == 1
            async with v2.client("alice") as alice:
                with pytest.raises(GatewayError) as exc:
                    await alice.place(A100, "buy", 10, price="1.2000")
                # the gateway knows the market now: the order reaches the engine, which refuses it
                # because no index has been fed for A100 (this venue's pinned test feed drives H100 only): 1010
                assert exc.value.code != G.UNKNOWN_MARKET and exc.value.engine_code == 1010
                book = await alice.subscribe_book(A100)
                assert book is not None

    run(body(), timeout_s=90)
