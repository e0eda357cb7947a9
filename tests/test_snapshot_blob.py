"""A snapshot built in memory (Engine.snapshot_job / snapshot_blob, the Redis engine's and the
background writers' path) is byte for byte the file `Engine.snapshot` writes, and a job taken at
one moment keeps that moment's state whatever the engine does before it runs."""

from __future__ import annotations

import pytest

from perp import state as S
from perp.bench import make_stream
from perp.engine import Engine
from perp.markets import load_markets, price_to_ticks


def test_a_snapshot_job_taken_before_more_commands_gives_the_file_of_that_moment(tmp_path):
    markets = load_markets()
    index = price_to_ticks(markets.market[0], "2.1432")
    eng = Engine(markets)
    eng.submit_rows(make_stream(5_000, 1, index), batch=1024)
    path = tmp_path / "then.snap"
    eng.snapshot(path, {"note": "then"})
    job = eng.snapshot_job({"note": "then"})
    h_then, seq_then = eng.state_hash(), eng.seq
    eng.submit_rows(make_stream(2_000, 2, index), batch=1024)  # the engine goes on before the job runs
    assert eng.seq > seq_then
    blob = job()
    assert blob == path.read_bytes()
    st, meta = S.load_snapshot_blob(blob)
    back = Engine.from_state(st, meta)
    assert back.seq == seq_then and back.state_hash() == h_then and meta["note"] == "then"
    assert eng.snapshot_blob() != blob  # now is another state


def test_a_damaged_snapshot_blob_is_refused_like_a_damaged_file():
    eng = Engine(load_markets())
    blob = bytearray(eng.snapshot_blob())
    blob[len(blob) // 2] ^= 1
    with pytest.raises(S.SnapshotCorrupt, match="redis:snap: checksum"):
        S.load_snapshot_blob(bytes(blob), "redis:snap")
