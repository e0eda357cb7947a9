"""gateway.funding_history.FundingHistory: the last `max_per_account` payments of each account, in
seq order, the same after a restart; flat int64 buffers in memory; the file compacted at start once
it holds more than twice what is kept."""

from __future__ import annotations

import tracemalloc

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.funding_history import N_COLS, FundingHistory


def _hour(seq: int, accounts: list[int], market: int = 0) -> np.ndarray:
    """One funding batch's rows: every account in `accounts` paid at `seq` in `market`."""
    rows = np.zeros((len(accounts), N_COLS), np.int64)
    rows[:, 0], rows[:, 1], rows[:, 2] = seq, 1_796_000_000_000_000_000 + seq * 3_600 * 10**9, market
    rows[:, 3] = accounts
    rows[:, 4] = 12_345 + seq
    rows[:, 5], rows[:, 6] = 37_000, 21_432
    rows[:, 7] = -123_456 * (seq + 1)
    return rows


def _model(batches: list[np.ndarray], keep: int) -> dict[int, list[tuple[int, ...]]]:
    """The reference: every row appended to its account's list, the last `keep` kept."""
    out: dict[int, list[tuple[int, ...]]] = {}
    for rows in batches:
        for r in rows.tolist():
            out.setdefault(r[3], []).append(tuple(r))
    return {a: rs[-keep:] for a, rs in out.items()}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.lists(st.integers(1, 6), min_size=1, max_size=6, unique=True), st.integers(0, 1)),
                min_size=1, max_size=40),
       st.integers(1, 7), st.integers(0, 9))
def test_the_last_payments_of_each_account_are_answered_in_seq_order_before_and_after_a_restart(
        tmp_path_factory, hours, keep, limit):
    path = tmp_path_factory.mktemp("fh") / "funding_history.bin"
    h = FundingHistory(path, max_per_account=keep, fsync=False, compact_min_rows=0)
    batches = [_hour(seq, accounts, market) for seq, (accounts, market) in enumerate(hours, start=1)]
    for rows in batches:
        h.append(rows)
    want = _model(batches, keep)
    for again in (h, FundingHistory(path, max_per_account=keep, fsync=False, compact_min_rows=0),
                  FundingHistory(path, max_per_account=keep, fsync=False)):  # compacted, then read back
        for acct in range(0, 8):
            kept = want.get(acct, [])
            assert again.of(acct, limit=limit) == (kept[-limit:] if limit else [])
            for m in (0, 1):
                of_m = [r for r in kept if r[2] == m]
                assert again.of(acct, market=m, limit=limit) == (of_m[-limit:] if limit else [])
    total, kept = sum(r.shape[0] for r in batches), sum(len(rs) for rs in want.values())
    assert path.stat().st_size == (kept if total > 2 * kept else total) * N_COLS * 8  # compacted past twice


def test_the_file_is_compacted_at_start_only_past_twice_the_kept_rows_and_a_torn_row_is_dropped(tmp_path):
    path = tmp_path / "funding_history.bin"
    h = FundingHistory(path, max_per_account=10, fsync=False, compact_min_rows=0)
    for seq in range(1, 16):  # 15 hours of 4 accounts: 60 rows, 40 kept
        h.append(_hour(seq, [1, 2, 3, 4]))
    assert path.stat().st_size == 60 * N_COLS * 8
    h2 = FundingHistory(path, max_per_account=10, fsync=False, compact_min_rows=0)
    assert path.stat().st_size == 60 * N_COLS * 8  # 60 <= 2 x 40: left as it is
    for seq in range(16, 31):
        h2.append(_hour(seq, [1, 2, 3, 4]))
    with open(path, "ab") as fh:
        fh.write(b"\x01" * 20)  # a crash in the middle of an append
    FundingHistory(path, max_per_account=10, fsync=False, compact_min_rows=1_000)  # under its minimum: kept
    assert path.stat().st_size == 120 * N_COLS * 8 + 20
    h3 = FundingHistory(path, max_per_account=10, fsync=False, compact_min_rows=0)
    assert path.stat().st_size == 40 * N_COLS * 8  # 120 > 2 x 40: the kept rows only, the torn one gone
    assert [r[0] for r in h3.of(3, limit=100)] == list(range(21, 31))
    assert FundingHistory(path, max_per_account=10, fsync=False).of(3, limit=100) == h3.of(3, limit=100)


def test_an_account_s_rows_are_held_as_flat_int64_not_python_objects(tmp_path):
    h = FundingHistory(tmp_path / "funding_history.bin", max_per_account=24 * 90, fsync=False)
    accounts = list(range(1_000, 2_000))
    tracemalloc.start()
    try:
        for seq in range(1, 101):
            h.append(_hour(seq, accounts))
        held, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert h.rows_kept() == 100_000
    assert held / 100_000 < 100  # 64 bytes a row and the buffers' slack; ~350 as tuples of ints
