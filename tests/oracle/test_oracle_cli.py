"""`perp oracle replay` over the real data: text, JSON lines with a summary, the plot, bad input."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from perp.cli import main

SERIES = "GPUM.H100.SXM.SPOT"


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


def test_json_replay_prints_one_object_per_hour_and_a_summary(runner, shared_data_dir):
    csv = shared_data_dir / "gpumarkets" / "daily_fixings.csv"
    result = runner.invoke(main, ["oracle", "replay", "--series", SERIES, "--half-life", "6h", "--json",
                                  "--csv", str(csv)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    hours, summary = lines[:-1], lines[-1]
    assert len(hours) == 4320 == summary["hours"]
    assert set(hours[0]) == {"time", "fix", "anchor", "state"}
    assert hours[0] == {"time": "2025-10-21T01:00:00Z", "fix": 3.1373, "anchor": 3.1373, "state": "fresh"}
    assert summary["final_anchor"] == hours[-1]["anchor"]
    assert 0 < summary["max_hourly_move_pct"] < 1
    assert summary["source"] == "GPU Markets, gpumarkets.dev, CC BY 4.0"
    lo = min(h["fix"] for h in hours)
    hi = max(h["fix"] for h in hours)
    assert all(lo <= h["anchor"] <= hi for h in hours)


def test_default_csv_and_text_output_credit_the_source(runner):
    result = runner.invoke(main, ["oracle", "replay", "--series", SERIES, "--half-life", "90m"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "GPU Markets, gpumarkets.dev, CC BY 4.0" in lines[0] and "5400 s" in lines[0]
    assert lines[2].split() == ["2025-10-21T01:00:00Z", "3.1373", "3.1373", "fresh"]
    assert lines[-1].startswith("# hours 4320  final_anchor ")


def test_cap_option_bounds_the_largest_hourly_move(runner):
    args = ["oracle", "replay", "--series", SERIES, "--half-life", "1h", "--json"]
    free = json.loads(runner.invoke(main, args).stdout.splitlines()[-1])
    capped = json.loads(runner.invoke(main, args + ["--max-hourly-move-pct", "0.1"]).stdout.splitlines()[-1])
    assert free["max_hourly_move_pct"] > 0.1 >= capped["max_hourly_move_pct"]


def test_plot_writes_a_png(runner, tmp_path):
    out = tmp_path / "anchor.png"
    result = runner.invoke(main, ["oracle", "replay", "--series", SERIES, "--half-life", "1d", "--plot", str(out)])
    assert result.exit_code == 0, result.output
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


@pytest.mark.parametrize("args, code", [
    (["--half-life", "6 hours"], "3002"),
    (["--half-life", "0h"], "3002"),
    (["--tick-size", "-1"], "3003"),
    (["--max-hourly-move-pct", "0.00001"], "3001"),
    (["--csv", "/nonexistent.csv"], "3040"),
])
def test_bad_options_fail_with_an_oracle_code(runner, args, code):
    result = runner.invoke(main, ["oracle", "replay", "--series", SERIES] + args)
    assert result.exit_code != 0 and f"[{code} " in result.output


def test_unknown_series_lists_the_available_ones(runner):
    result = runner.invoke(main, ["oracle", "replay", "--series", "GPUM.NOPE"])
    assert result.exit_code != 0 and "3040" in result.output and "GPUM.T4.SPOT" in result.output
