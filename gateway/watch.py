"""`python3 -m gateway.watch [--url URL]`: a live one-line-per-second view of a market through the
public client (book top, index, mark, funding, trades): what a newcomer sees of `perp serve --demo`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib

from gateway.client import GatewayClient


async def watch(url: str, market: str, seconds: float | None) -> None:
    async with GatewayClient(url) as c:
        book = await c.subscribe_book(market)
        await c.subscribe("ticker", market)
        await c.subscribe("trades", market)
        loop = asyncio.get_running_loop()
        end = None if seconds is None else loop.time() + seconds
        while end is None or loop.time() < end:
            await asyncio.sleep(1.0)
            tickers = c.pending_pushes("ticker")
            trades = [t for p in c.pending_pushes("trades") for t in p.data]
            bids, asks = book.levels()
            t = tickers[-1].data if tickers else None
            line = (f"{market}  bid {bids[0][1] if bids else 0:>5} @ {bids[0][0] if bids else '-':<8}"
                    f" ask {asks[0][1] if asks else 0:>5} @ {asks[0][0] if asks else '-':<8}")
            if t is not None:
                line += (f" index {t.index} mark {t.mark} OI {t.open_interest_lots}"
                         f" funding(pred) {t.predicted_funding_rate_ppb / 1e7:+.5f}%")
            if trades:
                line += f"  trades {len(trades)} last {trades[-1].size_lots}@{trades[-1].price}"
            print(line, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="ws://127.0.0.1:8765")
    ap.add_argument("--market", default="H100-PERP")
    ap.add_argument("--seconds", type=float, default=None)
    args = ap.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(watch(args.url, args.market, args.seconds))


if __name__ == "__main__":
    main()
