"""A slow, obviously-correct reference of the matching engine, in plain Python.

It follows docs/matching.md rule by rule with dicts and lists (no arrays, no numba) and emits the
same event rows (tuples in `perp.layout.E_*` column order) as the kernel, so that property tests
can require identical output on random command streams.
"""

from __future__ import annotations

from dataclasses import dataclass

from perp import layout as L
from perp.codes import ResultCode as R

MICRO = 1_000_000
RESERVED_ACCOUNTS = 16  # venue accounts (insurance funds): never a trader command's actor (issue 9)


@dataclass
class Order:
    oid: int
    account: int
    clid: int
    market: int
    side: int
    price: int
    rem: int
    flags: int


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


class ReferenceEngine:
    def __init__(self, spec_rows):
        self.spec = [dict(zip(range(L.N_SPEC_COLS), map(int, row))) for row in spec_rows]
        n = len(self.spec)
        self.status = [L.ST_ACTIVE] * n
        self.index = [0] * n
        self.mark = [0] * n
        self.ema = [0] * n
        self.next_sample = [0] * n
        self.levels: list[list[dict[int, list[Order]]]] = [[{}, {}] for _ in range(n)]  # price -> FIFO
        self.orders: dict[int, Order] = {}
        self.by_clid: dict[tuple[int, int], Order] = {}
        self.acct_orders: dict[int, list[Order]] = {}  # acceptance order
        self.pos: dict[tuple[int, int], int] = {}
        self.next_oid = 1
        self.seq = 0
        self.last_ts = 0
        self.events: list[tuple] = []

    # ---- helpers --------------------------------------------------------------------------
    def emit(self, kind, seq, ts, m, a, oid, clid, side, price, size, rem, fee, code, other):
        self.events.append((kind, seq, ts, m, a, oid, clid, side, price, size, rem, fee, code, other))

    def best(self, m, side):
        lv = self.levels[m][side]
        if not lv:
            return None
        return max(lv) if side == L.BUY else min(lv)

    def book_event(self, seq, ts, m, side, price):
        fifo = self.levels[m][side].get(price, [])
        self.emit(L.EV_BOOK, seq, ts, m, -1, 0, 0, side, price, sum(o.rem for o in fifo), len(fifo), 0, 0, 0)

    def reject(self, c, seq, code):
        self.emit(L.EV_REJECTED, seq, c[L.C_TS], c[L.C_MARKET], c[L.C_ACCOUNT], c[L.C_ORDER_ID], c[L.C_CLID],
                  c[L.C_SIDE], c[L.C_PRICE], c[L.C_SIZE], 0, 0, int(code), c[L.C_KIND])

    def reducible(self, a, m, side):
        p = self.pos.get((a, m), 0)
        if side == L.BUY:
            return -p if p < 0 else 0
        return p if p > 0 else 0

    def remove(self, o: Order):
        fifo = self.levels[o.market][o.side][o.price]
        fifo.remove(o)
        if not fifo:
            del self.levels[o.market][o.side][o.price]
        del self.orders[o.oid]
        if o.clid:
            del self.by_clid[(o.account, o.clid)]
        self.acct_orders[o.account].remove(o)

    def rest(self, o: Order):
        self.levels[o.market][o.side].setdefault(o.price, []).append(o)
        self.orders[o.oid] = o
        if o.clid:
            self.by_clid[(o.account, o.clid)] = o
        self.acct_orders.setdefault(o.account, []).append(o)

    def open_count(self, a, m):
        return sum(1 for o in self.acct_orders.get(a, []) if o.market == m)

    # ---- mark -----------------------------------------------------------------------------
    def impact_ut(self, m, side):
        need = self.spec[m][L.S_IMPACT_TICK_LOTS]
        lots = notional = 0
        prices = sorted(self.levels[m][side], reverse=(side == L.BUY))
        for p in prices:
            q = sum(o.rem for o in self.levels[m][side][p])
            take = min(_ceil_div(need, p), q)
            lots += take
            notional += take * p
            need -= take * p
            if need <= 0:
                return notional * MICRO // lots
        return -1

    def basis_sample(self, m):
        index = self.index[m]
        if index <= 0:
            return 0
        bid, ask = self.impact_ut(m, L.BUY), self.impact_ut(m, L.SELL)
        if bid < 0 or ask < 0:
            return 0
        x = (bid + ask) // 2 - index * MICRO
        band = index * self.spec[m][L.S_MARK_BAND_BPS] * 100
        return max(-band, min(band, x))

    def refresh_mark(self, m, seq, ts):
        if self.status[m] == L.ST_HALTED:
            return
        index = self.index[m]
        if index <= 0:
            new = 0
        else:  # a one-sided book never snaps to the index: its samples are 0, the EMA decays (issue 9)
            basis = (self.ema[m] + MICRO // 2) // MICRO
            band = index * self.spec[m][L.S_MARK_BAND_BPS] // 10_000
            new = max(1, index + max(-band, min(band, basis)))
        if new != self.mark[m]:
            self.mark[m] = new
            self.emit(L.EV_MARK, seq, ts, m, -1, 0, 0, 0, new, 0, 0, self.ema[m], 0, index)

    def advance(self, ts, seq):
        for m, sp in enumerate(self.spec):
            interval = sp[L.S_SAMPLE_NS]
            if self.next_sample[m] == 0:
                self.next_sample[m] = (ts // interval + 1) * interval
                continue
            samples = 0
            while self.next_sample[m] <= ts:
                self.next_sample[m] += interval
                samples += 1
            if samples == 0 or self.status[m] == L.ST_HALTED:
                continue
            for _ in range(samples):  # one sample per grid time <= ts, each of the unchanged book
                x = self.basis_sample(m)
                d = x - self.ema[m]
                if d:
                    step = max(1, abs(d) * sp[L.S_ALPHA_PPM] // MICRO)
                    self.ema[m] += step if d > 0 else -step
            self.refresh_mark(m, seq, ts)

    # ---- commands -------------------------------------------------------------------------
    def process(self, c):
        c = [int(v) for v in c]
        self.seq += 1
        seq, ts = self.seq, c[L.C_TS]
        if ts < self.last_ts:
            return self.reject(c, seq, R.TIMESTAMP_REGRESSION)
        # a rejected command never moves the clock (issue 9): its clock advance is undone
        saved = (self.last_ts, list(self.next_sample), list(self.ema), list(self.mark))
        n0 = len(self.events)
        self.last_ts = ts
        self.advance(ts, seq)
        n1 = len(self.events)
        kind = c[L.C_KIND]
        handler = {L.CK_PLACE: self.place, L.CK_CANCEL: self.cancel, L.CK_CANCEL_ALL: self.cancel_all,
                   L.CK_AMEND: self.amend, L.CK_SET_INDEX: self.set_index,
                   L.CK_SET_STATUS: self.set_status, L.CK_DEPOSIT: self.deposit}.get(kind)
        if handler is None:
            self.reject(c, seq, R.UNKNOWN_COMMAND)
        else:
            handler(c, seq, ts)
        if len(self.events) == n1 + 1 and self.events[n1][0] == L.EV_REJECTED:
            self.last_ts, self.next_sample, self.ema, self.mark = saved
            del self.events[n0:n1]

    def valid_account(self, a):
        return 0 <= a <= L.MAX_ACCOUNT_ID

    @staticmethod
    def reserved(a):
        return 0 <= a < RESERVED_ACCOUNTS

    def place(self, c, seq, ts):
        m, a, side, otype, tif = c[L.C_MARKET], c[L.C_ACCOUNT], c[L.C_SIDE], c[L.C_TYPE], c[L.C_TIF]
        size, clid, flags = c[L.C_SIZE], c[L.C_CLID], c[L.C_FLAGS]
        if not 0 <= m < len(self.spec):
            return self.reject(c, seq, R.UNKNOWN_MARKET)
        sp = self.spec[m]
        if not self.valid_account(a):
            return self.reject(c, seq, R.UNKNOWN_ACCOUNT)
        if self.reserved(a):
            return self.reject(c, seq, R.RESERVED_ACCOUNT)
        if side not in (L.BUY, L.SELL):
            return self.reject(c, seq, R.INVALID_SIDE)
        if otype not in (L.LIMIT, L.MARKET):
            return self.reject(c, seq, R.INVALID_ORDER_TYPE)
        if (otype == L.LIMIT and tif not in (L.GTC, L.IOC, L.FOK, L.POST_ONLY)) or (
                otype == L.MARKET and tif not in (L.IOC, L.FOK)):
            return self.reject(c, seq, R.INVALID_TIME_IN_FORCE)
        stp = (flags & L.STP_MASK) >> L.STP_SHIFT
        if flags & ~(L.FLAG_REDUCE_ONLY | L.STP_MASK) or stp > L.STP_CANCEL_BOTH:
            return self.reject(c, seq, R.INVALID_STP_MODE)
        if not 0 <= clid <= L.MAX_CLIENT_ORDER_ID:
            return self.reject(c, seq, R.INVALID_CLIENT_ORDER_ID)
        ro = bool(flags & L.FLAG_REDUCE_ONLY)
        st = self.status[m]
        if st in (L.ST_CANCEL_ONLY, L.ST_HALTED) or (st == L.ST_POST_ONLY and tif != L.POST_ONLY) or (
                st == L.ST_REDUCE_ONLY and not ro):
            return self.reject(c, seq, R.MARKET_STATUS_FORBIDS)
        if size < sp[L.S_MIN_SIZE]:
            return self.reject(c, seq, R.SIZE_BELOW_MIN)
        if size > sp[L.S_MAX_SIZE]:
            return self.reject(c, seq, R.SIZE_ABOVE_MAX)
        mark = self.mark[m]
        if mark <= 0:
            return self.reject(c, seq, R.NO_REFERENCE_PRICE)
        if otype == L.LIMIT:
            price = c[L.C_PRICE]
            if not sp[L.S_MIN_TICK] <= price <= sp[L.S_MAX_TICK]:
                return self.reject(c, seq, R.PRICE_OUT_OF_RANGE)
            band = mark * sp[L.S_BAND_BPS] // 10_000
            if abs(price - mark) > band:
                return self.reject(c, seq, R.PRICE_OUTSIDE_BAND)
        else:
            prot = mark * sp[L.S_PROTECT_BPS] // 10_000
            price = min(mark + prot, sp[L.S_MAX_TICK]) if side == L.BUY else max(mark - prot, sp[L.S_MIN_TICK])
        if clid and (a, clid) in self.by_clid:
            return self.reject(c, seq, R.DUPLICATE_CLIENT_ORDER_ID)
        if ro:
            room = self.reducible(a, m, side)
            if room <= 0:
                return self.reject(c, seq, R.REDUCE_ONLY_WOULD_INCREASE)
            size = min(size, room)
        may_rest = otype == L.LIMIT and tif in (L.GTC, L.POST_ONLY)
        if may_rest and self.open_count(a, m) >= sp[L.S_MAX_OPEN_ORDERS]:
            return self.reject(c, seq, R.TOO_MANY_OPEN_ORDERS)
        opp = 1 - side
        if tif == L.POST_ONLY and self.crosses(side, price, self.best(m, opp)):
            return self.reject(c, seq, R.POST_ONLY_WOULD_TAKE)

        oid = self.next_oid
        self.next_oid += 1
        self.emit(L.EV_ACCEPTED, seq, ts, m, a, oid, clid, side, price, size, size, 0, 0, otype * 16 + tif)
        if tif == L.FOK and not self.fok_ok(m, a, side, price, size, stp):
            return self.emit(L.EV_CANCELLED, seq, ts, m, a, oid, clid, side, price, size, 0, 0,
                             R.CANCEL_FOK_NOT_FILLED, 0)
        rem, stopped = size, False
        if tif != L.POST_ONLY:
            rem, stopped = self.match(m, a, oid, clid, side, price, size, stp, seq, ts)
        if rem > 0:
            if stopped:
                self.emit(L.EV_CANCELLED, seq, ts, m, a, oid, clid, side, price, rem, 0, 0, R.CANCEL_SELF_TRADE, 0)
            elif may_rest:
                self.rest(Order(oid, a, clid, m, side, price, rem, flags))
                self.book_event(seq, ts, m, side, price)
            else:
                self.emit(L.EV_CANCELLED, seq, ts, m, a, oid, clid, side, price, rem, 0, 0,
                          R.CANCEL_IOC_REMAINDER, 0)
        self.refresh_mark(m, seq, ts)

    @staticmethod
    def crosses(side, limit, best):
        if best is None:
            return False
        return best <= limit if side == L.BUY else best >= limit

    def crossing_orders(self, m, side, limit):
        opp = 1 - side
        prices = sorted(self.levels[m][opp], reverse=(opp == L.BUY))
        for p in prices:
            if not self.crosses(side, limit, p):
                return
            yield from list(self.levels[m][opp][p])

    def fok_ok(self, m, a, side, limit, need, stp):
        total = 0
        used: dict[int, int] = {}
        for o in self.crossing_orders(m, side, limit):
            if o.account == a:
                if stp != L.STP_CANCEL_OLDEST:
                    return False
                continue
            q = o.rem
            if o.flags & L.FLAG_REDUCE_ONLY:
                room = self.reducible(o.account, m, 1 - side) - used.get(o.account, 0)
                q = max(0, min(q, room, need - total))
                used[o.account] = used.get(o.account, 0) + q
            total += q
            if total >= need:
                return True
        return False

    def match(self, m, a, oid, clid, side, limit, size, stp, seq, ts):
        sp = self.spec[m]
        opp = 1 - side
        rem = size
        while rem > 0:
            p = self.best(m, opp)
            if not self.crosses(side, limit, p):
                break
            touched = stop = False
            for o in list(self.levels[m][opp][p]):
                if rem == 0:
                    break
                if o.account == a:
                    if stp == L.STP_CANCEL_NEWEST:
                        stop = True
                        break
                    self.emit(L.EV_CANCELLED, seq, ts, m, o.account, o.oid, o.clid, opp, p, o.rem, 0, 0,
                              R.CANCEL_SELF_TRADE, oid)
                    self.remove(o)
                    touched = True
                    if stp == L.STP_CANCEL_BOTH:
                        stop = True
                        break
                    continue
                q = min(o.rem, rem)
                if o.flags & L.FLAG_REDUCE_ONLY:
                    room = self.reducible(o.account, m, opp)
                    if room <= 0:
                        self.emit(L.EV_CANCELLED, seq, ts, m, o.account, o.oid, o.clid, opp, p, o.rem, 0, 0,
                                  R.CANCEL_REDUCE_ONLY, oid)
                        self.remove(o)
                        touched = True
                        continue
                    q = min(q, room)
                touched = True
                notional = q * p * sp[L.S_MICRO_PER_TICK_LOT]
                mfee = _ceil_div(notional * sp[L.S_MAKER_FEE_PPM], MICRO)
                tfee = _ceil_div(notional * sp[L.S_TAKER_FEE_PPM], MICRO)
                sign = 1 if side == L.BUY else -1
                self.pos[(a, m)] = self.pos.get((a, m), 0) + sign * q
                self.pos[(o.account, m)] = self.pos.get((o.account, m), 0) - sign * q
                o.rem -= q
                rem -= q
                self.emit(L.EV_FILL, seq, ts, m, o.account, o.oid, o.clid, opp, p, q, o.rem, mfee, L.LIQ_MAKER, oid)
                self.emit(L.EV_FILL, seq, ts, m, a, oid, clid, side, p, q, rem, tfee, L.LIQ_TAKER, o.oid)
                if o.rem == 0:
                    self.remove(o)
                elif rem > 0:
                    # a reduce-only maker capped by its position: the next pass cancels it
                    room = self.reducible(o.account, m, opp)
                    if room <= 0:
                        self.emit(L.EV_CANCELLED, seq, ts, m, o.account, o.oid, o.clid, opp, p, o.rem, 0, 0,
                                  R.CANCEL_REDUCE_ONLY, oid)
                        self.remove(o)
            if touched:
                self.book_event(seq, ts, m, opp, p)
            if stop:
                return rem, True
        return rem, False

    def find(self, c):
        a = c[L.C_ACCOUNT]
        if c[L.C_ORDER_ID] > 0:
            o = self.orders.get(c[L.C_ORDER_ID])
        elif 0 < c[L.C_CLID] <= L.MAX_CLIENT_ORDER_ID:
            o = self.by_clid.get((a, c[L.C_CLID]))
        else:
            return "missing"
        if o is None or o.account != a:
            return None
        return o

    def cancel(self, c, seq, ts):
        if not self.valid_account(c[L.C_ACCOUNT]):
            return self.reject(c, seq, R.UNKNOWN_ACCOUNT)
        if self.reserved(c[L.C_ACCOUNT]):
            return self.reject(c, seq, R.RESERVED_ACCOUNT)
        o = self.find(c)
        if o == "missing":
            return self.reject(c, seq, R.MISSING_ORDER_REFERENCE)
        if o is None:
            return self.reject(c, seq, R.UNKNOWN_ORDER)
        self.emit(L.EV_CANCELLED, seq, ts, o.market, o.account, o.oid, o.clid, o.side, o.price, o.rem, 0, 0,
                  R.CANCEL_BY_USER, 0)
        self.remove(o)
        self.book_event(seq, ts, o.market, o.side, o.price)
        self.refresh_mark(o.market, seq, ts)

    def cancel_all(self, c, seq, ts):
        a, only = c[L.C_ACCOUNT], c[L.C_MARKET]
        if not self.valid_account(a):
            return self.reject(c, seq, R.UNKNOWN_ACCOUNT)
        if self.reserved(a):
            return self.reject(c, seq, R.RESERVED_ACCOUNT)
        if not -1 <= only < len(self.spec):
            return self.reject(c, seq, R.UNKNOWN_MARKET)
        count = 0
        for o in reversed(list(self.acct_orders.get(a, []))):  # newest first
            if only in (-1, o.market):
                self.emit(L.EV_CANCELLED, seq, ts, o.market, a, o.oid, o.clid, o.side, o.price, o.rem, 0, 0,
                          R.CANCEL_ALL_BY_USER, 0)
                self.remove(o)
                self.book_event(seq, ts, o.market, o.side, o.price)
                count += 1
        self.emit(L.EV_CANCEL_ALL_DONE, seq, ts, only, a, 0, 0, 0, 0, count, 0, 0, 0, 0)
        for m in range(len(self.spec)):
            if only in (-1, m):
                self.refresh_mark(m, seq, ts)

    def amend(self, c, seq, ts):
        if not self.valid_account(c[L.C_ACCOUNT]):
            return self.reject(c, seq, R.UNKNOWN_ACCOUNT)
        if self.reserved(c[L.C_ACCOUNT]):
            return self.reject(c, seq, R.RESERVED_ACCOUNT)
        o = self.find(c)
        if o == "missing":
            return self.reject(c, seq, R.MISSING_ORDER_REFERENCE)
        if o is None or c[L.C_MARKET] != o.market:
            return self.reject(c, seq, R.UNKNOWN_ORDER)
        m, sp = o.market, self.spec[o.market]
        if c[L.C_PRICE] < 0:
            return self.reject(c, seq, R.INVALID_PRICE)
        if c[L.C_SIZE] < 0:
            return self.reject(c, seq, R.SIZE_BELOW_MIN)
        new_price = c[L.C_PRICE] or o.price
        new_size = c[L.C_SIZE] or o.rem
        st = self.status[m]
        grows, reprices = new_size > o.rem, new_price != o.price
        # perp/gate.py PERMIT, amend column: halted deny; cancel_only only a smaller size at the same
        # price; reduce_only no larger size unless the order is reduce-only (issue 9)
        if st == L.ST_HALTED or (st == L.ST_CANCEL_ONLY and (grows or reprices)) or (
                st == L.ST_REDUCE_ONLY and grows and not o.flags & L.FLAG_REDUCE_ONLY):
            return self.reject(c, seq, R.MARKET_STATUS_FORBIDS)
        if new_price == o.price and new_size == o.rem:
            return self.reject(c, seq, R.AMEND_NO_CHANGE)
        if new_size != o.rem:
            if new_size < sp[L.S_MIN_SIZE]:
                return self.reject(c, seq, R.SIZE_BELOW_MIN)
            if new_size > sp[L.S_MAX_SIZE]:
                return self.reject(c, seq, R.SIZE_ABOVE_MAX)
        if new_price != o.price:
            if not sp[L.S_MIN_TICK] <= new_price <= sp[L.S_MAX_TICK]:
                return self.reject(c, seq, R.PRICE_OUT_OF_RANGE)
            mark = self.mark[m]
            if mark <= 0:
                return self.reject(c, seq, R.NO_REFERENCE_PRICE)
            if abs(new_price - mark) > mark * sp[L.S_BAND_BPS] // 10_000:
                return self.reject(c, seq, R.PRICE_OUTSIDE_BAND)
            if self.crosses(o.side, new_price, self.best(m, 1 - o.side)):
                return self.reject(c, seq, R.AMEND_WOULD_CROSS)
        old_price = o.price
        if new_price == o.price and new_size < o.rem:
            o.rem = new_size
            self.emit(L.EV_AMENDED, seq, ts, m, o.account, o.oid, o.clid, o.side, new_price, new_size, new_size,
                      0, 1, old_price)
            self.book_event(seq, ts, m, o.side, new_price)
        else:
            fifo = self.levels[m][o.side][o.price]
            fifo.remove(o)
            if not fifo:
                del self.levels[m][o.side][o.price]
            o.price, o.rem = new_price, new_size
            self.levels[m][o.side].setdefault(new_price, []).append(o)
            self.emit(L.EV_AMENDED, seq, ts, m, o.account, o.oid, o.clid, o.side, new_price, new_size, new_size,
                      0, 0, old_price)
            if new_price != old_price:
                self.book_event(seq, ts, m, o.side, old_price)
            self.book_event(seq, ts, m, o.side, new_price)
        self.refresh_mark(m, seq, ts)

    def set_index(self, c, seq, ts):
        m = c[L.C_MARKET]
        if not 0 <= m < len(self.spec):
            return self.reject(c, seq, R.UNKNOWN_MARKET)
        price = c[L.C_PRICE]
        if not self.spec[m][L.S_MIN_TICK] <= price <= self.spec[m][L.S_MAX_TICK]:
            return self.reject(c, seq, R.PRICE_OUT_OF_RANGE)
        self.index[m] = price
        # the oracle's gates ride along (issue 9): validity in E_CLID, leverage scale in E_SIZE (the
        # streams send none: 1x), the fix in E_REMAINING, gate bits in E_OTHER
        self.emit(L.EV_INDEX, seq, ts, m, -1, 0, 0, 0, price, 1_000_000, 0, 0, 0, 0)
        self.refresh_mark(m, seq, ts)

    def set_status(self, c, seq, ts):
        m = c[L.C_MARKET]
        if not 0 <= m < len(self.spec):
            return self.reject(c, seq, R.UNKNOWN_MARKET)
        status = c[L.C_FLAGS]
        if not 0 <= status < L.N_STATUSES:
            return self.reject(c, seq, R.INVALID_STATUS)
        old = self.status[m]
        self.status[m] = status
        self.emit(L.EV_STATUS, seq, ts, m, -1, 0, 0, 0, 0, 0, 0, 0, status, old)
        self.refresh_mark(m, seq, ts)

    def deposit(self, c, seq, ts):
        # money is not modelled here: the property tests drop ledger events before comparing
        if not self.valid_account(c[L.C_ACCOUNT]):
            return self.reject(c, seq, R.UNKNOWN_ACCOUNT)
        if self.reserved(c[L.C_ACCOUNT]):
            return self.reject(c, seq, R.RESERVED_ACCOUNT)
        self.emit(L.EV_DEPOSIT, seq, ts, -1, c[L.C_ACCOUNT], 0, 0, 0, 0, c[L.C_SIZE], 0, 0, 0, 0)

    # ---- views for invariant checks ----------------------------------------------------------
    def canonical_orders(self):
        rows = []
        for m in range(len(self.spec)):
            for side in (L.BUY, L.SELL):
                for p in sorted(self.levels[m][side], reverse=(side == L.BUY)):
                    for o in self.levels[m][side][p]:
                        rows.append((m, side, p, o.oid, o.account, o.clid, o.rem, o.flags))
        return rows
