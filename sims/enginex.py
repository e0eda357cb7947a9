"""What the simulator needs from the engine beyond its public views, built on public functions only.

- `health_at`: every account's equity and maintenance margin at an arbitrary price per market (the
  index instead of the mark, a shocked price), through `risk.sweep.risk_sweep_numpy` -- risk's whole-array
  form of the sweep kernel the liquidation sweep runs (same arguments, same outputs; the numba kernel's
  thread start-up costs more than the whole call on a few hundred accounts, and the runner calls this
  before every sweep) -- with the price array swapped. Unsettled funding is not included (the kernel's
  `settle_funding` is off, as in `Engine.risk_sweep`).
- `fork`: an in-memory copy of an engine (`Engine(markets, state=copied arrays)`): run one warm-up,
  branch many scenarios from it, no files. The fork's `state_hash()` equals the original's.

Candidates for the engine's API (perp/engine.py); noted in docs/sims.md.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from perp import layout as L
from perp.engine import Engine


class Health(NamedTuple):
    equity_micro: np.ndarray  # per account id, up to the high-water mark
    maintenance_micro: np.ndarray
    unhealthy: np.ndarray  # account ids with equity < maintenance at the given prices


def health_at(engine: Engine, price_ticks: np.ndarray | list[int]) -> Health:
    from risk.sweep import risk_sweep_numpy as risk_sweep

    st = engine.state
    hwm = int(st.g[L.G_ACCOUNT_HWM])
    n_mkt = st.mkt.shape[0]
    prices = np.ascontiguousarray(np.asarray(price_ticks, dtype=np.int64))
    if prices.shape != (n_mkt,):
        raise ValueError(f"need one price per market ({n_mkt}), got shape {prices.shape}")
    equity = np.zeros(hwm, np.int64)
    maint = np.zeros(hwm, np.int64)
    unhealthy = np.zeros(hwm, np.int64)
    count, _ = risk_sweep(
        st.collateral_micro[:hwm], st.position_lots[:hwm], st.cost_basis_micro[:hwm], prices,
        np.ascontiguousarray(st.spec[:, L.S_MICRO_PER_TICK_LOT]),
        np.ascontiguousarray(st.tiers[:, :, L.T_BOUND_MICRO]), np.ascontiguousarray(st.tiers[:, :, L.T_MMR_PPM]),
        np.ascontiguousarray(st.tiers[:, :, L.T_MM_DEDUCTION_MICRO]), False, np.zeros(n_mkt, np.int64),
        np.ascontiguousarray(st.mkt[:, L.M_INDEX]), equity, maint, np.zeros(hwm, np.int64), unhealthy)
    return Health(equity, maint, unhealthy[:count].copy())


def fork(engine: Engine) -> Engine:
    """An independent in-memory copy (arrays copied; nothing shared, nothing written)."""
    state = type(engine.state)(*(np.array(a, copy=True) for a in engine.state))
    return Engine(engine.markets, state=state, admin=engine.admin.copy())
