"""`perp serve` snapshots every `snapshot_every` commands while it serves, off the order path (the
engine pauses for a copy; a thread writes the file once the batch is durable), so a crash replays
only the journal after the newest snapshot -- not the whole journal, as when it snapshotted only on
SIGTERM."""

from __future__ import annotations

import time

from perp import state as S
from perp.sequencer import recover_detailed, snapshots_of
from tests.gateway.conftest import ALICE, MARKET, run, venue


def newest(v):
    return snapshots_of(v.gw.snapshot_dir, v.gw.jeng.journal.journal_id)[0]


def test_perp_serve_snapshots_while_serving_and_a_crash_replays_only_the_journal_after_the_newest(tmp_path):
    async def go() -> tuple[str, int, object]:
        async with venue(tmp_path, snapshot_every=25, snapshot_on_exit=False) as v:
            async with v.client("alice") as alice, v.client("bob") as bob:
                for i in range(60):
                    await alice.place(MARKET, "buy", 1, price=f"{1.9900 - 0.0001 * (i % 9):.4f}")
                    if i % 3 == 0:
                        await bob.place(MARKET, "sell", 1, price="1.9000", tif="ioc")  # fills: money moves
                await v.gw.snapshot_settled()
                # the sweeps after mark moves depend on the clock, so the last batch may have been the
                # one that made a snapshot due: then one more command leaves a tail to replay
                while S.read_snapshot_meta(newest(v)).seq == v.gw.engine.seq:
                    await alice.place(MARKET, "buy", 1, price="1.9800")
                    await v.gw.snapshot_settled()
                snaps = snapshots_of(v.gw.snapshot_dir, v.gw.jeng.journal.journal_id)
                h, seq = v.gw.engine.state_hash(), v.gw.engine.seq
            return h, seq, (v, snaps)  # stop() writes no snapshot: what a SIGKILL leaves

    h, seq, (v, snaps) = run(go(), 60)
    assert 1 <= len(snaps) <= 2  # the newest two are kept
    rec = recover_detailed(v.gw.journal_path, snapshot_dir=v.gw.snapshot_dir)
    assert rec.snapshot is not None and 25 <= rec.snapshot_seq < seq
    assert rec.replayed == seq - rec.snapshot_seq  # only the journal after the snapshot
    assert rec.engine.state_hash() == h and rec.engine.seq == seq


def test_a_periodic_snapshot_is_written_only_once_its_batch_is_durable(tmp_path, monkeypatch):
    """The snapshot's file appears after the fsync of the batch it was copied at: never ahead of
    the journal on disk."""
    async def go() -> None:
        async with venue(tmp_path, snapshot_every=5, snapshot_on_exit=False, deposits=False) as v:
            jeng = v.gw.jeng
            real_commit = jeng.commit_upto
            seen: list[tuple[int, int]] = []
            real_job = jeng.snapshot_job

            def job():
                seq, write = real_job()

                def checked_write():
                    seen.append((seq, jeng.durable_seq))
                    return write()
                return seq, checked_write

            monkeypatch.setattr(jeng, "snapshot_job", job)
            monkeypatch.setattr(jeng, "commit_upto", lambda s: (time.sleep(0.02), real_commit(s)))  # a slow disk
            async with v.client("admin") as admin:
                for _ in range(12):
                    await admin.deposit(ALICE, 1_000_000)
            await v.gw.snapshot_settled()
            assert seen and all(durable >= seq for seq, durable in seen)

    run(go(), 60)
