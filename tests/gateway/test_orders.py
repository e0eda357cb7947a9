"""Order entry end to end: real server, real client, real loopback sockets."""

from __future__ import annotations

import asyncio

import pytest

from gateway.client import GatewayError
from gateway.errors import GatewayCode as G
from tests.gateway.conftest import ALICE, BOB, MARKET, run, venue


def test_place_amend_cancel_through_the_client(tmp_path):
    async def body():
        async with venue(tmp_path) as v, v.client("alice") as alice:
            ack = await alice.place(MARKET, "buy", 10, price="1.9900", client_order_id=7)
            assert (ack.status, ack.remaining_lots, ack.client_order_id) == ("resting", 10, 7)
            assert [(o.order_id, o.price, o.remaining_lots) for o in await alice.open_orders()] == \
                [(ack.order_id, "1.9900", 10)]
            am = await alice.amend(MARKET, order_id=ack.order_id, price="1.9800", size_lots=6)
            assert (am.price, am.remaining_lots, am.kept_priority) == ("1.9800", 6, False)
            am2 = await alice.amend(MARKET, client_order_id=7, size_lots=4)  # a size cut keeps priority
            assert (am2.remaining_lots, am2.kept_priority) == (4, True)
            c = await alice.cancel(client_order_id=7)
            assert (c.order_id, c.cancelled_lots) == (ack.order_id, 4)
            assert await alice.open_orders() == []
            assert v.gw.engine.money_conserved()

    run(body())


def test_every_order_type_and_fills_reach_both_users(tmp_path):
    async def body():
        async with venue(tmp_path) as v, v.client("alice") as alice, v.client("bob") as bob:
            await alice.subscribe("user")
            await bob.subscribe("user")
            snap_a = await alice.next_push("user")
            assert snap_a.type == "snapshot" and snap_a.data.open_orders == []
            await bob.next_push("user")
            # makers: gtc and post_only
            a1 = await alice.place(MARKET, "sell", 10, price="2.0100")
            a2 = await alice.place(MARKET, "sell", 10, price="2.0200", tif="post_only")
            assert a1.status == a2.status == "resting"
            # post_only that would take is rejected by the engine, changing nothing
            with pytest.raises(GatewayError) as exc:
                await bob.place(MARKET, "buy", 1, price="2.0100", tif="post_only")
            assert exc.value.code == G.ENGINE_REJECTED and exc.value.engine_code == 1011
            # ioc takes part of a1
            t1 = await bob.place(MARKET, "buy", 4, price="2.0100", tif="ioc")
            assert (t1.status, t1.filled_lots) == ("filled", 4)
            # fok that cannot fill entirely is cancelled with nothing filled
            t2 = await bob.place(MARKET, "buy", 100, price="2.0200", tif="fok")
            assert (t2.status, t2.filled_lots) == ("cancelled", 0)
            # market order sweeps the rest of a1 and part of a2
            t3 = await bob.place(MARKET, "buy", 8, order_type="market")
            assert (t3.status, t3.filled_lots, [f.price for f in t3.fills]) == ("filled", 8, ["2.0100", "2.0200"])
            # gtc limit that crosses then rests
            t4 = await bob.place(MARKET, "buy", 20, price="2.0200")
            assert (t4.status, t4.filled_lots, t4.remaining_lots) == ("resting", 8, 12)
            # reduce-only sell by bob (long 20) resting above
            t5 = await bob.place(MARKET, "sell", 5, price="2.0500", reduce_only=True)
            assert t5.status == "resting"

            def fills(pushes, acct):
                return sum(e.size_lots for p in pushes for e in p.data
                           if type(e).__name__ == "Fill" and e.account == acct)

            # both users' channels see every lot that traded (20 lots)
            async def collect(client, acct, want):
                got = []
                while fills(got, acct) < want:
                    got.append(await client.next_push("user", timeout_s=10))
                return got

            ga = await collect(alice, ALICE, 20)
            gb = await collect(bob, BOB, 20)
            assert fills(ga, ALICE) == fills(gb, BOB) == 20
            assert v.gw.engine.position_lots(ALICE, 0) == -20 and v.gw.engine.position_lots(BOB, 0) == 20
            assert v.gw.engine.money_conserved()

    run(body())


def test_client_order_id_duplicate_and_batch(tmp_path):
    async def body():
        async with venue(tmp_path) as v, v.client("alice") as alice:
            await alice.place(MARKET, "buy", 1, price="1.9000", client_order_id=11)
            with pytest.raises(GatewayError) as exc:
                await alice.place(MARKET, "buy", 1, price="1.9000", client_order_id=11)
            assert exc.value.code == G.DUPLICATE_CLIENT_ORDER_ID
            items = await alice.batch([
                {"op": "place", "market": MARKET, "side": "buy", "size_lots": 2, "price": "1.9100",
                 "client_order_id": 12},
                {"op": "place", "market": MARKET, "side": "buy", "size_lots": 2, "price": "1.91005"},  # off grid
                {"op": "cancel", "client_order_id": 11},
                {"op": "cancel", "client_order_id": 12},  # placed earlier in the same frame
            ])
            assert [i.ok for i in items] == [True, False, True, True]
            assert items[1].error.code == G.PRICE_NOT_ON_TICK_GRID
            assert await alice.open_orders() == []
            with pytest.raises(GatewayError) as exc:
                await alice.batch([{"op": "cancel", "order_id": 1}] * 21)
            assert exc.value.code == G.BATCH_TOO_LARGE

    run(body())


