"""The machine a gateway bench ran on, measured next to its figures.

An ack's latency on the order path is made of three things the code does not own: the CPU's speed
at interpreted Python (every gateway and the engine's edges), the disk's fsync (one per group
commit, and one per Redis write with `appendfsync always`), and the wake-up of a process by a
loopback socket (every hop: client -> gateway -> Redis -> engine -> Redis -> gateway -> client).
Sessions 8 to 11 ran the same code on hosts whose p99 ack differed by 2-6x; without these three
figures beside a run, "the machine was slower" could not be told from "the code got slower".

`probe()` takes about half a second, before the bench's processes start (nothing else of the
bench is running). The Python speed is the best of five passes; fsync and the round trip are p50
and p99 of hundreds of short measurements, so one descheduling does not move them."""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from pathlib import Path

from gateway.bench import _pct

PY_LOOP_ITERATIONS = 200_000
FSYNCS = 400
ROUND_TRIPS = 2_000


def python_ns_per_op(repeats: int = 5) -> float:
    """Nanoseconds per iteration of a fixed interpreted loop (a dict store, integer arithmetic, a
    branch): the best of `repeats`, as the CPU's speed at the kind of code the gateways run."""
    best = float("inf")
    for _ in range(repeats):
        d: dict[int, int] = {}
        acc = 0
        t0 = time.perf_counter_ns()
        for i in range(PY_LOOP_ITERATIONS):
            d[i & 1023] = i * 3 + 1
            if i & 7 == 0:
                acc += d[i & 1023]
        best = min(best, (time.perf_counter_ns() - t0) / PY_LOOP_ITERATIONS)
    return round(best, 1)


def fsync_ms(directory: str | Path, n: int = FSYNCS) -> dict[str, float]:
    """p50 and p99 of an append of 2 KiB + fsync in `directory` (a group commit's journal write)."""
    fd, path = tempfile.mkstemp(dir=directory, prefix="fsync-probe-")
    times = []
    try:
        for _ in range(n):
            os.write(fd, b"\0" * 2048)
            t0 = time.perf_counter_ns()
            os.fsync(fd)
            times.append((time.perf_counter_ns() - t0) / 1e6)
    finally:
        os.close(fd)
        os.unlink(path)
    return {"p50": _pct(times, 0.50), "p99": _pct(times, 0.99)}


def loopback_round_trip_us(n: int = ROUND_TRIPS) -> dict[str, float]:
    """p50 and p99 of a 64-byte ping-pong over TCP on 127.0.0.1 between two threads blocked in
    recv (each wakes the other through the kernel, as the order path's processes do)."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def echo() -> None:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            while data := conn.recv(64):
                conn.sendall(data)

    t = threading.Thread(target=echo, daemon=True)
    t.start()
    times = []
    with socket.create_connection(("127.0.0.1", port)) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        msg = b"x" * 64
        for _ in range(n):
            t0 = time.perf_counter_ns()
            c.sendall(msg)
            got = 0
            while got < len(msg):
                got += len(c.recv(64))
            times.append((time.perf_counter_ns() - t0) / 1e3)
    t.join(5)
    srv.close()
    return {"p50": round(_pct(times, 0.50), 1), "p99": round(_pct(times, 0.99), 1)}


def probe(directory: str | Path | None = None) -> dict:
    """The three figures, plus the core count and the CPU model; `directory` is where the fsyncs
    go (the bench's data directory's filesystem; the temp directory by default)."""
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "python_ns_per_op": python_ns_per_op(),
        "fsync_ms": fsync_ms(directory or tempfile.gettempdir()),
        "loopback_round_trip_us": loopback_round_trip_us(),
    }


def text(m: dict) -> str:
    """`machine      2 cores (AMD EPYC): python 52.1 ns per op, fsync p50/p99 0.23/0.37 ms, ...`."""
    return (f"{m['cores']} cores ({m['cpu']}): python {m['python_ns_per_op']} ns per op, fsync p50/p99 "
            f"{m['fsync_ms']['p50']}/{m['fsync_ms']['p99']} ms, loopback round trip p50/p99 "
            f"{m['loopback_round_trip_us']['p50']}/{m['loopback_round_trip_us']['p99']} us")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"

