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
from perp.layout import BUY, CK_CANCEL, CK_PLACE, CK_SET_INDEX, GTC, SELL
from perp.markets import load_markets, price_to_ticks

T0 = 1_767_225_600_000_000_000
CROSS_SIZE_MULT = 9
DEPOSIT_MICRO = 1_000_000_000_000  # $1M per trader


class _LiveOrders:
    """The generator's view of which adds still rest: (account, client id) pairs, O(1) random pick."""

    def __init__(self, n: int):
        self.acct = np.empty(n, np.int64)
        self.clid = np.empty(n, np.int64)
        self.where: dict[tuple[int, int], int] = {}

    def __len__(self) -> int:
        return len(self.where)

    def add(self, a: int, c: int) -> None:
        i = len(self.where)
        self.acct[i], self.clid[i] = a, c
        self.where[(a, c)] = i

    def remove(self, a: int, c: int) -> None:
        i = self.where.pop((a, c), None)
        if i is None:
            return
        last = len(self.where)
        if i != last:
            la, lc = int(self.acct[last]), int(self.clid[last])
            self.acct[i], self.clid[i] = la, lc
            self.where[(la, lc)] = i

    def pop_at(self, i: int) -> tuple[int, int]:
        a, c = int(self.acct[i]), int(self.clid[i])
        self.remove(a, c)
        return a, c


def make_stream(n: int, seed: int, index_ticks: int, accounts: int = 10_000, chunk: int = 1024) -> np.ndarray:
    """Seeded command rows: the index first, then adds / cancels / crossing IOCs.

    - adds (70%): GTC limits 1-50 ticks from the traders' mid, 1-20 lots, each with a fresh client
      order id; the mid random-walks around the index (a tick every ~20 commands);
    - cancels (25%): (account, client id) of an add that still rests. The generator knows which do
      because it runs the stream, chunk by chunk, through a scratch engine and drops what was filled
      -- so cancels never miss and the book keeps a steady depth;
    - crossing orders (5%): IOC limits 50 ticks through the mid, CROSS_SIZE_MULT x the add size, so
      that takers consume what adds bring net of cancels (70% in = 25% cancelled + 45% filled).
    """
    rng = np.random.default_rng(seed)
    cmds = np.zeros((n, L.N_CMD_COLS), np.int64)
    cmds[0, L.C_KIND] = L.CK_SET_INDEX
    cmds[0, L.C_TS] = T0
    cmds[0, L.C_PRICE] = index_ticks
    # then every trader deposits $1M (so the pre-trade margin check runs and passes)
    n_dep = min(accounts, n - 1)
    cmds[1:1 + n_dep, L.C_KIND] = L.CK_DEPOSIT
    cmds[1:1 + n_dep, L.C_TS] = T0
    cmds[1:1 + n_dep, L.C_ACCOUNT] = np.arange(n_dep)
    cmds[1:1 + n_dep, L.C_SIZE] = DEPOSIT_MICRO
    u = rng.random(n)
    sides = rng.integers(0, 2, n)
    offs = rng.integers(1, 51, n)
    sizes = rng.integers(1, 21, n)
    accts = rng.integers(0, accounts, n)
    pick = rng.random(n)
    walk = rng.random(n)
    next_clid = np.ones(accounts, np.int64)
    live = _LiveOrders(n)
    scratch = Engine(load_markets(), order_capacity=1 << 17, account_capacity=accounts, event_rows=1 << 16)
    first = 1 + n_dep
    scratch.submit_rows(cmds[:first])
    mid = index_ticks
    ts = T0
    for start in range(first, n, chunk):
        stop = min(n, start + chunk)
        for i in range(start, stop):
            ts += 1_000_000  # 1 ms apart: 1,000 mark samples per million commands
            if walk[i] < 0.05:
                mid += 1 if walk[i] < 0.025 else -1
                mid = min(max(mid, index_ticks - 200), index_ticks + 200)
            r = cmds[i]
            r[L.C_TS] = ts
            if u[i] < 0.25 and len(live):
                a, c = live.pop_at(int(pick[i] * len(live)))
                r[L.C_KIND] = L.CK_CANCEL
                r[L.C_ACCOUNT] = a
                r[L.C_CLID] = c
                continue
            a = int(accts[i])
            side = sides[i]
            r[L.C_KIND] = L.CK_PLACE
            r[L.C_ACCOUNT] = a
            r[L.C_SIDE] = side
            r[L.C_SIZE] = sizes[i]
            if u[i] < 0.30:  # crossing IOC
                r[L.C_TIF] = L.IOC
                r[L.C_PRICE] = mid + 50 if side == L.BUY else mid - 50
                r[L.C_SIZE] = sizes[i] * CROSS_SIZE_MULT
            else:
                r[L.C_TIF] = L.GTC
                r[L.C_PRICE] = mid - offs[i] if side == L.BUY else mid + offs[i]
                c = int(next_clid[a])
                next_clid[a] = c + 1
                r[L.C_CLID] = c
                live.add(a, c)
        ev = scratch.submit_rows(cmds[start:stop])
        gone = ((ev[:, L.E_KIND] == L.EV_FILL) & (ev[:, L.E_REMAINING] == 0)) | (ev[:, L.E_KIND] == L.EV_CANCELLED)
        gone &= ev[:, L.E_CLID] > 0
        for a, c in ev[gone][:, [L.E_ACCOUNT, L.E_CLID]].tolist():
            live.remove(a, c)
    return cmds


