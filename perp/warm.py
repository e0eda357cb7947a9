"""Compile, or load from numba's cache, every kernel a serving process calls, before it takes traffic.

numba compiles a kernel on its first call (or loads it from the cache directory, perp.numba_cache).
On a fresh machine that first call is the matching kernel's ~13 s compile: a server that opened its
port first made its first client wait that long, and clients with a 10 s handshake timeout gave up
(`perp bench gateway` on a cold cache did). `warm_kernels` runs one short scratch session -- every
command kind a venue sees, a trade, a funding hour, a crash into liquidation, the views the gateway
reads -- on a throwaway engine, so the compiles happen before the port opens, and the second time
(the cache warm) it costs a few hundred milliseconds.

Invariant: it touches no engine but its own; nothing it does reaches a journal or a state hash.
"""

from __future__ import annotations

import time

import msgspec
import numpy as np

from perp.commands import Amend, Cancel, CancelAll, Deposit, Liquidate, Place, SetIndex, SetLeverage, Withdraw
from perp import layout as L
from perp.markets import MarketsConfig, load_markets, micro_per_tick_lot, price_to_ticks, ticks_to_price

HOUR_NS = 3_600_000_000_000
START_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z: any time does; the engine's clock is its own


class WarmUp(msgspec.Struct, frozen=True):
    seconds: float
    event_kinds: frozenset[int]  # the kinds of event the session produced (perp.layout EV_*)
    liquidation_phases: frozenset[int]  # the waterfall's steps it went through (perp.layout LQ_*)


def warm_kernels(markets: MarketsConfig | None = None) -> WarmUp:
    """Run the scratch session on the venue's first market."""
    from perp.engine import Engine

    t0 = time.perf_counter()
    markets = markets if markets is not None else load_markets()
    spec = markets.market[0]
    sym = spec.symbol
    lo, hi = price_to_ticks(spec, spec.min_price_usd), price_to_ticks(spec, spec.max_price_usd)
    mid = (lo + hi) // 2
    px = lambda ticks: ticks_to_price(spec, ticks)  # noqa: E731
    size = max(spec.min_order_lots, 1)
    eng = Engine(markets, order_capacity=1 << 10, account_capacity=1 << 6, event_rows=1 << 12)
    ts = START_NS
    ev_kinds: set[int] = set()
    phases: set[int] = set()

    def run(*commands) -> None:
        nonlocal ts
        ts += 1_000_000_000
        rows = eng.submit_rows(eng.encode([msgspec.structs.replace(c, ts_ns=ts) for c in commands]))
        ev_kinds.update(np.unique(rows[:, L.E_KIND]).tolist())
        phases.update(rows[rows[:, L.E_KIND] == L.EV_LIQUIDATION, L.E_CODE].tolist())

    notional_micro = mid * size * micro_per_tick_lot(spec)
    run(SetIndex(ts_ns=0, market=sym, price=px(mid)),
        Deposit(ts_ns=0, account=16, amount_micro=10**12), Deposit(ts_ns=0, account=17, amount_micro=10**12),
        Deposit(ts_ns=0, account=18, amount_micro=notional_micro // 4))  # 4x: account 18 is liquidated by a halving
    run(Place(ts_ns=0, account=16, market=sym, side="buy", size_lots=size, price=px(mid - 1), client_order_id=1),
        Place(ts_ns=0, account=17, market=sym, side="sell", size_lots=size * 2, price=px(mid), client_order_id=2),
        Place(ts_ns=0, account=18, market=sym, side="buy", size_lots=size, order_type="market"),  # a trade
        SetLeverage(ts_ns=0, account=16, market=sym, leverage=2))
    run(Amend(ts_ns=0, account=17, market=sym, client_order_id=2, price=px(mid + 1)),
        Cancel(ts_ns=0, account=16, client_order_id=1), Withdraw(ts_ns=0, account=16, amount_micro=1))
    ts += HOUR_NS  # a funding hour
    run(Liquidate(ts_ns=0))
    run(CancelAll(ts_ns=0, account=17), SetIndex(ts_ns=0, market=sym, price=px(max(lo, mid // 2))),
        Liquidate(ts_ns=0))  # a crash: account 18 is bankrupt, no fund, no book: auto-deleveraging
    eng.risk_sweep()
    eng.open_orders()
    eng.market_view(0)
    eng.account(16)
    eng.ledger()
    eng.funding_positions()
    return WarmUp(time.perf_counter() - t0, frozenset(ev_kinds), frozenset(phases))

