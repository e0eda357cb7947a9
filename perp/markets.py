"""Market specs: loaded from TOML, validated, packed into the kernel's integer spec table.

A market spec carries its scales: the tick (USD per GPU-hour), the lot (GPU-hours), so that
`notional_micro = price_ticks * size_lots * micro_per_tick_lot` is exact in integers. A spec whose
tick x lot is not a whole number of micro-USD is rejected at load, as is any field out of range;
the error names the market and the field.

Decimal inputs are strings (`"0.0001"`), parsed with `decimal.Decimal`; a value off the grid it must
lie on is rejected, never rounded.

Invariant: every field has an explicit bound (`validate_spec`'s docstring lists them), chosen so that
after its unit scaling (USD -> micro-USD x 1e6, seconds -> ns x 1e9) it fits the kernel's int64 spec
row, and `validate_spec` ends by building that row (`spec_row`), which refuses a value it cannot
represent with a `MarketSpecError` naming the field. So a spec that validates always packs: an admin
command (perp/admin.py) that changes a spec is refused before anything changes, never fails to apply.
"""

from __future__ import annotations

import math
import tomllib
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from importlib import resources
from pathlib import Path

import msgspec
import numpy as np

from perp import layout as L
from risk.errors import RiskError
from risk.tiers import LeverageTier, TierSchedule, validate_tiers

MICRO = 1_000_000
MAX_FUND_ACCOUNTS = 16  # account ids below this may be insurance funds (reserved for operators)
_INT64_MAX = (1 << 63) - 1
MAX_FUNDING_CAP_PPB = 1_000_000_000  # 100% per interval: the most any rate may be (int64 headroom)
MAX_POSITION_LOTS = 3_000_000_000  # the overflow-safe divides of the liquidation kernel assume it
# bounds of validate_spec (each int64-safe after its scaling: 1e12 USD = 1e18 micro-USD < 2^63 ~ 9.2e18)
PPM = 1_000_000  # a fraction in parts per million: at most 100%
MAX_TICK_SIZE_USD = Decimal(1000)  # per GPU-hour
MAX_LOT_GPU_HOURS = Decimal(1_000_000)
MAX_USD = 10**12  # every whole-USD amount of a spec (limits, chunk sizes, thresholds, the impact notional)
MAX_OPEN_INTEREST_CAP_LOTS = 10**15
MAX_LIQUIDATION_COOLDOWN_S = 86_400  # one day


class MarketSpecError(ValueError):
    """A market spec is invalid; the message names the market and the field."""


class MarketSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One perpetual market. Prices are USD per GPU-hour, sizes are lots of `lot_gpu_hours`."""

    symbol: str
    series: str
    tick_size_usd: str
    lot_gpu_hours: str
    min_price_usd: str
    max_price_usd: str
    min_order_lots: int = 1
    max_order_lots: int = 1_000_000
    price_band_bps: int = 500
    market_protection_bps: int = 300
    maker_fee_ppm: int = 100
    taker_fee_ppm: int = 500
    max_open_orders: int = 200
    impact_notional_usd: str = "1000"
    mark_sample_interval_s: int = 1
    mark_ema_half_life_s: int = 600
    mark_band_bps: int = 300
    open_interest_cap_lots: int = 0  # 0: no cap
    premium_sample_interval_s: int = 60
    funding_interval_s: int = 3600
    funding_interest_ppb: int = 0  # per funding interval
    funding_clamp_ppb: int = 50_000  # clamp(interest - premium) to +- this
    funding_cap_ppb: int = 500_000  # 0.05% per hour
    default_leverage: int = 5
    withdraw_floor_ppm: int = 100_000  # unrealised profit withdrawable only above 10% of notional
    fee_share_to_fund_ppm: int = 0  # share of trading fees credited to the insurance fund
    liquidation_fee_share_ppm: int = 100_000  # liquidation fee: 10% of the closed part's maintenance margin
    liquidation_partial_above_usd: int = 100_000  # larger positions are liquidated in chunks...
    liquidation_chunk_ppm: int = 200_000  # ...of at least 20%...
    liquidation_cooldown_s: int = 30  # ...30 s apart (unless the account is bankrupt)
    liquidation_buffer_ppm: int = 100_000  # a chunk aims at equity >= MM x 1.1
    insurance_fund_account: int = 0  # markets naming the same account share a fund
    # the waterfall's caps and limits (issue 10, docs/liquidation.md); a limit of 0 means none
    liquidation_max_fee_ppm: int = 10_000  # the liquidation fee is at most 1% of the closed notional at the mark
    liquidation_max_per_sweep_usd: int = 2_000_000  # notional liquidated per sweep (the rest waits)
    liquidation_max_per_minute_usd: int = 10_000_000  # notional liquidated per UTC minute (the rest waits)
    insurance_max_loss_per_minute_usd: int = 100_000  # the fund's losses per UTC minute (beyond: ADL)
    liquidation_throttle_ppm: int = 250_000  # the oracle's throttle gate scales the three limits to 25%
    fund_unwind_chunk_usd: int = 50_000  # the fund unwinds backstop positions in IOC orders of at most $50k...
    fund_unwind_limit_bps: int = 100  # ...limited at mark -+ 1%...
    fund_unwind_per_minute_usd: int = 200_000  # ...at most $200k a minute (0 chunk: the fund never unwinds)
    # the gate
    max_clock_step_s: int = 3600  # a command more than this beyond the next funding hour is rejected
    # leverage tiers (`[[market.tier]]`), lowest notional first; the last one open-ended
    tier: tuple[LeverageTier, ...] = ()


class MarketsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    market: list[MarketSpec]


MAX_DECIMAL_CHARS = 40  # a price string longer than this is refused before it is parsed


def _dec(spec: MarketSpec, field: str, upper: Decimal | int | None = None) -> Decimal:
    """A positive decimal field: at most MAX_DECIMAL_CHARS characters, a magnitude within 1e+-30 (so no
    Decimal operation on it can overflow or underflow) and, with `upper`, at most `upper`."""
    raw = getattr(spec, field)
    if isinstance(raw, str) and len(raw) > MAX_DECIMAL_CHARS:
        raise MarketSpecError(f"market {spec.symbol!r}: {field} = {clip_text(raw)} is longer than "
                              f"{MAX_DECIMAL_CHARS} characters")
    try:
        value = Decimal(raw)
    except (InvalidOperation, TypeError):
        raise MarketSpecError(f"market {spec.symbol!r}: {field} = {raw!r} is not a decimal number") from None
    if not value.is_finite() or value <= 0:
        raise MarketSpecError(f"market {spec.symbol!r}: {field} = {raw!r} must be positive")
    if not -30 <= value.adjusted() <= 30 or (upper is not None and value > upper):
        raise MarketSpecError(f"market {spec.symbol!r}: {field} = {raw!r} must be at most "
                              f"{upper if upper is not None else '1e30'}")
    return value


def clip_text(text: object, limit: int = 60) -> str:
    """User text for an error message: control characters escaped, at most `limit` characters (then
    '...'), so that no input can forge an output line or flood a log."""
    raw = text if isinstance(text, str) else repr(text)
    out = raw.encode("unicode_escape", errors="backslashreplace").decode("ascii")
    return out if len(out) <= limit else out[:limit] + "..."


def price_to_ticks(spec: MarketSpec, price_usd: str | Decimal, field: str = "price") -> int:
    """Exact USD-per-GPU-hour decimal to ticks; off the tick grid is an error at any precision, never
    rounded (exact rational arithmetic, no Decimal context); a ticks value outside int64 is an error."""
    if isinstance(price_usd, str) and len(price_usd) > MAX_DECIMAL_CHARS:
        raise ValueError(f"{field} {clip_text(price_usd)!s} is longer than {MAX_DECIMAL_CHARS} characters")
    try:
        value = Decimal(price_usd)
    except (InvalidOperation, TypeError, ValueError):
        raise ValueError(f"{field} {clip_text(price_usd)} is not a decimal number") from None
    if not value.is_finite():
        raise ValueError(f"{field} {clip_text(price_usd)} is not finite")
    if value != 0 and not -30 <= value.adjusted() <= 30:
        raise ValueError(f"{field} {clip_text(price_usd)} is out of range")
    ticks = Fraction(value) / Fraction(Decimal(spec.tick_size_usd))
    if ticks.denominator != 1:
        raise ValueError(f"{field} {clip_text(price_usd)} is not on the tick grid of {spec.symbol} "
                         f"({spec.tick_size_usd})")
    if not -_INT64_MAX - 1 <= ticks.numerator <= _INT64_MAX:
        raise ValueError(f"{field} {clip_text(price_usd)} is out of range")
    return int(ticks.numerator)


def ticks_to_price(spec: MarketSpec, price_ticks: int) -> str:
    """Ticks to the exact decimal string in USD per GPU-hour (as many places as the tick has)."""
    tick = Decimal(spec.tick_size_usd)
    places = max(0, -tick.normalize().as_tuple().exponent)
    return f"{Decimal(price_ticks) * tick:.{places}f}"


def micro_per_tick_lot(spec: MarketSpec) -> int:
    value = Decimal(spec.tick_size_usd) * Decimal(spec.lot_gpu_hours) * MICRO
    return int(value)


def validate_spec(spec: MarketSpec) -> None:
    """Raise `MarketSpecError` naming the first bad field. The bounds (each also int64-safe once scaled):

    - decimal strings: at most 40 characters, positive; `tick_size_usd` <= 1,000, `lot_gpu_hours` <=
      1,000,000, their product a whole number of micro-USD; `min_price_usd` < `max_price_usd` on the
      tick grid, at most 4,000,000 ticks apart; `impact_notional_usd` <= 1e12 USD;
    - lots: `min_order_lots` <= `max_order_lots` <= 1e12, and the largest fill's notional at
      `max_price_usd` times 100,000 ppm within int64; `open_interest_cap_lots` 0-1e15 (0: none
      configured; the cap in force is never above `max_open_interest_lots`);
    - fractions in ppm, 0-1,000,000: `fee_share_to_fund_ppm`, `withdraw_floor_ppm` and the
      `liquidation_*_ppm` fields (`liquidation_buffer_ppm` too: a chunk aims at most at 2 x MM);
      fees -10,000-100,000 ppm; bps 1-10,000; funding cap and clamp 0-1e9 ppb, interest within +-cap;
    - whole USD, 0-1e12: `liquidation_partial_above_usd` and the waterfall's limits and chunk;
    - seconds: `liquidation_cooldown_s` 0-86,400; sample intervals 1-3,600; `funding_interval_s`
      1-86,400; `mark_ema_half_life_s` and `max_clock_step_s` 1-604,800;
    - `default_leverage` 1-100 and at most the first tier's; `max_open_orders` 1-100,000;
      `insurance_fund_account` 0-15; the tiers by risk.tiers.validate_tiers.

    Last, the kernel row is built (`spec_row`): a value it cannot represent is refused here, naming
    its field, never later when the row is written."""
    sym = spec.symbol
    if not sym or not sym.replace("-", "").replace("_", "").isalnum():
        raise MarketSpecError(f"market {sym!r}: symbol must be letters, digits, '-' or '_'")
    tick = _dec(spec, "tick_size_usd", MAX_TICK_SIZE_USD)
    lot = _dec(spec, "lot_gpu_hours", MAX_LOT_GPU_HOURS)
    mptl = tick * lot * MICRO
    if mptl != mptl.to_integral_value():
        raise MarketSpecError(
            f"market {sym!r}: tick_size_usd x lot_gpu_hours = {tick * lot} USD is not a whole number of micro-USD"
        )
    for field in ("min_price_usd", "max_price_usd"):
        _dec(spec, field)
    _dec(spec, "impact_notional_usd", MAX_USD)
    for field in ("min_price_usd", "max_price_usd"):
        try:
            price_to_ticks(spec, getattr(spec, field), field)
        except ValueError as exc:
            raise MarketSpecError(f"market {sym!r}: {exc}") from None
    lo = price_to_ticks(spec, spec.min_price_usd)
    hi = price_to_ticks(spec, spec.max_price_usd)
    if not 1 <= lo < hi:
        raise MarketSpecError(f"market {sym!r}: min_price_usd must be at least one tick and below max_price_usd")
    if hi - lo + 1 > 4_000_000:
        raise MarketSpecError(f"market {sym!r}: max_price_usd - min_price_usd spans more than 4,000,000 ticks")

    def positive(field: str, upper: int) -> None:
        v = getattr(spec, field)
        if not 1 <= v <= upper:
            raise MarketSpecError(f"market {sym!r}: {field} = {v} must be between 1 and {upper}")

    positive("min_order_lots", 10**12)
    positive("max_order_lots", 10**12)
    if spec.max_order_lots < spec.min_order_lots:
        raise MarketSpecError(f"market {sym!r}: max_order_lots must be >= min_order_lots")
    positive("price_band_bps", 10_000)
    positive("market_protection_bps", 10_000)
    positive("max_open_orders", 100_000)
    positive("mark_sample_interval_s", 3600)
    positive("mark_ema_half_life_s", 7 * 86400)
    positive("mark_band_bps", 10_000)
    positive("premium_sample_interval_s", 3600)
    positive("funding_interval_s", 86_400)
    positive("default_leverage", 100)
    if spec.funding_interval_s % spec.premium_sample_interval_s:
        raise MarketSpecError(f"market {sym!r}: premium_sample_interval_s must divide funding_interval_s")
    for field in ("fee_share_to_fund_ppm", "liquidation_fee_share_ppm", "liquidation_chunk_ppm",
                  "liquidation_max_fee_ppm", "liquidation_throttle_ppm", "withdraw_floor_ppm",
                  "liquidation_buffer_ppm"):
        if not 0 <= getattr(spec, field) <= PPM:
            raise MarketSpecError(f"market {sym!r}: {field} must be between 0 and 1000000 ppm")
    for field in ("funding_clamp_ppb", "funding_cap_ppb"):
        if getattr(spec, field) < 0:
            raise MarketSpecError(f"market {sym!r}: {field} must not be negative")
    for field, upper, unit in (("open_interest_cap_lots", MAX_OPEN_INTEREST_CAP_LOTS, "lots"),
                               ("liquidation_partial_above_usd", MAX_USD, "USD"),
                               ("liquidation_cooldown_s", MAX_LIQUIDATION_COOLDOWN_S, "s")):
        if not 0 <= getattr(spec, field) <= upper:
            raise MarketSpecError(f"market {sym!r}: {field} = {getattr(spec, field)} must be between 0 and "
                                  f"{upper} {unit}")
    for field in ("funding_cap_ppb", "funding_clamp_ppb"):
        if getattr(spec, field) > MAX_FUNDING_CAP_PPB:
            raise MarketSpecError(f"market {sym!r}: {field} must be at most {MAX_FUNDING_CAP_PPB} ppb (100%)")
    for field in ("liquidation_max_per_sweep_usd", "liquidation_max_per_minute_usd",
                  "insurance_max_loss_per_minute_usd", "fund_unwind_chunk_usd", "fund_unwind_per_minute_usd"):
        if not 0 <= getattr(spec, field) <= MAX_USD:
            raise MarketSpecError(f"market {sym!r}: {field} must be between 0 and {MAX_USD} USD")
    if not 1 <= spec.fund_unwind_limit_bps <= 10_000:
        raise MarketSpecError(f"market {sym!r}: fund_unwind_limit_bps must be between 1 and 10000")
    if not -spec.funding_cap_ppb <= spec.funding_interest_ppb <= spec.funding_cap_ppb:
        raise MarketSpecError(f"market {sym!r}: funding_interest_ppb must lie within +- funding_cap_ppb")
    if not 0 <= spec.insurance_fund_account < MAX_FUND_ACCOUNTS:
        raise MarketSpecError(f"market {sym!r}: insurance_fund_account must be between 0 and {MAX_FUND_ACCOUNTS - 1}")
    if spec.market_protection_bps > spec.price_band_bps:
        raise MarketSpecError(f"market {sym!r}: market_protection_bps must not exceed price_band_bps")
    for field in ("maker_fee_ppm", "taker_fee_ppm"):
        v = getattr(spec, field)
        if not -10_000 <= v <= 100_000:
            raise MarketSpecError(f"market {sym!r}: {field} = {v} must be between -10000 and 100000 ppm")
    if spec.maker_fee_ppm + spec.taker_fee_ppm < 0:
        raise MarketSpecError(f"market {sym!r}: maker_fee_ppm: the maker rebate exceeds the taker fee (the venue would pay to trade)")
    # the fee ledger keeps the taker fee less the fund's share and pays the maker's rebate: never negative
    if spec.taker_fee_ppm * (MICRO - spec.fee_share_to_fund_ppm) + spec.maker_fee_ppm * MICRO < 0:
        raise MarketSpecError(
            f"market {sym!r}: maker_fee_ppm: a rebate of {-spec.maker_fee_ppm} ppm exceeds the taker fee left after "
            f"fee_share_to_fund_ppm ({spec.taker_fee_ppm} x (1 - {spec.fee_share_to_fund_ppm}/1e6)): the fee ledger "
            "would go negative")
    positive("max_clock_step_s", 7 * 86_400)
    if not spec.tier:
        raise MarketSpecError(f"market {sym!r}: tier: a market needs its leverage tiers ([[market.tier]])")
    try:
        schedule = validate_tiers(sym, spec.tier)
    except RiskError as exc:
        raise MarketSpecError(f"market {sym!r}: {exc}") from None
    if spec.default_leverage > schedule.max_leverage:
        raise MarketSpecError(f"market {sym!r}: default_leverage {spec.default_leverage} exceeds the first tier's "
                              f"max_leverage {schedule.max_leverage}")
    # the largest fill's notional times a fee rate must fit in int64
    max_notional = hi * spec.max_order_lots * int(mptl)
    if max_notional * 100_000 > _INT64_MAX:
        raise MarketSpecError(f"market {sym!r}: max_order_lots x max_price_usd is too large for int64 arithmetic")
    spec_row(spec)  # the backstop: whatever the bounds above missed is refused here, never when it is applied


def spec_row(spec: MarketSpec) -> np.ndarray:
    """The spec as the kernel's integer row (see `layout.S_*`). Every value is computed as a Python
    int and checked against int64 before it is written: one that does not fit (or a decimal the
    arithmetic cannot carry) raises `MarketSpecError` naming its field, and no row is returned."""
    sym = spec.symbol
    mptl = micro_per_tick_lot(spec)
    try:
        impact_micro = Decimal(spec.impact_notional_usd) * MICRO
        impact_tick_lots = int(-(-impact_micro // mptl))  # rounded up: at least the notional
    except (ArithmeticError, ValueError, TypeError):
        raise MarketSpecError(f"market {sym!r}: impact_notional_usd = {clip_text(spec.impact_notional_usd)} "
                              "cannot be represented in ticks x lots") from None
    try:
        min_tick = price_to_ticks(spec, spec.min_price_usd, "min_price_usd")
        max_tick = price_to_ticks(spec, spec.max_price_usd, "max_price_usd")
    except ValueError as exc:
        raise MarketSpecError(f"market {sym!r}: {exc}") from None
    ns = 1_000_000_000
    columns = (
        (L.S_MIN_TICK, "min_price_usd", min_tick),
        (L.S_MAX_TICK, "max_price_usd", max_tick),
        (L.S_MIN_SIZE, "min_order_lots", spec.min_order_lots),
        (L.S_MAX_SIZE, "max_order_lots", spec.max_order_lots),
        (L.S_BAND_BPS, "price_band_bps", spec.price_band_bps),
        (L.S_PROTECT_BPS, "market_protection_bps", spec.market_protection_bps),
        (L.S_MAKER_FEE_PPM, "maker_fee_ppm", spec.maker_fee_ppm),
        (L.S_TAKER_FEE_PPM, "taker_fee_ppm", spec.taker_fee_ppm),
        (L.S_MAX_OPEN_ORDERS, "max_open_orders", spec.max_open_orders),
        (L.S_MICRO_PER_TICK_LOT, "tick_size_usd", mptl),
        (L.S_IMPACT_TICK_LOTS, "impact_notional_usd", impact_tick_lots),
        (L.S_SAMPLE_NS, "mark_sample_interval_s", spec.mark_sample_interval_s * ns),
        (L.S_ALPHA_PPM, "mark_ema_half_life_s", mark_alpha_ppm(spec.mark_sample_interval_s, spec.mark_ema_half_life_s)),
        (L.S_MARK_BAND_BPS, "mark_band_bps", spec.mark_band_bps),
        (L.S_OI_CAP_LOTS, "open_interest_cap_lots", open_interest_cap_in_force(spec)),
        (L.S_PREMIUM_SAMPLE_NS, "premium_sample_interval_s", spec.premium_sample_interval_s * ns),
        (L.S_FUNDING_INTERVAL_NS, "funding_interval_s", spec.funding_interval_s * ns),
        (L.S_INTEREST_PPB, "funding_interest_ppb", spec.funding_interest_ppb),
        (L.S_CLAMP_PPB, "funding_clamp_ppb", spec.funding_clamp_ppb),
        (L.S_CAP_PPB, "funding_cap_ppb", spec.funding_cap_ppb),
        (L.S_DEFAULT_LEVERAGE, "default_leverage", spec.default_leverage),
        (L.S_WITHDRAW_FLOOR_PPM, "withdraw_floor_ppm", spec.withdraw_floor_ppm),
        (L.S_FEE_SHARE_TO_FUND_PPM, "fee_share_to_fund_ppm", spec.fee_share_to_fund_ppm),
        (L.S_LIQ_FEE_SHARE_PPM, "liquidation_fee_share_ppm", spec.liquidation_fee_share_ppm),
        (L.S_LIQ_PARTIAL_ABOVE_MICRO, "liquidation_partial_above_usd", spec.liquidation_partial_above_usd * MICRO),
        (L.S_LIQ_CHUNK_PPM, "liquidation_chunk_ppm", spec.liquidation_chunk_ppm),
        (L.S_LIQ_COOLDOWN_NS, "liquidation_cooldown_s", spec.liquidation_cooldown_s * ns),
        (L.S_LIQ_BUFFER_PPM, "liquidation_buffer_ppm", spec.liquidation_buffer_ppm),
        (L.S_FUND_ACCOUNT, "insurance_fund_account", spec.insurance_fund_account),
        (L.S_MAX_CLOCK_STEP_NS, "max_clock_step_s", spec.max_clock_step_s * ns),
        (L.S_MAX_POSITION_LOTS, "max_price_usd", max_position_lots(spec)),
        (L.S_LIQ_MAX_FEE_PPM, "liquidation_max_fee_ppm", spec.liquidation_max_fee_ppm),
        (L.S_LIQ_MAX_SWEEP_MICRO, "liquidation_max_per_sweep_usd", spec.liquidation_max_per_sweep_usd * MICRO),
        (L.S_LIQ_MAX_MINUTE_MICRO, "liquidation_max_per_minute_usd", spec.liquidation_max_per_minute_usd * MICRO),
        (L.S_LIQ_MAX_FUND_LOSS_MINUTE_MICRO, "insurance_max_loss_per_minute_usd",
         spec.insurance_max_loss_per_minute_usd * MICRO),
        (L.S_LIQ_THROTTLE_PPM, "liquidation_throttle_ppm", spec.liquidation_throttle_ppm),
        (L.S_FUND_UNWIND_CHUNK_MICRO, "fund_unwind_chunk_usd", spec.fund_unwind_chunk_usd * MICRO),
        (L.S_FUND_UNWIND_LIMIT_BPS, "fund_unwind_limit_bps", spec.fund_unwind_limit_bps),
        (L.S_FUND_UNWIND_MINUTE_MICRO, "fund_unwind_per_minute_usd", spec.fund_unwind_per_minute_usd * MICRO),
    )
    row = np.zeros(L.N_SPEC_COLS, dtype=np.int64)
    for col, field, value in columns:
        if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
            raise MarketSpecError(f"market {sym!r}: {field} = {clip_text(getattr(spec, field))} is too large for "
                                  "the kernel's int64 spec row")
        row[col] = value
    return row


def _top_of_ladder_micro(spec: MarketSpec) -> int:
    """One lot's notional at the top of the price ladder (micro-USD): what the int64 bounds scale by."""
    return price_to_ticks(spec, spec.max_price_usd) * micro_per_tick_lot(spec)