def test_cancel_after_fires(tmp_path):
    async def body():
        async with venue(tmp_path) as v, v.client("alice") as alice:
            await alice.subscribe("user")
            await alice.next_push("user")  # snapshot
            await alice.place(MARKET, "buy", 3, price="1.9500")
            await alice.place(MARKET, "sell", 3, price="2.0500")
            ack = await alice.cancel_after(200)
            assert ack.deadline_ts_ns > 0
            cancelled = 0
            while cancelled < 2:
                push = await alice.next_push("user", timeout_s=10)
                cancelled += sum(type(e).__name__ == "Cancelled" for e in push.data)
            assert await alice.open_orders() == []

    run(body())


def test_a_failed_journal_write_answers_status_unknown_then_stops_taking_commands(tmp_path):
    async def body():
        import urllib.error
        import urllib.request

        async with venue(tmp_path) as v, v.client("alice") as alice:
            journal = v.gw.jeng.journal

            def broken(rows, *args, **kwargs):
                raise OSError(28, "No space left on device")

            journal.append = broken
            with pytest.raises(GatewayError) as exc:
                await alice.place(MARKET, "buy", 1, price="1.9500", client_order_id=5)
            assert exc.value.code == G.STATUS_UNKNOWN_JOURNAL and 4900 <= exc.value.code < 5000
            with pytest.raises(GatewayError) as exc:
                await alice.place(MARKET, "buy", 1, price="1.9500", client_order_id=6)
            assert exc.value.code == G.SHUTTING_DOWN
            loop = asyncio.get_running_loop()

            def health():
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{v.gw.port}/healthz", timeout=10)
                except urllib.error.HTTPError as err:
                    return err.code
                return 200

            assert await loop.run_in_executor(None, health) == 503
            assert await alice.ping() > 0  # reads still answer, until `perp serve` stops on `failed`
            assert v.gw.failed.is_set()

    run(body())


def test_markets_query_shows_specs_and_tiers(tmp_path):
    async def body():
        async with venue(tmp_path, deposits=False) as v, v.client(None) as anon:
            res = await anon.markets()
            assert res["version"] == 1 and res["markets"][0]["symbol"] == MARKET
            tiers = res["tiers"][MARKET]
            assert tiers and tiers[0]["imr_ppm"] > 0 and tiers[-1]["bound_micro"] is None

    run(body())


def _hold_first_fsync(jeng, fail: bool = False):
    """Make the first group commit's fsync wait for the returned event (and then raise if `fail`)."""
    import threading

    real = jeng.commit_upto
    gate = threading.Event()
    calls = [0]

    def held(last_seq):
        calls[0] += 1
        if calls[0] == 1:
            gate.wait(10)
            if fail:
                raise OSError(5, "Input/output error")
        return real(last_seq)

    jeng.commit_upto = held
    return gate, calls


def test_a_cancel_by_client_order_id_of_a_place_still_queued_is_sequenced(tmp_path):
    async def body():
        async with venue(tmp_path, group_commit_us=300_000) as v, v.client("alice") as alice:
            gate, calls = _hold_first_fsync(v.gw.jeng)  # batch N is in its fsync until released
            first = asyncio.create_task(alice.place(MARKET, "buy", 1, price="1.9000", client_order_id=1))
            while calls[0] == 0:
                await asyncio.sleep(0.005)
            second = asyncio.create_task(alice.place(MARKET, "buy", 1, price="1.9100", client_order_id=2))
            await asyncio.sleep(0.05)  # the second place is queued behind batch N
            gate.set()
            await first  # batch N is done; the second place waits in the next gather window
            c = await alice.cancel(client_order_id=2)
            assert (await second).status == "resting" and c.cancelled_lots == 1
            assert [o.client_order_id for o in await alice.open_orders()] == [1]

    run(body())


def test_self_trade_prevention_modes(tmp_path):
    async def body():
        async with venue(tmp_path) as v, v.client("alice") as alice:
            rest = await alice.place(MARKET, "sell", 5, price="2.0000")
            # cancel_newest (the default): the incoming order is cancelled, the resting one stays
            a = await alice.place(MARKET, "buy", 5, price="2.0000")
            assert (a.status, a.filled_lots) == ("cancelled", 0)
            assert [o.order_id for o in await alice.open_orders()] == [rest.order_id]
            # cancel_oldest: the resting order goes, the incoming one rests
            b = await alice.place(MARKET, "buy", 5, price="2.0000", stp="cancel_oldest")
            assert (b.status, b.filled_lots) == ("resting", 0)
            assert [o.order_id for o in await alice.open_orders()] == [b.order_id]
            # cancel_both
            await alice.place(MARKET, "sell", 5, price="2.0000", stp="cancel_both")
            assert await alice.open_orders() == []
            assert v.gw.engine.position_lots(ALICE, 0) == 0

    run(body())


