"""Snapshots are written atomically, carry a checksum and the state hash (both verified on load),
name the journal and sequence number they belong to, and recovery refuses -- with a code -- a
snapshot that is damaged, foreign, unbound or ahead of its journal. Periodic snapshots bound the
replay; a kill -9 in the middle of writing one leaves the previous one usable."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from perp import state as S
from perp.bench import make_stream
from perp.codes import ResultCode
from perp.engine import Engine
from perp.journal import plan_repair, repair
from perp.markets import load_markets
from perp.sequencer import (
    JournaledEngine,
    recover,
    recover_detailed,
    snapshot_name,
    snapshots_of,
)

MARKETS = load_markets()
REPO = Path(__file__).resolve().parents[1]
CHILD_TIMEOUT_S = 120  # a cold numba cache compiles in the child first (~40 s)


class _Child:
    """A real Python process whose stdout lines are read with a timeout (never a hung test)."""

    def __init__(self, code: str, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, stdout=subprocess.PIPE,
                                     env=os.environ | {"PYTHONPATH": str(REPO)}, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put("")  # EOF

    def readline(self) -> str:
        return self.lines.get(timeout=CHILD_TIMEOUT_S)

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def stream() -> np.ndarray:
    return make_stream(3_000, seed=13, index_ticks=21432, accounts=60)


def _live(path, stream, upto: int, **kw) -> JournaledEngine:
    live = JournaledEngine.open(path, markets=MARKETS, fsync="never", **kw)
    for start in range(0, upto, 250):
        live.submit_rows(stream[start:min(upto, start + 250)], auto_liquidate=False)
    return live


def test_a_snapshot_names_its_journal_and_sequence_and_recovers_the_same_hash(tmp_path, stream):
    live = _live(tmp_path / "j.bin", stream, 1500, snapshot_dir=tmp_path / "snaps")
    snap = live.snapshot()
    assert snap.name == snapshot_name(live.journal.journal_id, 1500)
    meta = S.read_snapshot_meta(snap)
    assert meta.seq == 1500 and meta.extra["journal_id"] == live.journal.journal_id
    assert meta.state_hash == live.engine.state_hash()
    for start in range(1500, 3000, 250):
        live.submit_rows(stream[start:start + 250], auto_liquidate=False)
    live.close()
    rec = recover_detailed(tmp_path / "j.bin", snapshot_dir=tmp_path / "snaps", markets=MARKETS)
    assert rec.snapshot == snap and rec.snapshot_seq == 1500 and rec.replayed == 1500
    assert rec.engine.state_hash() == live.engine.state_hash()


def test_a_snapshot_of_another_history_is_refused_with_5003(tmp_path, stream):
    ours = _live(tmp_path / "a.bin", stream, 1000)
    ours.close()
    theirs = _live(tmp_path / "b.bin", stream[::-1].copy(), 1000)  # another venue's history
    theirs.snapshot(tmp_path / "b.snap")
    theirs.close()
    with pytest.raises(S.SnapshotMismatch) as info:
        recover(tmp_path / "a.bin", snapshot=tmp_path / "b.snap", markets=MARKETS)
    assert info.value.code == ResultCode.SNAPSHOT_MISMATCH and "5003" in str(info.value)


def test_a_snapshot_that_names_no_journal_is_refused(tmp_path, stream):
    live = _live(tmp_path / "j.bin", stream, 500)
    live.engine.snapshot(tmp_path / "bare.snap")  # Engine.snapshot: a state dump, not bound to a journal
    live.close()
    with pytest.raises(S.SnapshotMismatch, match="names no journal"):
        recover(tmp_path / "j.bin", snapshot=tmp_path / "bare.snap")
    assert Engine.from_snapshot(tmp_path / "bare.snap").state_hash() == live.engine.state_hash()


def test_a_snapshot_ahead_of_its_journal_is_refused(tmp_path, stream):
    path = tmp_path / "j.bin"
    live = _live(path, stream, 1000)
    live.snapshot(tmp_path / "s.snap")
    live.close()
    with open(path, "r+b") as fh:  # the journal loses its last records (and a repair cuts it)
        fh.truncate(path.stat().st_size - 30_000)
    with open(path, "ab") as fh:
        fh.write(b"\0" * 100)
    repair(path, plan_repair(path))
    with pytest.raises(S.SnapshotMismatch, match="lost acknowledged commands"):
        recover(path, snapshot=tmp_path / "s.snap")


def test_a_flipped_byte_in_a_snapshot_is_a_coded_error(tmp_path, stream):
    live = _live(tmp_path / "j.bin", stream, 500)
    snap = live.snapshot(tmp_path / "s.snap")
    live.close()
    data = bytearray(snap.read_bytes())
    data[len(data) // 2] ^= 0x04
    snap.write_bytes(bytes(data))
    with pytest.raises(S.SnapshotCorrupt) as info:
        recover(tmp_path / "j.bin", snapshot=snap)
    assert info.value.code == ResultCode.SNAPSHOT_CORRUPT and "5012" in str(info.value)
    snap.write_bytes(b"PK\x03\x04 an old npz")
    with pytest.raises(S.SnapshotCorrupt, match="not a snapshot"):
        S.load_snapshot(snap)


def test_a_snapshot_whose_state_does_not_hash_to_its_stored_hash_is_refused(tmp_path, stream, monkeypatch):
    eng = Engine(MARKETS)
    eng.submit_rows(stream[:500])
    snap = tmp_path / "s.snap"
    with monkeypatch.context() as m:  # a writer whose state and hash disagree (checksum intact)
        m.setattr(S, "state_hash", lambda st, include_clock=True: "0" * 64)
        S.save_snapshot(eng.state, snap, {"markets": "{}"})
    with pytest.raises(S.SnapshotHashMismatch) as info:
        S.load_snapshot(snap)
    assert info.value.code == ResultCode.SNAPSHOT_HASH_MISMATCH and "5013" in str(info.value)


def test_periodic_snapshots_bound_the_replay_and_keep_the_last_two(tmp_path, stream):
    live = _live(tmp_path / "j.bin", stream, 3000, snapshot_dir=tmp_path / "snaps", snapshot_every=1000)
    live.close()
    snaps = snapshots_of(tmp_path / "snaps", live.journal.journal_id)
    assert [S.read_snapshot_meta(p).seq for p in snaps] == [3000, 2000]
    rec = recover_detailed(tmp_path / "j.bin", snapshot_dir=tmp_path / "snaps", markets=MARKETS)
    assert rec.replayed == 0 and rec.engine.state_hash() == live.engine.state_hash()


def test_a_damaged_newest_snapshot_falls_back_to_the_one_before(tmp_path, stream):
    live = _live(tmp_path / "j.bin", stream, 3000, snapshot_dir=tmp_path / "snaps", snapshot_every=1000)
    live.close()
    newest = snapshots_of(tmp_path / "snaps", live.journal.journal_id)[0]
    newest.write_bytes(newest.read_bytes()[:-1000])
    rec = recover_detailed(tmp_path / "j.bin", snapshot_dir=tmp_path / "snaps", markets=MARKETS)
    assert rec.snapshot_seq == 2000 and rec.replayed == 1000
    assert rec.engine.state_hash() == live.engine.state_hash()


_SNAPSHOT_CHILD = textwrap.dedent("""
    import os, sys, time
    from perp import state as S
    from perp.engine import Engine
    from perp.bench import make_stream
    eng = Engine(account_capacity=1 << 15)
    eng.submit_rows(make_stream(1500, seed=13, index_ticks=21432, accounts=60))
    real_fsync = os.fsync
    def stuck_fsync(fd):  # the new snapshot is written, not yet renamed: hold it there
        print("writing", flush=True)
        time.sleep(60)
    os.fsync = stuck_fsync
    S.save_snapshot(eng.state, sys.argv[1], {"markets": "new"})
