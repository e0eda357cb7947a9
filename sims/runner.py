"""The time loop: a scenario run on the real engine with the venue's timers.

Each hour H (UTC nanoseconds, the engine's only clock):
  1. the oracle's point for H (sims.feed.OracleFeed, the oracle's own HourlyAnchor) as the engine's
     `set_index`, then a `Liquidate` sweep -- what perp/sequencer.py does after every index move;
  2. `steps_per_hour` steps: every agent acts on the engine's views (commands stamped 1 ms apart),
     then a `Liquidate` tick half-way through the step.
Funding hours and mark/premium samples are the engine's own, triggered by command time. Time moves
at least hourly, so no command is stamped beyond the engine's max clock step.

Before every sweep the runner records which accounts are healthy at the *index* (sims.enginex.
health_at), so the report can count liquidations of accounts that the index says were healthy.
Money conservation (Engine.money_conserved) is checked after every step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import numpy as np

from perp import events as E
from perp.commands import Command, FundDeposit, Liquidate, SetInsuranceFloor
from perp.engine import Engine
from perp.markets import MarketsConfig, MarketSpec
from sims.agents import Agent, Ctx, build_agents, initial_deposits
from sims.enginex import health_at
from sims.feed import HOUR_NS, OracleFeed, fix_records, start_ns
from sims.scenario import Scenario, market_spec

MICRO = 1_000_000
FUND_ACCOUNT = 0
_DROP = (E.BookLevel, E.Accepted, E.Cancelled, E.Amended)  # counted, not kept


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


class Runner:
    def __init__(self, sc: Scenario):
        self.sc = sc
        self.spec = market_spec(sc)
        self.engine = Engine(MarketsConfig(market=[self.spec]))
        self.feed = OracleFeed(sc, self.spec.symbol, self.spec.tick_size_usd, fix_records(sc, tick_usd=self.spec.tick_size_usd))
        self.agents = build_agents(sc, self.spec)
        self.accounts = sorted({a for ag in self.agents for a in ag.accounts})
        self.t0 = start_ns(sc)
        self.res = RunResult(sc, self.spec, self.engine, self.agents, start_ns=self.t0)
        self._index_1h_ago = 0
        self._fix = 0
        self._validity = "fresh"

    def _submit(self, cmds: list[Command], sweep: bool = False) -> None:
        if not cmds:
            return
        healthy: set[int] | None = None
        if sweep:
            h = health_at(self.engine, [self.engine.index_ticks(0)])
            unhealthy = set(h.unhealthy.tolist())
            healthy = {a for a in self.accounts if a not in unhealthy}
        for ev in self.engine.submit(cmds):
            if isinstance(ev, _DROP):
                k = type(ev).__name__
                self.res.dropped_counts[k] = self.res.dropped_counts.get(k, 0) + 1
                continue
            self.res.events.append(ev)
            if healthy is not None and isinstance(ev, E.LiquidationStep) and ev.phase == "started" \
                    and ev.account in healthy:
                self.res.healthy_at_index_liquidated.append((ev.ts_ns, ev.account))

    def _ctx(self, hour: int, step: int) -> Ctx:
        eng = self.engine
        bid, ask = eng.best_bid_ask(0)
        pos = eng.state.position_lots
        cap = pos.shape[0]
        return Ctx(hour=hour, step=step, index_ticks=eng.index_ticks(0), index_1h_ago_ticks=self._index_1h_ago,
                   mark_ticks=eng.mark_ticks(0), best_bid=bid, best_ask=ask, validity=self._validity,
                   positions={a: int(pos[a, 0]) for a in self.accounts if a < cap})

    def _sample(self, ts: int) -> None:
        eng = self.engine
        bid, ask = eng.best_bid_ask(0)
        mid = (bid + ask) // 2 if bid is not None and ask is not None else None
        pos = eng.state.position_lots[:, 0]
        self.res.samples.append(Sample(ts, self._fix, eng.index_ticks(0), eng.mark_ticks(0), mid,
                                       eng.account(FUND_ACCOUNT).equity_micro, int(pos[pos > 0].sum()),
                                       eng.predicted_funding_rate_ppb(0), self._validity))
        if not eng.money_conserved():
            self.res.conserved_every_step = False

    def run(self, progress: Callable[[int, int], None] | None = None) -> RunResult:
        sc, t0 = self.sc, self.t0
        wall = time.perf_counter()
        setup_ts = t0 - 60 * 1_000_000_000
        setup: list[Command] = []
        if sc.fund.deposit_usd:
            setup.append(FundDeposit(ts_ns=setup_ts, account=FUND_ACCOUNT, amount_micro=sc.fund.deposit_usd * MICRO))
        if sc.fund.floor_usd:
            setup.append(SetInsuranceFloor(ts_ns=setup_ts, amount_micro=sc.fund.floor_usd * MICRO))
        setup += initial_deposits(self.agents, setup_ts)
        self._submit(setup)
        step_ns = HOUR_NS // sc.steps_per_hour
        for hour in range(sc.hours):
            ts_h = t0 + hour * HOUR_NS
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
            self._submit([self.feed.set_index(point)])
            self._submit([Liquidate(ts_ns=ts_h)], sweep=True)
            for step in range(sc.steps_per_hour):
                ts = ts_h + step * step_ns + 1_000_000_000
                ctx = self._ctx(hour, step)
                cmds: list[Command] = []
                for ag in self.agents:
                    cmds.extend(ag.act(ctx))
                cmds = [msgspec.structs.replace(c, ts_ns=ts + i * 1_000_000) for i, c in enumerate(cmds)]
                self._submit(cmds)
                tick = ts_h + step * step_ns + step_ns // 2
                self._submit([Liquidate(ts_ns=tick)], sweep=True)
                self._sample(tick)
            if progress is not None:
                progress(hour + 1, sc.hours)
        self.res.oracle_rejections = len(self.feed.rejections)
        self.res.wall_s = time.perf_counter() - wall
        return self.res


def run_scenario(sc: Scenario, progress: Callable[[int, int], None] | None = None) -> RunResult:
    return Runner(sc).run(progress)


def open_interest(engine: Engine) -> int:
    pos = engine.state.position_lots[:, 0]
    return int(np.clip(pos, 0, None).sum())
