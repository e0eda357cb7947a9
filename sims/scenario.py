"""Scenarios as data: a TOML file decoded into frozen msgspec structs.

Every table and field is checked on load (`forbid_unknown_fields`, types, ranges); an error is a
`ScenarioError` whose message names the file and the field (`$.agents.makers[0].levels`). Money in a
scenario is in whole USD (ints), rates in ppb or ppm, durations in hours; the runner converts to the
engine's integer units. Market parameters are overrides of the embedded `perp/markets.toml` spec,
checked by the engine's own `validate_spec`.

Leverage tiers are a field of their own (`[[tiers]]`, markets.toml's tier fields), checked by
risk's `validate_tiers`. Mid-run parameter changes (`[[changes]]`) are checked at load by the same
rules (`changes[i].field`) and run as the engine's admin commands (sims.changes).

Known limits: one market per scenario (the embedded H100-PERP), one insurance fund (account 0).
"""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from risk.tiers import LeverageTier

Pos = Annotated[int, msgspec.Meta(ge=1)]
NonNeg = Annotated[int, msgspec.Meta(ge=0)]
Account = Annotated[int, msgspec.Meta(ge=16)]  # accounts below 16 are the venue's (insurance funds)
Frac = Annotated[float, msgspec.Meta(ge=-0.95, le=5.0)]  # a relative move: -0.30 is a 30% fall


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names the file and the field."""


class _S(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class IndexEvent(_S):
    """A scripted change to the real daily fixes, counted in days from the scenario's first day.

    - gap: the fix of `day` is the previous fix x (1 + move); later fixes follow the real path scaled
      by the same factor (a level shift, not a spike).
    - staircase: from `day`, every `every_days` the level shifts by another `move`, `steps` times.
    - suppressed: `days` fixes from `day` are published as suppressed (no price).
    - stale: `days` fixes from `day` are never published.
    - revised: the fix of `day` is published provisional at (1 + move) x the real value, then revised
      to the real value `revise_after_h` hours later (inside the oracle's provisional window).
    """

    kind: Literal["gap", "staircase", "suppressed", "stale", "revised"]
    day: NonNeg
    move: Frac = 0.0
    days: Pos = 1
    steps: Pos = 1
    every_days: Pos = 1
    revise_after_h: Pos = 6
    vintage: Literal["provisional+final", "final"] = "final"  # gap: how the gapped fix is published


class IndexPath(_S):
    """The real H100 series (`../shared/data/gpumarkets/daily_fixings.csv`, GPU Markets, CC BY 4.0)
    from `start` (a fix date), with scripted events on top."""

    series: str = "GPUM.H100.SXM.SPOT"
    start: dt.date = dt.date(2026, 3, 1)
    warmup_days: NonNeg = 3  # fixes fed to the oracle before the engine starts (the EMA settles)
    events: tuple[IndexEvent, ...] = ()


class Oracle(_S):
    half_life_s: Pos = 6 * 3600
    max_hourly_move_ppm: NonNeg = 10_000
    max_fix_jump_ppm: NonNeg = 250_000


class Fund(_S):
    deposit_usd: NonNeg = 50_000  # the operator's fund_top_up into account 0 at the start
    floor_usd: NonNeg = 0  # SetInsuranceFloor


class Maker(_S):
    """Quotes `levels` levels each side around the anchor, `spread_ticks` then `step_ticks` apart,
    `lots` per level (growing by `lots_growth` per level), skewed by inventory; pulls every quote
    while stressed (the anchor moved more than `pull_move_bps` in the last hour, or |mark - index|
    is above `pull_basis_bps`, or a scripted pull window) and returns `return_after_h` hours later."""

    account: Account
    deposit_usd: Pos = 2_000_000
    levels: Pos = 5
    lots: Pos = 500
    lots_growth: NonNeg = 100
    spread_ticks: Pos = 5
    step_ticks: Pos = 5
    skew_ticks_per_1000_lots: NonNeg = 2
    max_skew_ticks: NonNeg = 40
    pull_move_bps: NonNeg = 0  # 0: never on an anchor move
    pull_basis_bps: NonNeg = 0  # 0: never on the basis
    return_after_h: NonNeg = 3
    requote_every_steps: Pos = 1  # cancel and requote the ladder every this many steps
    pull_hours: tuple[tuple[NonNeg, NonNeg], ...] = ()  # scripted [from, to) hours of the run


class Traders(_S):
    """`count` leveraged directional accounts from `first_account`, leverage spread uniformly in
    [leverage_min, leverage_max], opening at `open_hour`; optional stop / take-profit (bps of entry,
    0: none): the agents' own triggers on the mark (the engine has no trigger orders), closing with
    reduce-only market orders until flat (sims.agents.Directional)."""

    first_account: Account
    count: Pos = 10
    deposit_usd: Pos = 5_000
    side: Literal["long", "short", "mixed"] = "long"
    leverage_min: Annotated[float, msgspec.Meta(ge=0.1, le=20)] = 2.0
    leverage_max: Annotated[float, msgspec.Meta(ge=0.1, le=20)] = 4.8
    open_hour: NonNeg = 0
    stop_bps: NonNeg = 0
    take_profit_bps: NonNeg = 0


class Manipulator(_S):
    """A steady TWAP of `notional_usd` (market orders, one slice per step) over `hours` from
    `start_hour`, then holds `hold_hours` and unwinds at the same pace. With `hold_bps` > 0 it also
    "holds" the book for the same hours: its own bid of `hold_lots` at index + hold_bps and a second
    account's (`partner_account`) ask one tick above it, requoted every step."""

    account: Account
    deposit_usd: Pos = 5_000_000
    side: Literal["buy", "sell"] = "buy"
    notional_usd: Pos = 1_000_000
    start_hour: NonNeg = 0
    hours: Pos = 6
    hold_hours: NonNeg = 0
    unwind: bool = True
    hold_bps: NonNeg = 0
    hold_lots: Pos = 1_000
    partner_account: Account | None = None


class Hedger(_S):
    """Opens `notional_usd` on `side` at hour 0 and holds it through the scenario."""

    account: Account
    deposit_usd: Pos = 500_000
    side: Literal["long", "short"] = "short"
    notional_usd: Pos = 100_000


class Basis(_S):
    """A basis/carry trader: sells when mark - index is above `enter_bps` (shorts collect funding when
    the mark is rich), buys when below -enter_bps, in clips of `clip_lots` up to `max_lots`; closes
    when |mark - index| is back under `exit_bps`."""

    account: Account
    deposit_usd: Pos = 200_000
    enter_bps: Pos = 10
    exit_bps: NonNeg = 2
    clip_lots: Pos = 2_000
    max_lots: Pos = 20_000


class Noise(_S):
    """`count` small takers from `first_account`: a few random market orders a step."""

    first_account: Account
    count: Pos = 5
    deposit_usd: Pos = 50_000
    max_lots: Pos = 200
    orders_per_step: NonNeg = 1


class Change(_S):
    """Market parameters changed at the start of hour `at_hour` of the run, through the engine's
    admin commands (docs/operations.md), sent 1 ms before that hour so they are in force from it:
    `funding_cap_ppb` / `funding_clamp_ppb` -> `set_funding_params` (effective at the next funding
    hour: the hour starting at `at_hour`); `tiers` -> `set_tiers` effective at that hour, with
    `confirm` (a change that puts accounts under a margin needs it; without it the engine refuses it,
    5102, and the what-if is reported); `fund_top_up_usd` -> `fund_top_up` of the insurance fund;
    `fund_floor_usd` -> `set_fund_floor`. Unset fields are left alone (the clamp keeps its value)."""

    at_hour: NonNeg
    funding_cap_ppb: NonNeg | None = None
    funding_clamp_ppb: NonNeg | None = None
    tiers: tuple[LeverageTier, ...] | None = None
    confirm: bool = True
    fund_top_up_usd: Pos | None = None
    fund_floor_usd: NonNeg | None = None
    reason: str = "scenario"


class Agents(_S):
    makers: tuple[Maker, ...] = ()
    traders: tuple[Traders, ...] = ()
    manipulators: tuple[Manipulator, ...] = ()
    hedgers: tuple[Hedger, ...] = ()
    basis: tuple[Basis, ...] = ()
    noise: tuple[Noise, ...] = ()


class Scenario(_S):
    name: str
    description: str = ""
    seed: NonNeg = 1
    hours: Annotated[int, msgspec.Meta(ge=1, le=24 * 200)] = 48
    steps_per_hour: Annotated[int, msgspec.Meta(ge=1, le=60)] = 4
    market: dict[str, int | str] = {}  # overrides of the H100-PERP spec (perp/markets.toml fields)
    # the leverage tiers (`[[tiers]]`, the fields of markets.toml's `[[market.tier]]`); () keeps the spec's
    tiers: tuple[LeverageTier, ...] = ()
    changes: tuple[Change, ...] = ()  # mid-run parameter changes, through the engine's admin commands
    index: IndexPath = IndexPath()
    oracle: Oracle = Oracle()
    fund: Fund = Fund()
    agents: Agents = Agents()


def _field_error(exc: msgspec.ValidationError) -> str:
    """msgspec's message rewritten to start with the dotted field it is about:
    `agents.makers[0].levles: unknown field`, `agents.makers[0].lots: Expected `int`, got `str``."""
    import re

    text = str(exc)
    m = re.fullmatch(r"Object contains unknown field `(.+)` - at `\$(.*)`", text)
    if m:
        return f"{(m.group(2) + '.' + m.group(1)).lstrip('.')}: unknown field"
    m = re.fullmatch(r"Object missing required field `(.+)`(?: - at `\$(.*)`)?", text)
    if m:
        return f"{((m.group(2) or '') + '.' + m.group(1)).lstrip('.')}: required field missing"
    m = re.fullmatch(r"(.*) - at `\$(.*)`", text)
    if m:
        return f"{m.group(2).lstrip('.')}: {m.group(1)}"
    return text


def parse_scenario(text: str, where: str = "scenario") -> Scenario:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{where}: not valid TOML: {exc}") from None
    try:
        sc = msgspec.convert(raw, Scenario)
    except msgspec.ValidationError as exc:
        raise ScenarioError(f"{where}: {_field_error(exc)}") from None
    check(sc, where)
    return sc


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc}") from None
    return parse_scenario(text, str(path))