def test_commands_queued_during_a_fsync_go_in_one_batch_once_it_returns_and_none_is_acked_before_its_own(tmp_path):
    async def body():
        async with venue(tmp_path) as v, v.client("alice") as alice, v.client("bob") as bob:
            gate, calls = _hold_first_fsync(v.gw.jeng)
            first = asyncio.create_task(alice.place(MARKET, "buy", 1, price="1.9000", client_order_id=1))
            while calls[0] == 0:
                await asyncio.sleep(0.005)
            seq_first = v.gw.engine.seq
            queued = [asyncio.create_task(c.place(MARKET, "buy", 2, price="1.9100", client_order_id=10 + i))
                      for i in range(3) for c in (alice, bob)]
            while len(v.gw._queue) < len(queued):
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.05)  # far past the gather window: the journal is busy, so they wait
            assert v.gw.engine.seq == seq_first and not first.done()  # the first is not durable: no ack
            assert v.gw.jeng.durable_seq < seq_first
            gate.set()
            a = await first
            acks = [await t for t in queued]
            assert a.status == "resting" and all(x.status == "resting" for x in acks)
            seqs = sorted(x.seq for x in acks)
            assert seqs == list(range(seq_first + 1, seq_first + 1 + len(queued)))  # one batch
            assert calls[0] == 2 and v.gw.jeng.durable_seq == v.gw.engine.seq  # two fsyncs in all

    run(body())


def test_a_failed_fsync_answers_its_batch_status_unknown_and_sequences_nothing_after_it(tmp_path):
    async def body():
        async with venue(tmp_path) as v, v.client("alice") as alice, v.client("bob") as bob:
            gate, calls = _hold_first_fsync(v.gw.jeng, fail=True)
            first = asyncio.create_task(alice.place(MARKET, "buy", 1, price="1.9000", client_order_id=1))
            while calls[0] == 0:
                await asyncio.sleep(0.005)
            seq_first = v.gw.engine.seq
            second = asyncio.create_task(bob.place(MARKET, "buy", 2, price="1.9100", client_order_id=2))
            while not v.gw._queue:
                await asyncio.sleep(0.005)
            gate.set()
            with pytest.raises(GatewayError) as exc:
                await first
            assert exc.value.code == G.STATUS_UNKNOWN_JOURNAL
            with pytest.raises(GatewayError) as exc:
                await second  # queued behind the failed fsync: never written
            assert exc.value.code == G.SHUTTING_DOWN and v.gw.engine.seq == seq_first and v.gw.failed.is_set()
            with pytest.raises(GatewayError) as exc:
                await alice.place(MARKET, "buy", 1, price="1.9000", client_order_id=3)
            assert exc.value.code == G.SHUTTING_DOWN

    run(body())


def test_amend_keeps_an_omitted_field_and_refuses_null_or_zero_as_the_protocol_doc_says(tmp_path):
    """docs/protocol.md's `order.amend` row is the contract: omitting `price` or `size_lots` keeps it; an
    explicit null or 0 is refused 4003 (it once documented null and 0 as "unchanged", which the server
    has always refused)."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    (row,) = [ln for ln in doc.splitlines() if ln.startswith("| `order.amend` |")]
    assert "omit it to keep the price" in row and "omit it to keep the size" in row, row
    assert "refused with 4003" in row and "unchanged" not in row, row

    async def body():
        async with venue(tmp_path) as v, v.client("alice") as alice:
            o = await alice.place(MARKET, "buy", 5, price="1.9500")
            kept_price = await alice.request("order.amend", {"market": MARKET, "order_id": o.order_id, "size_lots": 3})
            kept_size = await alice.request("order.amend", {"market": MARKET, "order_id": o.order_id,
                                                            "price": "1.9400"})
            codes = []
            for params in ({"price": None, "size_lots": 2}, {"price": "1.9300", "size_lots": 0}, {"size_lots": None}):
                with pytest.raises(GatewayError) as exc:
                    await alice.request("order.amend", {"market": MARKET, "order_id": o.order_id, **params})
                codes.append(exc.value.code)
            (left,) = await alice.open_orders()
            return kept_price, kept_size, codes, left

    kept_price, kept_size, codes, left = run(body())
    assert (kept_price["price"], kept_price["remaining_lots"]) == ("1.9500", 3)
    assert (kept_size["price"], kept_size["remaining_lots"]) == ("1.9400", 3)
    assert codes == [G.BAD_PARAMS] * 3
    assert (left.price, left.remaining_lots) == ("1.9400", 3)  # the refused amends changed nothing
