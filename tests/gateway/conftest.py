"""Gateway test fixtures: a real `Gateway` on an ephemeral loopback port, real clients, real keys.

Tests drive asyncio with `asyncio.run` inside plain test functions (no plugin); every await that
could hang is bounded by `asyncio.wait_for`. The index feed is pinned to one price ($2.0000) so
orders are deterministic; the liquidation timer is off unless a test turns it on, and book deltas
go out once per batch (`book_interval_ms=0`) unless a test asks for merged ones.

Accounts (>= 16: ids below are reserved venue accounts):
- ALICE 20: ed25519 key, read + trade;  BOB 21: hmac key, read + trade;
- READER 22: ed25519 key, read only;     ADMIN 30: ed25519 key, admin (deposits).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.client import Credentials, GatewayClient
from gateway.feed import IndexFeed
from gateway.keys import KeyStore
from gateway.server import Gateway, ServerConfig
from perp.markets import load_markets

ALICE, BOB, READER, ADMIN = 20, 21, 22, 30
MARKET = "H100-PERP"
INDEX_TICKS = 20_000  # $2.0000
TIMEOUT_S = 20.0


def run(coro, timeout_s: float = 45.0):
    """Run one async test body with a hard bound."""
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


@dataclass
class Venue:
    gw: Gateway
    url: str
    creds: dict[str, Credentials]
    keys: KeyStore
    data_dir: Path

    def client(self, who: str | None, **kw) -> GatewayClient:
        return GatewayClient(self.url, self.creds[who] if who else None, **kw)


def make_keys(path: Path) -> tuple[KeyStore, dict[str, Credentials]]:
    keys = KeyStore(path)
    creds = {}
    for name, acct, perms, kind in (("alice", ALICE, ("read", "trade"), "ed25519"),
                                    ("bob", BOB, ("read", "trade"), "hmac"),
                                    ("reader", READER, ("read",), "ed25519"),
                                    ("admin", ADMIN, ("admin", "read"), "ed25519")):
        k, secret = keys.create(acct, perms, kind, label=name)
        creds[name] = Credentials(kind, k.key, secret)
    return keys, creds


def pinned_feed(price_ticks: int = INDEX_TICKS) -> IndexFeed:
    from perp.commands import SetIndex
    from perp.markets import ticks_to_price

    spec = load_markets().market[0]
    fresh = SetIndex(ts_ns=0, market=spec.symbol, price=ticks_to_price(spec, price_ticks))  # a fresh anchor, no gate
    return IndexFeed(spec, [(0, price_ticks, fresh)], step_ns=1 << 62)


# what every test venue runs with unless a test asks otherwise: one book delta per batch; a module
# may change an entry for all its tests (the market-data and protection tests run once with every
# push written through the connections' queues, once with every push by the fan-out kernel)
VENUE_DEFAULTS: dict = {"group_commit_us": 300, "liquidation_interval_ms": 0, "book_interval_ms": 0}


@pytest.fixture(params=["queue", "kernel"])
def fanout_mode(request, monkeypatch) -> str:
    """Run the test twice: every push written through each connection's queue and transport (the
    server's way for a few subscribers), and every push to an idle socket by the fan-out kernel
    (gateway.fanout, the server's way from `fanout_kernel_min` subscribers)."""
    monkeypatch.setitem(VENUE_DEFAULTS, "fanout_kernel_min", 0 if request.param == "queue" else 1)
    return request.param


@contextlib.asynccontextmanager
async def venue(tmp_path: Path, *, deposits: bool = True, keys=None, clock=None, feed="pinned",
                **cfg) -> AsyncIterator[Venue]:
    """`feed`: "pinned" (H100 at $2.0000), an IndexFeed / list of them, or None: the server's own feed
    over the shipped CSV, one per market whose series it holds (gateway.feed.IndexFeeds)."""
    data = tmp_path / "data"
    if keys is None:
        keys, creds = make_keys(tmp_path / "keys.json")
    else:
        keys, creds = keys
    config = ServerConfig(**({"port": 0, "data_dir": str(data), "keys_path": str(keys.path)} | VENUE_DEFAULTS | cfg))
    gw = Gateway(config, feed=pinned_feed() if feed == "pinned" else feed, clock=clock)
    await gw.start()
    v = Venue(gw, f"ws://127.0.0.1:{gw.port}", creds, keys, data)
    try:
        if deposits:
            async with v.client("admin") as admin:
                for acct in (ALICE, BOB, READER):
                    await admin.deposit(acct, 1_000_000_000_000)  # $1M each
        yield v
    finally:
        await asyncio.wait_for(gw.stop(), TIMEOUT_S)


MINUTE_NS = 60 * 10**9
HOUR_NS = 3_600_000_000_000


class ManualTime:
    """The server's clock source, moved by the test (the server still never goes backwards). It starts
    at the wall clock, so that clients can log on (their signed timestamps must fall in the receive
    window around it)."""

    def __init__(self):
        self.now = time.time_ns()

    def start_of_next_hour(self) -> None:
        """Jump to one second into the next hour: a test's hour of minutes after this crosses exactly
        one funding hour whatever the time of day it runs at (started at hh:59 it crossed two)."""
        self.now = (self.now // HOUR_NS + 1) * HOUR_NS + 1_000_000_000

    def __call__(self) -> int:
        return self.now