def max_position_lots(spec: MarketSpec) -> int:
    """The largest worst-case position (lots) the gate admits: its notional at the top of the price
    ladder stays 64x inside int64 (room for equity sums over markets and ppm products done by split
    multiplication), and never above MAX_POSITION_LOTS."""
    return min(MAX_POSITION_LOTS, _INT64_MAX // (_top_of_ladder_micro(spec) * 64))


def max_open_interest_lots(spec: MarketSpec) -> int:
    """The most lots that may be open in the market whatever its configured cap: their notional at
    the top of the price ladder stays 256x inside int64, so the losses of every market a venue can list
    (perp.admin.MAX_MARKETS, 64), all paid by one fund, sum inside 2^61 beside deposits of at most 2^62
    -- the fund's cash and every debt sum stay inside int64. The per-account position bound
    (`max_position_lots`) alone did not: 66 shorts opened at the bottom of a wide ladder and closed
    at its top left 9.5e18 micro-USD of flat debt, and the fund's balance wrapped."""
    return _INT64_MAX // (_top_of_ladder_micro(spec) * 256)


def open_interest_cap_in_force(spec: MarketSpec) -> int:
    """The open-interest cap the kernel enforces (lots, > 0): the configured one (0: none), never
    above `max_open_interest_lots`."""
    safe = max_open_interest_lots(spec)
    cap = spec.open_interest_cap_lots
    return safe if cap <= 0 or cap > safe else cap


def tier_schedule(spec: MarketSpec) -> TierSchedule:
    """The market's validated leverage tiers."""
    return validate_tiers(spec.symbol, spec.tier)


def mark_alpha_ppm(sample_interval_s: int, half_life_s: int) -> int:
    """EMA weight per sample: 1 - 2^(-interval/half_life), in ppm, rounded half to even, at least 1.

    Computed once at load (a float at the edge); the kernel only sees the integer.
    """
    alpha = 1.0 - math.pow(2.0, -sample_interval_s / half_life_s)
    return max(1, round(alpha * MICRO))


def load_markets(source: str | Path | None = None) -> MarketsConfig:
    """Load and validate a markets TOML file; `None` loads the embedded default `markets.toml`."""
    if source is None:
        text = resources.files("perp").joinpath("markets.toml").read_text(encoding="utf-8")
        where = "embedded markets.toml"
    else:
        text = Path(source).read_text(encoding="utf-8")
        where = str(source)
    return parse_markets(text, where)


def parse_markets(text: str, where: str = "markets") -> MarketsConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MarketSpecError(f"{where}: not valid TOML: {exc}") from None
    try:
        config = msgspec.convert(raw, MarketsConfig)
    except msgspec.ValidationError as exc:
        raise MarketSpecError(f"{where}: {exc}") from None
    if not config.market:
        raise MarketSpecError(f"{where}: no [[market]] defined")
    seen: set[str] = set()
    for spec in config.market:
        validate_spec(spec)
        if spec.symbol in seen:
            raise MarketSpecError(f"{where}: market {spec.symbol!r} defined twice")
        seen.add(spec.symbol)
    return config
