"""`perp serve` as a real process: SIGTERM drains and snapshots; SIGKILL under load loses no
acknowledged order, and the restarted venue equals a clean replay of its journal."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.client import ConnectionLost, GatewayClient, GatewayError
from perp.markets import load_markets, price_to_ticks, ticks_to_price
from perp.sequencer import recover
from tests.gateway.conftest import ALICE, MARKET, make_keys, run

START_TIMEOUT_S = 60.0
SPEC = load_markets().market[0]


async def index_ticks(client: GatewayClient) -> int:
    """The index the served feed set (the real H100 path), from the ticker snapshot."""
    while True:
        await client.subscribe("ticker", MARKET)
        snap = await client.next_push("ticker")
        await client.unsubscribe("ticker", MARKET)
        if snap.data.index is not None:
            return price_to_ticks(SPEC, snap.data.index)
        await asyncio.sleep(0.05)


async def funded_bids(url: str, creds: dict, alice: GatewayClient, n: int) -> tuple[int, list]:
    """Alice funded (by the admin key) and resting `n` bids below the index (client order ids 100..);
    returns (the index in ticks, the acks)."""
    async with GatewayClient(url, creds["admin"]) as admin:
        await admin.deposit(ALICE, 10**12)
    idx = await index_ticks(alice)
    return idx, [await alice.place(MARKET, "buy", 1 + i, price=ticks_to_price(SPEC, idx - 100 - i),
                                   client_order_id=100 + i) for i in range(n)]


_LIVE: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_server_left_behind():
    """Whatever a test does, the servers it started are gone after it."""
    yield
    while _LIVE:
        proc = _LIVE.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# `perp serve` whose journal fsyncs fail (EIO, as a failing disk answers) once the file named by
# PERP_TEST_FSYNC_FAULT exists: the fault is injected below the gateway, in the journal itself
FAULTY_FSYNC = """
import errno, os
import perp.journal as journal
real = journal.Journal._fsync_per_policy
def faulty(self, force):
    if os.path.exists(os.environ["PERP_TEST_FSYNC_FAULT"]):
        raise OSError(errno.EIO, "Input/output error (injected)")
    return real(self, force)
