"""The journal never loses or swaps acknowledged history without a coded error and an operator's
decision: damage that a crash mid-append cannot explain is corruption (nothing is truncated), an
emptied journal is not a fresh venue, a journal is bound to the markets config it was written
under, and `perp journal repair` (with a dry run) is the only way to cut a damaged journal."""

from __future__ import annotations

import struct
import tracemalloc

import msgspec
import numpy as np
import pytest
from click.testing import CliRunner

from perp.bench import make_stream
from perp.cli import main
from perp.codes import ResultCode
from perp.engine import Engine
from perp.journal import (
    Journal,
    JournalCorrupt,
    JournalEmpty,
    JournalHeaderMismatch,
    JournalReader,
    SCHEMA_VERSION,
    plan_repair,
    read_rows,
    repair,
    scan,
)
from perp.markets import MarketsConfig, load_markets
from perp.sequencer import JournaledEngine, engine_config_hash, recover

MARKETS = load_markets()
CONFIG = engine_config_hash(Engine(MARKETS))
RECORD_ROWS = 40


@pytest.fixture(scope="module")
def stream() -> np.ndarray:
    return make_stream(2_000, seed=11, index_ticks=21432, accounts=40)


def _journal(path, rows: np.ndarray) -> list[int]:
    """Write `rows` in records of RECORD_ROWS; returns each record's start offset."""
    offsets = []
    with Journal(path, config=CONFIG) as j:
        for start in range(0, rows.shape[0], RECORD_ROWS):
            offsets.append(path.stat().st_size)
            j.append(rows[start:start + RECORD_ROWS])
    return offsets


def _hash_of(rows: np.ndarray) -> str:
    e = Engine(MARKETS)
    e.submit_rows(rows)
    return e.state_hash()


def test_a_length_bit_flip_in_a_middle_record_is_corruption_and_nothing_is_truncated(tmp_path, stream):
    path = tmp_path / "j.bin"
    offsets = _journal(path, stream)
    middle = offsets[len(offsets) // 2]
    data = bytearray(path.read_bytes())
    data[middle + 7] ^= 0x01  # +16 MiB in the little-endian length field: its end is past the file's end
    path.write_bytes(bytes(data))
    size = path.stat().st_size
    with pytest.raises(JournalCorrupt) as info:
        scan(path)
    assert info.value.code == ResultCode.JOURNAL_CORRUPT and info.value.offset == middle
    with pytest.raises(JournalCorrupt):
        Journal(path)  # opening for append refuses...
    with pytest.raises(JournalCorrupt):
        JournaledEngine.open(path, markets=MARKETS)
    with pytest.raises(JournalCorrupt):
        recover(path, markets=MARKETS)
    assert path.stat().st_size == size and path.read_bytes() == bytes(data)  # ...and truncates nothing


def test_a_length_flip_in_the_last_record_is_corruption_not_a_torn_tail(tmp_path, stream):
    path = tmp_path / "j.bin"
    offsets = _journal(path, stream)
    data = bytearray(path.read_bytes())
    data[offsets[-1] + 7] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match="frame"):
        scan(path)


def test_a_zero_length_journal_is_refused_not_a_fresh_venue(tmp_path):
    path = tmp_path / "j.bin"
    path.write_bytes(b"")
    for attempt in (lambda: recover(path, markets=MARKETS), lambda: JournaledEngine.open(path, markets=MARKETS),
                    lambda: Journal(path, config=CONFIG)):
        with pytest.raises(JournalEmpty) as info:
            attempt()
        assert info.value.code == ResultCode.JOURNAL_EMPTY and "5010" in str(info.value)
    assert path.stat().st_size == 0


def test_a_missing_journal_next_to_a_snapshot_is_refused(tmp_path, stream):
    path = tmp_path / "j.bin"
    live = JournaledEngine.open(path, markets=MARKETS, fsync="never")
    live.submit_rows(stream[:500], auto_liquidate=False)
    live.snapshot(tmp_path / "s.snap")
    live.close()
    path.unlink()
    with pytest.raises(JournalEmpty, match="missing"):
        recover(path, snapshot=tmp_path / "s.snap")


