"""One group commit's engine event rows, read in bulk (numpy) instead of one Python object per event.

The engine returns a batch's events as int64 rows (perp.layout E_*, docs/events.md), in command
order (`E_SEQ` never decreases; the sequencer's liquidation sweep after the batch comes last, with
its own seq). The gateway needs three things from them, and none needs every event as an object:

- each command's ack: its own rows, found by `rows_of(i)` (one `searchsorted` for the batch);
- the public streams: book levels, taker fills and the touched markets, selected by kind with
  numpy masks (`book_levels`, `taker_fills`, `touched_markets`);
- the private `user` channel and the rare streams (liquidations, funding): only the rows that
  need it are decoded into perp.events structs (`decoded`): the rows of accounts that have a
  subscriber, every liquidation row (an ADL step's explanation sits on its ADL start row, which
  names another account) and every funding row.

Prices go out as decimal strings; `PriceText` formats each (market, ticks) once and caches it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from perp import layout as L
from perp.events import decode_rows
from perp.markets import MarketSpec, ticks_to_price


class PriceText:
    """ticks -> the exact decimal string of `perp.markets.ticks_to_price`, cached per market."""

    def __init__(self, specs: list[MarketSpec], max_entries: int = 200_000):
        self.specs = specs
        self.cache: list[dict[int, str]] = [{} for _ in specs]
        self.max_entries = max_entries

    def fit(self, specs: list[MarketSpec]) -> None:
        """The markets in force now (a market listed since: its cache)."""
        self.specs = specs
        self.cache.extend({} for _ in range(len(self.cache), len(self.specs)))

    def __call__(self, m: int, ticks: int) -> str:
        c = self.cache[m]
        s = c.get(ticks)
        if s is None:
            s = ticks_to_price(self.specs[m], ticks)
            if len(c) < self.max_entries:
                c[ticks] = s
        return s


class BatchEvents:
    def __init__(self, ev_rows: np.ndarray, seq0: int, n_commands: int, specs: list[MarketSpec]):
        self.ev = ev_rows
        self.specs = specs
        self.seq0 = seq0
        seqs = ev_rows[:, L.E_SEQ]
        self._bounds = np.searchsorted(seqs, np.arange(seq0, seq0 + n_commands + 1, dtype=np.int64)).tolist()
        self._lists: list[list[int]] | None = None

    def __len__(self) -> int:
        return self.ev.shape[0]

    @property
    def lists(self) -> list[list[int]]:
        """Every row as a list of Python ints (one `tolist` for the batch)."""
        if self._lists is None:
            self._lists = self.ev.tolist()
        return self._lists

    def rows_of(self, i: int) -> list[list[int]]:
        """The event rows of the batch's i-th command."""
        return self.lists[self._bounds[i]:self._bounds[i + 1]]

    def events_of(self, i: int) -> list:
        """The i-th command's events as perp.events structs (for the rare callers that want them)."""
        lo, hi = self._bounds[i], self._bounds[i + 1]
        return list(decode_rows(self.ev[lo:hi], self.specs)) if hi > lo else []

    def of_kind(self, *kinds: int) -> np.ndarray:
        k = self.ev[:, L.E_KIND]
        mask = k == kinds[0]
        for kind in kinds[1:]:
            mask |= k == kind
        return self.ev[mask]

    def book_levels(self) -> np.ndarray:
        """EV_BOOK rows: (market, side, price ticks, absolute size) per changed level, in order."""
        return self.of_kind(L.EV_BOOK)

    def taker_fills(self) -> np.ndarray:
        ev = self.ev
        return ev[(ev[:, L.E_KIND] == L.EV_FILL) & (ev[:, L.E_CODE] == L.LIQ_TAKER)]

    def touched_markets(self) -> list[int]:
        m = np.unique(self.ev[:, L.E_MARKET])
        return [x for x in m.tolist() if 0 <= x < len(self.specs)]

    def decoded(self, accounts: Iterable[int]) -> list:
        """perp.events structs of the rows of `accounts` and of every liquidation and funding row,
        in order."""
        ev = self.ev
        acct = np.fromiter(accounts, np.int64)
        k = ev[:, L.E_KIND]
        mask = (k == L.EV_LIQUIDATION) | (k == L.EV_FUNDING)
        if acct.size:
            mask |= np.isin(ev[:, L.E_ACCOUNT], acct) & (k != L.EV_BOOK) & (k != L.EV_MARK) & (k != L.EV_INDEX)
        return list(decode_rows(ev[mask], self.specs)) if mask.any() else []
