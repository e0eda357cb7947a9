"""The console survives a restart of the venue: the page reconnects, logs on again with the key it
holds in memory, resubscribes and keeps showing live state (real Chromium, real gateway)."""

from __future__ import annotations

import asyncio
import socket

from gateway.client import GatewayClient
from gateway.server import Gateway, ServerConfig
from tests.console.conftest import chromium_page
from tests.console.test_console_browser import log_on, wait_text
from tests.gateway.conftest import ALICE, BOB, MARKET, TIMEOUT_S, make_keys, pinned_feed, run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_console_reconnects_and_logs_on_again_after_the_venue_restarts(tmp_path):
    keys, creds = make_keys(tmp_path / "keys.json")
    config = ServerConfig(port=_free_port(), data_dir=str(tmp_path / "data"), keys_path=str(keys.path),
                          group_commit_us=300, liquidation_interval_ms=0)
    url = f"ws://127.0.0.1:{config.port}"
    row = f'#markets tr[data-market="{MARKET}"]'

    async def trade(lots: int) -> None:
        async with GatewayClient(url, creds["bob"]) as bob, GatewayClient(url, creds["alice"]) as alice:
            await bob.place(MARKET, "sell", lots, price="2.0000")
            await alice.place(MARKET, "buy", lots, price="2.0000")

    async def body():
        gw = Gateway(config, feed=pinned_feed())
        await gw.start()
        async with chromium_page(tmp_path / "profile") as page:
            try:
                async with GatewayClient(url, creds["admin"]) as admin:
                    for acct in (ALICE, BOB):
                        await admin.deposit(acct, 1_000_000_000_000)
                await log_on(page, url, creds["admin"])
                await trade(100)
                await wait_text(page, f"{row} td[data-col=oi]", "t === '100'")
                await asyncio.wait_for(gw.stop(), TIMEOUT_S)  # drains, snapshots, closes every connection
                await wait_text(page, "#conn-status", "t.includes('reconnecting')")
                gw = Gateway(config, feed=pinned_feed())  # recovers from the snapshot and the journal
                await gw.start()
                await wait_text(page, "#conn-status", "t === 'live'")
                await trade(50)  # live again: the resubscribed ticker shows the new open interest
                await wait_text(page, f"{row} td[data-col=oi]", "t === '150'")
                assert page.js_errors == []
            finally:
                await asyncio.wait_for(gw.stop(), TIMEOUT_S)

    run(body(), timeout_s=120.0)
