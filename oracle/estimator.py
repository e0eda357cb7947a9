"""The robust fix estimator for venues that publish raw quotes (venue, price, time).

Rule, in order (``estimate_fix``):
1. Observations with an unusable price (malformed, not finite, <= 0, outside [tick, max_price]) are
   set aside as ``invalid_price`` with the code of the reason.
2. Only observations in the window ``(strike - window_s, strike]`` count; others are
   ``outside_window``.
3. Each venue contributes one quote: its latest in the window; on equal times the lowest price
   (then the shortest text) wins. The others are ``superseded``. One venue cannot outvote the rest
   by quoting often.
4. ``median`` = median of the venues' quotes (mean of the two middle ones for an even count);
   ``residual`` = quote − median; ``MAD`` = median of |residual|. A quote with
   ``|residual| > k·MAD`` is ``rejected_outlier`` (k = 3 by default). With MAD = 0 (more than half
   the venues quote exactly the median) every other quote is an outlier; the fix is then the median.
5. Fewer than ``min_venues`` venues before or after the rejection: the fix is *suppressed* with a
   reason. Otherwise the fix is the median of the surviving quotes.

Invariants:
- All arithmetic is exact ``Decimal`` under a context that traps ``Inexact``: any rounding would be
  an exception, so a counterparty with the same inputs computes the same fix to the last digit.
  The only rounding is the documented one to ticks (half up) in ``fix_price_ticks``.
- The result (including the order of ``verdicts``) does not depend on the order of the inputs, and a
  fix lies within the range of the surviving quotes.
- Every input appears in ``verdicts`` once, with its status and (for venue quotes) its residual.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import (
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)

import msgspec

from oracle.errors import OracleCode, OracleError, Rejection
from oracle.records import FixRecord, Vintage, check_price
from oracle.units import NS_PER_S, parse_decimal, parse_tick_size

_EXACT = Context(prec=80, traps=[Inexact, InvalidOperation, DivisionByZero, Overflow])


class Observation(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    venue: str
    price_usd: str
    observed_ts_ns: int


class EstimatorConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    window_s: int = 24 * 3600
    mad_k: str = "3"
    min_venues: int = 3
    tick_size_usd: str = "0.0001"
    max_price_usd: str = "1000"


class ObservationVerdict(msgspec.Struct, frozen=True, kw_only=True):
    venue: str
    price_usd: str
    observed_ts_ns: int
    status: str  # used | rejected_outlier | superseded | outside_window | invalid_price
    residual_usd: str | None = None
    code: int | None = None


class Estimate(msgspec.Struct, frozen=True, kw_only=True):
    strike_ts_ns: int
    suppressed: bool
    suppression_reason: str | None
    fix_price_usd: str | None
    fix_price_ticks: int | None
    median_usd: str | None
    mad_usd: str | None
    threshold_usd: str | None
    venues_quoted: int
    venues_used: int
    verdicts: tuple[ObservationVerdict, ...]

    def to_fix_record(self, *, series_id: str, fix_date: dt.date, source: str,
                      published_ts_ns: int | None = None) -> FixRecord:
        """The provisional record a publisher would emit for this estimate."""
        return FixRecord(series_id=series_id, fix_date=fix_date, strike_ts_ns=self.strike_ts_ns,
                         published_ts_ns=self.strike_ts_ns if published_ts_ns is None else published_ts_ns,
                         vintage=Vintage.PROVISIONAL, source=source, price_usd=self.fix_price_usd,
                         suppression_reason=self.suppression_reason)


def _median(values: list[Decimal]) -> Decimal:
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2


def _text(value: Decimal) -> str:
    """Canonical text (no trailing zeros), so equal values print alike whatever the input order."""
    return format(value.normalize(_EXACT), "f")


def estimate_fix(observations: Iterable[Observation], strike_ts_ns: int,
                 config: EstimatorConfig = EstimatorConfig()) -> Estimate:
    """Robust median of venue quotes before ``strike_ts_ns``; see the module docstring."""
    tick = parse_tick_size(config.tick_size_usd)
    max_price = parse_decimal(config.max_price_usd)
    k = parse_decimal(config.mad_k)
    if not k.is_finite() or k < 0 or config.min_venues < 1 or config.window_s <= 0:
        raise OracleError(OracleCode.BAD_CONFIG, "estimator needs mad_k >= 0, min_venues >= 1, window_s > 0")
    verdicts: list[ObservationVerdict] = []
    latest: dict[str, tuple[tuple[int, Decimal, int, str], Observation, Decimal]] = {}
    window_start = strike_ts_ns - config.window_s * NS_PER_S

    def verdict(obs: Observation, status: str, **extra: object) -> None:
        verdicts.append(ObservationVerdict(venue=obs.venue, price_usd=obs.price_usd,
                                           observed_ts_ns=obs.observed_ts_ns, status=status, **extra))

    with localcontext(_EXACT):
        for obs in observations:
            price = check_price(obs.price_usd, "quote", tick, max_price)
            if isinstance(price, Rejection):
                verdict(obs, "invalid_price", code=int(price.code))
                continue
            if not window_start < obs.observed_ts_ns <= strike_ts_ns:
                verdict(obs, "outside_window")
                continue
            key = (-obs.observed_ts_ns, price, len(obs.price_usd), obs.price_usd)
            held = latest.get(obs.venue)
            if held is not None and held[0] <= key:
                verdict(obs, "superseded")
                continue
            if held is not None:
                verdict(held[1], "superseded")
            latest[obs.venue] = (key, obs, price)

        quotes = {venue: price for venue, (_, _, price) in latest.items()}
        median = mad = threshold = None
        survivors: dict[str, Decimal] = {}
        if quotes:
            median = _median(list(quotes.values()))
            residuals = {venue: price - median for venue, price in quotes.items()}
            mad = _median([abs(r) for r in residuals.values()])
            threshold = k * mad
            for venue, (_, obs, price) in latest.items():
                outlier = abs(residuals[venue]) > threshold
                verdict(obs, "rejected_outlier" if outlier else "used", residual_usd=_text(residuals[venue]))
                if not outlier:
                    survivors[venue] = price
        reason = None
        if len(quotes) < config.min_venues:
            reason = f"only {len(quotes)} venues quoted in the window (minimum {config.min_venues})"
        elif len(survivors) < config.min_venues:
            reason = f"only {len(survivors)} venues survived the {config.mad_k}xMAD filter (minimum {config.min_venues})"
        fix = None if reason is not None else _median(list(survivors.values()))
        fix_ticks = None
        if fix is not None:
            with localcontext(Context(prec=80)):
                fix_ticks = int((fix / tick).to_integral_value(rounding=ROUND_HALF_UP))

    verdicts.sort(key=lambda v: (v.venue, v.observed_ts_ns, v.price_usd, v.status))
    return Estimate(
        strike_ts_ns=strike_ts_ns, suppressed=reason is not None, suppression_reason=reason,
        fix_price_usd=None if fix is None else _text(fix), fix_price_ticks=fix_ticks,
        median_usd=None if median is None else _text(median), mad_usd=None if mad is None else _text(mad),
        threshold_usd=None if threshold is None else _text(threshold),
        venues_quoted=len(quotes), venues_used=len(survivors), verdicts=tuple(verdicts),
    )
