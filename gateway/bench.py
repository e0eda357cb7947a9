"""`perp bench gateway`: the whole path over loopback, measured from client processes.

A `perp serve` process (fsync on every group commit) is started on an ephemeral port. Then:

1. `subscribers` book watchers (in one process of their own, raw sockets: `_BookWatcher`)
   subscribe to the book and record, for every delta, their receive time minus the delta's
   `ts_ns` -- the server's stamp of the first batch the delta covers (the fan-out lag, merge
   interval included; one machine, one clock).
2. **Throughput**: `procs` client processes, each with its own accounts and keys (one connection
   per account), log on and keep `window` frames in flight per connection, one order per frame:
   every acked place is cancelled by the next frame, so books stay small and every frame is a
   full trip (logon done once; validation, journal append + fsync, engine, ack). The clients are
   lean (`_trader`: msgspec, the library's C masking, the frames owed in one event-loop turn in
   one socket write). `orders_per_s` counts acked order frames (places and cancels) per second
   from each process's first frame to its last ack.
3. **Latency**: the same processes pace their frames to `rate` orders/s in all (the frames due
   every millisecond), and record each frame's send-to-ack time (p50, p99).
4. **Batch frames** (reported separately): `order.batch` frames of 20 places, then 20 cancels.

`run_bare` (`--bare`) runs phases 2 and 3 with the same client processes against a websockets
server that only decodes each frame and acks it: the like-for-like ceiling of the harness and the
library on the same machine. `server_cpu_us_per_order` (the server's CPU over phase 2 per acked
frame) is the figure that survives a shared machine.

The last line printed with --json is one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from gateway.wire import frame_length

MARKET = "H100-PERP"


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_cpu_s() -> tuple[float, float]:
    """CPU seconds the whole machine has spent so far (/proc/stat), busy and stolen: the busy part is
    every process on it, the bench's own clients included; steal is what the hypervisor gave to
    other machines while this one wanted to run."""
    v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    tck = os.sysconf("SC_CLK_TCK")
    return (sum(v) - v[3] - v[4] - v[7]) / tck, v[7] / tck


def cpu_budget(wall_s: float, machine0: tuple[float, float], machine1: tuple[float, float],
               **roles_cpu_s: float) -> dict:
    """Where the machine's cores went over one phase: the machine's busy and stolen cores, and each
    role's (server, subscribers, traders, ...) CPU seconds per wall second. On a 2-core machine the
    bench's own clients share the cores with the server: a sum near 2 means the figures are bounded
    by the machine, not by the server alone."""
    w = max(wall_s, 1e-9)
    out = {"cores": os.cpu_count(), "machine_busy": round((machine1[0] - machine0[0]) / w, 2),
           "machine_steal": round((machine1[1] - machine0[1]) / w, 2)}
    out.update({k: round(v / w, 2) for k, v in roles_cpu_s.items()})
    return out


def _merge_codes(results: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in results:
        for k, v in r.get("codes", {}).items():
            out[k] = out.get(k, 0) + v
    return out


def _pct(values: list[float], q: float, scale: float = 1.0) -> float | None:
    """The q-quantile of `values` times `scale`, rounded to 3 places; None (JSON null) when there
    are no values (no subscribers, no paced acks): the printed JSON stays strict (no NaN)."""
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * len(s)))] * scale, 3)


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
    """mode "max": `amount` seconds, keeping `window` frames in flight; "paced": `amount` orders/s.

    A lean client, so that the client processes do not starve the server of CPU: frames are
    encoded by msgspec and framed (masked) by the websockets protocol object (its C speedups), and
    every frame owed since the last event-loop turn goes out in one socket write -- still one order
    per frame. Acked places are cancelled by the next frames, so books stay small."""
    from websockets.asyncio.client import connect

    dec = msgspec.json.Decoder(_Reply)
    enc = msgspec.json.Encoder()
    loop = asyncio.get_running_loop()
    async with connect(url, max_size=1 << 24, compression=None) as ws:
        await _logon(ws, cred)
        proto, transport = ws.protocol, ws.transport
        sent: dict[int, float] = {}
        lat: list[float] = []
        to_cancel: list[int] = []
        st = {"acks": 0, "next_id": 1, "i": 0, "owed": 0, "scheduled": False, "done": False}
        t_start = time.perf_counter()
        t_end = t_start + (amount if mode == "max" else 3.0)

        def flush() -> None:
            st["scheduled"] = False
            k, st["owed"] = st["owed"], 0
            if st["done"] or k <= 0:
                return
            now = time.perf_counter()
            for _ in range(k):
                rid = st["next_id"]
                st["next_id"] = rid + 1
                if to_cancel:
                    body = {"id": rid, "method": "order.cancel", "params": {"order_id": to_cancel.pop()}}
                else:
                    st["i"] += 1
                    body = {"id": rid, "method": "order.place", "params": {
                        "market": MARKET, "side": "buy", "size_lots": 1, "price": prices[st["i"] % len(prices)],
                        "tif": "post_only"}}
                sent[rid] = now
                proto.send_text(enc.encode(body))
            transport.write(b"".join(proto.data_to_send()))

        def owe(k: int) -> None:
            st["owed"] += k
            if not st["scheduled"]:
                st["scheduled"] = True
                loop.call_soon(flush)

        finished = asyncio.Event()

        async def pacer() -> None:  # paced mode: every millisecond, the frames due since the start
            due_total = 0
            while True:
                now = time.perf_counter()
                if now >= t_end:
                    st["done"] = True
                    if not sent:
                        finished.set()
                    return
                due = int((now - t_start) * amount) - due_total
                room = window - len(sent) - st["owed"]
                k = min(due, max(0, room))  # a full window waits (the wait then shows in the latency)
                if k > 0:
                    due_total += k
                    owe(k)
                await asyncio.sleep(0.001)

        async def reader() -> None:
            async for frame in ws:
                r = dec.decode(frame)
                if r.id is None or r.channel is not None:
                    continue
                t0 = sent.pop(r.id, None)
                if t0 is None:
                    continue
                lat.append(time.perf_counter() - t0)
                if r.ok:
                    st["acks"] += 1
                    if r.result and r.result.get("status") == "resting":
                        to_cancel.append(r.result["order_id"])
                else:
                    out["errors"] = out.get("errors", 0) + 1
                    code = f"{r.error['code']}/{r.error.get('engine_code', '')}"
                    out.setdefault("codes", {})[code] = out.get("codes", {}).get(code, 0) + 1
                if mode == "max":
                    if time.perf_counter() >= t_end:
                        st["done"] = True
                    else:
                        owe(1)
                if st["done"] and not sent:
                    finished.set()
                    return

        rt = asyncio.create_task(reader())
        pt = asyncio.create_task(pacer()) if mode == "paced" else None
        if mode == "max":
            owe(window)
        try:
            await asyncio.wait_for(finished.wait(), (t_end - time.perf_counter()) + 30)
        finally:
            for t in (rt, pt):
                if t is not None:
                    t.cancel()
            await asyncio.gather(rt, *([pt] if pt else []), return_exceptions=True)
        out["active_s"] = max(out.get("active_s", 0.0), time.perf_counter() - t_start)
        if to_cancel:  # the next phase starts from an empty book
            await _cancel_all(ws)
        out["acks"] = out.get("acks", 0) + st["acks"]
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

    res = _run(main())
    res["cpu_s"] = time.process_time()  # this process's whole life: start-up, logon, the phase
    q.put(res)


def _run(coro):
    from gateway.cli import loop_factory

    with asyncio.Runner(loop_factory=loop_factory("auto")) as runner:
        return runner.run(coro)


class _Push(msgspec.Struct):
    channel: str | None = None
    type: str | None = None
    ts_ns: int = 0


def _client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client-to-server frame (RFC 6455 5.3) of a short message."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes((0x80 | opcode, 0x80 | n)) if n < 126 else bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class _BookWatcher(asyncio.Protocol):
    """One subscriber over a raw socket: the upgrade handshake, one `subscribe` to the book, then
    every server frame parsed in place (server frames are unmasked) and each book delta's age
    recorded (receive time minus its `ts_ns`, the server's stamp of its oldest change: one
    machine, one clock). Pings are answered. Lean on purpose: a thousand of these share one
    client process, which must not starve the server of CPU."""

    dec = msgspec.json.Decoder(_Push)

    def __init__(self, host: str, lags: list[float], ready: asyncio.Future):
        self.host = host
        self.lags = lags
        self.ready = ready
        self.buf = bytearray()
        self.open = False
        self.t: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        import base64

        self.t = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(f"GET / HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(RuntimeError(bytes(buf[:80]).decode(errors="replace")))
                return
            del buf[:end + 4]
            self.open = True
            self.t.write(_client_frame(json.dumps(
                {"id": 1, "method": "subscribe", "params": {"channel": "book", "market": MARKET}}).encode()))
            self.ready.set_result(None)
        now = time.time_ns()
        view = memoryview(buf)
        pos, n = 0, len(buf)
        while n - pos >= 2:
            size = frame_length(buf, pos)
            if size is None:
                break
            hl, ln = size
            if n - pos < hl + ln:
                break
            op = buf[pos] & 0x0F
            if op == 0x1:
                p = self.dec.decode(view[pos + hl:pos + hl + ln])
                if p.channel == "book" and p.type == "delta":
                    self.lags.append((now - p.ts_ns) / 1e6)
            elif op == 0x9:  # ping: pong with the same payload
                self.t.write(_client_frame(bytes(view[pos + hl:pos + hl + ln]), 0xA))
            pos += hl + ln
        view.release()
        del buf[:pos]


def _subscriber_proc(url: str, n: int, ready: mp.Event, stop: mp.Event, q: mp.Queue) -> None:
    host, port = url.removeprefix("ws://").rsplit(":", 1)

    async def main() -> dict:
        loop = asyncio.get_running_loop()
        lags: list[float] = []
        conns = []
        for start in range(0, n, 50):
            futs = []
            for _ in range(min(50, n - start)):
                fut = loop.create_future()
                t, _p = await loop.create_connection(lambda f=fut: _BookWatcher(f"{host}:{port}", lags, f), host,
                                                     int(port))
                conns.append(t)
                futs.append(fut)
            await asyncio.wait_for(asyncio.gather(*futs), 60)
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        for t in conns:
            t.abort()
        return {"lags_ms": lags, "connected": len(conns)}

    q.put(_run(main()))


# ---- the bare server: the same client harness against a websockets server that only decodes and acks
class _BareRequest(msgspec.Struct):
    id: int
    method: str
    params: msgspec.Raw = msgspec.Raw(b"{}")


class _BareAck(msgspec.Struct):
    status: str
    order_id: int


class _BareReply(msgspec.Struct):
    id: int
    ok: bool
    result: _BareAck | None = None


def _bare_server_proc(q: mp.Queue, stop: mp.Event) -> None:
    """A websockets server (the same library, C speedups and event loop as `perp serve`) that
    decodes each frame with msgspec and acks it: a place with a fresh order id ("resting", so the
    harness cancels it next), anything else plainly. Replies queued in one event-loop turn go out
    in one socket write, as the gateway's sender does."""
    from websockets.asyncio.server import serve

    dec = msgspec.json.Decoder(_BareRequest)
    enc = msgspec.json.Encoder()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        next_oid = [1]

        async def handler(ws) -> None:
            proto, transport = ws.protocol, ws.transport
            out: list[bytes] = []

            def flush() -> None:
                for f in out:
                    proto.send_text(f)
                out.clear()
                transport.write(b"".join(proto.data_to_send()))

            async for frame in ws:
                r = dec.decode(frame)
                ack = None
                if r.method == "order.place":
                    ack = _BareAck("resting", next_oid[0])
                    next_oid[0] += 1
                if not out:
                    loop.call_soon(flush)
                out.append(enc.encode(_BareReply(r.id, True, ack)))

        async with serve(handler, "127.0.0.1", 0, max_size=1 << 16, compression=None) as server:
            q.put(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}")
            while not stop.is_set():
                await asyncio.sleep(0.05)

    _run(main())


