"""Hourly funding: premium samples, the rate rule, and exact zero-sum settlement.

Units: prices of the index/anchor in ticks; impact prices in micro-ticks (ticks * 1_000_000, int64:
an average fill price is not on the tick grid); premiums and rates in parts per billion (ppb,
1e9 = 100%); money in micro-USD; sizes in lots.

The rule (`hourly_rate_ppb`), all integers:

    P    = mean of the hour's premium samples, rounded half away from zero
    rate = P + clamp(interest - P, -clamp, +clamp)
    rate = clamp(rate, -cap, +cap)

A positive rate means longs pay shorts. `hourly_rate_ppb` is a pure Python function on a list or
numpy array of integer samples so anyone can check it against a venue's published premiums;
`hourly_rate_ppb_kernel` is the same rule for kernels (tests prove them equal).

Premium sample (`premium_ppb`, Binance style): with the index I in micro-ticks,
`(max(0, impact_bid - I) - max(0, I - impact_ask)) * 1e9 / I`, rounded toward zero (so a mirrored
book gives the negated premium). If either impact price is missing (<= 0: that side lacks the impact
notional), the premium is 0: a thin book must not steer funding.

Settlement (`settle_funding_market`, and inside `risk.sweep.risk_sweep`): a position of `lots` at
anchor `A` ticks with `k` micro-USD per tick-lot owes `lots * A * k * rate / 1e9` exactly. Each
account's collateral changes by `floor(-lots * A * k * rate / 1e9)`: the payer pays the ceiling of
what it owes, the receiver gets the floor of what it is owed. The remainder `-sum(deltas)` goes to
the insurance fund's ledger, so `sum(deltas) + remainder == 0` exactly. When longs and shorts net to
zero lots (always true of a complete position table) the remainder is `>= 0` and below the number of
non-zero positions (each floor loses less than one micro-USD).

Invariants:
- no float ever touches a rate, premium or payment;
- `hourly_rate_ppb(-s, -i, c, k) == -hourly_rate_ppb(s, i, c, k)` (every rounding is symmetric);
- |rate| <= cap; a rate is never more than `clamp` away from the average premium before the cap.

Anchor validity (the oracle's `Gates.funding_frozen`, see docs/risk.md): a sample taken while the
anchor is frozen is not a premium and is only counted; `funding_rate_for_hour_ppb` pro-rates the
hour's rate by unfrozen samples / samples in a full hour (as the engine, risk.ledger.funding_rate_now,
does: a market's first partial hour and frozen samples both dilute it), and pays nothing when the
anchor is frozen at the hour.

Preconditions (the engine's position and price limits keep them): |lots * A * k| <= INT64_MAX - 1e9;
|rate| <= 1e9 (100% per hour); impact prices below 9.2e9 ticks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import njit

from risk.errors import RiskCode, RiskError
from risk.intmath import MICRO, ppb_fast_max, ppb_of_floor, ppb_of_floor_fast

# Defaults (per market, operator-set): the cap is the DESIGN's 0.05% per hour.
DEFAULT_CAP_PPB = 500_000  # 0.05% per hour
DEFAULT_CLAMP_PPB = 500_000  # 0.05%: how far the rate may sit from the premium toward interest
DEFAULT_INTEREST_PPB = 0  # per hour; Binance/Hyperliquid use 0.01% per 8 h = 12_500 ppb per hour
DEFAULT_SAMPLE_EVERY_NS = 60 * 1_000_000_000  # one premium sample a minute
DEFAULT_SAMPLES_IN_FULL_HOUR = 3600 * 1_000_000_000 // DEFAULT_SAMPLE_EVERY_NS  # 60


def _as_int_samples(samples: Sequence[int] | np.ndarray) -> list[int]:
    out: list[int] = []
    for i, s in enumerate(samples):
        if isinstance(s, (bool, np.bool_)) or not isinstance(s, (int, np.integer)):
            raise RiskError(RiskCode.FUNDING_NON_INTEGER_SAMPLE, f"premium_samples_ppb[{i}]",
                            f"{s!r} is not an integer")
        out.append(int(s))
    return out


def _div_round_half_away(num: int, den: int) -> int:
    """num / den (den > 0) rounded to the nearest integer, halves away from zero."""
    q = (2 * abs(num) + den) // (2 * den)
    return q if num >= 0 else -q


def _clamp(x: int, lo: int, hi: int) -> int:
    return lo if x < lo else hi if x > hi else x


def hourly_rate_ppb(premium_samples_ppb: Sequence[int] | np.ndarray, interest_ppb: int, clamp_ppb: int,
                    cap_ppb: int) -> int:
    """The hour's funding rate in ppb from its premium samples (see the module docstring).

    Raises RiskError: FUNDING_NO_SAMPLES (empty), FUNDING_NON_INTEGER_SAMPLE (a float or bool),
    FUNDING_NEGATIVE_BOUND (clamp or cap < 0).
    """
    if clamp_ppb < 0 or cap_ppb < 0:
        raise RiskError(RiskCode.FUNDING_NEGATIVE_BOUND, "clamp_ppb" if clamp_ppb < 0 else "cap_ppb",
                        "must be >= 0")
    samples = _as_int_samples(premium_samples_ppb)
    if not samples:
        raise RiskError(RiskCode.FUNDING_NO_SAMPLES, "premium_samples_ppb", "an hour needs at least one sample")
    avg = _div_round_half_away(sum(samples), len(samples))
    interest = int(interest_ppb)
    rate = avg + _clamp(interest - avg, -clamp_ppb, clamp_ppb)
    return _clamp(rate, -cap_ppb, cap_ppb)


def predicted_rate_ppb(premium_samples_so_far_ppb: Sequence[int] | np.ndarray, interest_ppb: int,
                       clamp_ppb: int, cap_ppb: int) -> int:
    """The rate published for the coming hour boundary: the rule on the samples taken so far.

    Before the first sample of the hour it is the rule on a zero premium (interest, clamped, capped).
    """
    samples = list(premium_samples_so_far_ppb)
    return hourly_rate_ppb(samples or [0], interest_ppb, clamp_ppb, cap_ppb)


def funding_rate_for_hour_ppb(premium_samples_ppb: Sequence[int] | np.ndarray,
                              frozen_at_hour: bool, interest_ppb: int, clamp_ppb: int, cap_ppb: int,
                              samples_in_full_hour: int = DEFAULT_SAMPLES_IN_FULL_HOUR) -> int:
    """The rate actually paid at the hour, given the oracle's funding gate: the engine's rule
    (risk.ledger.funding_rate_now and settle_funding; a test proves they pay the same).

    `premium_samples_ppb` holds the samples taken while the anchor was not frozen (the sample times at
    which it was add no premium and are not a divisor). Frozen at the hour, or no unfrozen sample: 0
    (nothing paid).
    Otherwise the rule's rate x unfrozen samples / `samples_in_full_hour` (funding interval / sample
    interval), rounded toward zero, when fewer than a full hour's samples are unfrozen: no funding
    accrues for the part of the hour the anchor was frozen, nor for the part before a market's first
    command (a partial hour), nor for a part a clock gap cut off.

    Raises RiskError FUNDING_NO_SAMPLES when `samples_in_full_hour` < 1.
    """
    if samples_in_full_hour < 1:
        raise RiskError(RiskCode.FUNDING_NO_SAMPLES, "samples_in_full_hour", "a full hour needs at least one sample")
    samples = list(premium_samples_ppb)
    if frozen_at_hour or not samples:
        return 0
    rate = hourly_rate_ppb(samples, interest_ppb, clamp_ppb, cap_ppb)
    if len(samples) >= samples_in_full_hour:
        return rate
    q = abs(rate) * len(samples) // samples_in_full_hour
    return q if rate >= 0 else -q


@njit(cache=True, error_model="numpy")
def rate_from_premium_sum_ppb(total_ppb, n_samples, interest_ppb, clamp_ppb, cap_ppb):
    """`hourly_rate_ppb` from the sum and count (>= 1) of the hour's samples (what the engine keeps).

    Requires |total| < 2**62 (true for any premium a real book produces).
    """
    mag = -total_ppb if total_ppb < 0 else total_ppb
    avg = (2 * mag + n_samples) // (2 * n_samples)
    if total_ppb < 0:
        avg = -avg
    pull = interest_ppb - avg
    if pull > clamp_ppb:
        pull = clamp_ppb
    elif pull < -clamp_ppb:
        pull = -clamp_ppb
    rate = avg + pull
    if rate > cap_ppb:
        rate = cap_ppb
    elif rate < -cap_ppb:
        rate = -cap_ppb
    return rate


@njit(cache=True)
def hourly_rate_ppb_kernel(premium_samples_ppb, n_samples, interest_ppb, clamp_ppb, cap_ppb):
    """`hourly_rate_ppb` for kernels: the first n_samples (>= 1) of an int64 array."""
    total = 0
    for i in range(n_samples):
        total += premium_samples_ppb[i]
    return rate_from_premium_sum_ppb(total, n_samples, interest_ppb, clamp_ppb, cap_ppb)


@njit(cache=True)
def premium_ppb(impact_bid_micro_ticks, impact_ask_micro_ticks, index_ticks):
    """One premium sample in ppb (see the module docstring); 0 when either impact price is <= 0.

    index_ticks must be > 0 (the engine samples only while the anchor is valid).
    """
    if index_ticks <= 0:
        raise ValueError("premium_ppb: index_ticks must be > 0")
    if impact_bid_micro_ticks <= 0 or impact_ask_micro_ticks <= 0:
        return 0
    index_ut = index_ticks * MICRO
    diff = 0
    if impact_bid_micro_ticks > index_ut:
        diff += impact_bid_micro_ticks - index_ut
    if impact_ask_micro_ticks < index_ut:
        diff -= index_ut - impact_ask_micro_ticks
    # diff * 1e9 / (index * 1e6) == diff * 1000 / index, rounded toward zero
    num = diff * 1000
    mag = -num if num < 0 else num
    q = mag // index_ticks
    return -q if num < 0 else q


@njit(cache=True)
def funding_delta_micro(position_lots, micro_per_lot_at_anchor, rate_ppb):
    """Change of an account's collateral for one position: floor(-lots * per_lot * rate / 1e9).

    Longs pay when rate > 0. Payer rounds up (pays the ceiling), receiver rounds down.
    """
    return ppb_of_floor(-position_lots * micro_per_lot_at_anchor, rate_ppb)


@njit(cache=True)
def funding_delta_fast(position_lots, micro_per_lot_at_anchor, rate_ppb, owed_fast_max):
    """`funding_delta_micro`, the same integer, for loops over many positions at one rate: with
    `owed_fast_max = risk.intmath.ppb_fast_max(rate_ppb)` computed once, a position owing at most
    that much takes one unsigned division (`ppb_of_floor_fast`), a larger one the split mul-div."""
    owed = -position_lots * micro_per_lot_at_anchor
    if -owed_fast_max <= owed <= owed_fast_max:
        return ppb_of_floor_fast(owed, rate_ppb)
    return ppb_of_floor(owed, rate_ppb)


@njit(cache=True)
def settle_funding_market(position_lots, mkt, anchor_ticks, micro_per_tick_lot, rate_ppb, delta_out):
    """Funding for every position of market `mkt` (column of position_lots int64[n_acc, n_mkt]).

    Writes each account's collateral change (micro-USD, signed) to delta_out[a] (0 for flat accounts);
    does not touch collateral. Returns the remainder for the insurance fund: -sum(delta_out), so that
    sum(delta_out) + remainder == 0.
    """
    per_lot = anchor_ticks * micro_per_tick_lot
    fast_max = ppb_fast_max(rate_ppb)
    total = 0
    for a in range(position_lots.shape[0]):
        lots = position_lots[a, mkt]
        d = 0
        if lots != 0:
            d = funding_delta_fast(lots, per_lot, rate_ppb, fast_max)
        delta_out[a] = d
        total += d
    return -total
