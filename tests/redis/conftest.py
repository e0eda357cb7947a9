"""Fixtures of the Redis scale-out tests: a real `redis-server` per test (a random free port, its own
temp dir, AOF on with `appendfsync always`), `perp engine` / `perp gateway` as real processes or as
in-process objects on the test's event loop, and real clients over loopback.

Every test uses its own namespace and server, so nothing leaks between tests. The index is pinned
by appending one `set_index` ($2.0000, fresh, no gate) to the command stream, as an operator tool
would; the engine's own feed and liquidation timer are off unless a test turns them on.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway import redis_journal as RJ
from perp.commands import SetIndex

ROOT = Path(__file__).resolve().parents[2]
NS = "t"
MARKET = "H100-PERP"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RedisServer:
    port: int
    dir: Path
    proc: subprocess.Popen | None = None
    extra: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "no",
             "--daemonize", "no", *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r = RJ.connect_sync(self.url)
        t_end = time.monotonic() + 20
        while True:
            try:
                if r.ping():
                    break
            except Exception:  # noqa: BLE001 - starting or loading the AOF
                if time.monotonic() > t_end or self.proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        r.close()

    def kill(self) -> None:
        """SIGKILL: a crash; with appendfsync always every acknowledged write is in the AOF."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def client(self):
        return RJ.connect_sync(self.url)


@pytest.fixture
def redis_server(tmp_path: Path):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (scripts/test installs Debian's package)")
    srv = RedisServer(free_port(), tmp_path / "redis")
    srv.dir.mkdir()
    srv.start()
    yield srv
    srv.kill()


def pin_index(url: str, ns: str = NS, price: str = "2.0000") -> None:
    """Append a fresh set_index to NS:cmd (what an operator tool does)."""
    from perp.engine import Engine

    row = Engine().encode([SetIndex(ts_ns=0, market=MARKET, price=price)])
    r = RJ.connect_sync(url)
    r.xadd(RJ.Keys(ns).cmd, {"g": "test", "b": 1, "r": RJ.rows_to_bytes(row)})
    r.close()


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))
    return e


@dataclass
class Proc:
    popen: subprocess.Popen
    first_line: str
    port: int = 0
    log_path: str = ""

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def terminate(self, timeout_s: float = 30) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                return self.popen.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.popen.returncode


def _spawn(args: list[str], expect: str, log_dir: Path, timeout_s: float = 240) -> Proc:
    import tempfile

    log_dir.mkdir(parents=True, exist_ok=True)  # the process's log is kept with the test's files
    log = tempfile.NamedTemporaryFile(dir=log_dir, prefix=f"perp-{args[0]}-", suffix=".log", delete=False)
    p = subprocess.Popen([sys.executable, "-m", "perp.cli", "--log-level", "info", *args], stdout=subprocess.PIPE,
                         stderr=log, text=True, env=env(), cwd=str(ROOT))
    t_end = time.monotonic() + timeout_s
    while True:
        line = p.stdout.readline()
        if not line:
            raise RuntimeError(f"{' '.join(args[:2])} exited with {p.wait()}")
        if line.startswith(expect):
            break
        if time.monotonic() > t_end:
            p.kill()
            raise RuntimeError(f"{args[0]} did not start")
    proc = Proc(p, line, log_path=log.name)
    m = re.search(r"ws://[^:]+:(\d+)", line)
    if m:
        proc.port = int(m.group(1))
    return proc


def start_engine(url: str, ns: str = NS, *extra: str, log_dir: Path) -> Proc:
    return _spawn(["engine", "--redis", url, "--namespace", ns, "--no-index-feed", "--liquidation-interval-ms", "0",
                   *extra], "perp engine", log_dir)


def start_gateway(url: str, keys_path: Path, data_dir: Path, ns: str = NS, *extra: str) -> Proc:
    return _spawn(["gateway", "--redis", url, "--namespace", ns, "--port", "0", "--keys", str(keys_path),
                   "--data", str(data_dir), "--group-commit-us", "300", *extra], "perp gateway", data_dir)


@pytest.fixture
def procs():
    """Processes a test started; all SIGKILLed at the end whatever happened."""
    started: list[Proc] = []
    yield started
    for p in started:
        p.kill()


def engine_status(url: str, ns: str = NS) -> dict[str, str]:
    r = RJ.connect_sync(url)
    try:
        return {k.decode(): v.decode() for k, v in r.hgetall(RJ.Keys(ns).engine).items()}
    finally:
        r.close()


def last_recorded_seq(url: str, ns: str = NS) -> int:
    """The last sequence number in NS:seq (0 when empty)."""
    r = RJ.connect_sync(url)
    try:
        tail = r.xrevrange(RJ.Keys(ns).seq, count=1)
    finally:
        r.close()
    if not tail:
        return 0
    rec = RJ.SeqRecord.parse(tail[0][1])
    return rec.seq0 + rec.rows.shape[0] - 1


def wait_engine_idle(url: str, seq_at_least: int, ns: str = NS, timeout_s: float = 60) -> dict[str, str]:
    """The engine's status once it has processed at least `seq_at_least` and gone idle: the status
    (written only when idle) is at the last record of NS:seq and stays there. A status that is
    merely stable may be stale: the engine writes none while it is busy."""
    t_end = time.monotonic() + timeout_s
    while True:
        st = engine_status(url, ns)
        last = last_recorded_seq(url, ns)
        if st and int(st["seq"]) >= max(seq_at_least, last):
            time.sleep(0.5)
            st2 = engine_status(url, ns)
            if st2["seq"] == st["seq"] and last_recorded_seq(url, ns) == last:
                return st2
        if time.monotonic() > t_end:
            raise TimeoutError(f"engine status {st}")
        time.sleep(0.1)


def start_venue(redis_server: RedisServer, procs: list, tmp_path: Path, engine_args: tuple[str, ...] = (),
                gateway_args: tuple[str, ...] = ()):
    """One `perp engine` and two `perp gateway` processes on `redis_server`, the index pinned; the
    gateway tests' keys (ALICE, BOB, READER, ADMIN). Returns (creds, engine, gateway a, gateway b)."""
    from tests.gateway.conftest import make_keys

    keys, creds = make_keys(tmp_path / "keys.json")
    eng = start_engine(redis_server.url, NS, *engine_args, log_dir=tmp_path)
    procs.append(eng)
    pin_index(redis_server.url)
    ga = start_gateway(redis_server.url, keys.path, tmp_path / "a", NS, *gateway_args)
    gb = start_gateway(redis_server.url, keys.path, tmp_path / "b", NS, *gateway_args)
    procs.extend([ga, gb])
    return creds, eng, ga, gb


async def crash_engine(eng) -> None:
    """An in-process `EngineProcess` dies: its loops just end, no snapshot on exit, its
    connections closed (what SIGKILL leaves behind in Redis)."""
    import asyncio

    eng._stopping = True
    for t in eng._tasks:
        t.cancel()
    await asyncio.gather(*eng._tasks, return_exceptions=True)
    for c in (eng.ar, eng.aw):
        await c.aclose()
    eng.r.close()
