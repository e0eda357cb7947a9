"""Validity of the anchor and what each validity gates. The table here is the contract with risk.

Invariants:
- ``Validity`` values are listed from best to worst; ``SEVERITY`` ranks them and an anchor point's
  ``validity`` is the worst of all conditions that hold (``flags`` lists every one of them).
- ``GATES`` has exactly one row per validity, and the rows are monotone: a worse validity is never
  looser than a better one on any gate *except* where the doc says otherwise (there is no exception
  today; ``tests/oracle/test_validity.py`` checks it).
- The table in ``docs/oracle.md`` is generated from / checked against ``GATES`` by a test, so the
  documentation and the code cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum

import msgspec


class Validity(str, Enum):
    FRESH = "fresh"  # latest usable fix struck within fresh_max_age_s
    REVISED = "revised"  # a revision landed after the provisional window: recorded, not applied
    AGING = "aging"  # today's fix is overdue (older than fresh_max_age_s, not yet stale)
    SUPPRESSED = "suppressed"  # the latest fix day was suppressed by the publisher; target held
    DIVERGED = "diverged"  # sources disagree past max_source_spread_ppm; primary source used
    TOO_VOLATILE = "too_volatile"  # a fix jumped past max_fix_jump_ppm (or was absurd); held for its final
    NON_POSITIVE = "non_positive"  # the publisher's latest price was not a positive finite number
    STALE = "stale"  # no usable fix for stale_after_s


SEVERITY: dict[Validity, int] = {v: i for i, v in enumerate(Validity)}


class Gates(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What risk and the engine do while the anchor has a given validity.

    - ``funding_frozen``: no funding accrues for the hour (the premium is not charged or paid).
    - ``margin_on_worse_of_anchor_and_fix``: pre-trade margin values positions at whichever of the
      anchor, the last usable fix and any pending (held or late-revised) fix is worse for the account.
    - ``reduce_only``: only orders that reduce a position are accepted.
    - ``leverage_scale_ppm``: the market's maximum leverage is multiplied by this (1_000_000 = 1x).
    - ``liquidations_throttled``: at most a bounded slice of each unhealthy position per sweep.
    - ``order_band_frozen``: the price band for orders stays centred on the anchor of the last
      fresh hour instead of following the anchor.
    """

    funding_frozen: bool
    margin_on_worse_of_anchor_and_fix: bool
    reduce_only: bool
    leverage_scale_ppm: int
    liquidations_throttled: bool
    order_band_frozen: bool


def _g(funding_frozen: bool, worse_of: bool, reduce_only: bool, leverage_scale_ppm: int,
       throttled: bool, band_frozen: bool) -> Gates:
    return Gates(funding_frozen=funding_frozen, margin_on_worse_of_anchor_and_fix=worse_of,
                 reduce_only=reduce_only, leverage_scale_ppm=leverage_scale_ppm,
                 liquidations_throttled=throttled, order_band_frozen=band_frozen)


#                          funding  worse-of reduce  leverage  throttle band
GATES: dict[Validity, Gates] = {
    Validity.FRESH:        _g(False, False, False, 1_000_000, False, False),
    Validity.REVISED:      _g(False, True,  False, 1_000_000, False, False),
    Validity.AGING:        _g(False, True,  False,   750_000, False, False),
    Validity.SUPPRESSED:   _g(True,  True,  False,   500_000, True,  True),
    Validity.DIVERGED:     _g(True,  True,  False,   500_000, True,  True),
    Validity.TOO_VOLATILE: _g(True,  True,  False,   500_000, True,  True),
    Validity.NON_POSITIVE: _g(True,  True,  True,    250_000, True,  True),
    Validity.STALE:        _g(True,  True,  True,    250_000, True,  True),
}


def worst(validities: Iterable[Validity]) -> Validity:
    """The most severe of ``validities`` (FRESH when empty)."""
    return max(validities, key=SEVERITY.__getitem__, default=Validity.FRESH)


def gates_for(validities: Iterable[Validity]) -> Gates:
    """The strictest combination of the rows of every flagged validity (OR of flags, min leverage)."""
    rows = [GATES[v] for v in validities] or [GATES[Validity.FRESH]]
    return Gates(
        funding_frozen=any(r.funding_frozen for r in rows),
        margin_on_worse_of_anchor_and_fix=any(r.margin_on_worse_of_anchor_and_fix for r in rows),
        reduce_only=any(r.reduce_only for r in rows),
        leverage_scale_ppm=min(r.leverage_scale_ppm for r in rows),
        liquidations_throttled=any(r.liquidations_throttled for r in rows),
        order_band_frozen=any(r.order_band_frozen for r in rows),
    )
