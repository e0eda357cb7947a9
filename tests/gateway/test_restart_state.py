"""What the gateway keeps across a restart besides the engine: dead-man's switches, used client
order ids (from the engine's snapshot, never a journal scan), the funding history."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

import gateway.server as server_module
from gateway.client import GatewayError
from gateway.errors import GatewayCode as G
from gateway.limits import WallClock
from perp.commands import Liquidate
from tests.gateway.conftest import ALICE, BOB, MARKET, run, venue
from tests.gateway.conftest import MINUTE_NS, ManualTime


async def _open_orders_of(v, acct: int) -> int:
    return int((v.gw.engine.open_orders()[:, 4] == acct).sum())


async def _until_no_orders(v, acct: int, timeout_s: float) -> float:
    t0 = time.monotonic()
    while await _open_orders_of(v, acct):
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"account {acct} still has open orders after {timeout_s} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - t0


def test_a_cancel_after_whose_deadline_passed_while_the_server_was_down_fires_at_start(tmp_path):
    async def body():
        async with venue(tmp_path) as v, v.client("alice") as alice:
            await alice.place(MARKET, "buy", 3, price="1.9500")
            await alice.place(MARKET, "sell", 3, price="2.0500")
            ack = await alice.cancel_after(1500)
            keys = (v.keys, v.creds)
        # stopped before the deadline: the orders rest, the switch is on disk
        armed = json.loads((tmp_path / "data" / "cancel_after.json").read_text())
        assert armed == {str(ALICE): ack.deadline_ts_ns}
        assert await _open_orders_of(v, ALICE) == 2
        await asyncio.sleep(max(0.0, (ack.deadline_ts_ns - time.time_ns()) / 1e9) + 0.2)
        async with venue(tmp_path, deposits=False, keys=keys) as v2:
            await _until_no_orders(v2, ALICE, 10)
            await asyncio.sleep(0.1)  # the switch leaves the file once its cancel_all is journaled
            assert json.loads((tmp_path / "data" / "cancel_after.json").read_text()) == {}

    run(body())


def test_a_cancel_after_still_running_at_a_restart_fires_at_its_deadline(tmp_path):
    async def body():
        async with venue(tmp_path) as v, v.client("alice") as alice:
            await alice.place(MARKET, "buy", 3, price="1.9500")
            ack = await alice.cancel_after(6000)
            keys = (v.keys, v.creds)
        async with venue(tmp_path, deposits=False, keys=keys) as v2:
            if time.time_ns() < ack.deadline_ts_ns - 500_000_000:
                assert await _open_orders_of(v2, ALICE) == 1  # re-armed, not fired
            await _until_no_orders(v2, ALICE, 15)
            assert time.time_ns() >= ack.deadline_ts_ns - 50_000_000  # not before its deadline (clock slack)

    run(body())


def test_disarming_cancel_after_before_a_restart_leaves_the_orders_alone(tmp_path):
    async def body():
        async with venue(tmp_path) as v, v.client("alice") as alice:
            await alice.place(MARKET, "buy", 3, price="1.9500")
            await alice.cancel_after(500)
            assert (await alice.cancel_after(0)).deadline_ts_ns == 0
            keys = (v.keys, v.creds)
        assert json.loads((tmp_path / "data" / "cancel_after.json").read_text()) == {}
        await asyncio.sleep(0.7)
        async with venue(tmp_path, deposits=False, keys=keys) as v2:
            await asyncio.sleep(0.3)
            assert await _open_orders_of(v2, ALICE) == 1

    run(body())


def test_a_used_client_order_id_is_refused_after_a_restart_without_reading_the_journal(tmp_path, monkeypatch):
    async def body():
        async with venue(tmp_path) as v, v.client("alice") as alice:
            ack = await alice.place(MARKET, "buy", 1, price="1.9500", client_order_id=7)
            await alice.cancel(ack.order_id)
            await alice.place(MARKET, "sell", 1, price="1.9600")
            with pytest.raises(GatewayError) as exc:  # rejected by the engine: the id is consumed all the same
                await alice.place(MARKET, "buy", 1, price="1.9600", client_order_id=9, tif="post_only")
            assert exc.value.code == G.ENGINE_REJECTED and exc.value.engine_code == 1011
            keys = (v.keys, v.creds)

        class NoJournalScan:
            def __init__(self, *a, **kw):
                raise AssertionError("the gateway read the journal at start")

        monkeypatch.setattr(server_module, "JournalReader", NoJournalScan)
        async with venue(tmp_path, deposits=False, keys=keys) as v2, v2.client("alice") as alice:
            for clid in (7, 9):
                with pytest.raises(GatewayError) as exc:
                    await alice.place(MARKET, "buy", 1, price="1.9500", client_order_id=clid)
                assert exc.value.code == G.DUPLICATE_CLIENT_ORDER_ID
            assert (await alice.place(MARKET, "buy", 1, price="1.9500", client_order_id=8)).status == "resting"

    run(body())


def test_funding_history_lists_every_position_payment_and_survives_a_restart(tmp_path):
    clock = ManualTime()

    async def body():
        async with venue(tmp_path, clock=WallClock(0, clock)) as v, v.client("alice") as alice, \
                v.client("bob") as bob:
            clock.start_of_next_hour()  # logged on: now one funding hour ahead, whatever the time of day
            await bob.place(MARKET, "sell", 100, price="2.0100")
            await alice.place(MARKET, "buy", 100, price="2.0100")  # alice long 100, bob short 100
            await alice.place(MARKET, "buy", 600, price="2.0090")
            await bob.place(MARKET, "sell", 600, price="2.0110")
            assert await bob.funding_history() == []
            for _ in range(61):  # an hour of minutes: premium samples, then the funding hour
                clock.now += MINUTE_NS
                await v.gw.submit_system([Liquidate(ts_ns=0)])
            k = 100  # micro-USD per tick-lot: $0.0001 x 1 GPU-hour
            paid = {}
            for client, acct, lots in ((alice, ALICE, 100), (bob, BOB, -100)):  # neither subscribed to user
                (pay,) = await client.funding_history()
                assert (pay.account, pay.lots, pay.market) == (acct, lots, MARKET)
                assert pay.rate_ppb != 0
                assert pay.amount_micro == (-lots * pay.index_ticks * k * pay.rate_ppb) // 10**9
                assert v.gw.engine.account(acct).positions[0].funding_micro == pay.amount_micro
                assert await client.funding_history(market=MARKET, limit=1) == [pay]
                paid[acct] = pay
            # the long pays, the short receives; each side is floored, the remainder goes to the fund
            assert paid[ALICE].amount_micro < 0 < paid[BOB].amount_micro
            assert -1 <= paid[ALICE].amount_micro + paid[BOB].amount_micro <= 0
            with pytest.raises(GatewayError) as exc:
                await alice.funding_history(market="NOPE-PERP")
            assert exc.value.code == G.UNKNOWN_MARKET
            keys = (v.keys, v.creds)
        # the restarted server's clock is the engine's (an hour ahead of the test's wall clock, whose
        # logon timestamps it would refuse): the history is read back from its file
        async with venue(tmp_path, deposits=False, keys=keys, clock=WallClock(0, clock)) as v2:
            assert [v2.gw._funding_payment(r) for r in v2.gw.funding_history.of(BOB)] == [paid[BOB]]
            assert [v2.gw._funding_payment(r) for r in v2.gw.funding_history.of(ALICE)] == [paid[ALICE]]

    run(body())
