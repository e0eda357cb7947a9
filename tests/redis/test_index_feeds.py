"""`perp engine`'s index feed drives every market whose series the shipped CSV holds (gateway.feed.IndexFeeds):
both markets of a two-market venue get their index through NS:cmd and take orders through a `perp gateway`;
an engine restarted within a step sends no set_index the stream already holds; a market listed while the
engine runs is fed within the step, without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import time

import msgspec
from structlog.testing import capture_logs

from gateway.client import GatewayClient
from gateway.limits import WallClock
from perp import layout as L
from perp.markets import ticks_to_price
from tests.gateway.conftest import ALICE, MARKET, make_keys, run
from tests.gateway.test_feeds import H200, two_markets
from tests.test_admin_list_market import A100, A100_SPEC


async def _fed(eng, markets: int, timeout_s: float = 20.0) -> None:
    t_end = time.monotonic() + timeout_s
    while not all(eng.engine.state.mkt[m][L.M_INDEX] for m in range(markets)):
        assert time.monotonic() < t_end, "not every market has an index"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def _venue(cfg, keys_path, data_dir, t0: int):
    """An in-process `perp engine` on one instant of the clock (one feed step) and one `perp gateway`."""
    from gateway.engine_proc import EngineProcess
    from gateway.front import RedisGateway
    from gateway.server import ServerConfig

    eng = EngineProcess(cfg, clock=WallClock(source=lambda: t0))
    await eng.start()
    gw = RedisGateway(ServerConfig(port=0, data_dir=str(data_dir), keys_path=str(keys_path), group_commit_us=200),
                      redis_url=cfg.redis_url, namespace=cfg.namespace)
    await gw.start()
    try:
        yield eng, f"ws://127.0.0.1:{gw.port}"
    finally:
        await gw.stop()
        await eng.stop()


def test_perp_engine_feeds_both_markets_and_a_restart_within_a_step_sends_nothing_again(redis_server, tmp_path):
    from gateway.engine_proc import EngineConfig, EngineProcess

    keys, creds = make_keys(tmp_path / "keys.json")
    t0 = time.time_ns()
    cfg = EngineConfig(redis_url=redis_server.url, namespace="feeds", markets_path=two_markets(tmp_path),
                       liquidation_interval_ms=0)

    async def body():
        async with _venue(cfg, keys.path, tmp_path / "g", t0) as (eng, url):
            assert eng.feed.markets == [MARKET, H200]
            await _fed(eng, 2)
            price = ticks_to_price(eng.engine.specs[1], int(eng.engine.state.mkt[1][L.M_INDEX]))
            async with GatewayClient(url, creds["admin"]) as admin:
                await admin.deposit(ALICE, 10**12)
            async with GatewayClient(url, creds["alice"]) as alice:
                assert (await alice.place(H200, "buy", 1, price=price)).order_id > 0
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


def test_perp_engine_feeds_a_market_listed_while_it_runs_within_the_step(redis_server, tmp_path):
    from gateway.engine_proc import EngineConfig

    keys, creds = make_keys(tmp_path / "keys.json")
    t0 = time.time_ns()
    cfg = EngineConfig(redis_url=redis_server.url, namespace="listed", liquidation_interval_ms=0)

    async def body():
        async with _venue(cfg, keys.path, tmp_path / "g", t0) as (eng, url):  # the listing within one step
            assert eng.feed.markets == [MARKET]
            await _fed(eng, 1)
            async with GatewayClient(url, creds["admin"]) as admin:
                await admin.deposit(ALICE, 10**12)
                await admin.request("admin.submit", {"command": {
                    "type": "list_market", "spec": msgspec.to_builtins(A100_SPEC), "reason": "launch A100"}})
            h100_index = int(eng.engine.state.mkt[0][L.M_INDEX])
            await _fed(eng, 2)
            assert eng.feed.markets == [MARKET, A100]
            assert int(eng.engine.state.mkt[0][L.M_INDEX]) == h100_index  # only the new market's point was sent
            price = ticks_to_price(eng.engine.specs[1], int(eng.engine.state.mkt[1][L.M_INDEX]))
            async with GatewayClient(url, creds["alice"]) as alice:
                assert (await alice.place(A100, "buy", 1, price=price)).order_id > 0

    with capture_logs() as logs:
        run(body(), timeout_s=120)
    assert [e["market"] for e in logs if e["event"] == "index_feed_listed"] == [A100]
    assert [e["market"] for e in logs if e["event"] == "index"] == [MARKET, A100]
