"""The gateway-client mode: a scenario end to end through `perp serve`'s gateway (started on
loopback with a temp data dir) and the reference client, against the same scenario in-process."""

from __future__ import annotations

from perp import events as E
from sims.analytics import metrics
from sims.runner import Runner, run_scenario
from sims.scenario import parse_scenario
from sims.venue import GatewayVenue, markets_toml

from .test_sims import SMALL


def test_a_small_scenario_gives_the_same_state_hash_through_the_gateway_client_as_in_process():
    """One command at a time, in the agents' acting order, each acked before the next, stamped with
    the runner's time: the gateway's journal holds the in-process journal's rows in the same order,
    and the same sequencer appends the same sweeps."""
    sc = parse_scenario(SMALL)
    local = run_scenario(sc)
    runner = Runner(sc, via="gateway")
    assert isinstance(runner.venue, GatewayVenue)
    remote = runner.run()
    assert remote.gateway_refusals == {}
    # the agents really traded over the WebSocket: every place, cancel and deposit went through a client
    assert runner.venue.sent["client"] > 100 and runner.venue.sent["system"] > 0
    fills = {e.account for e in remote.events if isinstance(e, E.Fill)}
    assert {100, 200, 201, 202} <= fills
    assert remote.engine.state_hash() == local.engine.state_hash()
    assert remote.engine.seq == local.engine.seq
    assert metrics(remote) == metrics(local)
    assert len(remote.events) == len(local.events)


def test_a_command_the_gateway_refuses_is_counted_and_never_sequenced():
    """An order above max_order_lots: the gateway refuses it (4203) before the journal, in-process
    the engine rejects it with a sequence number, so the two runs differ by exactly those."""
    sc = parse_scenario(SMALL.replace("hours = 6", "hours = 2") + "[market]\nmax_order_lots = 4000\n")
    local = run_scenario(sc)
    remote = run_scenario(sc, via="gateway")
    refused = remote.gateway_refusals
    assert set(refused) == {"Place:4203"}
    rejected = [e for e in local.events if isinstance(e, E.Rejected) and e.command == "place"]
    assert len(rejected) >= refused["Place:4203"] > 0
    assert local.engine.seq - remote.engine.seq == refused["Place:4203"]


def test_the_venue_markets_file_reads_back_as_the_scenarios_spec():
    from perp.markets import parse_markets
    from sims.scenario import market_spec

    sc = parse_scenario(SMALL + "[market]\nfunding_cap_ppb = 27500\n")
    spec = market_spec(sc)
    assert parse_markets(markets_toml(spec)).market[0] == spec


def test_mid_run_admin_changes_give_the_same_state_hash_through_the_gateway():
    """The changes enter the gateway's sequencer queue (protocol v1 has no admin methods) as the same
    admin commands, payloads in the gateway's journal side records: the replay and the hash agree."""
    sc = parse_scenario(SMALL + """
[[changes]]
at_hour = 2
funding_cap_ppb = 27_500
[[changes]]
at_hour = 3
tiers = [{ max_notional_usd = 25_000, max_leverage = 5, maintenance_margin_ppm = 100_000 },
         { max_leverage = 2, maintenance_margin_ppm = 400_000 }]
[[changes]]
at_hour = 4
fund_top_up_usd = 10_000
""")
    local, remote = run_scenario(sc), run_scenario(sc, via="gateway")
    assert [c["applied"] for c in metrics(local)["parameter_changes"]] == [True, True, True]
    assert remote.engine.state_hash() == local.engine.state_hash()
    assert metrics(remote) == metrics(local)
    assert [a.field for a in remote.engine.audit_log()] == ["fund_cash_micro", "cap_ppb", "tiers", "fund_cash_micro"]
