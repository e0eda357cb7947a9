"""Shared fixtures: real services started by the tests themselves.

`redis_server` starts Debian's `redis-server` on a free loopback port for the test session (no
persistence, no fake). A missing binary is a hard failure, never a skip: CI installs it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Clock

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture()
def ts() -> Clock:
    """Strictly increasing command timestamps (tests.helpers.Clock), fresh for each test."""
    return Clock()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real redis-server on loopback, started for this test session."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed; run scripts/test (it installs Debian's redis-server)")
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10.0
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"redis-server did not start on port {port}")
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture()
def redis_client(redis_url: str):
    """A client on the session's real server, with the database flushed before each test."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """`../shared/data` beside the checkout (read-only reference data)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _logging_as_before() -> Iterator[None]:
    """Each test leaves structlog as it found it: a CLI run in-process (click's CliRunner) configures
    logging for the process (perp.logs, level warning for some commands), and a filtering logger
    left behind would hide a later test's info events from `capture_logs`."""
    import structlog

    before = structlog.get_config()
    yield
    structlog.configure(**before)


@pytest.fixture(scope="session", autouse=True)
def _kernels_compiled() -> None:
    """Compile (or load from the cache) the engine's kernels once, before any test: a cold compile
    takes about a minute on 2 cores, and must not land inside a test's own time-out (the gateway's
    end-to-end tests wait a bounded time for each reply)."""
    from perp.commands import Deposit, Liquidate, Place, SetIndex
    from perp.engine import Engine

    e = Engine()
    t = 1_767_225_600_000_000_000
    e.submit([SetIndex(ts_ns=t, market="H100-PERP", price="2.0000"),
              Deposit(ts_ns=t, account=16, amount_micro=10**9), Deposit(ts_ns=t, account=17, amount_micro=10**9),
              Place(ts_ns=t + 1, account=16, market="H100-PERP", side="buy", size_lots=5, price="2.0000"),
              Place(ts_ns=t + 2, account=17, market="H100-PERP", side="sell", size_lots=5, price="2.0000"),
              Liquidate(ts_ns=t + 3)])
    e.risk_sweep()
    # the views the gateway and the tests call are numba entry points of their own: compile them too
    e.account(16)
    e.adl_standing(16, 0)
    e.predicted_funding_rate_ppb(0)
    e.open_orders()
    e.state_hash()
