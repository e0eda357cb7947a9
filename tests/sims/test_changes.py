"""Mid-run parameter changes (`[[changes]]`): validated like the markets file, sent as the engine's
admin commands (set_funding_params, set_tiers, fund_top_up), in force from the stated hour, audited,
and refused by the engine with its own code when a tier change that hurts is not confirmed."""

from __future__ import annotations

from pathlib import Path

import pytest

from perp import events as E
from perp import layout as L
from sims.analytics import metrics
from sims.feed import HOUR_NS
from sims.runner import run_scenario
from sims.scenario import ScenarioError, load_scenario, parse_scenario, with_overrides

from .test_sims import SMALL

MIDWEEK = Path(__file__).resolve().parents[2] / "sims" / "scenarios" / "params_midweek.toml"


def test_a_bad_change_is_refused_at_load_with_the_field_named():
    tiers = "tiers = [{ max_notional_usd = 25_000, max_leverage = 5, maintenance_margin_ppm = 100_000 }, " \
            "{ max_leverage = 2, maintenance_margin_ppm = 600_000 }]\n"
    with pytest.raises(ScenarioError, match=r"changes\[0\]\.tiers\[1\]\.maintenance_margin_ppm"):
        parse_scenario(SMALL + "[[changes]]\nat_hour = 2\n" + tiers)
    with pytest.raises(ScenarioError, match=r"changes\[0\]\.at_hour = 9 is after the run"):
        parse_scenario(SMALL + "[[changes]]\nat_hour = 9\nfunding_cap_ppb = 1\n")
    with pytest.raises(ScenarioError, match=r"changes\[0\]: changes nothing"):
        parse_scenario(SMALL + "[[changes]]\nat_hour = 2\n")
    with pytest.raises(ScenarioError, match=r"changes\[0\]: .*funding_cap_ppb"):
        parse_scenario(SMALL + "[[changes]]\nat_hour = 2\nfunding_cap_ppb = 2_000_000_000\n")
    with pytest.raises(ScenarioError, match=r"changes\[0\]\.fund_top_up_usd: Expected `int` >= 1"):
        parse_scenario(SMALL + "[[changes]]\nat_hour = 2\nfund_top_up_usd = 0\n")


@pytest.fixture(scope="module")
def midweek():
    return run_scenario(load_scenario(MIDWEEK))


def test_the_funding_cap_change_is_in_force_from_its_hour(midweek):
    res = midweek
    change_ts = res.start_ns + 84 * HOUR_NS
    paid = [f for f in res.events if isinstance(f, E.FundingPaid)]
    before = [f.rate_ppb for f in paid if f.ts_ns <= change_ts]  # hours ending at or before hour 84
    after = [f.rate_ppb for f in paid if f.ts_ns > change_ts]
    assert max(map(abs, before)) == 500_000 and max(map(abs, after)) == 27_500  # each cap binds
    (row,) = [c for c in metrics(res)["parameter_changes"] if c["command"] == "set_funding_params"]
    assert row["applied"] and row["effective_ts_ns"] == row["took_effect_ts_ns"] == change_ts


def test_the_tier_change_takes_effect_at_its_hour_and_the_top_up_reaches_the_fund(midweek):
    res = midweek
    eng = res.engine
    rows = metrics(res)["parameter_changes"]
    tiers = next(c for c in rows if c["command"] == "set_tiers")
    assert tiers["applied"] and tiers["took_effect_ts_ns"] == res.start_ns + 120 * HOUR_NS
    assert tiers["what_if"]["accounts_below_im"] > 0  # the operator was shown who it hurts, and confirmed
    effective = [e for e in res.events if isinstance(e, E.AdminEffective) and e.origin_seq == tiers["seq"]]
    assert effective and effective[0].ts_ns == tiers["took_effect_ts_ns"]
    t = eng.state.tiers[0]
    assert [int(t[i, L.T_IMR_PPM]) for i in (0, 1)] == [200_000, 500_000]
    assert [int(t[i, L.T_MMR_PPM]) for i in (0, 1)] == [100_000, 400_000]
    top = next(c for c in rows if c["command"] == "fund_top_up")
    deposits = [e for e in res.events if isinstance(e, E.FundDeposited) and e.seq == top["seq"]]
    assert top["applied"] and deposits and deposits[0].amount_micro == 100_000 * 1_000_000
    start, *audit = eng.audit_log("H100-PERP")  # the runner's starting fund is an audited top-up too
    assert (start.command, start.field, start.operator, start.reason) == (
        "fund_top_up", "fund_cash_micro", "sims", "the scenario's starting fund")
    assert [(a.command, a.field) for a in audit] == [("set_funding_params", "cap_ppb"), ("set_tiers", "tiers"),
                                                     ("fund_top_up", "fund_cash_micro")]
    assert all(a.operator == "sims" and "scenario change at hour" in a.reason for a in audit)
    m = metrics(res)
    assert m["money_conserved"] and m["money_conserved_every_step"]


def test_a_tier_change_that_hurts_without_confirm_is_refused_by_the_engine_with_its_what_if():
    res = run_scenario(with_overrides(load_scenario(MIDWEEK), {"changes.1.confirm": False}))
    row = next(c for c in metrics(res)["parameter_changes"] if c["command"] == "set_tiers")
    assert not row["applied"] and row["code"] == 5102  # ADMIN_CONFIRM_REQUIRED
    assert row["what_if"]["accounts_below_im"] > 0
    assert int(res.engine.state.tiers[0][1, L.T_MMR_PPM]) == 125_000  # the launch tiers stay
    assert [a.command for a in res.engine.audit_log()] == ["fund_top_up", "set_funding_params", "fund_top_up"]
