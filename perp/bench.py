"""`perp bench matching`: a seeded command stream through the numba engine and a plain-Python book.

The stream (1,000,000 commands by default) on the default H100-PERP market: about 70% limit adds
within 50 ticks of the mid, 25% cancels of earlier adds (by client order id), 5% IOC orders that
cross the spread. Both books see the same stream in the same run; the numba engine emits every
event and runs every market-rule check (status, sizes, band, open-order limit, duplicate ids).

The plain-Python book is the straightforward design a careful engineer writes first: a dict of
price -> deque per side, heaps for the best prices, lazy cancels (a cancelled order stays in its
deque, flagged, until matching reaches it), one tuple per event.
"""

from __future__ import annotations

import heapq
import time
from collections import deque

import numpy as np

from perp import layout as L
from perp.engine import Engine
from perp.markets import load_markets, price_to_ticks

T0 = 1_767_225_600_000_000_000


def make_stream(n: int, seed: int, mid_ticks: int, accounts: int = 10_000) -> np.ndarray:
    """Seeded command rows: index first, then adds / cancels / crossing IOCs."""
    rng = np.random.default_rng(seed)
    cmds = np.zeros((n, L.N_CMD_COLS), np.int64)
    cmds[0, L.C_KIND] = L.CK_SET_INDEX
    cmds[0, L.C_TS] = T0
    cmds[0, L.C_PRICE] = mid_ticks
    u = rng.random(n)
    sides = rng.integers(0, 2, n)
    offs = rng.integers(1, 51, n)
    sizes = rng.integers(1, 21, n)
    accts = rng.integers(0, accounts, n)
    pick = rng.random(n)
    next_clid = np.ones(accounts, np.int64)
    live_acct = np.empty(n, np.int64)
    live_clid = np.empty(n, np.int64)
    n_live = 0
    ts = T0
    for i in range(1, n):
        ts += 1_000_000  # 1 ms apart: 1,000 mark samples per million commands
        r = cmds[i]
        r[L.C_TS] = ts
        if u[i] < 0.25 and n_live > 0:
            j = int(pick[i] * n_live)
            r[L.C_KIND] = L.CK_CANCEL
            r[L.C_ACCOUNT] = live_acct[j]
            r[L.C_CLID] = live_clid[j]
            n_live -= 1
            live_acct[j] = live_acct[n_live]
            live_clid[j] = live_clid[n_live]
            continue
        a = accts[i]
        side = sides[i]
        r[L.C_KIND] = L.CK_PLACE
        r[L.C_ACCOUNT] = a
        r[L.C_SIDE] = side
        r[L.C_SIZE] = sizes[i]
        if u[i] < 0.30:  # crossing IOC
            r[L.C_TIF] = L.IOC
            r[L.C_PRICE] = mid_ticks + 50 if side == L.BUY else mid_ticks - 50
            # takers consume about what the 70% of adds bring (net of cancels), so the book stays
            # near a steady depth instead of growing without bound
            r[L.C_SIZE] = sizes[i] * 9
        else:
            r[L.C_TIF] = L.GTC
            r[L.C_PRICE] = mid_ticks - offs[i] if side == L.BUY else mid_ticks + offs[i]
            clid = next_clid[a]
            next_clid[a] = clid + 1
            r[L.C_CLID] = clid
            live_acct[n_live] = a
            live_clid[n_live] = clid
            n_live += 1
    return cmds


