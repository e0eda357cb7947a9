"""An example market maker that trades through the public client (gateway.client).

It quotes a ladder around the index anchor (the ticker's `index`), skews the ladder against its
inventory (long: both sides shift down, so it sells more readily than it buys), and arms the
dead-man's switch (`cancel_after`) on every refresh, so that if it dies or loses its connection its
quotes are pulled by the venue within `3 x refresh` instead of resting stale on a thin book.

    perp keys create --keys data/keys.json --account 100 --perm read,trade --out mm.key
    python examples/market_maker.py --url ws://127.0.0.1:8765 --key mm.key

Each refresh is one `order.cancel_all` and one `order.batch` of post-only places, so a requote is
two frames however many levels there are. Prices are computed in integer ticks and sent as decimal
strings on the tick grid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from dataclasses import dataclass
from decimal import Decimal

from gateway.client import ConnectionLost, Credentials, GatewayClient, GatewayError


@dataclass
class MakerConfig:
    market: str = "H100-PERP"
    levels: int = 3  # quotes per side
    size_lots: int = 50  # per level
    half_spread_ticks: int = 10  # distance of the first level from the (skewed) fair price
    level_step_ticks: int = 10
    skew_ticks_per_100_lots: int = 5  # inventory skew
    max_inventory_lots: int = 2_000  # beyond this, stop quoting the side that would add to it
    refresh_s: float = 1.0


class MarketMaker:
    def __init__(self, client: GatewayClient, config: MakerConfig):
        self.c = client
        self.cfg = config
        self.tick = Decimal("0.0001")
        self.index_ticks: int | None = None
        self.position_lots = 0
        self.requotes = 0

    async def start(self) -> None:
        markets = await self.c.markets()
        spec = next(m for m in markets["markets"] if m["symbol"] == self.cfg.market)
        self.tick = Decimal(spec["tick_size_usd"])
        await self.c.subscribe("ticker", self.cfg.market)

    def _ticks(self, price: str) -> int:
        return int(Decimal(price) / self.tick)

    def _price(self, ticks: int) -> str:
        return str((Decimal(ticks) * self.tick).quantize(self.tick))

    def _read_ticker(self) -> None:
        for push in self.c.pending_pushes("ticker"):
            if push.data.index is not None:
                self.index_ticks = self._ticks(push.data.index)

    async def _read_position(self) -> None:
        info = await self.c.account_info()
        self.position_lots = sum(p["lots"] for p in info["account"]["positions"] if p["market"] == self.cfg.market)

    def quotes(self) -> list[dict]:
        """The ladder for the current index and inventory (post-only places)."""
        cfg = self.cfg
        fair = self.index_ticks - (self.position_lots * cfg.skew_ticks_per_100_lots) // 100
        ops = []
        for i in range(cfg.levels):
            off = cfg.half_spread_ticks + i * cfg.level_step_ticks
            if self.position_lots < cfg.max_inventory_lots:
                ops.append({"op": "place", "market": cfg.market, "side": "buy", "size_lots": cfg.size_lots,
                            "price": self._price(fair - off), "tif": "post_only"})
            if self.position_lots > -cfg.max_inventory_lots:
                ops.append({"op": "place", "market": cfg.market, "side": "sell", "size_lots": cfg.size_lots,
                            "price": self._price(fair + off), "tif": "post_only"})
        return ops

    async def requote(self) -> None:
        self._read_ticker()
        if self.index_ticks is None:
            return
        await self._read_position()
        await self.c.cancel_after(int(self.cfg.refresh_s * 3000))
        await self.c.cancel_all(self.cfg.market)
        await self.c.batch(self.quotes())
        self.requotes += 1

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        while not stop.is_set():
            try:
                await self.requote()
            except (GatewayError, ConnectionLost, TimeoutError):
                pass  # rejected or disconnected: the client reconnects; quote again next time
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.cfg.refresh_s)
        with contextlib.suppress(GatewayError, ConnectionLost, TimeoutError):
            await self.c.cancel_all(self.cfg.market)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="ws://127.0.0.1:8765")
    ap.add_argument("--key", required=True, help="credential file from `perp keys create --out`")
    ap.add_argument("--market", default="H100-PERP")
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--size", type=int, default=50)
    args = ap.parse_args()
    stop = asyncio.Event()
    async with GatewayClient(args.url, Credentials.load(args.key)) as client:
        mm = MarketMaker(client, MakerConfig(market=args.market, levels=args.levels, size_lots=args.size))
        print(f"quoting {args.market} as account {client.account}; Ctrl-C to stop")
        try:
            await mm.run(stop)
        except asyncio.CancelledError:
            stop.set()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
