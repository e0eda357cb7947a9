"""Funding payments per position: derived exactly from the engine, kept for `query.funding_history`.

The engine's `funding` event is market-wide (rate, index, total paid); what an account was paid
or charged is the change of its position's cumulative funding (`Engine.funding_positions`) across
the batch that carried the event. Every command of a batch has one timestamp, so the hour is
crossed before the batch's first command and the position before the batch is the one charged:
`amount_micro = floor(-lots x index_ticks x micro_per_tick_lot x rate_ppb / 1e9)` (positive:
received). `payments` computes them for every account with a position in one numpy pass (once an
hour, O(accounts x markets)); the user channel pushes the subscribed accounts' rows, this store
keeps everyone's.

Durability: each funding hour's rows are appended to `DATA/funding_history.bin` (fixed 8 x int64
rows, `COLUMNS`) and fsynced before the batch's pushes go out; on start the file is read back
(the last `max_per_account` rows of each account are kept in memory). The journal holds commands,
not payments: a crash in the instant between a funding batch's journal fsync and this file's
append loses that hour's rows from the history (never from the balances, which replay restores).

Invariants: rows of an account are in seq order; the sum of an account's `amount_micro` over a
market equals the change of that position's `funding_micro` across the recorded hours.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

import numpy as np

from perp.engine import FundingPositions

COLUMNS = ("seq", "ts_ns", "market", "account", "lots", "rate_ppb", "index_ticks", "amount_micro")
N_COLS = len(COLUMNS)


def payments(before: FundingPositions, after: FundingPositions,
             paid: dict[int, tuple[int, int, int, int]]) -> np.ndarray:
    """Rows (COLUMNS) of every position charged in a batch: `paid` maps a market index to its
    funding event's (seq, ts_ns, rate_ppb, index_ticks); `before`/`after` are readings of the
    same accounts around the batch."""
    out = []
    delta = after.funding_micro - before.funding_micro
    for m, (seq, ts, rate, index) in sorted(paid.items()):
        held = np.nonzero(before.position_lots[:, m])[0]
        if held.size == 0:
            continue
        rows = np.empty((held.size, N_COLS), np.int64)
        rows[:, 0], rows[:, 1], rows[:, 2] = seq, ts, m
        rows[:, 3] = before.accounts[held]
        rows[:, 4] = before.position_lots[held, m]
        rows[:, 5], rows[:, 6] = rate, index
        rows[:, 7] = delta[held, m]
        out.append(rows)
    return np.concatenate(out) if out else np.zeros((0, N_COLS), np.int64)


class FundingHistory:
    def __init__(self, path: str | Path, max_per_account: int = 24 * 90, fsync: bool = True):
        self.path = Path(path)
        self.fsync = fsync
        self.max_per_account = max_per_account
        self.by_account: dict[int, collections.deque] = collections.defaultdict(
            lambda: collections.deque(maxlen=self.max_per_account))
        if self.path.exists():
            raw = np.fromfile(self.path, dtype="<i8")
            whole = raw.shape[0] - raw.shape[0] % N_COLS  # a torn last row (crash mid-append) is dropped
            self._keep(raw[:whole].reshape(-1, N_COLS).astype(np.int64))

    def _keep(self, rows: np.ndarray) -> None:
        for r in rows.tolist():
            self.by_account[r[3]].append(tuple(r))

    def append(self, rows: np.ndarray) -> None:
        """Record one batch's payments (durable when this returns, with fsync on)."""
        if rows.shape[0] == 0:
            return
        with open(self.path, "ab") as fh:
            fh.write(np.ascontiguousarray(rows, dtype="<i8").tobytes())
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())
        self._keep(rows)

    def of(self, account: int, market: int | None = None, limit: int = 100) -> list[tuple[int, ...]]:
        """The account's last `limit` payments (optionally of one market), oldest first."""
        rows = self.by_account.get(account, ())
        if market is not None:
            rows = [r for r in rows if r[2] == market]
        return list(rows)[-limit:] if limit else []