def check(sc: Scenario, where: str = "scenario") -> None:
    """Cross-field rules msgspec cannot state: tiers pass risk's own `validate_tiers` (the error
    names `tiers[i].field`), market overrides name real spec fields and give a valid spec, accounts
    are distinct, leverage ranges are ordered."""
    from perp.markets import MarketSpecError, validate_spec
    from risk.errors import RiskError
    from risk.tiers import validate_tiers

    def tiers_ok(tiers, prefix: str) -> None:
        try:
            validate_tiers("H100-PERP", tiers)
        except RiskError as exc:
            field = exc.where.split(".", 1)[1].replace("tier", "tiers", 1)  # "H100-PERP.tier[1].x" -> "tiers[1].x"
            raise ScenarioError(f"{where}: {prefix}{field}: {exc}") from None

    if sc.tiers:
        tiers_ok(sc.tiers, "")
    try:
        spec = market_spec(sc)
    except (MarketSpecError, TypeError, ValueError) as exc:
        raise ScenarioError(f"{where}: market: {exc}") from None
    for i, c in enumerate(sc.changes):  # each change on its own, with the spec loader's rules
        at = f"changes[{i}]"
        if c.at_hour >= sc.hours:
            raise ScenarioError(f"{where}: {at}.at_hour = {c.at_hour} is after the run ({sc.hours} h)")
        if (c.funding_cap_ppb, c.funding_clamp_ppb, c.tiers, c.fund_top_up_usd, c.fund_floor_usd) == (None,) * 5:
            raise ScenarioError(f"{where}: {at}: changes nothing (give funding_cap_ppb, funding_clamp_ppb, tiers, "
                                "fund_top_up_usd or fund_floor_usd)")
        if c.tiers is not None:
            tiers_ok(c.tiers, f"{at}.")
        funding = {k: v for k, v in (("funding_cap_ppb", c.funding_cap_ppb), ("funding_clamp_ppb", c.funding_clamp_ppb))
                   if v is not None}
        try:
            validate_spec(msgspec.structs.replace(spec, **funding, **({"tier": c.tiers} if c.tiers else {})))
        except MarketSpecError as exc:
            raise ScenarioError(f"{where}: {at}: {exc}") from None
    seen: dict[int, str] = {}

    def claim(account: int, field: str) -> None:
        if account in seen:
            raise ScenarioError(f"{where}: {field}: account {account} already used by {seen[account]}")
        seen[account] = field

    a = sc.agents
    for i, m in enumerate(a.makers):
        claim(m.account, f"agents.makers[{i}].account")
    for i, m in enumerate(a.manipulators):
        claim(m.account, f"agents.manipulators[{i}].account")
        if m.partner_account is not None:
            claim(m.partner_account, f"agents.manipulators[{i}].partner_account")
        elif m.hold_bps:
            raise ScenarioError(f"{where}: agents.manipulators[{i}].partner_account: needed with hold_bps")
    for i, h in enumerate(a.hedgers):
        claim(h.account, f"agents.hedgers[{i}].account")
    for i, b in enumerate(a.basis):
        claim(b.account, f"agents.basis[{i}].account")
        if b.exit_bps >= b.enter_bps:
            raise ScenarioError(f"{where}: agents.basis[{i}].exit_bps must be below enter_bps")
    for i, t in enumerate(a.traders):
        if t.leverage_min > t.leverage_max:
            raise ScenarioError(f"{where}: agents.traders[{i}].leverage_min is above leverage_max")
        for k in range(t.count):
            claim(t.first_account + k, f"agents.traders[{i}]")
    for i, n in enumerate(a.noise):
        for k in range(n.count):
            claim(n.first_account + k, f"agents.noise[{i}]")
    for i, e in enumerate(sc.index.events):
        if e.day * 24 >= sc.hours and e.kind != "stale":
            raise ScenarioError(f"{where}: index.events[{i}].day = {e.day} is after the run ({sc.hours} h)")