class PlainPythonBook:
    """dict price -> deque, heaps for best prices, lazy cancels; same rule checks as the engine."""

    def __init__(self, band_bps: int, min_size: int, max_size: int, max_open: int, lo: int, hi: int):
        self.bids: dict[int, deque] = {}
        self.asks: dict[int, deque] = {}
        self.level_lots: dict[tuple[int, int], int] = {}  # (side, price) -> resting lots
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
        place, cancel = self.place, self.cancel
        for kind, _ts, a, _m, side, _type, tif, price, size, clid, _oid, _flags in cmds.tolist():
            if kind == CK_PLACE:
                place(a, side, tif, price, size, clid)
            elif kind == CK_CANCEL:
                cancel(a, clid)
            elif kind == CK_SET_INDEX:
                self.mark = price
                self.events.append(("index", price))

    def _best(self, side: int):
        heap, book = (self.bid_heap, self.bids) if side == BUY else (self.ask_heap, self.asks)
        while heap:
            p = -heap[0] if side == BUY else heap[0]
            q = book.get(p)
            while q and q[0][3] == 0:  # lazily drop cancelled orders
                q.popleft()
            if q:
                return p, q
            book.pop(p, None)
            heapq.heappop(heap)
        return None, None

    def place(self, a: int, side: int, tif: int, price: int, size: int, clid: int) -> None:
        ev = self.events
        if not self.active:
            ev.append(("rejected", CK_PLACE, 1018))
            return
        if size < self.min_size or size > self.max_size:
            ev.append(("rejected", CK_PLACE, 1006))
            return
        if price < self.lo or price > self.hi or abs(price - self.mark) > self.mark * self.band_bps // 10_000:
            ev.append(("rejected", CK_PLACE, 1009))
            return
        if clid and (a, clid) in self.by_clid:
            ev.append(("rejected", CK_PLACE, 1014))
            return
        if tif == GTC and self.open_count.get(a, 0) >= self.max_open:
            ev.append(("rejected", CK_PLACE, 1013))
            return
        oid = self.next_id
        self.next_id += 1
        ev.append(("accepted", oid, a, side, price, size))
        rem = size
        opp = SELL if side == BUY else BUY
        level_lots = self.level_lots
        while rem:
            p, q = self._best(opp)
            if p is None or (side == BUY and p > price) or (side == SELL and p < price):
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
                level_lots[(opp, p)] -= fill
                ev.append(("fill", o[0], o[1], p, fill, o[3]))
                ev.append(("fill", oid, a, p, fill, rem))
                if o[3] == 0:
                    q.popleft()
                    self.open_count[o[1]] -= 1
                    if o[2]:
                        del self.by_clid[(o[1], o[2])]
            if touched:
                ev.append(("book", opp, p, level_lots[(opp, p)]))
        if rem:
            if tif == GTC:
                book, heap = (self.bids, self.bid_heap) if side == BUY else (self.asks, self.ask_heap)
                order = [oid, a, clid, rem, side, price]
                q = book.get(price)
                if q is None:
                    q = book[price] = deque()
                    heapq.heappush(heap, -price if side == BUY else price)
                q.append(order)
                if clid:
                    self.by_clid[(a, clid)] = order
                self.open_count[a] = self.open_count.get(a, 0) + 1
                key = (side, price)
                total = level_lots.get(key, 0) + rem
                level_lots[key] = total
                ev.append(("book", side, price, total))
            else:
                ev.append(("cancelled", oid, rem, 1103))

    def cancel(self, a: int, clid: int) -> None:
        order = self.by_clid.pop((a, clid), None)
        if order is None:
            self.events.append(("rejected", CK_CANCEL, 1016))
            return
        self.events.append(("cancelled", order[0], order[3], 1101))
        level = (order[4], order[5])
        self.level_lots[level] -= order[3]
        self.events.append(("book", order[4], order[5], self.level_lots[level]))
        order[3] = 0  # lazy: stays in its deque until matching or the best-price scan drops it
        self.open_count[a] -= 1


def run(n: int = 1_000_000, seed: int = 42, batch: int = 4096) -> dict[str, float | int]:
    markets = load_markets()
    spec = markets.market[0]
    index = price_to_ticks(spec, "2.1432")
    cmds = make_stream(n, seed, index)

    # warm up: compile (or load from the numba cache) and touch every code path
    warm = Engine(markets, order_capacity=1 << 14, account_capacity=1 << 14, event_rows=1 << 18)
    warm.submit_rows(cmds[: min(n, 50_000)], batch=batch)

    eng = Engine(markets, order_capacity=1 << 14, account_capacity=1 << 14, event_rows=1 << 18)
    batch_ns: list[int] = []  # kernel time per batch (capacity growth and event copies excluded)
    ev = eng.submit_rows(cmds, batch=batch, kernel_ns=batch_ns)
    events = int(ev.shape[0])
    fills = int(np.count_nonzero(ev[:, L.E_KIND] == L.EV_FILL))
    numba_s = sum(batch_ns) / 1e9

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
