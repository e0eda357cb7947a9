"""`perp serve`'s index feed drives every market whose series the fix source (the shipped CSV) holds, not only
the first (gateway.feed.IndexFeeds): a second market of the markets file, a market listed by `list_market`
(fed within the step it was listed in, and after a restart); a market whose series the CSV lacks is warned about, gets no index and its
orders are refused 1010; a restart within a step sends no set_index the journal already holds."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest
from structlog.testing import capture_logs

from gateway.client import GatewayClient, GatewayError
from gateway.limits import WallClock
from perp import layout as L
from tests.gateway.conftest import MARKET, ManualTime, run, venue
from tests.test_admin_list_market import A100, A100_SPEC

H200 = "H200-PERP"
MARKETS_TOML = Path(__file__).resolve().parents[2] / "perp" / "markets.toml"


def two_markets(tmp_path: Path, symbol: str = H200, series: str = "GPUM.H200.SXM.SPOT") -> str:
    """A markets file: H100-PERP as shipped, then a second market with the same entry on `series`."""
    h100 = MARKETS_TOML.read_text()
    second = h100.replace(f'symbol = "{MARKET}"', f'symbol = "{symbol}"').replace(
        'series = "GPUM.H100.SXM.SPOT"', f'series = "{series}"')
    path = tmp_path / "markets.toml"
    path.write_text(h100 + "\n" + second)
    return str(path)


async def ticker_index(client: GatewayClient, market: str, timeout_s: float = 20.0) -> str:
    """The index the ticker snapshot of `market` shows, once the feed has set one."""
    loop = asyncio.get_running_loop()
    t_end = loop.time() + timeout_s
    while True:
        await client.subscribe("ticker", market)
        snap = await client.next_push("ticker")
        await client.unsubscribe("ticker", market)
        if snap.data.index is not None:
            return snap.data.index
        assert loop.time() < t_end, f"no index for {market}"
        await asyncio.sleep(0.05)


def test_a_second_market_of_the_markets_file_is_fed_and_takes_orders(tmp_path):
    async def body():
        async with venue(tmp_path, feed=None, markets_path=two_markets(tmp_path)) as v:
            assert v.gw.feed.markets == [MARKET, H200]
            async with v.client("alice") as alice:
                h100 = await ticker_index(alice, MARKET)
                h200 = await ticker_index(alice, H200)
                assert h100 != h200  # each market on its own series
                ack = await alice.place(H200, "buy", 1, price=h200)
                assert ack.order_id > 0
                ack = await alice.place(MARKET, "buy", 1, price=h100)
                assert ack.order_id > 0

    run(body(), timeout_s=90)


def test_a_market_listed_on_a_running_venue_is_fed_at_once_and_after_a_restart(tmp_path):
    async def body():
        with capture_logs() as logs:
            async with venue(tmp_path, feed=None) as v:
                keys = (v.keys, v.creds)
                assert v.gw.feed.markets == [MARKET]
                async with v.client("admin") as admin:
                    await admin.request("admin.submit", {"command": {
                        "type": "list_market", "spec": msgspec.to_builtins(A100_SPEC), "reason": "launch A100"}})
                assert v.gw.engine.market_index(A100) == 1
                async with v.client("alice") as alice:  # fed within the running step, no restart
                    idx = await ticker_index(alice, A100)
                    assert v.gw.feed.markets == [MARKET, A100]
                    ack = await alice.place(A100, "buy", 10, price=idx)
                    assert ack.order_id > 0
                stopped = (v.gw.engine.seq, v.gw.engine.state_hash())
        assert [e["market"] for e in logs if e["event"] == "index_feed_listed"] == [A100]
        sent = [e["market"] for e in logs if e["event"] == "index"]
        assert sent.count(A100) == 1 and sent.count(MARKET) >= 1  # its own point, not every market's again
        async with venue(tmp_path, deposits=False, keys=keys, feed=None) as v2:
            assert (v2.gw.engine.seq, v2.gw.engine.state_hash()) == stopped
            assert v2.gw.feed.markets == [MARKET, A100]  # recovered from the journal, then fed
            async with v2.client("alice") as alice:
                idx = await ticker_index(alice, A100)
                ack = await alice.place(A100, "buy", 10, price=idx)
                assert ack.order_id > 0

    run(body(), timeout_s=120)


def test_a_market_whose_series_is_not_in_the_csv_is_warned_gets_no_index_and_refuses_orders(tmp_path):
    async def body():
        with capture_logs() as logs:
            async with venue(tmp_path, feed=None, markets_path=two_markets(tmp_path, series="GPUM.NOPE.SPOT")) as v:
                assert v.gw.feed.markets == [MARKET]
                async with v.client("alice") as alice:
                    idx = await ticker_index(alice, MARKET)  # the other market is fed
                    assert (await alice.place(MARKET, "buy", 1, price=idx)).order_id > 0
                    with pytest.raises(GatewayError) as exc:
                        await alice.place(H200, "buy", 1, price=idx)
                    assert exc.value.engine_code == 1010  # NO_REFERENCE_PRICE
                    assert v.gw.engine.state.mkt[1][L.M_INDEX] == 0
        warned = [e for e in logs if e["event"] == "index_feed_no_series"]
        assert [(e["log_level"], e["market"], e["series"]) for e in warned] == [("warning", H200, "GPUM.NOPE.SPOT")]

    run(body(), timeout_s=90)


def test_a_restart_within_a_step_sends_no_set_index_for_any_market(tmp_path):
    clock = WallClock(0, source=ManualTime())  # one instant: both starts fall in the same feed step
    window = {"recv_window_ms": 3600 * 1000}
    markets = two_markets(tmp_path)

    async def body():
        async with venue(tmp_path, feed=None, clock=clock, markets_path=markets, **window) as v:
            keys = (v.keys, v.creds)
            async with v.client("alice") as alice:
                await ticker_index(alice, MARKET)
                await ticker_index(alice, H200)
            stopped = (v.gw.engine.seq, v.gw.engine.state_hash())
        async with venue(tmp_path, deposits=False, keys=keys, feed=None, clock=clock, markets_path=markets,
                         **window) as v2:
            assert (v2.gw.engine.seq, v2.gw.engine.state_hash()) == stopped
            async with v2.client("alice") as alice:
                await ticker_index(alice, H200)
                while v2.gw._index_step is None or v2.gw._index_resumed:  # the first step has run
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.3)  # anything it queued would be sequenced by now
            assert (v2.gw.engine.seq, v2.gw.engine.state_hash()) == stopped

    run(body(), timeout_s=120)
