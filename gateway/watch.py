"""`python3 -m gateway.watch [--url URL | --redis URL]`: a live one-line-per-second view of a market through the
public client (book top, index, mark, funding, trades): what a newcomer sees of `perp serve --demo`;
with `--redis`, the book and trades from the engine's event stream of a scaled-out venue."""

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


def watch_redis(url: str, namespace: str, market: str, seconds: float | None) -> None:
    """The same line from the engine's own per-market event stream (NS:ev:SYMBOL) of a scaled-out
    venue, without a gateway: the book from the stream's first entry, then trades as they come."""
    import time

    from gateway import redis_journal as RJ
    from perp import layout as L
    from perp.markets import ticks_to_price

    r = RJ.connect_sync(url)
    keys = RJ.Keys(namespace)
    spec = next(s for s in RJ.markets_of(r, keys, wait_s=10).market if s.symbol == market)
    book = RJ.EventBook()
    last_id = "0-0"
    for last_id, rows in RJ.market_events(r, keys, market):
        book.apply(rows)
    end = None if seconds is None else time.monotonic() + seconds
    while end is None or time.monotonic() < end:
        t_line = time.monotonic() + 1.0
        trades = 0
        while time.monotonic() < t_line:
            got = r.xread({keys.events(market): last_id}, count=256, block=200)
            for last_id, fields in (got[0][1] if got else ()):
                rows = RJ.rows_from_event_bytes(fields[b"r"])
                book.apply(rows)
                trades += int(((rows[:, L.E_KIND] == L.EV_FILL) & (rows[:, L.E_CODE] == 2)).sum())
        bids, asks = book.levels
        bid = max(bids) if bids else None
        ask = min(asks) if asks else None
        print(f"{market}  seq {book.seq}  bid {bids.get(bid, 0):>5} @ {ticks_to_price(spec, bid) if bid else '-':<8}"
              f" ask {asks.get(ask, 0):>5} @ {ticks_to_price(spec, ask) if ask else '-':<8}  trades {trades}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="ws://127.0.0.1:8765")
    ap.add_argument("--redis", default=None, help="redis://...: read the engine's event stream instead of a gateway")
    ap.add_argument("--namespace", default="perp")
    ap.add_argument("--market", default="H100-PERP")
    ap.add_argument("--seconds", type=float, default=None)
    args = ap.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        if args.redis:
            watch_redis(args.redis, args.namespace, args.market, args.seconds)
        else:
            asyncio.run(watch(args.url, args.market, args.seconds))


if __name__ == "__main__":
    main()