journal.Journal._fsync_per_policy = faulty
from perp.cli import main
main()
"""


class Served:
    def __init__(self, data: Path, keys: Path, port: int = 0, *extra: str, program: str = "from perp.cli import main; main()",
                 env: dict[str, str] | None = None, stderr: Path | None = None):
        env = {**os.environ, **(env or {})}
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + os.pathsep + env.get("PYTHONPATH", "")
        err = open(stderr, "w") if stderr is not None else subprocess.DEVNULL  # noqa: SIM115 - the child holds it
        self.proc = subprocess.Popen(
            [sys.executable, "-c", program, "serve", "--port", str(port),
             "--data", str(data), "--keys", str(keys), "--liquidation-interval-ms", "0", "--group-commit-us", "500",
             *extra],
            stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        if stderr is not None:
            err.close()
        _LIVE.append(self.proc)
        self.lines: list[str] = []

    async def url(self) -> str:
        loop = asyncio.get_running_loop()
        while True:
            line = await asyncio.wait_for(loop.run_in_executor(None, self.proc.stdout.readline), START_TIMEOUT_S)
            assert line, "perp serve exited before it listened"
            self.lines.append(line)
            m = re.match(r"perp serve\s+(ws://\S+)", line)
            if m:
                return m.group(1)

    async def stop(self, sig: int = signal.SIGTERM) -> str:
        self.proc.send_signal(sig)
        loop = asyncio.get_running_loop()
        out = await asyncio.wait_for(loop.run_in_executor(None, self.proc.stdout.read), 30)
        await asyncio.wait_for(loop.run_in_executor(None, self.proc.wait), 30)
        return out


def test_sigterm_drains_snapshots_and_restart_recovers(tmp_path):
    async def body():
        keys, creds = make_keys(tmp_path / "keys.json")
        data = tmp_path / "data"
        s1 = Served(data, keys.path)
        url = await s1.url()
        async with GatewayClient(url, creds["alice"], reconnect=False) as alice:
            idx, acks = await funded_bids(url, creds, alice, 5)
        out = await s1.stop()
        assert s1.proc.returncode == 0
        assert any((data / "snapshots").glob("*.snap"))  # bound to the journal, verified on load
        hash1 = re.search(r"state_hash (\w+)", out).group(1)
        assert recover(data / "journal.bin").state_hash() == hash1
        s2 = Served(data, keys.path)
        url2 = await s2.url()
        async with GatewayClient(url2, creds["alice"], reconnect=False) as alice:
            assert sorted(o.order_id for o in await alice.open_orders()) == [a.order_id for a in acks]
            try:  # client order ids survive the restart (rebuilt from the journal)
                await alice.place(MARKET, "buy", 1, price=ticks_to_price(SPEC, idx - 300), client_order_id=100)
                raise AssertionError("duplicate accepted")
            except GatewayError as exc:
                assert exc.code == 4204
        out2 = await s2.stop()
        hash2 = re.search(r"state_hash (\w+)", out2).group(1)
        assert recover(data / "journal.bin").state_hash() == hash2

    run(body(), 150)


def test_sigkill_under_load_loses_no_acknowledged_order(tmp_path):
    async def body():
        keys, creds = make_keys(tmp_path / "keys.json")
        data = tmp_path / "data"
        s1 = Served(data, keys.path)
        url = await s1.url()
        port = int(url.rsplit(":", 1)[1])
        async with GatewayClient(url, creds["admin"]) as admin:
            await admin.deposit(ALICE, 10**12)
        alice = GatewayClient(url, creds["alice"], reconnect=True, max_backoff_s=0.2)
        await alice.connect()
        book = await alice.subscribe_book(MARKET)
        idx = await index_ticks(alice)
        acked: set[int] = set()
        stop = asyncio.Event()

        async def load(worker: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    ack = await alice.place(MARKET, "buy", 1, price=ticks_to_price(SPEC, idx - 100 - i % 1000),
                                            client_order_id=worker * 1_000_000 + i)
                    acked.add(ack.order_id)
                except (TimeoutError, ConnectionLost, GatewayError):
                    await asyncio.sleep(0.01)

        workers = [asyncio.create_task(load(w)) for w in range(1, 5)]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while len(acked) < 150:  # the market allows 200 open orders per account
            await asyncio.sleep(0.005)
            assert loop.time() < deadline, f"only {len(acked)} acks"
        s1.proc.kill()  # SIGKILL mid-stream: no drain, no snapshot
        await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, s1.proc.wait), 30)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), 30)
        s2 = Served(data, keys.path, port)
        await s2.url()
        await alice.wait_connected(30)  # the client reconnected, logged on and resubscribed by itself
        live = {o.order_id for o in await alice.open_orders()}
        assert acked <= live, f"{len(acked - live)} acknowledged orders lost"
        while not book.synced:
            book.updated.clear()
            await asyncio.wait_for(book.updated.wait(), 10)
        assert sum(book.bids.values()) == len(live)  # every live order is one lot
        await alice.close()
        out = await s2.stop()
        assert recover(data / "journal.bin").state_hash() == re.search(r"state_hash (\w+)", out).group(1)

    run(body(), 150)


def test_a_failed_fsync_stops_perp_serve_with_exit_3_and_the_restart_recovers_what_was_acknowledged(tmp_path):
    """fsyncgate: after a failed fsync only what is on disk can be trusted, so the process does not
    stay up answering reads from memory that may be past the file: it answers the batch "status
    unknown", skips the exit snapshot and exits 3 for its supervisor; the restart recovers from
    snapshot + journal, every acknowledged order in it."""
    async def body():
        keys, creds = make_keys(tmp_path / "keys.json")
        data, fault, err = tmp_path / "data", tmp_path / "fsync_fault", tmp_path / "stderr.txt"
        s1 = Served(data, keys.path, program=FAULTY_FSYNC, env={"PERP_TEST_FSYNC_FAULT": str(fault)}, stderr=err)
        url = await s1.url()
        async with GatewayClient(url, creds["alice"], reconnect=False) as alice:
            idx, acked = await funded_bids(url, creds, alice, 3)
            fault.touch()  # the disk starts failing
            with pytest.raises(GatewayError) as exc:
                await alice.place(MARKET, "buy", 1, price=ticks_to_price(SPEC, idx - 200), client_order_id=200)
            assert exc.value.code == 4900  # STATUS_UNKNOWN_JOURNAL: the journal failed
        loop = asyncio.get_running_loop()
        out = await asyncio.wait_for(loop.run_in_executor(None, s1.proc.stdout.read), 30)
        assert await asyncio.wait_for(loop.run_in_executor(None, s1.proc.wait), 30) == 3  # by itself, no signal
        assert "stopped" not in out and not any((data / "snapshots").glob("*.snap"))  # no exit snapshot
        assert "the journal failed" in err.read_text()
        fault.unlink()  # the disk replaced
        s2 = Served(data, keys.path)
        url2 = await s2.url()
        async with GatewayClient(url2, creds["alice"], reconnect=False) as alice:
            live = {o.order_id: o for o in await alice.open_orders()}
            assert {a.order_id for a in acked} <= set(live)  # nothing acknowledged was lost
            unknown = [o for o in live.values() if o.client_order_id == 200]
            assert len(live) == len(acked) + len(unknown)  # the unknown one is in or out, once at most
        out2 = await s2.stop()
        assert recover(data / "journal.bin").state_hash() == re.search(r"state_hash (\w+)", out2).group(1)

    run(body(), 150)


def test_the_gateway_commands_are_wired_into_perp():
    from click.testing import CliRunner

    from perp.cli import main

    runner = CliRunner()
    for args in (["serve", "--help"], ["keys", "--help"], ["bench", "gateway", "--help"]):
        res = runner.invoke(main, args)
        assert res.exit_code == 0, res.output


def test_keys_create_list_revoke(tmp_path):
    import json
    import stat

    from click.testing import CliRunner

    from gateway.keys import KeyStore
    from perp.cli import main

    runner = CliRunner()
    keys = tmp_path / "keys.json"
    out = tmp_path / "mm.key"
    res = runner.invoke(main, ["keys", "create", "--keys", str(keys), "--account", "100", "--perm", "read,trade",
                               "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert stat.S_IMODE(os.stat(keys).st_mode) == stat.S_IMODE(os.stat(out).st_mode) == 0o600
    cred = json.loads(out.read_text())
    assert cred["secret_hex"] not in keys.read_text()  # ed25519: the server keeps the public key only
    res = runner.invoke(main, ["keys", "create", "--keys", str(keys), "--account", "101", "--kind", "hmac"])
    hmac_key = json.loads(res.output)["key"]
    listing = runner.invoke(main, ["keys", "list", "--keys", str(keys)]).output
    assert cred["key"] in listing and hmac_key in listing and json.loads(res.output)["secret_hex"] not in listing
    assert runner.invoke(main, ["keys", "revoke", "--keys", str(keys), hmac_key]).exit_code == 0
    assert KeyStore(keys).keys[hmac_key].revoked
    bad = runner.invoke(main, ["keys", "create", "--keys", str(keys), "--account", "5", "--perm", "root"])
    assert bad.exit_code != 0
    os.chmod(keys, 0o644)  # a key file others can read is refused, never used
    res = runner.invoke(main, ["keys", "list", "--keys", str(keys)])
    assert res.exit_code != 0 and "owner-only" in res.output
