"""Journal, snapshot and recovery: replay reaches the same state hash; a torn tail is recovered
up to the last whole record and reported; damage mid-file is an error, never skipped."""

from __future__ import annotations

import numpy as np
import pytest

from perp.bench import make_stream
from perp.engine import Engine
from perp.journal import Journal, JournalCorrupt, read_rows, scan
from perp.markets import load_markets
from perp.sequencer import JournaledEngine, engine_config_hash, recover

MARKETS = load_markets()
CONFIG = engine_config_hash(Engine(MARKETS))


@pytest.fixture(scope="module")
def stream() -> np.ndarray:
    return make_stream(6_000, seed=5, index_ticks=21432, accounts=50)


def _run(rows: np.ndarray) -> str:
    e = Engine(MARKETS)
    e.submit_rows(rows)
    return e.state_hash()


def test_replaying_the_journal_gives_the_same_state_hash(tmp_path, stream):
    path = tmp_path / "j.bin"
    live = JournaledEngine.open(path, markets=MARKETS)
    for start in range(0, len(stream), 700):
        live.submit_rows(stream[start:start + 700], auto_liquidate=False)
    live.close()
    assert recover(path, markets=MARKETS).state_hash() == live.engine.state_hash() == _run(stream)


def test_snapshot_plus_journal_tail_recovers_the_same_state(tmp_path, stream):
    path = tmp_path / "j.bin"
    live = JournaledEngine.open(path, markets=MARKETS, fsync="never")
    live.submit_rows(stream[:2500])
    live.snapshot(tmp_path / "snap.snap")
    live.submit_rows(stream[2500:])
    live.close()
    restored = recover(path, snapshot=tmp_path / "snap.snap")
    assert restored.seq == live.engine.seq >= len(stream)  # plus the sweeps the sequencer added
    assert restored.state_hash() == live.engine.state_hash()


def test_snapshot_restored_into_other_capacities_hashes_the_same(tmp_path, stream):
    small = Engine(MARKETS, order_capacity=8, account_capacity=2)
    small.submit_rows(stream, batch=333)
    small.snapshot(tmp_path / "s.npz")
    big = Engine(MARKETS, order_capacity=1 << 16, account_capacity=1 << 12)
    big.submit_rows(stream)
    assert Engine.from_snapshot(tmp_path / "s.npz").state_hash() == big.state_hash() == small.state_hash()


def test_a_torn_last_record_is_recovered_up_to_the_last_whole_record_and_reported(tmp_path, stream):
    path = tmp_path / "j.bin"
    with Journal(path, config=CONFIG) as j:
        j.append(stream[:1000])
        j.append(stream[1000:2000])
    whole = path.stat().st_size
    with open(path, "ab") as fh:  # a crash in the middle of writing the third record
        fh.write(b"PJR2\x10\x27")
    result = scan(path)
    assert result.records == 2
    assert result.torn is not None and result.torn.offset == whole and result.torn.dropped_bytes == 6
    assert recover(path, markets=MARKETS).state_hash() == _run(stream[:2000])
    # reopening for append cuts the proven torn tail (kept aside, decision logged) and continues
    j = Journal(path)
    assert j.torn is not None and j.next_seq == 2001 and path.stat().st_size == whole
    assert (tmp_path / f"j.bin.torn-{whole}").read_bytes() == b"PJR2\x10\x27"
    assert "cut_torn_tail" in (tmp_path / "j.bin.repairs.jsonl").read_text()
    j.append(stream[2000:3000])
    j.close()
    assert scan(path).torn is None
    assert recover(path, markets=MARKETS).state_hash() == _run(stream[:3000])


def test_a_record_cut_inside_its_payload_counts_as_torn(tmp_path, stream):
    path = tmp_path / "j.bin"
    with Journal(path, config=CONFIG) as j:
        j.append(stream[:100])
        j.append(stream[100:200])
    data = path.read_bytes()
    path.write_bytes(data[:-5])
    result = scan(path)
    assert result.records == 1 and result.torn is not None


def test_damage_in_the_middle_of_the_journal_is_an_error(tmp_path, stream):
    path = tmp_path / "j.bin"
    with Journal(path, config=CONFIG) as j:
        first_record_at = path.stat().st_size
        j.append(stream[:100])
        j.append(stream[100:200])
    data = bytearray(path.read_bytes())
    data[first_record_at + 40] ^= 0xFF  # flip a byte inside the first record's payload
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match="checksum"):
        scan(path)


def test_a_file_that_is_not_a_journal_is_refused(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"hello world, not a journal")
    with pytest.raises(JournalCorrupt, match="magic"):
        scan(path)


def test_every_acknowledged_batch_is_in_the_journal_before_the_engine_sees_it(tmp_path, stream):
    path = tmp_path / "j.bin"
    live = JournaledEngine.open(path, markets=MARKETS)
    live.submit_rows(stream[:300], auto_liquidate=False)
    # no close: a crash right after the acknowledgement still finds the batch on disk
    assert read_rows(path).shape[0] == 300
    live.close()


def test_same_commands_same_hash_whatever_the_batch_size(stream):
    hashes = set()
    for batch in (1, 17, 4096):
        e = Engine(MARKETS)
        e.submit_rows(stream[:2000], batch=batch)
        hashes.add(e.state_hash())
    assert len(hashes) == 1


def test_dropping_the_events_as_recovery_does_leaves_the_same_state_as_publishing_them(stream):
    """`stream_rows(rows, None)`: each command's events go into the same rows and are dropped; the
    kernel still reads its own command's rows to undo a rejected command's clock advance."""
    from perp import layout as L

    rows = stream.copy()
    later = rows[3000:].copy()
    later[:, L.C_TS] += 3600 * 10**9  # past the funding hour: the next command's advance pays it
    bad = later[:1].copy()
    bad[0, L.C_KIND], bad[0, L.C_MARKET] = L.CK_PLACE, 7  # rejected (unknown market): its advance is undone
    rows = np.concatenate([rows[:3000], bad, later])
    published, dropped = Engine(MARKETS), Engine(MARKETS)
    events: list[np.ndarray] = []
    published.stream_rows(rows, lambda ev: events.append(ev.copy()), 512)
    dropped.stream_rows(rows, None, 512)
    ev = np.concatenate(events)
    rejected = ev[ev[:, L.E_SEQ] == 3001]
    assert rejected.shape[0] == 1 and rejected[0, L.E_KIND] == L.EV_REJECTED  # the undo ran
    assert int(np.count_nonzero(ev[:, L.E_KIND] == L.EV_FUNDING)) == 1  # paid once, after the undo
    assert dropped.state_hash() == published.state_hash() == _run(rows)
    assert dropped.seq == rows.shape[0] and dropped.money_conserved()
