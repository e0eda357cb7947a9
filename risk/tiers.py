"""Leverage tiers as data: decode, validate, compute deductions, pack for the kernels.

A market's tier table is a list of `LeverageTier`s ordered by notional. Tier `i` covers position
notionals (at mark, absolute, micro-USD) in `(bound[i-1], bound[i]]`, with `bound[-1] = 0` and the last
tier open-ended. Bounds are whole US dollars (`max_notional_usd`, an integer), which makes every
deduction an exact integer of micro-USD (`bound_usd * delta_ppm`).

Rates, per tier:
- initial margin rate `imr_ppm = ceil(1e6 / max_leverage)` (rounded up: never more leverage than
  stated);
- maintenance margin rate `mmr_ppm` as configured (launch default: half of the initial rate).

Margin functions (micro-USD; `N` = absolute notional at mark in micro-USD, `i` = its tier):
- `MM(N) = ceil(N * mmr[i] / 1e6) - mm_deduction[i]`, with
  `mm_deduction[0] = 0`, `mm_deduction[i] = mm_deduction[i-1] + bound_usd[i-1] * (mmr[i] - mmr[i-1])`.
  MM is continuous at every bound (both tiers' formulas give the same integer there) and
  non-decreasing in N; its marginal rate is the tier's rate (Binance's "maintenance amount",
  Hyperliquid's "maintenance deduction").
- `IM(N, L) = ceil(N * max(ceil(1e6 / L), imr[i]) / 1e6)` for the account's chosen leverage `L`:
  the whole position at its tier's rate (Binance style), so IM steps up at a bound. IM is only used to
  admit orders and withdrawals, where a step is harmless; MM, which decides liquidation, has none.

Validation (each failure is a `RiskError` with a `RiskCode` 2001-2012 and the field's path, e.g.
`H100-PERP.tier[1].max_leverage`): at least one tier and at most MAX_TIERS; positive leverage,
rates and bounds; bounds strictly increasing (tiers are defined by upper bounds only, so a gap
cannot be written and an overlap is a non-increasing bound); only the last tier open-ended;
max leverage never rises with notional; maintenance rate below the tier's initial rate and never
falling with notional.

Packed form (`TierArrays`), row per market, MAX_TIERS columns, unused columns repeat the last tier;
the last real bound is INT64_MAX so a lookup needs no tier count.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import msgspec
import numpy as np
from numba import njit

from risk.errors import RiskCode, RiskError
from risk.intmath import INT64_MAX, PPM, PPM_FAST_MAX_MICRO, ppm_of_ceil, ppm_of_ceil_fast

MAX_TIERS = 8
# Largest bound accepted: its micro-USD value stays below INT64_MAX - PPM (mul-div precondition).
MAX_BOUND_USD = (INT64_MAX - PPM) // PPM


class LeverageTier(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One tier: positions up to `max_notional_usd` (None: no upper bound) may use `max_leverage`."""

    max_leverage: int
    maintenance_margin_ppm: int
    max_notional_usd: int | None = None

    @property
    def initial_margin_ppm(self) -> int:
        """ceil(1e6 / max_leverage): the initial margin rate, rounded up."""
        return -(-PPM // self.max_leverage)


class MarketTierTable(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[[market]]` in the TOML: a market symbol and its `[[market.tier]]` list."""

    market: str
    tier: tuple[LeverageTier, ...]


class TierFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    market: tuple[MarketTierTable, ...]


class TierSchedule(msgspec.Struct, frozen=True):
    """A validated tier table with its derived integers (micro-USD, ppm)."""

    market: str
    tiers: tuple[LeverageTier, ...]
    bound_micro: tuple[int, ...]  # INT64_MAX for the open-ended last tier
    imr_ppm: tuple[int, ...]
    mmr_ppm: tuple[int, ...]
    mm_deduction_micro: tuple[int, ...]

    @property
    def max_leverage(self) -> int:
        """The largest leverage a user may choose (the first tier's)."""
        return self.tiers[0].max_leverage

    def tier_index(self, notional_micro: int) -> int:
        """Index of the tier covering |notional| (bounds are inclusive upper bounds)."""
        n = abs(notional_micro)
        for i, bound in enumerate(self.bound_micro):
            if n <= bound:
                return i
        raise AssertionError("the last bound is INT64_MAX")  # pragma: no cover

    def maintenance_margin_micro(self, notional_micro: int) -> int:
        """MM(|notional|) in micro-USD, with Python integers (the reference for the kernel)."""
        n = abs(notional_micro)
        i = self.tier_index(n)
        return -((-n * self.mmr_ppm[i]) // PPM) - self.mm_deduction_micro[i]

    def initial_margin_micro(self, notional_micro: int, leverage: int) -> int:
        """IM(|notional|, leverage) in micro-USD, with Python integers."""
        n = abs(notional_micro)
        i = self.tier_index(n)
        rate = max(-(-PPM // leverage), self.imr_ppm[i])
        return -((-n * rate) // PPM)


def _fail(code: RiskCode, market: str, index: int | None, field: str, message: str) -> RiskError:
    where = f"{market}.tier[{index}].{field}" if index is not None else f"{market}.{field}"
    return RiskError(code, where, message)


def validate_tiers(market: str, tiers: Sequence[LeverageTier]) -> TierSchedule:
    """Check one market's table and derive its integers; raise RiskError naming the field."""
    tiers = tuple(tiers)
    if not tiers:
        raise _fail(RiskCode.TIER_EMPTY, market, None, "tier", "a market needs at least one tier")
    if len(tiers) > MAX_TIERS:
        raise _fail(RiskCode.TIER_TOO_MANY, market, None, "tier", f"{len(tiers)} tiers > {MAX_TIERS}")
    bounds: list[int] = []
    for i, t in enumerate(tiers):
        if t.max_leverage <= 0:
            raise _fail(RiskCode.TIER_NOT_POSITIVE, market, i, "max_leverage", f"{t.max_leverage} <= 0")
        if t.maintenance_margin_ppm <= 0:
            raise _fail(RiskCode.TIER_NOT_POSITIVE, market, i, "maintenance_margin_ppm",
                        f"{t.maintenance_margin_ppm} <= 0")
        last = i == len(tiers) - 1
        if t.max_notional_usd is None:
            if not last:
                raise _fail(RiskCode.TIER_OPEN_ENDED_NOT_LAST, market, i, "max_notional_usd",
                            "only the last tier may be open-ended")
            bounds.append(INT64_MAX)
        else:
            if last:
                raise _fail(RiskCode.TIER_LAST_NOT_OPEN_ENDED, market, i, "max_notional_usd",
                            "the last tier must be open-ended (omit max_notional_usd)")
            if t.max_notional_usd <= 0:
                raise _fail(RiskCode.TIER_NOT_POSITIVE, market, i, "max_notional_usd",
                            f"{t.max_notional_usd} <= 0")
            if t.max_notional_usd > MAX_BOUND_USD:
                raise _fail(RiskCode.TIER_BOUND_TOO_LARGE, market, i, "max_notional_usd",
                            f"{t.max_notional_usd} > {MAX_BOUND_USD}")
            if bounds and t.max_notional_usd * PPM <= bounds[-1]:
                raise _fail(RiskCode.TIER_BOUNDS_NOT_INCREASING, market, i, "max_notional_usd",
                            f"{t.max_notional_usd} does not exceed the previous tier's bound")
            bounds.append(t.max_notional_usd * PPM)
        if t.maintenance_margin_ppm >= t.initial_margin_ppm:
            raise _fail(RiskCode.TIER_MAINTENANCE_NOT_BELOW_INITIAL, market, i, "maintenance_margin_ppm",
                        f"{t.maintenance_margin_ppm} >= initial {t.initial_margin_ppm} (1e6/{t.max_leverage})")
        if i > 0:
            prev = tiers[i - 1]
            if t.max_leverage > prev.max_leverage:
                raise _fail(RiskCode.TIER_LEVERAGE_RISES, market, i, "max_leverage",
                            f"{t.max_leverage} > previous tier's {prev.max_leverage}")
            if t.maintenance_margin_ppm < prev.maintenance_margin_ppm:
                raise _fail(RiskCode.TIER_MAINTENANCE_FALLS, market, i, "maintenance_margin_ppm",
                            f"{t.maintenance_margin_ppm} < previous tier's {prev.maintenance_margin_ppm}")
    mmr = tuple(t.maintenance_margin_ppm for t in tiers)
    deductions = [0]
    for i in range(1, len(tiers)):
        # bound in whole USD, so bound_micro * delta_ppm / 1e6 is the exact integer bound_usd * delta
        deductions.append(deductions[-1] + tiers[i - 1].max_notional_usd * (mmr[i] - mmr[i - 1]))
    return TierSchedule(market=market, tiers=tiers, bound_micro=tuple(bounds),
                        imr_ppm=tuple(t.initial_margin_ppm for t in tiers), mmr_ppm=mmr,
                        mm_deduction_micro=tuple(deductions))


def parse_tiers_toml(text: str) -> dict[str, TierSchedule]:
    """Decode and validate a TOML tier file: `[[market]] market = "..."` with `[[market.tier]]` rows."""
    try:
        raw = tomllib.loads(text)
        decoded = msgspec.convert(raw, TierFile, strict=True)
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise RiskError(RiskCode.TIER_DECODE, "toml", str(exc)) from exc
    out: dict[str, TierSchedule] = {}
    for table in decoded.market:
        if table.market in out:
            raise _fail(RiskCode.TIER_DUPLICATE_MARKET, table.market, None, "market", "listed twice")
        out[table.market] = validate_tiers(table.market, table.tier)
    return out


def load_tiers(path: str | Path) -> dict[str, TierSchedule]:
    """Read, decode and validate a TOML tier file."""
    return parse_tiers_toml(Path(path).read_text(encoding="utf-8"))


def default_tiers() -> dict[str, TierSchedule]:
    """The tiers of the embedded default markets (perp/markets.toml, `[[market.tier]]`)."""
    from perp.markets import load_markets, tier_schedule

    return {spec.symbol: tier_schedule(spec) for spec in load_markets().market}


class TierArrays(NamedTuple):
    """Tier tables packed for the kernels; row = market index, column = tier (MAX_TIERS columns)."""

    bound_micro: np.ndarray  # int64[n_mkt, MAX_TIERS], inclusive upper bound; INT64_MAX = open
    imr_ppm: np.ndarray  # int64[n_mkt, MAX_TIERS]
    mmr_ppm: np.ndarray  # int64[n_mkt, MAX_TIERS]
    mm_deduction_micro: np.ndarray  # int64[n_mkt, MAX_TIERS]
    n_tiers: np.ndarray  # int64[n_mkt]


def pack_tiers(schedules: Sequence[TierSchedule]) -> TierArrays:
    """Pack validated schedules (market index = position in the sequence) into kernel arrays."""
    n = len(schedules)
    shape = (n, MAX_TIERS)
    bound = np.full(shape, INT64_MAX, dtype=np.int64)
    imr = np.zeros(shape, dtype=np.int64)
    mmr = np.zeros(shape, dtype=np.int64)
    ded = np.zeros(shape, dtype=np.int64)
    count = np.zeros(n, dtype=np.int64)
    for m, s in enumerate(schedules):
        k = len(s.tiers)
        count[m] = k
        for j in range(MAX_TIERS):
            i = min(j, k - 1)
            bound[m, j] = s.bound_micro[i]
            imr[m, j] = s.imr_ppm[i]
            mmr[m, j] = s.mmr_ppm[i]
            ded[m, j] = s.mm_deduction_micro[i]
    return TierArrays(bound, imr, mmr, ded, count)


@njit(cache=True)
def tier_index(notional_micro, mkt, tier_bound_micro):
    """First tier whose inclusive bound holds notional_micro (>= 0); the last bound is INT64_MAX."""
    i = 0
    while notional_micro > tier_bound_micro[mkt, i]:
        i += 1
    return i


@njit(cache=True)
def maintenance_margin_micro(notional_micro, mkt, tier_bound_micro, tier_mmr_ppm, tier_mm_deduction_micro):
    """MM of one position: ceil(N * mmr / 1e6) - deduction, N = |notional at mark| in micro-USD.

    Requires 0 <= notional_micro <= INT64_MAX - 1e6.
    """
    if 0 <= notional_micro <= tier_bound_micro[mkt, 0] and notional_micro <= PPM_FAST_MAX_MICRO:
        # the first tier (most positions): one unsigned division, exactly ppm_of_ceil's value
        return ppm_of_ceil_fast(notional_micro, tier_mmr_ppm[mkt, 0]) - tier_mm_deduction_micro[mkt, 0]
    i = tier_index(notional_micro, mkt, tier_bound_micro)
    return ppm_of_ceil(notional_micro, tier_mmr_ppm[mkt, i]) - tier_mm_deduction_micro[mkt, i]


@njit(cache=True)
def initial_margin_micro(notional_micro, mkt, leverage, tier_bound_micro, tier_imr_ppm):
    """IM of one position at the user's leverage (>= 1): ceil(N * max(ceil(1e6/L), imr) / 1e6).

    A leverage above the tier's limit is harmless here (the tier's rate wins); the engine rejects it
    at set-leverage time with LEVERAGE_ABOVE_TIER_LIMIT. Requires 0 <= notional_micro <= INT64_MAX - 1e6.
    """
    i = tier_index(notional_micro, mkt, tier_bound_micro)
    rate = (1_000_000 + leverage - 1) // leverage
    tier_rate = tier_imr_ppm[mkt, i]
    if tier_rate > rate:
        rate = tier_rate
    return ppm_of_ceil(notional_micro, rate)
