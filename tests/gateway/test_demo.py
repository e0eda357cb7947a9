"""The example market maker and `perp serve --demo`'s agents, all through the public client."""

from __future__ import annotations

import asyncio

from gateway.demo import Demo, load_example_maker
from tests.gateway.conftest import ALICE, INDEX_TICKS, MARKET, run, venue

mm = load_example_maker()


def test_quotes_lean_against_inventory():
    maker = mm.MarketMaker(None, mm.MakerConfig(levels=2, size_lots=10, half_spread_ticks=10, level_step_ticks=5,
                                                skew_ticks_per_100_lots=5))
    maker.index_ticks = INDEX_TICKS
    maker.position_lots = 400  # long 400: fair = 20000 - 400 x 5 / 100 = 19980
    got = [(q["side"], q["price"]) for q in maker.quotes()]
    assert got == [("buy", "1.9970"), ("sell", "1.9990"), ("buy", "1.9965"), ("sell", "1.9995")]
    maker.position_lots = 5_000  # past the inventory cap: no more bids
    assert {q["side"] for q in maker.quotes()} == {"sell"}


def test_the_example_maker_quotes_and_cancel_after_pulls_its_quotes_when_it_dies(tmp_path):
    async def body():
        async with venue(tmp_path) as v, v.client(None) as watcher:
            book = await watcher.subscribe_book(MARKET)
            client = v.client("alice", reconnect=False)
            await client.connect()
            maker = mm.MarketMaker(client, mm.MakerConfig(levels=3, size_lots=10, refresh_s=0.2))
            stop = asyncio.Event()
            task = asyncio.create_task(maker.run(stop))
            while len(book.bids) < 3 or len(book.asks) < 3:
                book.updated.clear()
                await asyncio.wait_for(book.updated.wait(), 10)
            bids, asks = book.levels()
            assert bids[0] == ("1.9990", 10) and asks[0] == ("2.0010", 10)
            client._ws.transport.abort()  # the maker's process dies without cancelling anything
            stop.set()
            await asyncio.wait_for(task, 10)
            while book.bids or book.asks:  # the dead-man's switch (3 x 0.2 s) empties the book
                book.updated.clear()
                await asyncio.wait_for(book.updated.wait(), 10)
            assert v.gw.engine.open_orders().shape[0] == 0
            assert v.gw.engine.position_lots(ALICE, 0) == 0

    run(body())


def test_the_demo_shows_a_live_book_with_trades(tmp_path):
    async def body():
        async with venue(tmp_path, deposits=False) as v, v.client(None) as watcher:
            book = await watcher.subscribe_book(MARKET)
            await watcher.subscribe("trades", MARKET)
            demo = Demo(v.url, v.gw.keys, MARKET, seed=3)
            await demo.start()
            try:
                trade = await watcher.next_push("trades", timeout_s=20)
                assert trade.data and book.bids and book.asks
            finally:
                await demo.close()

    run(body(), 60)