def market_spec(sc: Scenario):
    """The embedded H100-PERP spec with the scenario's overrides, validated by the engine's rules."""
    from perp.markets import MarketSpec, MarketSpecError, load_markets, validate_spec

    base = load_markets().market[0]
    fields = set(MarketSpec.__struct_fields__) - {"symbol", "series", "tier"}
    for key, value in sc.market.items():
        if key not in fields:
            raise MarketSpecError(f"unknown field {key!r}")
        if type(value) is not type(getattr(base, key)):
            raise MarketSpecError(f"{key} must be {type(getattr(base, key)).__name__}")
    spec = msgspec.structs.replace(base, **sc.market)
    if sc.tiers:
        spec = msgspec.structs.replace(spec, tier=sc.tiers)
    validate_spec(spec)
    return spec


def with_overrides(sc: Scenario, overrides: dict[str, object]) -> Scenario:
    """The scenario with dotted-key overrides (`market.funding_cap_ppb`, `fund.deposit_usd`,
    `agents.makers.0.lots`), re-validated."""
    raw = msgspec.json.decode(msgspec.json.encode(sc))  # plain dicts and lists
    for key, value in overrides.items():
        node = raw
        parts = key.split(".")
        for p in parts[:-1]:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        last = parts[-1]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    try:
        out = msgspec.convert(raw, Scenario)
    except msgspec.ValidationError as exc:
        raise ScenarioError(f"override {overrides}: {_field_error(exc)}") from None
    check(out, f"override {overrides}")
    return out
