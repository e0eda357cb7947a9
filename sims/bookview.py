"""Read-only views of a market's book and the mark's proven push bound, as functions.

Built on the engine's level totals and spec rows (read-only; `levels` equals `Engine.open_orders()`
summed per price, tested); nothing here changes the engine.

- `levels(engine, m)`: aggregated (price_ticks, lots) per side, best first.
- `depth(engine, m, within_bps)`: lots and notional (micro-USD, exact: lots x ticks x micro per
  tick-lot) resting within `within_bps` of the mid on each side (bids at or above
  mid x (1 - bps), asks at or below mid x (1 + bps), compared in integers).
- `impact(engine, m, side, notional_micro)`: what filling a notional against one side costs: the
  levels walked the way the engine's `perp.book.impact_price_ut` walks them (need = the notional
  in tick-lots rounded up; at each level `ceil(need / price)` lots, capped by the level), the
  average price in micro-ticks (floor), the lots and the notional taken; None when the side
  cannot absorb it. With the spec's impact notional it is the engine's own impact price (tested).
- `basis_sample_ut(engine, m)`: the mark's input now: (impact mid - index) in micro-ticks, clamped
  to the band, 0 when either side lacks the impact notional (perp.book.basis_sample_ut's rule).
- `push_bound_ticks(spec, index_ticks, hold_s, ...)`: docs/mark_price.md's bound as a function:
  a book held `hold_s` seconds whose basis samples never exceed `sample_cap_ticks` in absolute
  value (default: the band, i.e. any book), starting from a basis EMA of `basis0_ticks`, leaves

      |mark - index| <= |basis0| x k + min(band, cap) x (1 - k) + 1/2 tick + slack,
      k = (1 - alpha)^n,  n = hold_s // mark_sample_interval_s,

  because every EMA step is a convex combination of the EMA and a sample bounded by the cap. The
  integer EMA truncates each step toward zero but moves at least one micro-tick; that minimum step
  can overshoot the real-valued EMA by at most 1/alpha micro-ticks (`slack`, under 0.001 tick on
  H100-PERP), and the rounding of the basis to ticks adds the half tick.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from perp import layout as L
from perp.engine import Engine
from perp.markets import MarketSpec, mark_alpha_ppm

MICRO = 1_000_000


class SideDepth(NamedTuple):
    lots: int
    notional_micro: int


class Depth(NamedTuple):
    mid_ticks: int | None  # None when a side is empty (and then both depths are 0)
    bid: SideDepth
    ask: SideDepth


class Impact(NamedTuple):
    avg_price_ut: int  # micro-ticks, floor (the engine's impact price rule)
    lots: int
    notional_micro: int  # what the lots cost at their levels' prices


def levels(engine: Engine, market: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(bids, asks): int64 arrays of rows (price_ticks, lots), best first -- the engine's own level
    totals (`state.levels[market, side, price - min_tick, LV_QTY]`, read, never written), equal to
    the live orders of `Engine.open_orders()` summed per price (tested)."""
    st = engine.state
    lo = int(st.spec[market, L.S_MIN_TICK])
    out = []
    for side, best_first in ((L.BUY, -1), (L.SELL, 1)):
        qty = st.levels[market, side, :, L.LV_QTY]
        at = np.flatnonzero(qty)
        out.append(np.stack([at + lo, qty[at]], axis=1)[::best_first].astype(np.int64))
    return out[0], out[1]


Book = tuple[np.ndarray, np.ndarray]


def depth(engine: Engine, market: int = 0, within_bps: int = 100, book: Book | None = None) -> Depth:
    bids, asks = book if book is not None else levels(engine, market)
    if not len(bids) or not len(asks):
        return Depth(None, SideDepth(0, 0), SideDepth(0, 0))
    mptl = int(engine.state.spec[market, L.S_MICRO_PER_TICK_LOT])
    mid = (int(bids[0, 0]) + int(asks[0, 0])) // 2
    near_bids = bids[bids[:, 0] * 10_000 >= mid * (10_000 - within_bps)]
    near_asks = asks[asks[:, 0] * 10_000 <= mid * (10_000 + within_bps)]

    def side(rows: np.ndarray) -> SideDepth:
        return SideDepth(int(rows[:, 1].sum()), sum(int(p) * int(q) for p, q in rows.tolist()) * mptl)

    return Depth(mid, side(near_bids), side(near_asks))


def impact(engine: Engine, market: int, side: str, notional_micro: int | None = None,
           book: Book | None = None) -> Impact | None:
    """Filling `notional_micro` (default: the spec's impact notional) against the resting `side`
    ("buy": the bids, as a seller's market order would; "sell": the asks)."""
    st = engine.state
    mptl = int(st.spec[market, L.S_MICRO_PER_TICK_LOT])
    need = int(st.spec[market, L.S_IMPACT_TICK_LOTS]) if notional_micro is None else -(-notional_micro // mptl)
    bids, asks = book if book is not None else levels(engine, market)
    lots = notional = 0
    for p, q in (bids if side == "buy" else asks).tolist():
        take = min(-(-need // p), q)
        lots += take
        notional += take * p
        need -= take * p
        if need <= 0:
            return Impact(notional * MICRO // lots, lots, notional * mptl)
    return None


def basis_sample_ut(engine: Engine, market: int = 0, book: Book | None = None) -> int:
    """(impact mid - index) in micro-ticks, clamped to the mark band (0 without an index or when
    either side lacks the impact notional): what the next mark sample takes (perp.book.basis_sample_ut)."""
    index = engine.index_ticks(market)
    book = book if book is not None else levels(engine, market)
    bid, ask = impact(engine, market, "buy", book=book), impact(engine, market, "sell", book=book)
    if index <= 0 or bid is None or ask is None:
        return 0
    x = (bid.avg_price_ut + ask.avg_price_ut) // 2 - index * MICRO
    band = index * int(engine.state.spec[market, L.S_MARK_BAND_BPS]) * 100
    return max(-band, min(band, x))


def push_bound_ticks(spec: MarketSpec, index_ticks: int, hold_s: int, sample_cap_ticks: float | None = None,
                     basis0_ticks: float = 0.0) -> float:
    """The most |mark - index| (ticks) can be after a book is held `hold_s` seconds (module doc)."""
    alpha_ppm = mark_alpha_ppm(spec.mark_sample_interval_s, spec.mark_ema_half_life_s)
    n = max(0, hold_s) // spec.mark_sample_interval_s
    keep = math.pow(1.0 - alpha_ppm / MICRO, n)
    band = index_ticks * spec.mark_band_bps / 10_000
    cap = band if sample_cap_ticks is None else min(band, abs(sample_cap_ticks))
    slack = 1.0 / alpha_ppm  # micro-ticks -> ticks: (MICRO / alpha_ppm) / MICRO
    return min(abs(basis0_ticks), band) * keep + cap * (1.0 - keep) + 0.5 + slack
