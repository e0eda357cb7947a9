"""`perp bench fanout`: the loop thread's CPU per subscriber per push, both write paths, like for like.

One `perp serve` gateway in this process (no index feed, no timers) and `subscribers` book
watchers in one more process (the raw-socket watchers of `perp bench gateway`: they read every
frame and answer pings). The same book-delta push is then written `pushes` times, one every
`interval_ms`, alternately through each connection's queue and transport (`fanout_kernel_min` 0)
and by the fan-out kernel (gateway.fanout), in `rounds` alternating rounds so that a drift of the
machine falls on both. Measured with `time.thread_time()` around the whole push -- `_broadcast`
and the flush that writes the queued frames -- on the loop thread: what the order path loses to
the fan-out. The watchers' process runs meanwhile on the machine, as it would.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import msgspec

from gateway import protocol as P
from gateway.bench import MARKET, _subscriber_proc


async def _run(subscribers: int, pushes: int, interval_ms: float, rounds: int) -> dict:
    from gateway.server import Gateway, ServerConfig

    tmp = Path(tempfile.mkdtemp(prefix="perp-bench-fanout-"))
    cfg = ServerConfig(port=0, data_dir=str(tmp / "data"), index_feed=False, liquidation_interval_ms=0,
                       fsync="never", max_conns_per_ip=subscribers + 16, conn_rate_per_s=1e7, conn_burst=10**7)
    gw = Gateway(cfg)
    await gw.start()
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    ready, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_subscriber_proc, args=(f"ws://127.0.0.1:{gw.port}", subscribers, ready, stop, q))
    proc.start()
    try:
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, ready.wait, 120):
            raise RuntimeError("subscribers did not connect")
        m = gw.market_index[MARKET]
        subs = gw.subscribers[("book", m)]
        await asyncio.sleep(0.5)  # the subscribe replies and snapshots written
        per_path: dict[str, list[float]] = {"queue": [], "kernel": []}
        enc = msgspec.json.Encoder()
        levels = [("2.0000", 5), ("1.9999", 12), ("1.9990", 3)]
        for _ in range(rounds):
            for path in ("queue", "kernel"):
                gw.cfg = msgspec.structs.replace(gw.cfg, fanout_kernel_min=0 if path == "queue" else 1)
                cpu_s = 0.0
                for i in range(pushes):
                    frame = enc.encode(P.Push("book", MARKET, "delta", i + 1, i, time.time_ns(),
                                              P.BookData(levels, levels)))
                    t = time.thread_time()
                    gw._broadcast(("book", m), frame, book_market=m)
                    if gw._dirty:
                        gw._flush()
                    cpu_s += time.thread_time() - t
                    await asyncio.sleep(interval_ms / 1000)
                per_path[path].append(cpu_s / pushes / len(subs) * 1e6)
        n_subs = len(subs)
        await asyncio.sleep(0.5)  # the last push read by every watcher before they report
        stop.set()
        sub = await loop.run_in_executor(None, q.get, True, 60)
        queue_us = statistics.median(per_path["queue"])
        kernel_us = statistics.median(per_path["kernel"])
        return {
            "target": "perp serve fan-out (loop thread CPU per subscriber per push)",
            "subscribers": n_subs,
            "pushes_per_round": pushes,
            "rounds": rounds,
            "interval_ms": interval_ms,
            "frame_bytes": len(frame) + 2,
            "queue_us_per_subscriber": round(queue_us, 2),
            "kernel_us_per_subscriber": round(kernel_us, 2),
            "queue_us_rounds": [round(x, 2) for x in per_path["queue"]],
            "kernel_us_rounds": [round(x, 2) for x in per_path["kernel"]],
            "ratio": round(queue_us / kernel_us, 2) if kernel_us else None,
            "frames_received": len(sub["lags_ms"]),
        }
    finally:
        stop.set()
        proc.join(30)
        await gw.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def run(subscribers: int = 1000, pushes: int = 100, interval_ms: float = 20.0, rounds: int = 3) -> dict:
    from gateway.bench import _run as run_on_serve_loop  # the event loop `perp serve` runs on (uvloop when installed)
    from perp.logs import configure_logging

    configure_logging("warning")  # a thousand connect and disconnect lines say nothing here

    return run_on_serve_loop(_run(subscribers, pushes, interval_ms, rounds))
