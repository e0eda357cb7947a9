"""The time loop: a scenario run on the real engine with the venue's timers.

Each hour H (UTC nanoseconds, the engine's only clock):
  1. the oracle's point for H (sims.feed.OracleFeed, the oracle's own HourlyAnchor) as the engine's
     `set_index`, after which the sequencer sweeps (perp/sequencer.py does it after every index move);
  2. `steps_per_hour` steps: every agent acts on the venue's views (commands stamped 1 ms apart),
     then a `Liquidate` tick half-way through the step.
A scenario's `[[changes]]` for hour H (funding cap and clamp, tiers, the fund's top-up and floor)
are sent 1 ms before H as the engine's admin commands (sims.changes), so they are in force from H.
Funding hours and mark/premium samples are the engine's own, triggered by command time. Time moves
at least hourly, so no command is stamped beyond the engine's max clock step.

Commands go through a venue (sims.venue): the sequencer and engine in this process (the default),
or the embedded gateway over loopback with the agents on the reference client (`via="gateway"`).
Either way each command is its own journaled batch and the sequencer appends its own sweep after a
batch that moved a mark or an index, as `perp serve` does; the same scenario gives the same state
hash both ways (tests/sims/test_gateway_mode.py).

Before every batch that sweeps (the hour's `set_index`, the step's first command, which carries the
mark samples, and the sweep ticks) the runner records which accounts are healthy at the *index*
(sims.enginex.health_at); after the run each liquidation's start is matched to the last record
before its sequence number, so the report can count liquidations of accounts the index says were
healthy. Money conservation (Engine.money_conserved) is checked after every step.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import numpy as np

from perp import events as E
from perp.commands import Command, FundTopUp, Liquidate, SetInsuranceFloor, SetTiers
from perp.engine import Engine
from perp.markets import MarketsConfig, MarketSpec
from sims.agents import Agent, Ctx, build_agents, initial_deposits
from sims.bookview import basis_sample_ut, depth, levels
from sims.changes import admin_commands, outcome
from sims.enginex import health_at
from sims.feed import HOUR_NS, OracleFeed, fix_records, start_ns
from sims.scenario import Scenario, market_spec
from sims.venue import open_venue

MICRO = 1_000_000
FUND_ACCOUNT = 0
DEPTH_BPS = 100  # the samples' book depth: within 1% of the mid


@dataclass
class Sample:
    ts_ns: int
    fix_ticks: int
    index_ticks: int
    mark_ticks: int
    mid_ticks: int | None
    fund_equity_micro: int
    open_interest_lots: int
    predicted_rate_ppb: int
    validity: str
    depth_bid_micro: int  # resting within DEPTH_BPS of the mid (sims.bookview.depth)
    depth_ask_micro: int
    basis_sample_ut: int  # the mark's input from this book: (impact mid - index), clamped (micro-ticks)


@dataclass
class RunResult:
    scenario: Scenario
    spec: MarketSpec
    engine: Engine
    agents: list[Agent]
    events: list = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    dropped_counts: dict[str, int] = field(default_factory=dict)
    healthy_at_index_liquidated: list[tuple[int, int]] = field(default_factory=list)  # (ts_ns, account)
    conserved_every_step: bool = True
    oracle_rejections: int = 0
    wall_s: float = 0.0
    start_ns: int = 0
    via: str = "engine"
    changes: list[dict] = field(default_factory=list)  # what the engine did with each scenario change
    gateway_refusals: dict[str, int] = field(default_factory=dict)  # refused before sequencing (via gateway)


class Runner:
    def __init__(self, sc: Scenario, via: str = "engine"):
        self.sc = sc
        self.spec = market_spec(sc)
        self.feed = OracleFeed(sc, self.spec.symbol, self.spec.tick_size_usd, fix_records(sc, tick_usd=self.spec.tick_size_usd))
        self.agents = build_agents(sc, self.spec)
        self.accounts = sorted({a for ag in self.agents for a in ag.accounts})
        self.venue = open_venue(via, self.spec, self.accounts)
        self.engine: Engine = self.venue.engine
        self.t0 = start_ns(sc)
        self.res = RunResult(sc, self.spec, self.engine, self.agents, start_ns=self.t0, via=via)
        self._index_1h_ago = 0
        self._fix = 0
        self._validity = "fresh"
        self._healthy: list[tuple[int, frozenset[int]]] = []  # (next seq, accounts healthy at the index)
        self._sent_changes: list[tuple[int, int, Command, object]] = []  # (seq, change index, command, what-if)

    def _changes(self, hour: int, ts_h: int) -> None:
        """The scenario's changes for this hour, as admin commands 1 ms before it (sims.changes)."""
        for i, c in enumerate(self.sc.changes):
            if c.at_hour != hour:
                continue
            for cmd in admin_commands(c, self.spec, self.engine, ts_h - 1_000_000, ts_h):
                what_if = self.engine.what_if_tiers(self.spec.symbol, cmd.tiers) if isinstance(cmd, SetTiers) else None
                self._sent_changes.append((self.engine.seq + 1, i, cmd, what_if))
                self._submit([cmd])

    def _submit(self, cmds: list[Command], sweep: bool = False, index_ticks: int | None = None) -> None:
        if not cmds:
            return
        if sweep:
            price = self.engine.index_ticks(0) if index_ticks is None else index_ticks
            unhealthy = set(health_at(self.engine, [price]).unhealthy.tolist())
            self._healthy.append((self.engine.seq + 1, frozenset(a for a in self.accounts if a not in unhealthy)))
        self.venue.submit(cmds)

    def _collect(self) -> None:
        got = self.venue.finish()
        self.res.events = got.events
        self.res.dropped_counts = got.dropped_counts
        self.res.gateway_refusals = dict(sorted(self.venue.gateway_refusals.items()))
        self.res.changes = [outcome(self.engine, got.events, seq, i, cmd, wi) for seq, i, cmd, wi in self._sent_changes]
        seqs = [s for s, _ in self._healthy]
        for ev in got.events:
            if isinstance(ev, E.LiquidationStep) and ev.phase == "started":
                i = bisect.bisect_right(seqs, ev.seq) - 1
                if i >= 0 and ev.account in self._healthy[i][1]:
                    self.res.healthy_at_index_liquidated.append((ev.ts_ns, ev.account))

    def _ctx(self, hour: int, step: int) -> Ctx:
        v = self.venue.view(self.accounts)
        return Ctx(hour=hour, step=step, index_ticks=v.index_ticks, index_1h_ago_ticks=self._index_1h_ago,
                   mark_ticks=v.mark_ticks, best_bid=v.best_bid, best_ask=v.best_ask, validity=self._validity,
                   positions=v.positions)

    def _sample(self, ts: int) -> None:
        eng = self.engine
        bid, ask = eng.best_bid_ask(0)
        mid = (bid + ask) // 2 if bid is not None and ask is not None else None
        pos = eng.state.position_lots[:, 0]
        book = levels(eng, 0)
        d = depth(eng, 0, DEPTH_BPS, book)
        self.res.samples.append(Sample(ts, self._fix, eng.index_ticks(0), eng.mark_ticks(0), mid,
                                       eng.account(FUND_ACCOUNT).equity_micro, int(pos[pos > 0].sum()),
                                       eng.predicted_funding_rate_ppb(0), self._validity, d.bid.notional_micro,
                                       d.ask.notional_micro, basis_sample_ut(eng, 0, book)))
        if not eng.money_conserved():
            self.res.conserved_every_step = False

    def run(self, progress: Callable[[int, int], None] | None = None) -> RunResult:
        sc, t0 = self.sc, self.t0
        wall = time.perf_counter()
        try:
            setup_ts = t0 - 60 * 1_000_000_000
            setup: list[Command] = []
            if sc.fund.deposit_usd:
                setup.append(FundTopUp(ts_ns=setup_ts, operator="sims", reason="the scenario's starting fund",
                                       account=FUND_ACCOUNT, amount_micro=sc.fund.deposit_usd * MICRO))
            if sc.fund.floor_usd:
                setup.append(SetInsuranceFloor(ts_ns=setup_ts, amount_micro=sc.fund.floor_usd * MICRO))
            setup += initial_deposits(self.agents, setup_ts)
            self._submit(setup)
            step_ns = HOUR_NS // sc.steps_per_hour
            for hour in range(sc.hours):
                ts_h = t0 + hour * HOUR_NS
                self._changes(hour, ts_h)
                self.feed.follow(self.engine)  # operators' oracle parameters, from the engine (admin commands)
                point = self.feed.point_at(ts_h)
                if point is None:
                    raise RuntimeError(f"the oracle has no anchor at hour {hour}: index.warmup_days too short?")
                if hour == 0:
                    self._index_1h_ago = point.anchor_price_ticks
                else:
                    self._index_1h_ago = self.engine.index_ticks(0)
                self._fix = point.fix_price_ticks
                self._validity = point.validity.value
                # the sequencer sweeps after the index move by itself
                self._submit([self.feed.set_index(point)], sweep=True, index_ticks=point.anchor_price_ticks)
                for step in range(sc.steps_per_hour):
                    ts = ts_h + step * step_ns + 1_000_000_000
                    ctx = self._ctx(hour, step)
                    cmds: list[Command] = []
                    for ag in self.agents:
                        cmds.extend(ag.act(ctx))
                    cmds = [msgspec.structs.replace(c, ts_ns=ts + i * 1_000_000) for i, c in enumerate(cmds)]
                    self._submit(cmds[:1], sweep=True)  # its mark samples make the sequencer sweep
                    self._submit(cmds[1:])
                    tick = ts_h + step * step_ns + step_ns // 2
                    self._submit([Liquidate(ts_ns=tick)], sweep=True)
                    self._sample(tick)
                if progress is not None:
                    progress(hour + 1, sc.hours)
        except BaseException:
            self.venue.abort()
            raise
        self._collect()
        self.res.oracle_rejections = len(self.feed.rejections)
        self.res.wall_s = time.perf_counter() - wall
        return self.res


def run_scenario(sc: Scenario, progress: Callable[[int, int], None] | None = None, via: str = "engine") -> RunResult:
    """One run; `via="gateway"` runs it end to end through `perp serve`'s gateway and the client."""
    return Runner(sc, via).run(progress)


def open_interest(engine: Engine) -> int:
    pos = engine.state.position_lots[:, 0]
    return int(np.clip(pos, 0, None).sum())
