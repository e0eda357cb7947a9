"""Market data: a book rebuilt from snapshot + deltas equals the engine's book; gaps and cuts resync."""

from __future__ import annotations

import asyncio
import random

import pytest

from gateway.client import GatewayError
from perp.markets import load_markets, ticks_to_price
from tests.gateway.conftest import MARKET, run, venue

# every test twice: pushes through each connection's queue, and by the fan-out kernel (gateway.fanout)
pytestmark = pytest.mark.usefixtures("fanout_mode")

SPEC = load_markets().market[0]


def engine_book(gw) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """The engine's own L2 book (from its live orders), best first."""
    levels: list[dict[int, int]] = [{}, {}]
    for m, side, price, _oid, _acct, _clid, rem, _flags in gw.engine.open_orders().tolist():
        if m == 0:
            levels[side][price] = levels[side].get(price, 0) + rem
    return ([(ticks_to_price(SPEC, p), levels[0][p]) for p in sorted(levels[0], reverse=True)],
            [(ticks_to_price(SPEC, p), levels[1][p]) for p in sorted(levels[1])])


async def random_session(clients, rng: random.Random, n: int) -> None:
    """Seeded random places, cancels and amends around $2.00 from several traders at once."""
    live: list[list[int]] = [[] for _ in clients]

    async def one(i: int) -> None:
        c = clients[i]
        r = rng.random()
        try:
            if r < 0.55 or not live[i]:
                side = rng.choice(("buy", "sell"))
                off = rng.randint(-15, 40)
                ticks = 20_000 - off if side == "buy" else 20_000 + off
                tif = rng.choice(("gtc", "gtc", "gtc", "ioc", "post_only"))
                ack = await c.place(MARKET, side, rng.randint(1, 30), price=ticks_to_price(SPEC, ticks), tif=tif)
                if ack.status == "resting":
                    live[i].append(ack.order_id)
            elif r < 0.8:
                await c.cancel(order_id=live[i].pop(rng.randrange(len(live[i]))))
            elif r < 0.9:
                oid = rng.choice(live[i])
                await c.amend(MARKET, order_id=oid, size_lots=rng.randint(1, 10))
            else:
                await c.place(MARKET, rng.choice(("buy", "sell")), rng.randint(1, 20), order_type="market")
        except GatewayError:
            pass  # engine rejections (post-only would take, order already filled, ...) are part of the mix

    for _ in range(n):
        await asyncio.gather(*(one(i) for i in range(len(clients))))


