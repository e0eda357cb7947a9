"""Seeded, deterministic agents that trade through the engine's typed commands.

Each agent sees a read-only `Ctx` (the engine's public views at the start of a step) and returns
commands with `ts_ns=0`; the runner stamps them in order. Agents never compute margin, fills or
liquidations themselves: whatever the engine rejects is rejected (and counted from its events).

Accounts are >= 16 (scenario validation); the insurance fund is topped up by the runner with
the audited admin `FundTopUp` (operator "sims"), never by an agent.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from perp.commands import CancelAll, Command, Deposit, Place, SetLeverage
from perp.markets import MarketSpec, ticks_to_price
from sims import scenario as S

MICRO = 1_000_000
BUILD_STEPS = 8  # a directional trader tries this many steps to build its position


@dataclass(frozen=True)
class Ctx:
    hour: int
    step: int  # within the hour
    index_ticks: int
    index_1h_ago_ticks: int
    mark_ticks: int
    best_bid: int | None
    best_ask: int | None
    validity: str
    positions: dict[int, int]  # account -> lots, for this market


class Agent:
    accounts: tuple[int, ...] = ()
    role = "agent"

    def deposits(self) -> list[tuple[int, int]]:
        """(account, micro-USD) deposited at the start."""
        return []

    def act(self, ctx: Ctx) -> list[Command]:
        return []


def _lots_for(notional_micro: int, price_ticks: int, mptl: int) -> int:
    return max(1, notional_micro // max(1, price_ticks * mptl))


@dataclass
class MarketMaker(Agent):
    cfg: S.Maker
    spec: MarketSpec
    role = "maker"
    pulled_until: int = -1
    quoting: bool = False
    pulls: int = 0
    steps_quoted: int = 0

    def __post_init__(self) -> None:
        self.accounts = (self.cfg.account,)

    def deposits(self):
        return [(self.cfg.account, self.cfg.deposit_usd * MICRO)]

    def stressed(self, ctx: Ctx) -> bool:
        c = self.cfg
        if any(a <= ctx.hour < b for a, b in c.pull_hours):
            return True
        moved_bps = abs(ctx.index_ticks - ctx.index_1h_ago_ticks) * 10_000 // max(1, ctx.index_1h_ago_ticks)
        if c.pull_move_bps and moved_bps >= c.pull_move_bps:
            return True
        basis_bps = abs(ctx.mark_ticks - ctx.index_ticks) * 10_000 // max(1, ctx.index_ticks)
        return bool(c.pull_basis_bps and basis_bps >= c.pull_basis_bps)

    def act(self, ctx: Ctx) -> list[Command]:
        c, sym = self.cfg, self.spec.symbol
        stressed = self.stressed(ctx)
        if stressed:
            if ctx.hour >= self.pulled_until and self.quoting:
                self.pulls += 1
            self.pulled_until = max(self.pulled_until, ctx.hour + c.return_after_h)
        if stressed or ctx.hour < self.pulled_until:  # out of the market; back once calm for return_after_h
            if self.quoting:
                self.quoting = False
                return [CancelAll(ts_ns=0, account=c.account, market=sym)]
            return []
        self.steps_quoted += 1
        if self.quoting and (self.steps_quoted - 1) % c.requote_every_steps:
            return []  # the resting ladder stays until the next requote
        inv = ctx.positions.get(c.account, 0)
        skew = max(-c.max_skew_ticks, min(c.max_skew_ticks, inv * c.skew_ticks_per_1000_lots // 1000))
        fair = ctx.index_ticks - skew  # long inventory: quote lower to sell it
        out: list[Command] = [CancelAll(ts_ns=0, account=c.account, market=sym)]
        for k in range(c.levels):
            off = c.spread_ticks + k * c.step_ticks
            lots = c.lots + k * c.lots_growth
            out.append(Place(ts_ns=0, account=c.account, market=sym, side="buy", price=ticks_to_price(self.spec, fair - off),
                             size_lots=lots, tif="post_only"))
            out.append(Place(ts_ns=0, account=c.account, market=sym, side="sell",
                             price=ticks_to_price(self.spec, fair + off), size_lots=lots, tif="post_only"))
        self.quoting = True
        return out


@dataclass
class Directional(Agent):
    """One leveraged account of a `Traders` group.

    Take-profit and stop are **the agent's own triggers on the mark**, not engine orders: the engine
    has no trigger orders (docs/matching.md), so, as a client-side stop would, the agent fixes its
    levels when it opens (`entry` = the index it opened on, stop = entry -/+ stop_bps, take-profit =
    entry +/- take_profit_bps for a long/short) and, at the first step whose mark is at or through a
    level, sends a reduce-only market order for its whole position; a thin book may fill part, so it
    sends another every step until flat (a stop-market's behaviour). Each trigger is recorded in
    `triggers` (hour, step, kind, mark, level)."""

    account: int
    deposit_micro: int
    side: str
    leverage: float
    open_hour: int
    stop_bps: int
    take_profit_bps: int
    spec: MarketSpec
    role = "trader"
    entry_ticks: int = 0
    target_lots: int = 0
    build_steps: int = 0
    opened: bool = False
    closed: bool = False
    stop_ticks: int = 0  # 0: none
    take_profit_ticks: int = 0
    triggers: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.accounts = (self.account,)

    def deposits(self):
        return [(self.account, self.deposit_micro)]

    def _levels(self) -> None:
        e, sign = self.entry_ticks, 1 if self.side == "buy" else -1
        if self.stop_bps:
            self.stop_ticks = e - sign * (e * self.stop_bps // 10_000)
        if self.take_profit_bps:
            self.take_profit_ticks = e + sign * (e * self.take_profit_bps // 10_000)

    def _triggered(self, mark: int) -> str | None:
        long = self.side == "buy"
        if self.stop_ticks and (mark <= self.stop_ticks if long else mark >= self.stop_ticks):
            return "stop"
        if self.take_profit_ticks and (mark >= self.take_profit_ticks if long else mark <= self.take_profit_ticks):
            return "take_profit"
        return None

    def act(self, ctx: Ctx) -> list[Command]:
        """Builds its target position with market orders (a thin book fills part; it tries again
        each step until filled, for at most `BUILD_STEPS` steps), then holds it until a trigger."""
        sym, mptl = self.spec.symbol, _mptl(self.spec)
        pos = ctx.positions.get(self.account, 0)
        if self.closed:  # triggered: reduce-only market orders until flat
            if pos == 0:
                return []
            return [Place(ts_ns=0, account=self.account, market=sym, side="sell" if pos > 0 else "buy",
                          order_type="market", size_lots=abs(pos), reduce_only=True)]
        if not self.opened and ctx.hour >= self.open_hour:
            self.opened = True
            self.entry_ticks = ctx.index_ticks
            self._levels()
            self.target_lots = _lots_for(int(self.deposit_micro * self.leverage), ctx.index_ticks, mptl)
            cap = self.spec.tier[0].max_leverage if self.spec.tier else self.spec.default_leverage
            out: list[Command] = [SetLeverage(ts_ns=0, account=self.account, market=sym,
                                              leverage=max(1, min(cap, math.ceil(self.leverage * 1.05))))]
        else:
            out = []
        if self.opened and pos != 0 and ctx.mark_ticks:
            kind = self._triggered(ctx.mark_ticks)
            if kind is not None:
                self.closed = True
                self.triggers.append((ctx.hour, ctx.step, kind, ctx.mark_ticks,
                                      self.stop_ticks if kind == "stop" else self.take_profit_ticks))
                return out + [Place(ts_ns=0, account=self.account, market=sym, side="sell" if pos > 0 else "buy",
                                    order_type="market", size_lots=abs(pos), reduce_only=True)]
        if self.opened and self.build_steps < BUILD_STEPS and abs(pos) < self.target_lots:
            self.build_steps += 1
            out.append(Place(ts_ns=0, account=self.account, market=sym, side=self.side, order_type="market",
                             size_lots=self.target_lots - abs(pos)))
        return out


@dataclass
class Manipulator(Agent):
    cfg: S.Manipulator
    spec: MarketSpec
    steps_per_hour: int
    role = "manipulator"
    bought_lots: int = 0
    slices_done: int = 0

    def __post_init__(self) -> None:
        c = self.cfg
        self.accounts = (c.account,) if c.partner_account is None else (c.account, c.partner_account)

    def deposits(self):
        return [(a, self.cfg.deposit_usd * MICRO) for a in self.accounts]

    def act(self, ctx: Ctx) -> list[Command]:
        c, sym = self.cfg, self.spec.symbol
        slices = c.hours * self.steps_per_hour
        if c.start_hour <= ctx.hour < c.start_hour + c.hours:
            lots = _lots_for(c.notional_usd * MICRO // slices, ctx.index_ticks, _mptl(self.spec))
            out: list[Command] = [Place(ts_ns=0, account=c.account, market=sym, side=c.side, order_type="market",
                                        size_lots=lots)]
            if c.hold_bps and c.partner_account is not None:
                sign = 1 if c.side == "buy" else -1
                level = ctx.index_ticks + sign * (ctx.index_ticks * c.hold_bps // 10_000)
                bid, ask = (level, level + 1) if sign > 0 else (level - 1, level)
                own, other = (c.account, c.partner_account) if sign > 0 else (c.partner_account, c.account)
                out += [CancelAll(ts_ns=0, account=c.account, market=sym),
                        CancelAll(ts_ns=0, account=c.partner_account, market=sym),
                        Place(ts_ns=0, account=own, market=sym, side="buy", price=ticks_to_price(self.spec, bid),
                              size_lots=c.hold_lots),
                        Place(ts_ns=0, account=other, market=sym, side="sell", price=ticks_to_price(self.spec, ask),
                              size_lots=c.hold_lots)]
            return out
        if c.hold_bps and c.partner_account is not None and ctx.hour == c.start_hour + c.hours and ctx.step == 0:
            return [CancelAll(ts_ns=0, account=c.account, market=sym),
                    CancelAll(ts_ns=0, account=c.partner_account, market=sym)]
        unwind_from = c.start_hour + c.hours + c.hold_hours
        pos = ctx.positions.get(c.account, 0)
        if c.unwind and pos != 0 and ctx.hour >= unwind_from:
            per = _lots_for(c.notional_usd * MICRO // slices, ctx.index_ticks, _mptl(self.spec))
            lots = min(abs(pos), per)
            return [Place(ts_ns=0, account=c.account, market=sym, side="sell" if pos > 0 else "buy",
                          order_type="market", size_lots=lots, reduce_only=True)]
        return []


@dataclass
class Hedger(Agent):
    cfg: S.Hedger
    spec: MarketSpec
    role = "hedger"
    opened: bool = False

    def __post_init__(self) -> None:
        self.accounts = (self.cfg.account,)

    def deposits(self):
        return [(self.cfg.account, self.cfg.deposit_usd * MICRO)]

    def act(self, ctx: Ctx) -> list[Command]:
        if self.opened:
            return []
        self.opened = True
        lots = _lots_for(self.cfg.notional_usd * MICRO, ctx.index_ticks, _mptl(self.spec))
        return [Place(ts_ns=0, account=self.cfg.account, market=self.spec.symbol,
                      side="buy" if self.cfg.side == "long" else "sell", order_type="market", size_lots=lots)]


@dataclass
class BasisTrader(Agent):
    cfg: S.Basis
    spec: MarketSpec
    role = "basis"

    def __post_init__(self) -> None:
        self.accounts = (self.cfg.account,)

    def deposits(self):
        return [(self.cfg.account, self.cfg.deposit_usd * MICRO)]

    def act(self, ctx: Ctx) -> list[Command]:
        c, sym = self.cfg, self.spec.symbol
        if not ctx.index_ticks or not ctx.mark_ticks:
            return []
        basis_bps = (ctx.mark_ticks - ctx.index_ticks) * 10_000 // ctx.index_ticks
        pos = ctx.positions.get(c.account, 0)
        if basis_bps >= c.enter_bps and pos > -c.max_lots:
            return [Place(ts_ns=0, account=c.account, market=sym, side="sell", order_type="market",
                          size_lots=min(c.clip_lots, c.max_lots + pos))]
        if basis_bps <= -c.enter_bps and pos < c.max_lots:
            return [Place(ts_ns=0, account=c.account, market=sym, side="buy", order_type="market",
                          size_lots=min(c.clip_lots, c.max_lots - pos))]
        if pos and abs(basis_bps) <= c.exit_bps:
            return [Place(ts_ns=0, account=c.account, market=sym, side="sell" if pos > 0 else "buy",
                          order_type="market", size_lots=min(c.clip_lots, abs(pos)), reduce_only=True)]
        return []


@dataclass
class NoiseTakers(Agent):
    cfg: S.Noise
    spec: MarketSpec
    rng: random.Random
    role = "noise"

    def __post_init__(self) -> None:
        self.accounts = tuple(range(self.cfg.first_account, self.cfg.first_account + self.cfg.count))

    def deposits(self):
        return [(a, self.cfg.deposit_usd * MICRO) for a in self.accounts]

    def act(self, ctx: Ctx) -> list[Command]:
        out: list[Command] = []
        for _ in range(self.cfg.orders_per_step):
            a = self.rng.choice(self.accounts)
            side = self.rng.choice(("buy", "sell"))
            pos = ctx.positions.get(a, 0)
            if abs(pos) > 20 * self.cfg.max_lots:  # lean back toward flat
                side = "sell" if pos > 0 else "buy"
            out.append(Place(ts_ns=0, account=a, market=self.spec.symbol, side=side, order_type="market",
                             size_lots=self.rng.randint(1, self.cfg.max_lots)))
        return out


def _mptl(spec: MarketSpec) -> int:
    from perp.markets import micro_per_tick_lot

    return micro_per_tick_lot(spec)


def build_agents(sc: S.Scenario, spec: MarketSpec) -> list[Agent]:
    """Agents in acting order (makers first), each with its own seeded generator."""
    rng = random.Random(sc.seed)
    out: list[Agent] = [MarketMaker(m, spec) for m in sc.agents.makers]
    out += [Manipulator(m, spec, sc.steps_per_hour) for m in sc.agents.manipulators]
    for t in sc.agents.traders:
        for k in range(t.count):
            lev = t.leverage_min + (t.leverage_max - t.leverage_min) * (k / max(1, t.count - 1))
            side = t.side if t.side != "mixed" else rng.choice(("long", "short"))
            out.append(Directional(t.first_account + k, t.deposit_usd * MICRO, "buy" if side == "long" else "sell",
                                   round(lev, 3), t.open_hour, t.stop_bps, t.take_profit_bps, spec))
    out += [Hedger(h, spec) for h in sc.agents.hedgers]
    out += [BasisTrader(b, spec) for b in sc.agents.basis]
    out += [NoiseTakers(n, spec, random.Random(rng.getrandbits(64))) for n in sc.agents.noise]
    return out


def initial_deposits(agents: list[Agent], ts_ns: int) -> list[Command]:
    return [Deposit(ts_ns=ts_ns, account=a, amount_micro=m) for ag in agents for a, m in ag.deposits()]


__all__ = ["Agent", "Ctx", "MarketMaker", "Directional", "Manipulator", "Hedger", "BasisTrader", "NoiseTakers", "build_agents",
           "initial_deposits"]