def test_a_new_journal_is_created_with_a_header_naming_its_config(tmp_path):
    path = tmp_path / "j.bin"
    live = JournaledEngine.open(path, markets=MARKETS)
    live.close()
    with JournalReader(path) as r:
        assert r.header.schema_version == SCHEMA_VERSION and r.header.config_hash == CONFIG and len(r.header.journal_id) == 16
    assert recover(path, markets=MARKETS).seq == 0  # a header-only journal is a new venue at seq 0
    assert not list(tmp_path.glob(".*creating*"))


def test_a_journal_written_under_another_markets_config_is_refused(tmp_path, stream):
    path = tmp_path / "j.bin"
    _journal(path, stream[:200])
    spec = MARKETS.market[0]
    other = MarketsConfig(market=[msgspec.structs.replace(spec, taker_fee_ppm=spec.taker_fee_ppm + 1)])
    with pytest.raises(JournalHeaderMismatch) as info:
        recover(path, markets=other)
    assert info.value.code == ResultCode.JOURNAL_HEADER_MISMATCH
    with pytest.raises(JournalHeaderMismatch):
        JournaledEngine.open(path, markets=other)
    assert recover(path, markets=MARKETS).state_hash() == _hash_of(stream[:200])


def test_a_zero_filled_tail_fails_closed_and_repair_cuts_it_after_a_dry_run(tmp_path, stream):
    path = tmp_path / "j.bin"
    _journal(path, stream[:400])
    whole = path.stat().st_size
    with open(path, "ab") as fh:
        fh.write(b"\0" * 8192)  # a power loss: the size grew, the data never landed
    with pytest.raises(JournalCorrupt, match="zero-filled tail"):
        recover(path, markets=MARKETS)
    plan = plan_repair(path)
    assert plan is not None and plan.cut_offset == whole and plan.dropped_bytes == 8192
    assert plan.kept_last_seq == 400 and plan.intact_after == 0
    assert path.stat().st_size == whole + 8192  # planning changes nothing
    side = repair(path, plan)
    assert side.read_bytes() == b"\0" * 8192 and path.stat().st_size == whole
    assert '"action": "repair"' in (tmp_path / "j.bin.repairs.jsonl").read_text()
    assert plan_repair(path) is None
    assert recover(path, markets=MARKETS).state_hash() == _hash_of(stream[:400])


def test_repair_dry_run_shows_the_acknowledged_records_a_cut_would_drop(tmp_path, stream):
    path = tmp_path / "j.bin"
    offsets = _journal(path, stream)
    damaged = offsets[10]
    data = bytearray(path.read_bytes())
    data[damaged + 40] ^= 0x10  # a flipped bit inside record 10's payload
    path.write_bytes(bytes(data))
    result = CliRunner().invoke(main, ["journal", "repair", str(path), "--dry-run", "--json"])
    assert result.exit_code == 1, result.output  # damaged: non-zero, so scripts notice
    plan = msgspec.json.decode(result.output.strip().splitlines()[-1])
    n_records = len(offsets)
    assert plan["cut_offset"] == damaged and plan["kept_last_seq"] == 10 * RECORD_ROWS
    assert plan["intact_after"] == n_records - 11
    assert plan["dropped_seq_range"] == [11 * RECORD_ROWS + 1, stream.shape[0]]
    assert path.read_bytes() == bytes(data)
    # without --yes the CLI refuses to cut; with it the cut is made and recorded
    refused = CliRunner().invoke(main, ["journal", "repair", str(path)])
    assert refused.exit_code != 0 and path.read_bytes() == bytes(data)
    done = CliRunner().invoke(main, ["journal", "repair", str(path), "--yes"])
    assert done.exit_code == 0, done.output
    assert read_rows(path).shape[0] == 10 * RECORD_ROWS