class PlainPythonBook:
    """dict price -> deque, heaps for best prices, lazy cancels; same rule checks as the engine."""

    def __init__(self, band_bps: int, min_size: int, max_size: int, max_open: int, lo: int, hi: int):
        self.bids: dict[int, deque] = {}
        self.asks: dict[int, deque] = {}
        self.bid_heap: list[int] = []  # negated prices
        self.ask_heap: list[int] = []
        self.by_clid: dict[tuple[int, int], list] = {}
        self.open_count: dict[int, int] = {}
        self.events: list[tuple] = []
        self.band_bps, self.min_size, self.max_size, self.max_open = band_bps, min_size, max_size, max_open
        self.lo, self.hi = lo, hi
        self.mark = 0
        self.next_id = 1
        self.active = True

    def process(self, cmds: np.ndarray) -> None:
        for c in cmds.tolist():
            kind = c[L.C_KIND]
            if kind == L.CK_PLACE:
                self.place(c)
            elif kind == L.CK_CANCEL:
                self.cancel(c)
            elif kind == L.CK_SET_INDEX:
                self.mark = c[L.C_PRICE]
                self.events.append(("index", c[L.C_PRICE]))

    def _best(self, side: int):
        heap, book = (self.bid_heap, self.bids) if side == L.BUY else (self.ask_heap, self.asks)
        while heap:
            p = -heap[0] if side == L.BUY else heap[0]
            q = book.get(p)
            while q and q[0][3] == 0:  # lazily drop cancelled/filled orders
                q.popleft()
            if q:
                return p, q
            book.pop(p, None)
            heapq.heappop(heap)
        return None, None

    def place(self, c) -> None:
        ev = self.events
        a, side, price, size, clid, tif = c[L.C_ACCOUNT], c[L.C_SIDE], c[L.C_PRICE], c[L.C_SIZE], c[L.C_CLID], c[L.C_TIF]
        if not self.active:
            ev.append(("rejected", L.CK_PLACE, 1018))
            return
        if size < self.min_size or size > self.max_size:
            ev.append(("rejected", L.CK_PLACE, 1006))
            return
        if price < self.lo or price > self.hi or abs(price - self.mark) > self.mark * self.band_bps // 10_000:
            ev.append(("rejected", L.CK_PLACE, 1009))
            return
        if clid and (a, clid) in self.by_clid:
            ev.append(("rejected", L.CK_PLACE, 1014))
            return
        if tif == L.GTC and self.open_count.get(a, 0) >= self.max_open:
            ev.append(("rejected", L.CK_PLACE, 1013))
            return
        oid = self.next_id
        self.next_id += 1
        ev.append(("accepted", oid, a, side, price, size))
        rem = size
        opp = L.SELL if side == L.BUY else L.BUY
        while rem:
            p, q = self._best(opp)
            if p is None or (side == L.BUY and p > price) or (side == L.SELL and p < price):
                break
            touched = False
            while q and rem:
                o = q[0]
                if o[3] == 0:
                    q.popleft()
                    continue
                if o[1] == a:  # self-trade: cancel the taker
                    ev.append(("cancelled", oid, rem, 1105))
                    rem = 0
                    break
                fill = min(rem, o[3])
                o[3] -= fill
                rem -= fill
                touched = True
                ev.append(("fill", o[0], o[1], p, fill, o[3]))
                ev.append(("fill", oid, a, p, fill, rem))
                if o[3] == 0:
                    q.popleft()
                    self.open_count[o[1]] -= 1
                    if o[2]:
                        del self.by_clid[(o[1], o[2])]
            if touched:
                ev.append(("book", opp, p, sum(x[3] for x in q)))
        if rem:
            if tif == L.GTC:
                book, heap = (self.bids, self.bid_heap) if side == L.BUY else (self.asks, self.ask_heap)
                order = [oid, a, clid, rem]
                q = book.get(price)
                if q is None:
                    q = book[price] = deque()
                    heapq.heappush(heap, -price if side == L.BUY else price)
                q.append(order)
                if clid:
                    self.by_clid[(a, clid)] = order
                self.open_count[a] = self.open_count.get(a, 0) + 1
                ev.append(("book", side, price, rem))
            else:
                ev.append(("cancelled", oid, rem, 1103))

    def cancel(self, c) -> None:
        key = (c[L.C_ACCOUNT], c[L.C_CLID])
        order = self.by_clid.pop(key, None)
        if order is None:
            self.events.append(("rejected", L.CK_CANCEL, 1016))
            return
        self.events.append(("cancelled", order[0], order[3], 1101))
        order[3] = 0  # lazy: stays in its deque until matching or the best-price scan drops it
        self.open_count[key[0]] -= 1


def run(n: int = 1_000_000, seed: int = 42, batch: int = 4096) -> dict[str, float | int]:
    markets = load_markets()
    spec = markets.market[0]
    mid = price_to_ticks(spec, "2.1432")
    cmds = make_stream(n, seed, mid)

    # warm up: compile (or load from the numba cache) and touch every code path
    warm = Engine(markets, order_capacity=1 << 20, account_capacity=1 << 14, event_rows=1 << 18)
    warm.submit_rows(cmds[: min(n, 50_000)], batch=batch)

    eng = Engine(markets, order_capacity=1 << 20, account_capacity=1 << 14, event_rows=1 << 18)
    from perp.kernel import process_batch

    batch_ns: list[int] = []
    events = 0
    fills = 0
    t_all = time.perf_counter_ns()
    for start in range(0, n, batch):
        chunk = cmds[start:start + batch]
        eng._ensure_capacity(chunk)
        done = 0
        t0 = time.perf_counter_ns()
        while done < chunk.shape[0]:
            k, used = process_batch(eng.state, chunk[done:], eng._ev, 0)
            events += used
            fills += int((eng._ev[:used, L.E_KIND] == L.EV_FILL).sum()) if k else 0
            done += k
        batch_ns.append(time.perf_counter_ns() - t0)
    numba_s = (time.perf_counter_ns() - t_all) / 1e9
    # note: the fill count above is read off each batch's events (part of the timed loop, as a
    # consumer of the event stream would)

    book = PlainPythonBook(spec.price_band_bps, spec.min_order_lots, spec.max_order_lots, spec.max_open_orders,
                           price_to_ticks(spec, spec.min_price_usd), price_to_ticks(spec, spec.max_price_usd))
    t0 = time.perf_counter_ns()
    for start in range(0, n, batch):
        book.process(cmds[start:start + batch])
    python_s = (time.perf_counter_ns() - t0) / 1e9

    arr = np.array(batch_ns, dtype=np.float64) / 1e3
    return {
        "commands": n,
        "batch": batch,
        "seed": seed,
        "events": events,
        "fills": fills // 2,
        "resting_orders": int(eng.open_orders().shape[0]),
        "numba_s": round(numba_s, 4),
        "commands_per_s": round(n / numba_s),
        "p50_batch_us": round(float(np.percentile(arr, 50)), 1),
        "p99_batch_us": round(float(np.percentile(arr, 99)), 1),
        "python_s": round(python_s, 4),
        "python_commands_per_s": round(n / python_s),
        "ratio_vs_python": round(python_s / numba_s, 2),
        "state_hash": eng.state_hash(),
    }
