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

Memory: an account's kept rows are one flat int64 buffer (`array('q')`, 64 bytes a row), at most
`max_per_account` rows (90 days of hours by default) plus a quarter before it is cut back -- Python
tuples of the same rows took ~350 bytes each, ~750 kB per account held for 90 days, in every
gateway. The file holds every hour ever paid; at start, when it holds more than twice the rows kept
(and at least `compact_min_rows`), it is rewritten with the kept rows only (a temporary file,
fsynced, renamed over it), so a restart reads what is served, not the venue's whole past.

Invariants: rows of an account are in seq order; the sum of an account's `amount_micro` over a
market equals the change of that position's `funding_micro` across the recorded hours.
"""

from __future__ import annotations

import array
import os
from pathlib import Path

import numpy as np
import structlog

from perp.engine import FundingPositions

log = structlog.get_logger("gateway.funding_history")

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
    def __init__(self, path: str | Path, max_per_account: int = 24 * 90, fsync: bool = True,
                 compact_min_rows: int = 100_000):
        self.path = Path(path)
        self.fsync = fsync
        self.max_per_account = max_per_account
        self.by_account: dict[int, array.array] = {}  # account -> its rows, flat (N_COLS int64 each)
        if self.path.exists():
            raw = np.fromfile(self.path, dtype="<i8")
            whole = raw.shape[0] - raw.shape[0] % N_COLS  # a torn last row (crash mid-append) is dropped
            rows = raw[:whole].reshape(-1, N_COLS).astype(np.int64)
            self._keep(rows)
            kept = self.rows_kept()
            if rows.shape[0] > max(2 * kept, compact_min_rows):
                self._compact(rows.shape[0], kept)

    def rows_kept(self) -> int:
        return sum(len(buf) for buf in self.by_account.values()) // N_COLS

    def _keep(self, rows: np.ndarray) -> None:
        """Append `rows` (in seq order) to their accounts' buffers; cut a buffer back to the last
        `max_per_account` rows once it holds a quarter more (amortised O(1) a row)."""
        if rows.shape[0] == 0:
            return
        order = np.argsort(rows[:, 3], kind="stable")  # by account, seq order kept within one
        rows = np.ascontiguousarray(rows[order], dtype=np.int64)
        accts, starts = np.unique(rows[:, 3], return_index=True)
        ends = np.append(starts[1:], rows.shape[0])
        limit = self.max_per_account * N_COLS
        for acct, a, b in zip(accts.tolist(), starts.tolist(), ends.tolist(), strict=True):
            buf = self.by_account.get(acct)
            if buf is None:
                buf = self.by_account[acct] = array.array("q")
            buf.frombytes(rows[a:b].tobytes())
            if len(buf) > limit + limit // 4:
                del buf[:len(buf) - limit]

    def _compact(self, rows_before: int, kept: int) -> None:
        """Rewrite the file with the kept rows (seq order), atomically: what a restart then reads."""
        parts = [np.frombuffer(buf, dtype=np.int64).reshape(-1, N_COLS)[-self.max_per_account:]
                 for buf in self.by_account.values()]
        rows = np.concatenate(parts) if parts else np.zeros((0, N_COLS), np.int64)
        rows = rows[np.lexsort((rows[:, 3], rows[:, 0]))]  # by seq, then account: the order they were paid
        tmp = self.path.with_name(self.path.name + ".compact")
        with open(tmp, "wb") as fh:
            fh.write(np.ascontiguousarray(rows, dtype="<i8").tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        log.info("funding_history_compacted", rows_before=rows_before, rows_after=int(rows.shape[0]), kept=kept)

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
        """The account's last `limit` payments (optionally of one market), oldest first, of the last
        `max_per_account` kept."""
        buf = self.by_account.get(account)
        if buf is None or not limit:
            return []
        rows = np.frombuffer(buf, dtype=np.int64).reshape(-1, N_COLS)[-self.max_per_account:]
        if market is not None:
            rows = rows[rows[:, 2] == market]
        return [tuple(r) for r in rows[-limit:].tolist()]