def test_journal_verify_reports_a_whole_journal_and_its_header(tmp_path, stream):
    path = tmp_path / "j.bin"
    _journal(path, stream[:120])
    result = CliRunner().invoke(main, ["journal", "verify", str(path), "--json"])
    assert result.exit_code == 0, result.output
    info = msgspec.json.decode(result.output.strip().splitlines()[-1])
    assert info["last_seq"] == 120 and info["records"] == 3 and info["config_hash"] == CONFIG
    assert info["torn_tail_bytes"] == 0


def test_a_torn_tail_needs_a_plausible_record_prefix(tmp_path, stream):
    path = tmp_path / "j.bin"
    _journal(path, stream[:80])
    with open(path, "ab") as fh:
        fh.write(b"XJR2")  # not the record magic: garbage, not a torn append
    with pytest.raises(JournalCorrupt):
        scan(path)


def test_a_torn_record_with_a_proven_frame_is_a_torn_tail(tmp_path, stream):
    path = tmp_path / "j.bin"
    _journal(path, stream[:80])
    whole = path.stat().st_size
    full = bytearray()
    with Journal(tmp_path / "other.bin", config=CONFIG) as other:
        other.append(stream[:RECORD_ROWS])
    with JournalReader(tmp_path / "other.bin") as r:
        start = r.end_offset
    full = (tmp_path / "other.bin").read_bytes()[start:]
    with open(path, "ab") as fh:
        fh.write(full[: len(full) // 2])
    result = scan(path)
    assert result.torn is not None and result.torn.offset == whole and result.next_seq == 81


def test_recovery_streams_the_journal_record_by_record(tmp_path):
    path = tmp_path / "j.bin"
    rows = np.zeros((1000, 12), np.int64)
    with Journal(path, config=CONFIG) as j:
        for _ in range(60):
            j.append(rows)  # 60 records of 96 kB: 5.8 MB
    tracemalloc.start()
    with JournalReader(path) as r:
        n = sum(chunk.shape[0] for _, chunk in r.records())
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == 60_000
    assert peak < 3 * 96_000 + (2 << 20)  # a record or two plus the read buffer, never the file


def test_a_record_header_crc_covers_magic_and_length(tmp_path, stream):
    path = tmp_path / "j.bin"
    offsets = _journal(path, stream[:80])
    data = bytearray(path.read_bytes())
    (length,) = struct.unpack_from("<I", data, offsets[1] + 4)
    struct.pack_into("<I", data, offsets[1] + 4, length - 96)  # a shorter length that still fits the file
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match="frame"):
        scan(path)


def test_a_journal_of_the_previous_schema_is_refused_as_a_header_mismatch(tmp_path):
    path = tmp_path / "old.bin"
    path.write_bytes(b"PERPJNL1" + b"\x10\x00\x00\x00" + b"\0" * 20)
    with pytest.raises(JournalHeaderMismatch, match="schema 1"):
        recover(path, markets=MARKETS)


def test_a_schema_2_journal_is_refused_whole_because_it_applied_fund_deposit(tmp_path, stream):
    """Schema 3 refuses the retired fund_deposit rows schema 2 applied: an old journal is refused with
    5011 and the reason, never replayed to another state (docs/journal.md, "Schema 3")."""
    path = tmp_path / "old.bin"
    _journal(path, stream[:50])
    whole = path.read_bytes()
    assert whole.startswith(b"PERPJNL4")
    path.write_bytes(b"PERPJNL2" + whole[8:])
    with pytest.raises(JournalHeaderMismatch, match="schema 2.*fund_deposit") as info:
        recover(path, markets=MARKETS)
    assert info.value.code == ResultCode.JOURNAL_HEADER_MISMATCH
    with pytest.raises(JournalHeaderMismatch, match="fund_deposit"):
        JournaledEngine.open(path, markets=MARKETS)
    assert path.read_bytes() == b"PERPJNL2" + whole[8:]  # refused, never truncated or rewritten


def test_a_schema_3_journal_is_refused_whole_because_its_gate_accepted_what_schema_4_refuses(tmp_path, stream):
    """Schema 4's gate refuses orders schema 3 accepted (docs/journal.md, "Schema 4"): replaying a
    schema-3 journal could reach another state, so it is refused with 5011 and the reason."""
    path = tmp_path / "old.bin"
    _journal(path, stream[:50])
    path.write_bytes(b"PERPJNL3" + path.read_bytes()[8:])
    with pytest.raises(JournalHeaderMismatch, match="schema 3.*reduce-only") as info:
        recover(path, markets=MARKETS)
    assert info.value.code == ResultCode.JOURNAL_HEADER_MISMATCH


def test_journal_recover_reports_the_state_reached_and_refuses_with_the_code(tmp_path, stream):
    path = tmp_path / "j.bin"
    _journal(path, stream[:400])
    result = CliRunner().invoke(main, ["journal", "recover", str(path), "--json"])
    assert result.exit_code == 0, result.output
    info = msgspec.json.decode(result.output.strip().splitlines()[-1])
    assert info["seq"] == 400 and info["money_conserved"] and info["state_hash"] == _hash_of(stream[:400])
    path.write_bytes(b"")
    refused = CliRunner().invoke(main, ["journal", "recover", str(path)])
    assert refused.exit_code == 1 and "JOURNAL_EMPTY (5010)" in refused.output


def test_a_new_journal_fsyncs_its_directory(tmp_path, monkeypatch):
    import perp.journal as J

    synced: list[str] = []
    real = J.fsync_dir
    monkeypatch.setattr(J, "fsync_dir", lambda p: (synced.append(str(p)), real(p)))
    Journal(tmp_path / "j.bin", config=CONFIG).close()
    assert synced == [str(tmp_path)]


def _small_journal(path, stream) -> bytes:
    with Journal(path, config=CONFIG) as j:
        for start in range(0, 15, 3):
            j.append(stream[start:start + 3])
    return path.read_bytes()


def test_no_single_bit_flip_anywhere_yields_another_history(tmp_path, stream):
    path = tmp_path / "j.bin"
    whole = _small_journal(path, stream)
    rng = np.random.default_rng(1)
    first_record_ends = whole.index(b"PJR2", whole.index(b"PJR2") + 1)
    everywhere = set(range(first_record_ends)) | set(rng.integers(0, len(whole), 150).tolist())
    for pos in sorted(everywhere):  # every byte of the header and the first record, and a sample of the rest
        damaged = bytearray(whole)
        damaged[pos] ^= 1 << int(rng.integers(0, 8))
        path.write_bytes(bytes(damaged))
        with pytest.raises((JournalCorrupt, JournalHeaderMismatch)):
            scan(path)


def test_a_journal_cut_anywhere_keeps_a_prefix_of_whole_records_or_refuses(tmp_path, stream):
    path = tmp_path / "j.bin"
    whole = _small_journal(path, stream)
    first_record_ends = whole.index(b"PJR2", whole.index(b"PJR2") + 1)
    for size in sorted(set(range(1, first_record_ends + 1)) | set(range(first_record_ends, len(whole), 5))):
        path.write_bytes(whole[:size])
        try:
            rows = read_rows(path)
        except (JournalCorrupt, JournalEmpty):
            continue  # a cut inside the file header: refused, never read as a different history
        assert rows.shape[0] % 3 == 0 and np.array_equal(rows, stream[:rows.shape[0]])


def test_with_interval_fsync_only_what_is_synced_may_be_acknowledged(tmp_path, stream):
    live = JournaledEngine.open(tmp_path / "j.bin", markets=MARKETS, fsync="always")
    live.submit_rows(stream[:100], auto_liquidate=False)
    assert live.durable_seq == live.engine.seq == 100
    live.close()
    lagging = JournaledEngine.open(tmp_path / "j.bin", markets=MARKETS, fsync="interval")
    lagging.journal.fsync_interval_ns = 3_600 * 10**9  # an hour: no fsync happens by itself here
    lagging.submit_rows(stream[100:200], auto_liquidate=False)
    assert lagging.engine.seq == 200 and lagging.durable_seq == 100
    assert lagging.sync() == 200
    lagging.close()