async def settled(book, gw, timeout_s: float = 10.0) -> None:
    """Wait until the local book has seen the gateway's last book push."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while book.seq != gw.book_seq[0] or not book.synced:
        book.updated.clear()
        await asyncio.wait_for(book.updated.wait(), max(0.01, deadline - loop.time()))


@pytest.mark.parametrize("seed", [1234, 5, 77])
def test_book_from_snapshot_and_deltas_equals_engine_after_seeded_session(tmp_path, seed):
    async def body():
        async with venue(tmp_path) as v, v.client("alice") as alice, v.client("bob") as bob, \
                v.client(None) as watcher:
            early = await watcher.subscribe_book(MARKET)  # from the empty book, all deltas
            await random_session([alice, bob], random.Random(seed), 60)
            async with v.client(None) as late:  # a snapshot of a busy book, then deltas
                late_book = await late.subscribe_book(MARKET)
                await random_session([alice, bob], random.Random(seed + 1), 30)
                await settled(early, v.gw)
                await settled(late_book, v.gw)
                want = engine_book(v.gw)
                assert want[0] and want[1]
                assert early.levels() == want
                assert late_book.levels() == want
                assert early.resyncs == late_book.resyncs == 0
                kernel = v.gw.metrics.registry.get_sample_value("perp_gateway_fanout_kernel_frames_total")
                assert (kernel > 0) == bool(v.gw.cfg.fanout_kernel_min)
            assert v.gw.engine.money_conserved()
            # the gateway's own views, kept from events, equal the engine's state
            live = {int(r[3]): (int(r[4]), int(r[5])) for r in v.gw.engine.open_orders().tolist()}
            assert v.gw.owner == live

    run(body())


def test_a_client_cut_mid_stream_resyncs_to_the_same_book(tmp_path):
    async def body():
        async with venue(tmp_path) as v, v.client("alice") as alice, v.client("bob") as bob, \
                v.client(None) as watcher:
            book = await watcher.subscribe_book(MARKET)
            await random_session([alice, bob], random.Random(7), 20)
            watcher._ws.transport.abort()  # the network drops the connection
            await random_session([alice, bob], random.Random(8), 20)  # the book moves while it is away
            deadline = asyncio.get_running_loop().time() + 10
            while watcher.connects < 2:
                await asyncio.sleep(0.01)
                assert asyncio.get_running_loop().time() < deadline
            await watcher.wait_connected()
            await settled(book, v.gw)
            assert book.levels() == engine_book(v.gw)

    run(body())


def test_a_gap_in_deltas_triggers_a_resubscription(tmp_path):
    async def body():
        async with venue(tmp_path) as v, v.client("alice") as alice, v.client(None) as watcher:
            book = await watcher.subscribe_book(MARKET)
            book.seq -= 1  # as if a delta had been lost
            await alice.place(MARKET, "buy", 5, price="1.9900")
            await settled(book, v.gw)
            assert book.resyncs == 1
            assert book.levels() == engine_book(v.gw) == ([("1.9900", 5)], [])

    run(body())


def test_deltas_nobody_subscribed_to_still_move_their_chains_so_a_late_subscriber_chains_on(tmp_path):
    """A book delta or trade push with no subscriber is not built, but its sequence number is taken:
    a subscriber arriving later starts from the latest seq and the next push follows it."""
    async def body():
        async with venue(tmp_path) as v, v.client("alice") as alice, v.client("bob") as bob, \
                v.client(None) as late:
            await alice.place(MARKET, "sell", 3, price="2.0010")
            await bob.place(MARKET, "buy", 3, price="2.0010")  # a trade nobody watches
            await alice.place(MARKET, "buy", 4, price="1.9900")  # a book change nobody watches
            trade_seq, book_seq = v.gw.trade_seq[0], v.gw.book_seq[0]
            assert trade_seq > 0 and book_seq > trade_seq  # both chains moved with nobody subscribed
            book = await late.subscribe_book(MARKET)
            await late.subscribe("trades", MARKET)
            assert book.seq == book_seq and book.levels() == ([("1.9900", 4)], [])
            await alice.place(MARKET, "sell", 2, price="2.0020")
            await bob.place(MARKET, "buy", 2, price="2.0020")
            tr = await late.next_push("trades")
            assert tr.prev_seq == trade_seq and [(t.price, t.size_lots) for t in tr.data] == [("2.0020", 2)]
            await settled(book, v.gw)
            assert book.resyncs == 0 and book.levels() == engine_book(v.gw)

    run(body())


def test_trades_and_ticker(tmp_path):
    async def body():
        async with venue(tmp_path) as v, v.client("alice") as alice, v.client("bob") as bob, \
                v.client(None) as watcher:
            await watcher.subscribe("trades", MARKET)
            await watcher.subscribe("ticker", MARKET)
            snap = await watcher.next_push("ticker")
            assert snap.type == "snapshot" and snap.data.index == "2.0000"
            await alice.place(MARKET, "sell", 7, price="2.0010")
            await bob.place(MARKET, "buy", 7, price="2.0010")
            tr = await watcher.next_push("trades")
            assert [(t.price, t.size_lots, t.taker_side) for t in tr.data] == [("2.0010", 7, "buy")]
            while True:
                tk = await watcher.next_push("ticker")
                if tk.data.open_interest_lots == 7:
                    break
            assert tk.prev_seq < tk.seq

    run(body())


def test_the_ticker_carries_the_fix_with_its_date_and_vintage_and_a_final_changes_it(tmp_path):
    """Issue 15: the latest fix with its vintage. A provisional then its final at the same price: the
    ticker updates on the vintage alone; admin.overview says the same."""
    from perp.commands import SetIndex

    def index(vintage: str) -> SetIndex:
        return SetIndex(ts_ns=0, market=MARKET, price="2.0000", fix_price="2.0100", fix_vintage=vintage,
                        fix_date="2026-11-30")

    async def body():
        async with venue(tmp_path) as v, v.client(None) as watcher, v.client("admin") as admin:
            await watcher.subscribe("ticker", MARKET)
            snap = await watcher.next_push("ticker")
            assert (snap.data.fix_price, snap.data.fix_vintage, snap.data.fix_date) == (None, None, None)
            for vintage in ("provisional", "final"):
                await v.gw.submit_system([index(vintage)])
                tk = await watcher.next_push("ticker")
                assert (tk.data.fix_price, tk.data.fix_date, tk.data.fix_vintage) == ("2.0100", "2026-11-30", vintage)
                (ov,) = (await admin.request("admin.overview", {}))["markets"]
                assert (ov["fix_price"], ov["fix_date"], ov["fix_vintage"]) == ("2.0100", "2026-11-30", vintage)

    run(body())


def test_subscription_limit_unsubscribe_and_the_user_snapshot(tmp_path):
    async def body():
        from gateway.errors import GatewayCode as G

        async with venue(tmp_path, max_subscriptions=2) as v, v.client("alice") as alice, v.client("bob") as bob:
            await bob.place(MARKET, "sell", 5, price="2.0000")
            await alice.place(MARKET, "buy", 5, price="2.0000")  # alice long 5
            await alice.place(MARKET, "buy", 3, price="1.9000")
            await alice.subscribe("user")
            snap = await alice.next_push("user")
            assert [o.remaining_lots for o in snap.data.open_orders] == [3]
            assert snap.data.account["positions"][0]["lots"] == 5
            assert snap.data.adl[0]["side"] == "long" and {"rank", "place", "quintile"} <= set(snap.data.adl[0])
            await alice.subscribe("trades", MARKET)
            try:
                await alice.subscribe("ticker", MARKET)
                raise AssertionError("a third subscription was accepted")
            except GatewayError as exc:
                assert exc.code == G.TOO_MANY_SUBSCRIPTIONS
            await alice.unsubscribe("trades", MARKET)
            await alice.subscribe("ticker", MARKET)  # room again
            await bob.place(MARKET, "sell", 3, price="1.9000")
            push = await alice.next_push("user")
            assert any(type(e).__name__ == "Fill" for e in push.data)
            assert alice.pending_pushes("trades") == []  # unsubscribed: no trades pushed

    run(body())


def test_merged_book_deltas_come_at_most_once_per_interval_and_rebuild_the_same_book(tmp_path):
    interval_ms = 50

    async def body():
        async with venue(tmp_path, book_interval_ms=interval_ms, fsync="never") as v, \
                v.client("alice") as alice, v.client("bob") as bob, v.client(None) as watcher:
            book = await watcher.subscribe_book(MARKET)
            deltas: list[int] = []
            apply = book.apply

            def counting(kind, seq, prev_seq, data):
                if kind == "delta":
                    deltas.append(seq)
                return apply(kind, seq, prev_seq, data)

            book.apply = counting
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            seq0 = v.gw.engine.seq
            await random_session([alice, bob], random.Random(11), 40)
            elapsed_ms = (loop.time() - t0) * 1e3
            await asyncio.sleep(3 * interval_ms / 1e3)  # the last merged delta leaves within the interval
            await settled(book, v.gw)
            assert book.levels() == engine_book(v.gw) and book.resyncs == 0
            batches = v.gw.engine.seq - seq0  # an upper bound of the batches (one command or more each)
            assert 0 < len(deltas) <= elapsed_ms / interval_ms + 2 < batches
            assert deltas == sorted(deltas)

    run(body())

