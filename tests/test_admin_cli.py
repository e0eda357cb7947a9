"""`perp admin --journal DIR`: offline on a stopped venue's data directory (issue 15, docs/operations.md)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from perp.cli import main
from perp.commands import Deposit, Place, SetIndex
from perp.journal import read_rows
from perp.sequencer import JournaledEngine, recover
from tests.helpers import SECOND, T0

M = "H100-PERP"
HOUR = 3600 * SECOND


def _venue(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    j = JournaledEngine.open(data / "journal.bin", snapshot_dir=data / "snapshots")
    for c in [SetIndex(ts_ns=T0, market=M, price="2.1432"), Deposit(ts_ns=T0 + 1, account=101, amount_micro=10**7),
              Deposit(ts_ns=T0 + 2, account=102, amount_micro=10**8),
              Place(ts_ns=T0 + 3, account=102, market=M, side="sell", price="2.1432", size_lots=20),
              Place(ts_ns=T0 + 4, account=101, market=M, side="buy", price="2.1432", size_lots=20)]:
        j.submit_rows(j.engine.encode([c]))
    j.snapshot()
    j.close()
    return data


def _cmd(tmp_path, name, obj) -> str:
    path = tmp_path / name
    path.write_bytes(json.dumps(obj).encode())
    return str(path)


def test_apply_validates_dry_runs_refuses_with_the_field_and_journals_with_yes(tmp_path):
    data = _venue(tmp_path)
    rows_before = read_rows(data / "journal.bin").shape[0]
    run = CliRunner().invoke
    good = _cmd(tmp_path, "good.json", {"type": "set_funding_params", "ts_ns": 0, "operator": "ops", "reason": "cap",
                                        "market": M, "cap_ppb": 100_000, "clamp_ppb": 20_000})
    bad = _cmd(tmp_path, "bad.json", {"type": "set_funding_params", "ts_ns": 0, "operator": "ops", "reason": "cap",
                                      "market": M, "cap_ppb": -1, "clamp_ppb": 20_000})
    r = run(main, ["admin", "--journal", str(data), "apply", good, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.strip().splitlines()[-1])["applied"] is False
    assert read_rows(data / "journal.bin").shape[0] == rows_before  # a dry run writes nothing
    r = run(main, ["admin", "--journal", str(data), "apply", bad, "--json"])
    assert r.exit_code == 1
    info = json.loads(r.output.strip().splitlines()[-1])
    assert info["code"] == 5101 and info["field"] == "cap_ppb"
    assert read_rows(data / "journal.bin").shape[0] == rows_before
    r = run(main, ["admin", "--journal", str(data), "apply", good, "--yes", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output.strip().splitlines()[-1])
    assert info["applied"] and info["pending"] and info["effective_ts_ns"] == T0 + HOUR
    assert read_rows(data / "journal.bin").shape[0] == rows_before + 1
    # a fresh recovery (what perp serve does on restart) sees the change and its audit entries
    eng = recover(data / "journal.bin", snapshot_dir=data / "snapshots")
    assert [e.field for e in eng.audit_log()] == ["cap_ppb", "clamp_ppb"]
    r = run(main, ["admin", "--journal", str(data), "audit", "--json"])
    lines = [json.loads(x) for x in r.output.strip().splitlines()]
    assert [x["field"] for x in lines] == ["cap_ppb", "clamp_ppb"] and lines[0]["operator"] == "ops"
    r = run(main, ["admin", "--journal", str(data), "params", M, "--json"])
    params = json.loads(r.output)
    assert params["funding_cap_ppb"] == 500_000 and params["pending"][0]["changes"]["funding_cap_ppb"] == 100_000


def test_apply_of_a_hurting_tier_change_shows_the_what_if_and_needs_confirm(tmp_path):
    data = _venue(tmp_path)
    tiers = [{"max_notional_usd": 10, "max_leverage": 5, "maintenance_margin_ppm": 100_000},
             {"max_notional_usd": None, "max_leverage": 1, "maintenance_margin_ppm": 900_000}]
    cmd = {"type": "set_tiers", "ts_ns": 0, "operator": "ops", "reason": "tighten", "market": M, "tiers": tiers}
    run = CliRunner().invoke
    # account 101: long 20 lots ($42.86) on $10 of collateral: above IM now (20%: $8.57), below it at 1x
    r = run(main, ["admin", "--journal", str(data), "apply", _cmd(tmp_path, "t.json", cmd), "--yes", "--json"])
    assert r.exit_code == 1
    info = json.loads(r.output.strip().splitlines()[-1])
    assert info["code"] == 5102 and info["what_if"]["accounts_below_im"] >= 1
    cmd["confirm"] = True
    r = run(main, ["admin", "--journal", str(data), "apply", _cmd(tmp_path, "t2.json", cmd), "--yes", "--json"])
    assert r.exit_code == 0, r.output
    eng = recover(data / "journal.bin", snapshot_dir=data / "snapshots")
    assert eng.market_params(M)["pending"][0]["tiers"] == tiers


def test_admin_without_a_data_directory_says_what_it_needs(tmp_path):
    r = CliRunner().invoke(main, ["admin", "audit"])
    assert r.exit_code != 0 and "--journal" in r.output
    r = CliRunner().invoke(main, ["admin", "--journal", str(tmp_path), "audit"])
    assert r.exit_code == 2 and "journal.bin" in r.output
