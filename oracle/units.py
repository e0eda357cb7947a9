"""Units of the oracle: exact decimal parsing, micro-ticks, named roundings, time, half-lives.

Invariants:
- USD prices enter as decimal strings and are converted with ``decimal.Decimal`` only; no float ever
  touches a price (``int(x * scale)`` on floats is the bug this module exists to prevent).
- Internally a price is an ``int`` of **micro-ticks** (``MICRO_TICKS_PER_TICK`` = 10**6 per tick).
  USD -> micro-ticks rounds ROUND_HALF_EVEN and is exact for any price with at most six more decimals
  than the tick (the real fixes have four decimals; the default tick is 0.0001 USD, so it is exact).
- Micro-ticks -> published ticks rounds **half up** (toward +infinity on a tie; prices are positive,
  so this equals half away from zero). Half up is chosen over half-even because it commutes with
  shifting by whole ticks: ``round(x + k) == round(x) + k`` for integer ``k``. That is what lets a
  cap of ``k`` whole ticks on the internal move also bound the *published* move by ``k`` ticks.
- The EMA weight ``alpha`` is an ``int`` in parts per billion, computed once per config with
  ``Decimal.ln``/``Decimal.exp`` (correctly rounded by the decimal spec at 50 digits) and rounded
  half-even to ppb, so the same half-life gives the same alpha on every machine.
- Time is UTC nanoseconds as ``int``; nothing here reads a clock.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation, localcontext

from oracle.errors import OracleCode, OracleError

MICRO_TICKS_PER_TICK = 1_000_000
PPB = 1_000_000_000
PPM = 1_000_000
NS_PER_S = 1_000_000_000
HOUR_S = 3600
HOUR_NS = HOUR_S * NS_PER_S
DAY_NS = 24 * HOUR_NS
EXACT = Context(prec=60)


def parse_decimal(text: str) -> Decimal:
    """Parse a decimal string exactly; raises ``InvalidOperation`` on malformed text."""
    if not isinstance(text, str):
        raise InvalidOperation(f"price must be a decimal string, got {type(text).__name__}")
    return Decimal(text.strip(), EXACT)  # an explicit context: invalid text raises in any caller's context


def parse_tick_size(tick_size_usd: str) -> Decimal:
    """A positive, finite decimal string such as ``"0.0001"``."""
    try:
        tick = parse_decimal(tick_size_usd)
    except InvalidOperation as exc:
        raise OracleError(OracleCode.BAD_TICK_SIZE, f"tick size {tick_size_usd!r} is not a decimal") from exc
    if not tick.is_finite() or tick <= 0:
        raise OracleError(OracleCode.BAD_TICK_SIZE, f"tick size {tick_size_usd!r} must be positive and finite")
    return tick


def usd_to_micro_ticks(price_usd: Decimal, tick_usd: Decimal) -> int:
    """USD -> micro-ticks, ROUND_HALF_EVEN (exact when the price has <= tick decimals + 6)."""
    with localcontext(EXACT):
        scaled = price_usd / tick_usd * MICRO_TICKS_PER_TICK
        return int(scaled.to_integral_value(rounding=ROUND_HALF_EVEN))


def micro_to_ticks_half_up(micro_ticks: int) -> int:
    """Micro-ticks -> whole ticks, rounding a tie toward +infinity (floor(x + 1/2))."""
    return (micro_ticks + MICRO_TICKS_PER_TICK // 2) // MICRO_TICKS_PER_TICK


def ticks_to_usd(ticks: int, tick_usd: Decimal) -> Decimal:
    """Whole ticks -> exact USD with the tick's decimals (``31373`` of 0.0001 -> ``3.1373``); edges only."""
    with localcontext(EXACT):
        return (Decimal(ticks) * tick_usd).quantize(tick_usd)


def div_toward_target(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded away from zero (denominator > 0).

    Used for the EMA step: rounding the step *toward the target* means the anchor never stalls one
    micro-tick short of a constant fix, and because ``alpha <= 1`` it can never overshoot.
    """
    q = -((-abs(numerator)) // denominator)
    return q if numerator >= 0 else -q


def median_of_two_half_up(a: int, b: int) -> int:
    """Midpoint of two integers, a tie (odd sum) rounded toward +infinity."""
    return (a + b + 1) // 2


def alpha_ppb_for_half_life(half_life_s: int, step_s: int = HOUR_S) -> int:
    """EMA weight per step so that a gap halves every ``half_life_s``: ``1 - 2**(-step/half_life)``."""
    if half_life_s <= 0:
        raise OracleError(OracleCode.BAD_HALF_LIFE, f"half-life must be positive, got {half_life_s} s")
    with localcontext(Context(prec=50)):
        keep = (Decimal(-step_s) / Decimal(half_life_s) * Decimal(2).ln()).exp()
        alpha = (1 - keep) * PPB
        return max(1, int(alpha.to_integral_value(rounding=ROUND_HALF_EVEN)))


_HALF_LIFE = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_half_life_s(text: str) -> int:
    """``"6h"``, ``"90m"``, ``"3600s"``, ``"1d"`` -> seconds (a positive integer)."""
    match = _HALF_LIFE.match(text or "")
    if match is None:
        raise OracleError(OracleCode.BAD_HALF_LIFE,
                          f"half-life {text!r} must be an integer with a unit s, m, h or d (e.g. 6h)")
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds <= 0:
        raise OracleError(OracleCode.BAD_HALF_LIFE, f"half-life {text!r} must be positive")
    return seconds


def date_start_ns(day: dt.date) -> int:
    """00:00 UTC of ``day`` in nanoseconds."""
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)
    return int(midnight.timestamp()) * NS_PER_S


def ns_to_iso(ts_ns: int) -> str:
    """``2025-10-21T01:00:00Z`` (second resolution; for edges only)."""
    seconds, _ = divmod(ts_ns, NS_PER_S)
    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def next_hour_at_or_after(ts_ns: int) -> int:
    """The first whole UTC hour >= ``ts_ns``."""
    return -((-ts_ns) // HOUR_NS) * HOUR_NS
