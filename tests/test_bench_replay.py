"""`perp bench replay` recovers the journal it wrote into a fresh engine and reports the figures;
the repeated stream stays a valid, live stream (the recovered state equals a direct run)."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from perp import layout as L
from perp.bench_replay import write_journal
from perp.cli import main
from perp.engine import Engine
from perp.journal import read_rows
from perp.sequencer import recover


def test_bench_replay_prints_its_figures_and_a_json_last_line(tmp_path):
    result = CliRunner().invoke(main, ["bench", "replay", "--commands", "30000", "--record-rows", "1000",
                                       "--dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    r = json.loads(result.output.strip().splitlines()[-1])
    assert r["commands"] == r["recovered_seq"] == 30000 and r["records"] == 30
    for key in ("recover_s", "commands_per_s", "scan_s", "snapshot_load_s", "day_recover_s_at_this_rate"):
        assert r[key] >= 0
    assert list(tmp_path.iterdir()) == []  # the journal is deleted unless --keep


def test_the_repeated_stream_replays_like_a_direct_run(tmp_path, monkeypatch):
    import perp.bench_replay as B

    monkeypatch.setattr(B, "BASE_MAX", 15_000)  # three repetitions of a 15,000-command stream
    path = tmp_path / "j.bin"
    written = write_journal(path, 40_000, seed=5, record_rows=512)
    assert written["repetitions"] == 3
    rows = read_rows(path)
    assert np.all(np.diff(rows[:, L.C_TS]) >= 0)  # timestamps never go back across repetitions
    direct = Engine()
    ev = direct.submit_rows(rows)
    fills = int(np.count_nonzero(ev[:, L.E_KIND] == L.EV_FILL))
    assert fills > 0
    assert recover(path).state_hash() == direct.state_hash()
