"""A first run tells the user what is happening: the demo validates its options, counts what really
happened (liquidations, funding paid per side), keeps to accounts outside the funds' reserved range,
says so before a cold compile, and every entry point shares one numba cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

import perp.numba_cache as NC
from perp.cli import main

REPO = Path(__file__).resolve().parents[1]
RESERVED_BELOW = 16  # accounts 0-15: insurance funds


@pytest.mark.parametrize("days", ["0", "-3"])
def test_demo_refuses_a_number_of_days_below_one(tmp_path, days):
    result = CliRunner().invoke(main, ["demo", "--days", days, "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--days" in result.output
    assert not (tmp_path / "session.jsonl").exists()


def test_demo_refuses_more_days_than_the_data_holds(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--days", "1000", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "holds 180 days" in result.output


def test_demo_with_a_csv_that_does_not_exist_is_an_error(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--csv", "/nonexistent", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_demo_accounts_stay_out_of_the_reserved_fund_range(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--days", "2", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    accounts = {json.loads(line)["account"] for line in (tmp_path / "session.jsonl").read_text().splitlines()
                if "account" in json.loads(line)}
    assert accounts and min(accounts) >= RESERVED_BELOW
    shipped = (REPO / "perp" / "examples" / "h100_session.jsonl").read_text().splitlines()
    assert min(json.loads(line).get("account", 99) for line in shipped) >= RESERVED_BELOW


def test_demo_summary_counts_real_liquidations_and_funding_paid_per_side(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--days", "60", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (liq,) = [ln for ln in result.output.splitlines() if ln.startswith("liquidated")]
    (fund,) = [ln for ln in result.output.splitlines() if ln.startswith("funding")]
    events = [msgspec.json.decode(ln) for ln in (tmp_path / "events.jsonl").read_bytes().splitlines()]
    started = {e["account"] for e in events if e["type"] == "liquidation" and e["phase"] == "started"}
    sweeps = sum(1 for e in events if e["type"] == "liquidation" and e["phase"] == "sweep")
    paying = [e for e in events if e["type"] == "funding" and e["rate_ppb"] != 0]
    assert started == {111} and liq.startswith("liquidated 1 accounts (111;") and f"in {sweeps} sweeps" in liq
    assert paying and f"{len(paying)} at a non-zero rate" in fund
    by_shorts = sum(e["paid_micro"] for e in paying if e["rate_ppb"] < 0)
    assert f"shorts paid longs {by_shorts / 1e6:,.2f} USD" in fund


def test_the_help_texts_are_whole_and_every_option_says_what_it_does():
    top = CliRunner().invoke(main, ["--help"]).output
    for name in ("bench", "demo", "journal"):
        (line,) = [ln for ln in top.splitlines() if ln.strip().startswith(name + " ")]
        assert not line.rstrip().endswith("..."), line
    bench = CliRunner().invoke(main, ["bench", "--help"]).output
    assert "..." not in bench.split("Commands:")[1]
    for cmd in (["demo"], ["bench", "matching"], ["bench", "replay"], ["bench", "risk"], ["journal", "repair"]):
        text = CliRunner().invoke(main, [*cmd, "--help"]).output
        options = [ln for ln in text.split("Options:")[1].splitlines() if ln.strip().startswith("--")]
        bare = [ln for ln in options if len(ln.split()) < 2 or ln.split()[1].startswith("[default")]
        assert not bare, (cmd, bare)


def test_a_cold_cache_is_announced_before_compiling(monkeypatch):
    said: list[str] = []
    monkeypatch.setattr(NC, "kernels_cached", lambda: False)
    NC.announce_compile(said.append)
    assert said and said[0].startswith("compiling kernels (first run only")
    monkeypatch.setattr(NC, "kernels_cached", lambda: True)
    said.clear()
    NC.announce_compile(said.append)
    assert said == []


def test_every_entry_point_shares_the_checkouts_numba_cache(tmp_path):
    from perp.numba_cache import source_tag

    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"} | {"PYTHONPATH": str(REPO)}
    probe = "import os, perp, numba; print(os.environ['NUMBA_CACHE_DIR'], numba.config.CACHE_DIR)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    tag = source_tag()  # one directory per version of the kernel sources (perp/numba_cache.py)
    assert out == [str(REPO / ".numba_cache" / tag)] * 2  # where scripts/test caches too
    late = "import numba, perp; print(numba.config.CACHE_DIR)"  # numba imported first: still told
    out = subprocess.run([sys.executable, "-c", late], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == [str(REPO / ".numba_cache" / tag)]
    explicit = env | {"NUMBA_CACHE_DIR": str(tmp_path / "mine")}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=explicit, capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == [str(tmp_path / "mine" / tag)] * 2
    assert 'NUMBA_CACHE_DIR="${NUMBA_CACHE_DIR:-$PWD/.numba_cache}"' in (REPO / "scripts" / "test").read_text()