def run_bare(procs: int = 2, accounts_per_proc: int = 4, seconds: float = 5.0, rate: int = 10_000,
             window: int = 128) -> dict:
    """The throughput and latency phases of `run` with the same client processes, against the
    bare server (no logon check, validation, journal, engine or fan-out)."""
    ctx = mp.get_context("spawn")
    q: mp.Queue = ctx.Queue()
    stop = ctx.Event()
    server = ctx.Process(target=_bare_server_proc, args=(q, stop))
    server.start()
    try:
        url = q.get(timeout=60)
        creds = [[{"kind": "hmac", "key": f"bare{i}{j}", "secret_hex": "00" * 32, "account": 1000 + j}
                  for j in range(accounts_per_proc)] for i in range(procs)]
        prices = ["2.0000"]
        cpu0 = _cpu_s(server.pid)
        res_max = run_phase(ctx, q, [url], creds, prices, "max", seconds, window, seconds)
        cpu_max = _cpu_s(server.pid) - cpu0
        res_paced = run_phase(ctx, q, [url], creds, prices, "paced", rate / procs, window, seconds)
        return _figures(res_max, res_paced, cpu_max) | {
            "target": "bare websockets server (decode + ack)", "paced_rate_target": rate, "procs": procs,
            "accounts": procs * accounts_per_proc, "window": window, "load_average_1m": os.getloadavg()[0]}
    finally:
        stop.set()
        server.join(30)


