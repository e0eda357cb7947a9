"""`perp engine`'s index feed drives every market whose series the shipped CSV holds (gateway.feed.IndexFeeds):
both markets of a two-market venue get their index through NS:cmd and take orders through a `perp gateway`;
an engine restarted within a step sends no set_index the stream already holds."""

from __future__ import annotations

import asyncio
import time

from gateway.client import GatewayClient
from gateway.limits import WallClock
from perp import layout as L
from perp.markets import ticks_to_price
from tests.gateway.conftest import ALICE, MARKET, make_keys, run
from tests.gateway.test_feeds import H200, two_markets


async def _fed(eng, markets: int, timeout_s: float = 20.0) -> None:
    t_end = time.monotonic() + timeout_s
    while not all(eng.engine.state.mkt[m][L.M_INDEX] for m in range(markets)):
        assert time.monotonic() < t_end, "not every market has an index"
        await asyncio.sleep(0.02)


def test_perp_engine_feeds_both_markets_and_a_restart_within_a_step_sends_nothing_again(redis_server, tmp_path):
    from gateway.engine_proc import EngineConfig, EngineProcess
    from gateway.front import RedisGateway
    from gateway.server import ServerConfig

    keys, creds = make_keys(tmp_path / "keys.json")
    t0 = time.time_ns()
    cfg = EngineConfig(redis_url=redis_server.url, namespace="feeds", markets_path=two_markets(tmp_path),
                       liquidation_interval_ms=0)

    async def body():
        eng = EngineProcess(cfg, clock=WallClock(source=lambda: t0))  # one instant: one feed step
        assert eng.feed.markets == [MARKET, H200]
        await eng.start()
        gw = RedisGateway(ServerConfig(port=0, data_dir=str(tmp_path / "g"), keys_path=str(keys.path),
                                       group_commit_us=200), redis_url=redis_server.url, namespace="feeds")
        await gw.start()
        try:
            await _fed(eng, 2)
            price = ticks_to_price(eng.engine.specs[1], int(eng.engine.state.mkt[1][L.M_INDEX]))
            url = f"ws://127.0.0.1:{gw.port}"
            async with GatewayClient(url, creds["admin"]) as admin:
                await admin.deposit(ALICE, 10**12)
            async with GatewayClient(url, creds["alice"]) as alice:
                assert (await alice.place(H200, "buy", 1, price=price)).order_id > 0
        finally:
            await gw.stop()
            await eng.stop()
        stopped = (eng.engine.seq, eng.engine.state_hash())
        eng2 = EngineProcess(cfg, clock=WallClock(source=lambda: t0))
        assert (eng2.engine.seq, eng2.engine.state_hash()) == stopped
        await eng2.start()
        try:
            while eng2._index_resumed:  # the first step has run (after the stream's backlog)
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)  # anything it appended would be sequenced by now
            assert (eng2.engine.seq, eng2.engine.state_hash()) == stopped
        finally:
            await eng2.stop()

    run(body(), timeout_s=120)
