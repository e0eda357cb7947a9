"""`perp serve --demo`: seeded market makers and takers that trade **through the client**, so that a
newcomer who connects sees a live book on the real H100 index.

The makers are the example market maker (examples/market_maker.py, loaded from the checkout) on
accounts 100 and 101; the takers (accounts 110-114) send seeded market and IOC orders. Their keys
are HMAC keys labelled `demo-*` in the server's key file (created on the first run, reused after),
and an admin key (account 99) funds them through `admin.deposit` when their collateral is low.
Nothing here touches the engine directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import random
import sys
from pathlib import Path
from types import ModuleType

from gateway.client import ConnectionLost, Credentials, GatewayClient, GatewayError
from gateway.keys import KeyStore

MAKERS = (100, 101)
TAKERS = tuple(range(110, 115))
ADMIN = 99
FUND_MICRO = {100: 2_000_000_000_000, 101: 2_000_000_000_000} | {a: 50_000_000_000 for a in TAKERS}


def load_example_maker() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "examples" / "market_maker.py"
    spec = importlib.util.spec_from_file_location("perp_example_market_maker", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod


def demo_credentials(store: KeyStore) -> dict[int, Credentials]:
    """One HMAC key per demo account (reused across runs: the server keeps HMAC secrets)."""
    out: dict[int, Credentials] = {}
    by_label = {k.label: k for k in store.keys.values() if not k.revoked and k.kind == "hmac"}
    for acct, perms in [(ADMIN, ("admin", "read"))] + [(a, ("read", "trade")) for a in MAKERS + TAKERS]:
        k = by_label.get(f"demo-{acct}")
        if k is None:
            k, _ = store.create(acct, perms, "hmac", label=f"demo-{acct}")
        out[acct] = Credentials("hmac", k.key, k.secret)
    return out


class Demo:
    def __init__(self, url: str, store: KeyStore, market: str, seed: int = 7):
        self.url = url
        self.creds = demo_credentials(store)
        self.market = market
        self.seed = seed
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task] = []
        self.clients: list[GatewayClient] = []

    async def start(self) -> None:
        async with GatewayClient(self.url, self.creds[ADMIN]) as admin:
            for acct, amount in FUND_MICRO.items():
                await admin.deposit(acct, amount)
        mm = load_example_maker()
        for i, acct in enumerate(MAKERS):
            c = GatewayClient(self.url, self.creds[acct])
            await c.connect()
            self.clients.append(c)
            cfg = mm.MakerConfig(market=self.market, levels=5, size_lots=40 + 20 * i, half_spread_ticks=5 + 5 * i,
                                 refresh_s=1.0 + 0.5 * i)
            self.tasks.append(asyncio.create_task(mm.MarketMaker(c, cfg).run(self.stop)))
        for j, acct in enumerate(TAKERS):
            c = GatewayClient(self.url, self.creds[acct])
            await c.connect()
            self.clients.append(c)
            self.tasks.append(asyncio.create_task(self._taker(c, random.Random(self.seed * 1000 + j))))

    async def _taker(self, c: GatewayClient, rng: random.Random) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), rng.uniform(0.3, 3.0))
            if self.stop.is_set():
                return
            with contextlib.suppress(GatewayError, ConnectionLost, TimeoutError):
                await c.place(self.market, rng.choice(("buy", "sell")), rng.randint(1, 60), order_type="market")

    async def close(self) -> None:
        self.stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 10)
        for c in self.clients:
            with contextlib.suppress(Exception):
                await c.close()
