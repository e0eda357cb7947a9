"""`perp bench gateway`: the whole path over loopback, measured from client processes.

A `perp serve` process (fsync on every group commit) is started on an ephemeral port. Then:

1. `subscribers` WebSocket connections (in one process of their own) subscribe to the book and
   record, for every delta, their receive time minus the delta's `ts_ns` (the fan-out lag; one
   machine, one clock).
2. **Throughput**: `procs` client processes, each with its own accounts and keys, log on and keep a
   window of orders in flight, one order per frame: every acked place is cancelled by the next
   frame, so books stay small and every frame is a full trip (logon done once; validation, journal
   append + fsync, engine, ack). `orders_per_s` counts acked order frames (places and cancels) per
   second of wall time.
3. **Latency**: the same processes pace their frames to `rate` orders/s in all, and record each
   frame's send-to-ack time (p50, p99).
4. **Batch frames** (reported separately): `order.batch` frames of 20 places, then 20 cancels.

The last line printed with --json is one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

MARKET = "H100-PERP"


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _merge_codes(results: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in results:
        for k, v in r.get("codes", {}).items():
            out[k] = out.get(k, 0) + v
    return out


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


# ---- client processes ------------------------------------------------------------------------
async def _logon(ws, cred: dict) -> None:
    from gateway.keys import sign_logon

    ts = time.time_ns()
    nonce = os.urandom(8).hex()
    sig = sign_logon(cred["kind"], cred["secret_hex"], cred["key"], ts, nonce)
    await ws.send(json.dumps({"id": 0, "method": "logon", "params": {"key": cred["key"], "ts_ns": ts,
                                                                     "nonce": nonce, "signature": sig}}))
    while True:
        msg = json.loads(await ws.recv())
        if msg.get("id") == 0:
            assert msg["ok"], msg
            return


async def _cancel_all(ws) -> None:
    await ws.send(json.dumps({"id": 1 << 50, "method": "order.cancel_all", "params": {}}))
    while True:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if msg.get("id") == 1 << 50:
            return


class _Reply(msgspec.Struct):
    id: int | None = None
    ok: bool | None = None
    result: dict | None = None
    error: dict | None = None
    channel: str | None = None


async def _trader(url: str, cred: dict, prices: list[str], mode: str, amount: float, window: int,
                  out: dict) -> None:
    """mode "max": `amount` seconds as fast as the window allows; "paced": `amount` orders/s."""
    from websockets.asyncio.client import connect

    dec = msgspec.json.Decoder(_Reply)
    enc = msgspec.json.Encoder()
    async with connect(url, max_size=1 << 24, compression=None) as ws:
        await _logon(ws, cred)
        sent: dict[int, float] = {}
        lat: list[float] = []
        acks = 0
        next_id = 1
        free = asyncio.Semaphore(window)
        done = asyncio.Event()
        to_cancel: list[int] = []
        t_end = time.perf_counter() + (amount if mode == "max" else 3.0)

        async def reader() -> None:
            nonlocal acks
            async for frame in ws:
                r = dec.decode(frame)
                if r.id is None or r.channel is not None:
                    continue
                t0 = sent.pop(r.id, None)
                if t0 is None:
                    continue
                lat.append(time.perf_counter() - t0)
                if r.ok:
                    acks += 1
                    if r.result and r.result.get("status") == "resting":
                        to_cancel.append(r.result["order_id"])
                else:
                    out["errors"] = out.get("errors", 0) + 1
                    code = f"{r.error['code']}/{r.error.get('engine_code', '')}"
                    out.setdefault("codes", {})[code] = out.get("codes", {}).get(code, 0) + 1
                free.release()
                if done.is_set() and not sent:
                    return

        rt = asyncio.create_task(reader())
        interval = 0.0 if mode == "max" else 1.0 / amount
        t_next = time.perf_counter()
        i = 0
        while time.perf_counter() < t_end:
            await free.acquire()
            if interval:
                t_next += interval
                delay = t_next - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            rid = next_id
            next_id += 1
            if to_cancel:
                body = {"id": rid, "method": "order.cancel", "params": {"order_id": to_cancel.pop()}}
            else:
                i += 1
                body = {"id": rid, "method": "order.place", "params": {
                    "market": MARKET, "side": "buy", "size_lots": 1, "price": prices[i % len(prices)],
                    "tif": "post_only"}}
            sent[rid] = time.perf_counter()
            await ws.send(enc.encode(body).decode())
        done.set()
        try:
            await asyncio.wait_for(rt, 10)
        except TimeoutError:
            rt.cancel()
        await _cancel_all(ws)  # the next phase starts from an empty book
        out["acks"] = out.get("acks", 0) + acks
        out.setdefault("lat", []).extend(lat)


async def _batch_trader(url: str, cred: dict, prices: list[str], seconds: float, out: dict) -> None:
    from websockets.asyncio.client import connect

    async with connect(url, max_size=1 << 24, compression=None) as ws:
        await _logon(ws, cred)
        t_end = time.perf_counter() + seconds
        orders = 0
        rid = 1
        while time.perf_counter() < t_end:
            ops = [{"op": "place", "market": MARKET, "side": "buy", "size_lots": 1, "price": prices[k],
                    "tif": "post_only"} for k in range(20)]
            await ws.send(json.dumps({"id": rid, "method": "order.batch", "params": {"orders": ops}}))
            ids = []
            while True:
                msg = json.loads(await ws.recv())
                if msg.get("id") == rid:
                    assert msg["ok"], msg
                    ids = [it["result"]["order_id"] for it in msg["result"]["results"] if it["ok"]]
                    orders += len(msg["result"]["results"])
                    break
            rid += 1
            if not ids:
                continue
            await ws.send(json.dumps({"id": rid, "method": "order.batch", "params": {
                "orders": [{"op": "cancel", "order_id": o} for o in ids]}}))
            while True:
                msg = json.loads(await ws.recv())
                if msg.get("id") == rid:
                    orders += len(msg["result"]["results"])
                    break
            rid += 1
        out["batch_orders"] = out.get("batch_orders", 0) + orders


def _client_proc(url: str, creds: list[dict], prices: list[str], phase: str, amount: float, window: int,
                 q: mp.Queue) -> None:
    async def main() -> dict:
        out: dict = {}
        if phase == "batch":
            await asyncio.gather(*(_batch_trader(url, c, prices, amount, out) for c in creds))
        else:
            per = amount if phase == "max" else amount / len(creds)
            await asyncio.gather(*(_trader(url, c, prices, phase, per, window, out) for c in creds))
        return out

    q.put(_run(main()))


def _run(coro):
    from gateway.cli import loop_factory

    with asyncio.Runner(loop_factory=loop_factory("auto")) as runner:
        return runner.run(coro)


def _subscriber_proc(url: str, n: int, ready: mp.Event, stop: mp.Event, q: mp.Queue) -> None:
    from websockets.asyncio.client import connect

    class _Push(msgspec.Struct):
        channel: str | None = None
        type: str | None = None
        ts_ns: int = 0

    dec = msgspec.json.Decoder(_Push)

    async def main() -> dict:
        lags: list[float] = []
        socks = []
        for _ in range(n):
            ws = await connect(url, max_size=1 << 24, compression=None, ping_interval=None)
            await ws.send(json.dumps({"id": 1, "method": "subscribe", "params": {"channel": "book", "market": MARKET}}))
            socks.append(ws)

        async def read(ws) -> None:
            try:
                async for frame in ws:
                    p = dec.decode(frame)
                    if p.channel == "book" and p.type == "delta":
                        lags.append((time.time_ns() - p.ts_ns) / 1e6)
            except Exception:  # noqa: BLE001 - the server went away at the end
                return

        tasks = [asyncio.create_task(read(ws)) for ws in socks]
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        for t in tasks:
            t.cancel()
        return {"lags_ms": lags, "connected": len(socks)}

    q.put(_run(main()))


# ---- the run ---------------------------------------------------------------------------------
def run_phase(ctx, q, urls: list[str], trader_creds: list[list[dict]], prices: list[str], name: str, amount: float,
              window: int, seconds: float) -> list[dict]:
    """One phase: a client process per row of `trader_creds` (process i on urls[i % len(urls)]);
    their results, then {"wall_s"}."""
    ps = [ctx.Process(target=_client_proc, args=(urls[i % len(urls)], creds, prices, name, amount, window, q))
          for i, creds in enumerate(trader_creds)]
    t0 = time.perf_counter()
    for p in ps:
        p.start()
    res = [q.get(timeout=seconds * 10 + 60) for _ in ps]
    for p in ps:
        p.join(30)
    res.append({"wall_s": time.perf_counter() - t0})
    return res


def bench_keys(store, procs: int, accounts_per_proc: int) -> tuple:
    """An admin HMAC key (account 99) and, per client process, trader keys of accounts from 1000."""
    admin, admin_secret = store.create(99, ("admin",), "hmac")
    trader_creds: list[list[dict]] = []
    acct = 1000
    for _ in range(procs):
        row = []
        for _ in range(accounts_per_proc):
            k, secret = store.create(acct, ("read", "trade"), "hmac")
            row.append({"kind": "hmac", "key": k.key, "secret_hex": secret, "account": acct})
            acct += 1
        trader_creds.append(row)
    return admin, admin_secret, trader_creds


def run(procs: int = 2, accounts_per_proc: int = 2, seconds: float = 5.0, rate: int = 10_000, window: int = 64,
        subscribers: int = 1000, group_commit_us: int = 1000) -> dict:
    from gateway.keys import KeyStore

    tmp = Path(tempfile.mkdtemp(prefix="perp-bench-gateway-"))
    store = KeyStore(tmp / "keys.json")
    admin, admin_secret, trader_creds = bench_keys(store, procs, accounts_per_proc)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    server = subprocess.Popen(
        [sys.executable, "-c", "from perp.cli import main; main()", "serve", "--port", "0", "--data", str(tmp / "data"),
         "--keys", str(store.path), "--liquidation-interval-ms", "0", "--group-commit-us", str(group_commit_us),
         "--max-conns-per-ip", str(subscribers + 64), "--index-step-s", "86400",
         # the bench measures the path, not the protection: limits far above what it sends
         "--order-rate-per-s", "1e7", "--cancel-rate-per-s", "1e7", "--conn-rate-per-s", "1e7"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        url = None
        while url is None:
            line = server.stdout.readline()
            if not line:
                raise RuntimeError("perp serve exited")
            m = re.match(r"perp serve\s+(ws://\S+)", line)
            url = m.group(1) if m else None
        prices = asyncio.run(_prepare(url, {"kind": "hmac", "key": admin.key, "secret_hex": admin_secret},
                                      [c["account"] for row in trader_creds for c in row]))
        ctx = mp.get_context("spawn")
        q: mp.Queue = ctx.Queue()
        ready, stop = ctx.Event(), ctx.Event()
        sub = ctx.Process(target=_subscriber_proc, args=(url, subscribers, ready, stop, q))
        sub.start()
        if not ready.wait(120):
            raise RuntimeError("subscribers did not connect")

        def phase(name: str, amount: float) -> list[dict]:
            return run_phase(ctx, q, [url], trader_creds, prices, name, amount, window, seconds)

        cpu0 = _cpu_s(server.pid)
        res_max = phase("max", seconds)
        cpu_max = _cpu_s(server.pid) - cpu0
        wall = res_max[-1]["wall_s"]
        acks = sum(r.get("acks", 0) for r in res_max[:-1])
        res_paced = phase("paced", rate / procs)
        lat = [x for r in res_paced[:-1] for x in r.get("lat", [])]
        paced_acks = sum(r.get("acks", 0) for r in res_paced[:-1])
        res_batch = phase("batch", min(seconds, 3.0))
        batch_orders = sum(r.get("batch_orders", 0) for r in res_batch[:-1])
        stop.set()
        subres = q.get(timeout=60)
        sub.join(30)
        lags = subres["lags_ms"]
        return {
            "orders_per_s": round(acks / (wall - 1.0 if wall > 2 else wall)),  # process start-up excluded
            "order_frames_acked": acks,
            "order_frames_refused": sum(r.get("errors", 0) for r in res_max[:-1]),
            "refusal_codes": _merge_codes(res_max[:-1] + res_paced[:-1]),
            "server_cpu_us_per_order": round(cpu_max / max(1, acks) * 1e6, 1),  # robust on a shared machine
            "load_average_1m": os.getloadavg()[0],
            "p50_ack_ms_at_10k": round(_pct(lat, 0.50) * 1e3, 3),
            "p99_ack_ms_at_10k": round(_pct(lat, 0.99) * 1e3, 3),
            "paced_rate_target": rate,
            "paced_acks": paced_acks,
            "batch_frame_orders_per_s": round(batch_orders / min(seconds, 3.0)),
            "subscribers": subres["connected"],
            "p50_fanout_ms": round(_pct(lags, 0.50), 3),
            "p99_fanout_ms": round(_pct(lags, 0.99), 3),
            "fanout_samples": len(lags),
            "procs": procs,
            "accounts": procs * accounts_per_proc,
            "window": window,
            "group_commit_us": group_commit_us,
            "fsync": "always",
        }
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


async def _prepare(url: str, admin: dict, accounts: list[int]) -> list[str]:
    """Fund the traders; resting prices 2-4% under the index (inside the band, never crossing)."""
    from decimal import Decimal

    from gateway.client import Credentials, GatewayClient

    async with GatewayClient(url, Credentials(admin["kind"], admin["key"], admin["secret_hex"])) as c:
        for a in accounts:
            await c.deposit(a, 10**13)
        while True:
            await c.subscribe("ticker", MARKET)
            t = await c.next_push("ticker")
            await c.unsubscribe("ticker", MARKET)
            if t.data.index is not None:
                break
            await asyncio.sleep(0.05)
    idx = Decimal(t.data.index)
    tick = Decimal("0.0001")
    lo = int(idx * Decimal("0.96") / tick)
    hi = int(idx * Decimal("0.98") / tick)
    return [str((Decimal(x) * tick).quantize(tick)) for x in range(lo, hi)]