""")


def test_kill_9_while_a_snapshot_is_written_leaves_the_old_snapshot_usable(tmp_path, stream):
    eng = Engine(MARKETS)
    eng.submit_rows(stream[:700])
    snap = tmp_path / "s.snap"
    old_hash = S.save_snapshot(eng.state, snap, {"markets": "old"})
    child = _Child(_SNAPSHOT_CHILD, str(snap))
    try:
        assert child.readline() == "writing"
        temps = list(tmp_path.glob(".s.snap.tmp-*"))
        assert temps and temps[0].stat().st_size > 1 << 20  # the new one is on disk, in the temp file
    finally:
        child.kill9()
    st, meta = S.load_snapshot(snap)
    assert meta["markets"] == "old" and S.state_hash(st) == old_hash
    S.save_snapshot(eng.state, snap, {"markets": "again"})  # the next save clears the dead writer's temp
    assert not list(tmp_path.glob(".s.snap.tmp-*"))


_LOAD_CHILD = textwrap.dedent("""
    import sys
    from perp.bench import make_stream
    from perp.logs import configure_logging
    from perp.sequencer import JournaledEngine
    configure_logging("warning")
    stream = make_stream(int(sys.argv[3]), seed=int(sys.argv[2]), index_ticks=21432, accounts=200)
    live = JournaledEngine.open(sys.argv[1], fsync="always")
    start = live.engine.seq
    while start < stream.shape[0]:
        rows = stream[start:start + 97]
        live.submit_rows(rows, auto_liquidate=False)
        start += rows.shape[0]
        print("ack", start, flush=True)  # acknowledged: the batch is durable in the journal
    print("done", flush=True)
    import time; time.sleep(60)
""")


def test_sigkill_under_load_loses_no_acknowledged_command_and_recovers_the_clean_replay_hash(tmp_path):
    n, seed = 40_000, 3
    path = tmp_path / "j.bin"
    stream = make_stream(n, seed=seed, index_ticks=21432, accounts=200)
    acked = 0
    for kill_after in (25, 90, 160):  # three crashes at different depths, each resumed from the journal
        child = _Child(_LOAD_CHILD, str(path), str(seed), str(n))
        try:
            for _ in range(kill_after):
                line = child.readline().split()
                assert line, "child stopped early"
                if line[0] == "done":
                    break
                acked = int(line[1])
        finally:
            child.kill9()
        recovered = recover(path, markets=MARKETS)
        assert recovered.seq >= acked  # every acknowledged command survived
        clean = Engine(MARKETS)
        clean.submit_rows(stream[:recovered.seq])
        assert recovered.state_hash() == clean.state_hash()
    assert acked > 0


def test_no_single_bit_flip_in_a_snapshot_loads(tmp_path, stream):
    eng = Engine(MARKETS, order_capacity=64, account_capacity=64)
    eng.submit_rows(stream[:800])
    snap = tmp_path / "s.snap"
    S.save_snapshot(eng.state, snap, {"markets": "{}"})
    whole = snap.read_bytes()
    rng = np.random.default_rng(2)
    for pos in sorted(set(range(0, 64, 3)) | set(rng.integers(0, len(whole), 20).tolist()) | {len(whole) - 1}):
        damaged = bytearray(whole)
        damaged[pos] ^= 1 << int(rng.integers(0, 8))
        snap.write_bytes(bytes(damaged))
        with pytest.raises(S.SnapshotCorrupt):
            S.load_snapshot(snap)