def _figures(res_max: list[dict], res_paced: list[dict], cpu_max: float) -> dict:
    acks = sum(r.get("acks", 0) for r in res_max[:-1])
    active = max(r.get("active_s", 0.0) for r in res_max[:-1])  # first frame to last ack, per process
    lat = [x for r in res_paced[:-1] for x in r.get("lat", [])]
    return {
        "orders_per_s": round(acks / active) if active else 0,
        "order_frames_acked": acks,
        "order_frames_refused": sum(r.get("errors", 0) for r in res_max[:-1]),
        "refusal_codes": _merge_codes(res_max[:-1] + res_paced[:-1]),
        "server_cpu_us_per_order": round(cpu_max / max(1, acks) * 1e6, 1),  # robust on a shared machine
        "p50_ack_ms_at_10k": _pct(lat, 0.50, 1e3),
        "p99_ack_ms_at_10k": _pct(lat, 0.99, 1e3),
        "paced_acks": sum(r.get("acks", 0) for r in res_paced[:-1]),
    }


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


def run(procs: int = 2, accounts_per_proc: int = 4, seconds: float = 5.0, rate: int = 10_000, window: int = 128,
        subscribers: int = 1000, group_commit_us: int = 1000, book_interval_ms: int = 20) -> dict:
    from gateway.keys import KeyStore

    from gateway.bench_machine import probe

    tmp = Path(tempfile.mkdtemp(prefix="perp-bench-gateway-"))
    machine = probe(tmp)  # before any process of the bench runs: the host's own speed (gateway.bench_machine)
    store = KeyStore(tmp / "keys.json")
    admin, admin_secret, trader_creds = bench_keys(store, procs, accounts_per_proc)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    server = subprocess.Popen(
        [sys.executable, "-c", "from perp.cli import main; main()", "serve", "--port", "0", "--data", str(tmp / "data"),
         "--keys", str(store.path), "--liquidation-interval-ms", "0", "--group-commit-us", str(group_commit_us),
         "--max-conns-per-ip", str(subscribers + 64), "--index-step-s", "86400",
         "--book-interval-ms", str(book_interval_ms),
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

        cpu0, sub0, machine0 = _cpu_s(server.pid), _cpu_s(sub.pid), _machine_cpu_s()
        res_max = run_phase(ctx, q, [url], trader_creds, prices, "max", seconds, window, seconds)
        cpu_max = _cpu_s(server.pid) - cpu0
        budget = cpu_budget(res_max[-1]["wall_s"], machine0, _machine_cpu_s(), server=cpu_max,
                            subscribers=_cpu_s(sub.pid) - sub0,
                            traders=sum(r.get("cpu_s", 0.0) for r in res_max[:-1]))
        res_paced = run_phase(ctx, q, [url], trader_creds, prices, "paced", rate / procs, window, seconds)
        res_batch = run_phase(ctx, q, [url], trader_creds, prices, "batch", min(seconds, 3.0), window, seconds)
        batch_orders = sum(r.get("batch_orders", 0) for r in res_batch[:-1])
        stop.set()
        subres = q.get(timeout=60)
        sub.join(30)
        lags = subres["lags_ms"]
        return _figures(res_max, res_paced, cpu_max) | {
            "target": "perp serve (full path)",
            "load_average_1m": os.getloadavg()[0],
            "paced_rate_target": rate,
            "batch_frame_orders_per_s": round(batch_orders / min(seconds, 3.0)),
            "subscribers": subres["connected"],
            "p50_fanout_ms": _pct(lags, 0.50),
            "p99_fanout_ms": _pct(lags, 0.99),
            "fanout_samples": len(lags),
            "procs": procs,
            "accounts": procs * accounts_per_proc,
            "window": window,
            "group_commit_us": group_commit_us,
            "book_interval_ms": book_interval_ms,
            "fsync": "always",
            "max_phase_cpu_cores": budget,
            "machine": machine,
        }
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(tmp, ignore_errors=True)  # its journal: tens of MB a run


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
