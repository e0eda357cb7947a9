"""The `perp` command end to end: replay (the audit path), demo, bench, config."""

from __future__ import annotations

import json
from importlib import resources

import msgspec
from click.testing import CliRunner

from perp.cli import main
from perp.events import Event

EXAMPLE = str(resources.files("perp").joinpath("examples/h100_session.jsonl"))


def _hash(output: str) -> str:
    (line,) = [ln for ln in output.splitlines() if ln.startswith("state_hash")]
    return line.split()[1]


def test_replay_writes_every_event_as_json_and_prints_a_reproducible_state_hash(tmp_path):
    runner = CliRunner()
    out = tmp_path / "events.jsonl"
    first = runner.invoke(main, ["replay", EXAMPLE, "--events", str(out)])
    assert first.exit_code == 0, first.output
    second = runner.invoke(main, ["replay", EXAMPLE])
    assert _hash(first.output) == _hash(second.output)
    lines = out.read_bytes().splitlines()
    (events_line,) = [ln for ln in first.output.splitlines() if ln.startswith("events")]
    assert len(lines) == int(events_line.split()[1])
    decoded = [msgspec.json.decode(ln, type=Event) for ln in lines]
    assert {type(e).__name__ for e in decoded} >= {"Accepted", "Fill", "BookLevel", "IndexSet", "MarkChanged"}
    assert "PRICE_OUTSIDE_BAND" in first.output  # the session's fat finger is rejected


def test_replay_refuses_a_malformed_line_with_its_number_and_code(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type":"set_index","ts_ns":1,"market":"H100-PERP","price":"2.1432"}\n'
                   '{"type":"place","ts_ns":2,"account":1,"market":"H100-PERP","side":"buy","size_lots":1,'
                   '"price":"2.14325"}\n')
    result = CliRunner().invoke(main, ["replay", str(bad)])
    assert result.exit_code == 2
    assert "line 2" in result.output and "5004" in result.output and "tick grid" in result.output


def test_demo_runs_a_session_on_the_real_h100_index_path(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--days", "1", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "GPU Markets, gpumarkets.dev" in result.output
    assert (tmp_path / "session.jsonl").exists() and (tmp_path / "events.jsonl").exists()
    assert "fill=" in result.output


def test_bench_matching_prints_its_figures_and_a_json_last_line():
    result = CliRunner().invoke(main, ["bench", "matching", "--commands", "20000", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    for key in ("commands", "commands_per_s", "python_commands_per_s", "ratio_vs_python", "p50_batch_us",
                "p99_batch_us"):
        assert key in figures
    assert figures["commands"] == 20000 and figures["commands_per_s"] > 0


def test_config_show_prints_the_effective_market_config():
    result = CliRunner().invoke(main, ["config", "show"])
    assert result.exit_code == 0
    cfg = json.loads(result.output)  # one document for every market
    (market,) = cfg["market"]
    assert market["symbol"] == "H100-PERP" and market["derived"]["micro_per_tick_lot"] == 100
    assert market["tier"][0]["max_leverage"] == 5


def test_demo_replays_the_shipped_session_when_the_index_data_is_absent(tmp_path, monkeypatch):
    import oracle.readers

    monkeypatch.setattr(oracle.readers, "default_csv_path", lambda: tmp_path / "missing.csv")
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "shipped example session" in result.output and "money conserved to the micro-dollar: True" in result.output


def test_bench_liquidation_and_risk_are_wired_into_the_cli():
    result = CliRunner().invoke(main, ["bench", "--help"])
    assert {"matching", "risk", "liquidation"} <= set(result.output.split())
