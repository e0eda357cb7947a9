"""Replay a series' fixes through the hourly anchor and summarise the path (pure; no I/O).

Invariants:
- The replay runs from the first hour after the first usable fix to the hour before the next
  scheduled strike after the last record (``last strike + 24 h``, exclusive), one point per hour.
- Figures are exact: the largest hourly move is ``|Δ anchor ticks| / previous anchor ticks`` as a
  ``Decimal`` percentage, quantized half-even to 1e-6 % only for display.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext

import msgspec

from oracle.anchor import AnchorConfig, AnchorPoint, HourlyAnchor
from oracle.errors import Rejection
from oracle.records import FixRecord
from oracle.units import DAY_NS

PCT_QUANTUM = Decimal("0.000001")


class ReplaySummary(msgspec.Struct, frozen=True, kw_only=True):
    hours: int
    final_anchor_ticks: int | None
    max_hourly_move_pct: Decimal


def replay_records(records: Sequence[FixRecord], config: AnchorConfig) -> tuple[list[AnchorPoint], list[Rejection]]:
    """All hourly points over ``records`` (stream order) and what was rejected."""
    if not records:
        return [], []
    until = max(r.strike_ts_ns for r in records) + DAY_NS - 1
    return HourlyAnchor(config).replay(records, until)


def max_hourly_move_pct(points: Sequence[AnchorPoint]) -> Decimal:
    with localcontext(Context(prec=40)):
        moves = [Decimal(abs(b.anchor_price_ticks - a.anchor_price_ticks) * 100) / Decimal(a.anchor_price_ticks)
                 for a, b in zip(points, points[1:])]
        best = max(moves, default=Decimal(0))
        return best.quantize(PCT_QUANTUM, rounding=ROUND_HALF_EVEN)


def summarize(points: Sequence[AnchorPoint]) -> ReplaySummary:
    return ReplaySummary(hours=len(points),
                         final_anchor_ticks=points[-1].anchor_price_ticks if points else None,
                         max_hourly_move_pct=max_hourly_move_pct(points))
