"""The scenario simulator on the real engine: validation, the oracle feed, determinism, the cascade
(asserted from engine events), money conservation across the shipped library, analytics."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from perp import events as E
from sims.analytics import metrics, waterfall
from sims.enginex import fork, health_at
from sims.feed import HOUR_NS, OracleFeed, fix_records, start_ns
from sims.runner import run_scenario
from sims.scenario import Scenario, ScenarioError, load_scenario, parse_scenario, with_overrides

LIBRARY = Path(__file__).resolve().parents[2] / "sims" / "scenarios"
SMALL = """
name = "small"
seed = 3
hours = 6
steps_per_hour = 2
[[agents.makers]]
account = 100
lots = 5_000
[[agents.traders]]
first_account = 200
count = 3
deposit_usd = 10_000
[[agents.noise]]
first_account = 300
count = 2
"""


def test_a_bad_field_is_named():
    with pytest.raises(ScenarioError, match=r"agents\.makers\[0\]\.levles: unknown field"):
        parse_scenario(SMALL.replace("lots = 5_000", "levles = 3"))
    with pytest.raises(ScenarioError, match=r"agents\.makers\[0\]\.lots: Expected `int`"):
        parse_scenario(SMALL.replace("lots = 5_000", 'lots = "many"'))
    with pytest.raises(ScenarioError, match=r"market: unknown field 'funding_kap_ppb'"):
        parse_scenario(SMALL + "[market]\nfunding_kap_ppb = 1\n")
    with pytest.raises(ScenarioError, match=r"^scenario: name: required field missing"):
        parse_scenario("hours = 3\n")
    with pytest.raises(ScenarioError, match=r"agents\.makers\[0\]\.account: Expected `int` >= 16"):
        parse_scenario(SMALL.replace("account = 100", "account = 3"))  # a venue account


def test_accounts_must_be_distinct_and_overrides_revalidate():
    with pytest.raises(ScenarioError, match=r"agents.noise\[0\]: account 201 already used"):
        parse_scenario(SMALL.replace("first_account = 300", "first_account = 201"))
    sc = parse_scenario(SMALL)
    assert with_overrides(sc, {"market.funding_cap_ppb": 27_500}).market["funding_cap_ppb"] == 27_500
    assert with_overrides(sc, {"agents.makers.0.lots": 7}).agents.makers[0].lots == 7
    with pytest.raises(ScenarioError, match="funding_cap_ppb"):
        with_overrides(sc, {"market.funding_cap_ppb": "high"})


def test_every_library_scenario_parses():
    names = sorted(p.stem for p in LIBRARY.glob("*.toml"))
    assert {"gap_down_30", "gap_up_30", "stale_72h", "push_6h_thin", "cascade_adl", "funding_cap_week_low",
            "funding_cap_week_high", "revised_fix"} <= set(names)
    for p in LIBRARY.glob("*.toml"):
        assert load_scenario(p).name == p.stem


def test_feed_stale_days_go_aging_then_stale_then_fresh():
    sc = parse_scenario(SMALL.replace("hours = 6", "hours = 120") + "[[index.events]]\nkind='stale'\nday=1\ndays=3\n")
    feed = OracleFeed(sc, "H100-PERP", "0.0001", fix_records(sc))
    t0 = start_ns(sc)
    v = [feed.point_at(t0 + h * HOUR_NS).validity.value for h in range(120)]
    assert v[0] == "fresh" and "aging" in v[24:48] and v[60] == "stale" and v[-1] == "fresh"
    cmd = feed.set_index(feed.anchor.advance_to(t0 + 121 * HOUR_NS)[-1])
    assert cmd.market == "H100-PERP" and cmd.validity == "fresh"


def test_revised_fix_retargets_inside_the_window():
    sc = parse_scenario(SMALL.replace("hours = 6", "hours = 48")
                        + "[[index.events]]\nkind='revised'\nday=1\nmove=0.1\nrevise_after_h=6\n")
    recs = [r for r in fix_records(sc) if r.fix_date == sc.index.start.__class__.fromordinal(sc.index.start.toordinal() + 1)]
    assert [r.vintage.value for r in recs] == ["provisional", "revised"]
    feed = OracleFeed(sc, "H100-PERP", "0.0001", fix_records(sc))
    t0 = start_ns(sc)
    fixes = [feed.point_at(t0 + h * HOUR_NS).fix_price_ticks for h in range(40)]
    assert max(fixes[24:31]) > fixes[35]  # the wrong provisional, then the revised value
    assert not feed.rejections


def test_same_scenario_and_seed_same_metrics_and_hash():
    sc = parse_scenario(SMALL)
    a, b = metrics(run_scenario(sc)), metrics(run_scenario(sc))
    assert a == b and a["money_conserved"] and a["money_conserved_every_step"]
    c = metrics(run_scenario(msgspec.structs.replace(sc, seed=4)))
    assert c["state_hash"] != a["state_hash"]


def test_cascade_exhausts_the_fund_and_fires_adl_from_engine_events():
    res = run_scenario(load_scenario(LIBRARY / "cascade_adl.toml"))
    steps = [e for e in res.events if isinstance(e, E.LiquidationStep)]
    phases = {e.phase for e in steps}
    assert "adl" in phases  # counterparties deleveraged: the engine's own events
    assert phases & {"backstop", "bad_debt", "fund_below_floor", "adl_start"}
    adl_start = [e for e in steps if e.phase == "adl_start"]
    assert adl_start
    m = metrics(res)
    assert m["adl"]["count"] == sum(1 for e in steps if e.phase == "adl") > 0
    assert m["money_conserved"] and m["money_conserved_every_step"]


@pytest.fixture(scope="module")
def library_runs():
    return {p.stem: metrics(run_scenario(load_scenario(p))) for p in sorted(LIBRARY.glob("*.toml"))}


def test_money_is_conserved_in_every_library_scenario(library_runs):
    for name, m in library_runs.items():
        assert m["money_conserved"] and m["money_conserved_every_step"], name


def test_library_headlines(library_runs):
    low, high = library_runs["funding_cap_week_low"], library_runs["funding_cap_week_high"]
    assert low["funding"]["max_abs_rate_ppb"] <= 27_500 < high["funding"]["max_abs_rate_ppb"] <= 500_000
    assert abs(low["funding"]["longs_paid_usd"]) < abs(high["funding"]["longs_paid_usd"])
    assert library_runs["gap_down_30"]["liquidations"]["count"] > 0
    assert library_runs["stale_72h"]["oracle_validity_hours"].get("stale", 0) > 0
    assert library_runs["stale_72h"]["funding"]["frozen_hours"] > 0
    assert library_runs["funding_cap_week_basis"]["pnl_by_role_usd"]["basis"] > 0  # it sells the rich mark
    hold = library_runs["push_6h_hold"]  # its own bid and a partner's ask move the mark, up to the band
    assert hold["max_abs_mark_minus_index_bps"] > 100
    assert hold["manipulator_fills"]["400"]["bought_lots"] > 0
    for m in library_runs.values():  # the mark's basis term is bounded by the engine's band (3%)
        assert m["max_abs_mark_minus_index_bps"] <= 300 + 1
    pushes = {n: m["mark_push_bound"] for n, m in library_runs.items() if m["mark_push_bound"]}
    assert {"push_6h_hold", "push_6h_thin", "push_1h_thin", "push_24h_thin", "stale_72h_push"} <= set(pushes)
    for name, checks in pushes.items():  # the measured push never exceeds the proven bound (sims.bookview)
        for c in checks:
            assert c["holds_any_book"] and c["holds_this_book"], (name, c)
    (held,) = pushes["push_6h_hold"]  # the hold reaches its own book's bound: the bound is tight
    assert held["bound_this_book_bps"] - 1 <= held["measured_bps"] <= held["bound_this_book_bps"] < 300


def test_unknown_liquidation_phases_are_counted_not_fatal():
    rows = [E.LiquidationStep(1, 1, "started", "H100-PERP", 20, 0, "sell", 0, 0, 0, -5, 10),
            E.LiquidationStep(1, 1, "rate_limited", "H100-PERP", 20, 0, "sell", 100, 7, 0, 0, 0),
            E.LiquidationStep(1, 1, "adl", "H100-PERP", 21, 0, "buy", 100, 3, 0, 1, 20)]
    wf = waterfall(rows, 100)
    assert wf["phases"]["rate_limited"] == {"count": 1, "lots": 7, "filled": 0, "amount_micro": 0}
    assert wf["channels"]["adl"] == {"lots": 3, "usd": 0.03}


def test_fork_and_health_at_an_arbitrary_price():
    res = run_scenario(parse_scenario(SMALL))
    eng = res.engine
    twin = fork(eng)
    assert twin.state_hash() == eng.state_hash() and twin.state is not eng.state
    at_mark = health_at(eng, [eng.mark_ticks(0)])
    sweep = eng.risk_sweep()
    assert (at_mark.equity_micro == sweep.equity_micro).all()
    longs = [a for a in range(16, at_mark.equity_micro.shape[0]) if eng.position_lots(a, 0) > 0]
    crashed = health_at(eng, [eng.mark_ticks(0) // 2])
    assert longs and all(crashed.equity_micro[a] < at_mark.equity_micro[a] for a in longs)
    twin.submit([])  # the fork runs on its own
    assert eng.state_hash() == twin.state_hash()


def test_cli_sim_list_run_report(tmp_path):
    from click.testing import CliRunner

    from perp.cli import main

    runner = CliRunner()
    listed = runner.invoke(main, ["sim", "list"])
    assert listed.exit_code == 0 and "cascade_adl" in listed.output
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    out = tmp_path / "run"
    res = runner.invoke(main, ["sim", "run", str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "conserved: True" in res.output
    for name in ("metrics.json", "samples.csv", "events.jsonl", "index.html", "prices.png", "funding.png",
                 "fund.png", "liquidations.png", "open_interest.png"):
        assert (out / name).stat().st_size > 0, name
    import json

    m = json.loads((out / "metrics.json").read_text())
    assert m["money_conserved"] and m["state_hash"] == metrics(run_scenario(parse_scenario(SMALL)))["state_hash"]
    (out / "prices.png").unlink()
    assert runner.invoke(main, ["sim", "report", str(out)]).exit_code == 0 and (out / "prices.png").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text(SMALL.replace("count = 3", "count = -3"))
    res = runner.invoke(main, ["sim", "run", str(bad), "--out", str(tmp_path / "x")])
    assert res.exit_code != 0 and "agents.traders[0].count" in res.output


def test_sweep_local_processes_match_in_process(tmp_path):
    from sims.sweep import parse_grid, sweep, write_table

    sc = parse_scenario(SMALL.replace("hours = 6", "hours = 3"))
    grid = parse_grid(["market.funding_cap_ppb=27_500,500_000", "fund.deposit_usd=5000"])
    serial = sweep(sc, grid, jobs=1)
    assert [r["market.funding_cap_ppb"] for r in serial] == [27_500, 500_000]
    assert sweep(sc, grid, jobs=2) == serial
    csv_path, _ = write_table(serial, tmp_path)
    assert csv_path.read_text().count("\n") == 3
    from sims.sweep import grid_points, write_heatmaps

    assert write_heatmaps(serial, grid, tmp_path) == []  # one axis only
    two = parse_grid(["market.funding_cap_ppb=27_500,500_000", "fund.deposit_usd=5000,6000"])
    rows = [p | {k: 1.0 for k in ("fund_min_equity_usd", "adl_usd", "liquidated_usd", "max_mark_index_bps",
                                   "longs_paid_funding_usd")} for p in grid_points(two)]
    assert len(write_heatmaps(rows, two, tmp_path)) == 5


def test_sweep_on_a_local_dask_cluster_matches_in_process():
    from dask import distributed  # a dependency (pyproject.toml), installed by scripts/test
    from sims.sweep import parse_grid, sweep

    sc = parse_scenario(SMALL.replace("hours = 6", "hours = 3"))
    grid = parse_grid(["market.funding_cap_ppb=27_500,500_000", "agents.makers.0.lots=2000,5000"])
    serial = sweep(sc, grid, jobs=1)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl:
        on_dask = sweep(sc, grid, dask_address=cl.scheduler_address)
    assert on_dask == serial and len(serial) == 4


def test_the_engine_receives_the_oracles_gates_while_stale():
    sc = parse_scenario(SMALL.replace("hours = 6", "hours = 60") + "[[index.events]]\nkind='stale'\nday=1\ndays=3\n")
    res = run_scenario(sc)
    idx = [e for e in res.events if isinstance(e, E.IndexSet)]
    assert len(idx) == 60 and idx[0].validity == "fresh"
    stale = [e for e in idx if e.validity == "stale"]
    assert stale and all(e.funding_frozen and e.leverage_scale_ppm == 250_000 for e in stale)
    frozen = [f for f in res.events if isinstance(f, E.FundingPaid) and f.frozen]
    assert frozen and all(f.paid_micro == 0 for f in frozen)


def test_a_fund_whose_equity_goes_negative_is_deleveraged_at_its_bankruptcy_price():
    """The oracle steps the anchor 5% in an hour while the fund holds the longs it took over: its
    equity crosses zero before the next sweep. The sweep then deleverages the fund's position at the
    fund's own bankruptcy price, so the winners' haircut is the fund's deficit and the fund ends at or
    above zero (before this rule it was left flat at -$9,826 with no owner for the loss)."""
    sc = load_scenario(Path(__file__).resolve().parents[2] / "sims" / "scenarios" / "cascade_adl.toml")
    sc = with_overrides(sc, {"fund.deposit_usd": 50000, "oracle.max_hourly_move_ppm": 50000,
                             "market.funding_cap_ppb": 27500})
    res = run_scenario(sc)
    steps = [e for e in res.events if isinstance(e, E.LiquidationStep)]
    below = [e for e in steps if e.phase == "fund_below_floor" and e.account == 0 and e.other < 0]
    assert below, "the scenario must drive the fund's equity below zero"
    # the ADL that follows is priced at the fund's bankruptcy price: above the mark for its long
    seq = below[0].seq
    adl = [e for e in steps if e.phase == "adl" and e.seq == seq and e.other == 0]
    assert adl and all(e.price_ticks == below[0].price_ticks for e in adl)
    assert sum(e.haircut_micro for e in adl) >= -below[0].other - 100 * below[0].lots  # within a tick per lot
    assert res.engine.account(0).equity_micro >= 0
    assert res.engine.money_conserved()


TIERS = """
[[tiers]]
max_notional_usd = 100_000
max_leverage = 10
maintenance_margin_ppm = 50_000
[[tiers]]
max_leverage = 3
maintenance_margin_ppm = 150_000
"""


def test_tiers_are_a_scenario_field_validated_like_markets_toml_with_the_field_named():
    sc = parse_scenario(SMALL + TIERS)
    with pytest.raises(ScenarioError, match=r"tiers\[0\]\.max_leverag: unknown field"):
        parse_scenario(SMALL + TIERS.replace("max_leverage = 10", "max_leverag = 10"))
    with pytest.raises(ScenarioError, match=r"tiers\[0\]\.maintenance_margin_ppm: TIER_MAINTENANCE_NOT_BELOW_INITIAL"):
        parse_scenario(SMALL + TIERS.replace("maintenance_margin_ppm = 50_000", "maintenance_margin_ppm = 200_000"))
    with pytest.raises(ScenarioError, match=r"tiers\[1\]\.max_notional_usd"):  # the last tier is open-ended
        parse_scenario(SMALL + TIERS + "max_notional_usd = 5_000_000\n")
    with pytest.raises(ScenarioError, match=r"override .*tiers\[1\]\.maintenance_margin_ppm"):
        with_overrides(sc, {"tiers.1.max_leverage": 20})  # sweeps re-validate them too
    assert with_overrides(sc, {"tiers.0.max_leverage": 8}).tiers[0].max_leverage == 8


def test_scenario_tiers_are_the_engines_tiers_and_let_traders_use_them():
    from perp import layout as L

    eight_x = SMALL.replace("deposit_usd = 10_000", "deposit_usd = 10_000\nleverage_min = 8.0\nleverage_max = 9.0")
    res = run_scenario(parse_scenario(eight_x + TIERS))
    tiers = res.engine.state.tiers[0]
    assert int(tiers[0, L.T_IMR_PPM]) == 100_000 and int(tiers[0, L.T_MMR_PPM]) == 50_000  # 10x, 5%
    assert int(tiers[1, L.T_IMR_PPM]) == 333_334
    eng = res.engine
    lev = [abs(eng.position_lots(a, 0)) * eng.mark_ticks(0) * 100 / 10_000e6 for a in (200, 201, 202)]
    assert all(x > 6 for x in lev), lev  # above the launch tiers' 5x
    launch = run_scenario(parse_scenario(eight_x))  # the same traders under the spec's tiers (5x)
    assert all(abs(launch.engine.position_lots(a, 0)) < abs(eng.position_lots(a, 0)) for a in (200, 201, 202))


def test_traders_stop_and_take_profit_are_their_own_triggers_on_the_mark():
    """A 10% gap down walked in by the oracle: the longs' 3% stop and the shorts' 3% take-profit
    fire on the mark (not the index, not an engine order), each closes with reduce-only market
    orders until flat, and nobody is liquidated at 2x."""
    traders = dict(first_account=200, count=3, side="long", leverage_min=2.0, leverage_max=2.0, stop_bps=300)
    raw = {"name": "triggers", "hours": 36, "steps_per_hour": 2,
           "index": {"events": [{"kind": "gap", "day": 1, "move": -0.10}]},
           "agents": {"makers": [{"account": 100, "lots": 5_000}],
                      "traders": [traders, traders | {"first_account": 300, "count": 2, "side": "short",
                                                      "stop_bps": 0, "take_profit_bps": 300}]}}
    res = run_scenario(msgspec.convert(raw, Scenario))
    m = metrics(res)
    assert m["trader_triggers"] == {"stop": 3, "take_profit": 2}
    assert m["liquidations"]["count"] == 0
    fills = [e for e in res.events if isinstance(e, E.Fill)]
    for ag in res.agents:
        if ag.role != "trader":
            continue
        (hour, step, kind, mark, level), = ag.triggers
        assert kind == ("stop" if ag.side == "buy" else "take_profit")
        assert mark <= level < ag.entry_ticks  # both trigger below the entry on the way down
        assert level == ag.entry_ticks - ag.entry_ticks * 300 // 10_000
        assert res.engine.position_lots(ag.account, 0) == 0  # closed until flat
        t_trigger = res.start_ns + hour * HOUR_NS + step * (HOUR_NS // 2)
        closing = [f for f in fills if f.account == ag.account and f.ts_ns >= t_trigger]
        assert closing and all(f.side == ("sell" if ag.side == "buy" else "buy") for f in closing)
