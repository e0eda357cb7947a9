"""Engine state: a few numpy arrays, passed to the numba kernels as one namedtuple.

Few, wide arrays on purpose: numba passes a namedtuple member by member and reference-counts each
array at every call that is not inlined, so a state of ~30 arrays costs ~250 ns per call while
8 arrays cost almost nothing (measured; docs/performance.md).

- `orders[slot, O_*]`: the order pool. A slot is live iff `O_LIVE == 1`. `O_PREV`/`O_NEXT` link the
  FIFO of one price level, `O_APREV`/`O_ANEXT` the account's order list. Column `O_FREE` is not a
  slot field: rows `0 .. g[G_FREE_TOP]-1` of it are the free-slot stack.
- `levels[market, side, price - min_tick, LV_*]`: head, tail, total lots and order count of a level
  (a dense ladder over the market's price range).
- `accounts[account, AC_HEAD]`: newest open order; `accounts[account, AC_OPEN + m]`: open orders in
  market m.
- `position_lots[account, market]`: signed position.
- `collateral_micro[account]`: the wallet balance -- deposits - withdrawals + realised PnL - fees
  + funding; `cost_basis_micro[account, market]`: the signed entry notional of the open position
  (unrealised PnL = position x mark x micro_per_tick_lot - cost basis; average entry derived).
- `acct_mkt[account, market, AM_*]`: leverage choice, resting buy/sell lots, cumulative realised
  PnL, fees and funding.
- `tiers[market, tier, T_*]`: leverage tiers (bound, initial and maintenance rates, deduction).
- `adl_scratch[i, (rank, account)]`: the liquidation sweep's ADL queue (scratch, not state: left
  out of the hash).
- `mkt_undo`: the market rows before the current command's clock advance (scratch, not state: a
  rejected command restores them, so it never moves the clock).
- `active`: the accounts the liquidation sweep visits (kept by `risk.ledger.apply_fill`): row 0,
  column 0 holds the count n, rows 1..n of column 0 the account ids (in the order they were listed),
  `active[a, 1]` is account a's row (0: not listed), column 2 is the sweep's scratch. Every account
  holding a position is listed; one that goes flat stays listed until a sweep finds it flat with
  collateral >= 0, so a flat account with a negative balance is always listed too. The sweep costs
  O(listed accounts), not O(highest account id). Not in the hash: the sweep processes the accounts
  it selects in ascending id, so the list's order never changes an outcome.
- `maps[MAP_ORDER_ID | MAP_CLID, cell, key/value]`: engine order id -> slot, and
  (account << 40 | client order id) -> slot.
- `mkt` (market state, `M_*`), `spec` (market config, `S_*`), `g` (globals, `G_*`).

Capacities grow between batches (never inside a kernel). The state hash is *logical*: it covers
live orders level by level in FIFO order, market rows, positions and counters, not capacities or
slot numbers, so a snapshot restored into other capacities hashes the same.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections import namedtuple
from pathlib import Path

import msgspec
import numpy as np

from perp import layout as L
from perp.codes import ResultCode

STATE_FIELDS = ("orders", "levels", "accounts", "position_lots", "maps", "mkt", "spec", "g",
                "collateral_micro", "cost_basis_micro", "acct_mkt", "tiers", "adl_scratch", "mkt_undo",
                "active")

EngineState = namedtuple("EngineState", STATE_FIELDS)
DERIVED_FIELDS = ("adl_scratch", "mkt_undo", "active")  # scratch or derived from the others: not in the hash


def _pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


def _new_orders(capacity: int) -> np.ndarray:
    orders = np.zeros((capacity, L.N_ORDER_COLS), np.int64)
    for col in (L.O_PREV, L.O_NEXT, L.O_APREV, L.O_ANEXT):
        orders[:, col] = -1
    return orders


def _new_maps(order_capacity: int) -> np.ndarray:
    maps = np.zeros((2, _pow2_at_least(2 * order_capacity), 2), np.int64)
    maps[:, :, 0] = L.EMPTY_KEY
    return maps


def new_state(spec_rows: np.ndarray, tiers: np.ndarray, order_capacity: int = 1 << 16,
              account_capacity: int = 1 << 10) -> EngineState:
    """A fresh, empty engine for the given spec table (`n_markets x N_SPEC_COLS`) and tier table
    (`n_markets x MAX_TIERS x N_T_COLS`)."""
    n_markets = spec_rows.shape[0]
    n_levels = int((spec_rows[:, L.S_MAX_TICK] - spec_rows[:, L.S_MIN_TICK]).max()) + 1
    orders = _new_orders(order_capacity)
    orders[:, L.O_FREE] = np.arange(order_capacity - 1, -1, -1)  # pop order: slot 0 first
    levels = np.zeros((n_markets, 2, n_levels, L.N_LEVEL_COLS), np.int64)
    levels[..., L.LV_HEAD] = -1
    levels[..., L.LV_TAIL] = -1
    accounts = np.zeros((account_capacity, L.AC_OPEN + n_markets), np.int64)
    accounts[:, L.AC_HEAD] = -1
    mkt = np.zeros((n_markets, L.N_MKT_COLS), np.int64)
    mkt[:, L.M_BEST_BID] = L.NO_PRICE
    mkt[:, L.M_BEST_ASK] = L.NO_PRICE
    g = np.zeros(L.N_GLOBALS, np.int64)
    g[L.G_NEXT_ORDER_ID] = 1
    g[L.G_FREE_TOP] = order_capacity
    g[L.G_ACCOUNT_HWM] = int(spec_rows[:, L.S_FUND_ACCOUNT].max()) + 1  # the funds' accounts always exist
    return EngineState(orders=orders, levels=levels, accounts=accounts,
                       position_lots=np.zeros((account_capacity, n_markets), np.int64),
                       maps=_new_maps(order_capacity), mkt=mkt, spec=spec_rows.astype(np.int64).copy(), g=g,
                       collateral_micro=np.zeros(account_capacity, np.int64),
                       cost_basis_micro=np.zeros((account_capacity, n_markets), np.int64),
                       acct_mkt=np.zeros((account_capacity, n_markets, L.N_AM_COLS), np.int64),
                       tiers=np.ascontiguousarray(tiers, dtype=np.int64),
                       adl_scratch=np.zeros((account_capacity, 2), np.int64),
                       mkt_undo=np.zeros_like(mkt),
                       active=np.zeros((account_capacity + 1, 3), np.int64))


def copy_state(st: EngineState) -> EngineState:
    """A deep copy of every state array (a snapshot's source, an undo point)."""
    return EngineState(*(a.copy() for a in st))


def order_capacity(st: EngineState) -> int:
    return int(st.orders.shape[0])


def account_capacity(st: EngineState) -> int:
    return int(st.accounts.shape[0])


def grow_orders(st: EngineState, new_capacity: int) -> EngineState:
    """Copy into a larger pool (slot numbers kept); the hash maps are rebuilt from live slots."""
    from perp.hashmap import hm_insert

    old = order_capacity(st)
    assert new_capacity > old
    orders = _new_orders(new_capacity)
    orders[:old, : L.O_FREE] = st.orders[:, : L.O_FREE]
    n_free_old = int(st.g[L.G_FREE_TOP])
    # new slots go below the existing free stack, so the existing pop order is unchanged
    extra = np.arange(new_capacity - 1, old - 1, -1)
    orders[: extra.size, L.O_FREE] = extra
    orders[extra.size: extra.size + n_free_old, L.O_FREE] = st.orders[:n_free_old, L.O_FREE]
    g = st.g.copy()
    g[L.G_FREE_TOP] = n_free_old + extra.size
    maps = _new_maps(new_capacity)
    for slot in np.nonzero(orders[:, L.O_LIVE])[0]:
        hm_insert(maps, L.MAP_ORDER_ID, int(orders[slot, L.O_ID]), int(slot))
        if orders[slot, L.O_CLID] > 0:
            key = (int(orders[slot, L.O_ACCOUNT]) << L.CLID_BITS) | int(orders[slot, L.O_CLID])
            hm_insert(maps, L.MAP_CLID, key, int(slot))
    return st._replace(orders=orders, g=g, maps=maps)


def grow_accounts(st: EngineState, new_capacity: int) -> EngineState:
    old = account_capacity(st)
    assert new_capacity > old
    accounts = np.zeros((new_capacity, st.accounts.shape[1]), np.int64)
    accounts[:, L.AC_HEAD] = -1
    accounts[:old] = st.accounts
    def grown(a: np.ndarray) -> np.ndarray:
        out = np.zeros((new_capacity,) + a.shape[1:], np.int64)
        out[:old] = a
        return out

    return st._replace(accounts=accounts, position_lots=grown(st.position_lots),
                       collateral_micro=grown(st.collateral_micro), cost_basis_micro=grown(st.cost_basis_micro),
                       acct_mkt=grown(st.acct_mkt), adl_scratch=np.zeros((new_capacity, 2), np.int64),
                       active=np.concatenate([st.active, np.zeros((new_capacity - old, 3), np.int64)]))


def grow_markets(st: EngineState, spec_row: np.ndarray, tier_row: np.ndarray, status: int = L.ST_ACTIVE,
                 insurance_floor_micro: int = 0) -> EngineState:
    """Copy into arrays with one more market (index `n_markets`), listed with `spec_row` (N_SPEC_COLS),
    `tier_row` (MAX_TIERS x N_T_COLS), `status` and its fund's floor. Every existing row is copied
    unchanged; the new market has an empty book (its ladder widens `levels` when its price range is
    wider), no positions, and its clock starts at the next command (like a fresh venue's); its fund
    account is below the account high-water mark. Deterministic: a replay grows the same way."""
    n = st.mkt.shape[0]
    cap = account_capacity(st)
    n_levels = max(st.levels.shape[2], int(spec_row[L.S_MAX_TICK] - spec_row[L.S_MIN_TICK]) + 1)
    levels = np.zeros((n + 1, 2, n_levels, L.N_LEVEL_COLS), np.int64)
    levels[..., L.LV_HEAD] = -1
    levels[..., L.LV_TAIL] = -1
    levels[:n, :, : st.levels.shape[2]] = st.levels
    accounts = np.zeros((cap, st.accounts.shape[1] + 1), np.int64)
    accounts[:, : st.accounts.shape[1]] = st.accounts

    def wider(a: np.ndarray) -> np.ndarray:  # [account, market, ...] with one more market column
        out = np.zeros((a.shape[0], n + 1) + a.shape[2:], np.int64)
        out[:, :n] = a
        return out

    mkt = np.zeros((n + 1, L.N_MKT_COLS), np.int64)
    mkt[:n] = st.mkt
    mkt[n, L.M_BEST_BID] = L.NO_PRICE
    mkt[n, L.M_BEST_ASK] = L.NO_PRICE
    mkt[n, L.M_STATUS] = status
    mkt[n, L.M_INSURANCE_FLOOR_MICRO] = insurance_floor_micro
    g = st.g.copy()
    g[L.G_ACCOUNT_HWM] = max(int(g[L.G_ACCOUNT_HWM]), int(spec_row[L.S_FUND_ACCOUNT]) + 1)
    return st._replace(levels=levels, accounts=accounts, position_lots=wider(st.position_lots),
                       cost_basis_micro=wider(st.cost_basis_micro), acct_mkt=wider(st.acct_mkt), mkt=mkt,
                       spec=np.concatenate([st.spec, spec_row.reshape(1, -1).astype(np.int64)]), g=g,
                       tiers=np.ascontiguousarray(np.concatenate([st.tiers, tier_row[None].astype(np.int64)])),
                       mkt_undo=np.zeros_like(mkt))


def rebuild_active(st: EngineState) -> None:
    """List (in `st.active`) every account holding a position or a negative balance, in id order:
    for states built directly in the arrays (benchmarks, tools), never needed after commands."""
    hwm = int(st.g[L.G_ACCOUNT_HWM])
    ids = np.nonzero((st.position_lots[:hwm] != 0).any(axis=1) | (st.collateral_micro[:hwm] < 0))[0]
    st.active[:, :2] = 0
    st.active[0, 0] = ids.size
    st.active[1:ids.size + 1, 0] = ids
    st.active[ids, 1] = np.arange(1, ids.size + 1)


def state_hash(st: EngineState, include_clock: bool = True) -> str:
    """Logical state hash (hex blake2b-256). `include_clock=False` leaves out the sequence number,
    the last timestamp and the sampling schedule: what a rejected command must not change."""
    from perp.kernel import canonical_orders

    h = hashlib.blake2b(digest_size=32)
    h.update(b"perp-state-v1")
    h.update(st.spec.tobytes())
    mkt = st.mkt.copy()
    g = st.g.copy()
    g[[L.G_ADL_KEY, L.G_ADL_LEN, L.G_ADL_HEAD, L.G_UNDO_LAST_TS]] = 0  # scratch
    if not include_clock:
        g[L.G_LAST_TS] = 0
        g[L.G_SEQ] = 0
        mkt[:, L.M_NEXT_SAMPLE_TS] = 0
    h.update(mkt.tobytes())
    h.update(g[[L.G_NEXT_ORDER_ID, L.G_LAST_TS, L.G_SEQ, L.G_FEE_LEDGER_MICRO,
                L.G_DEPOSITS_MICRO, L.G_WITHDRAWALS_MICRO]].tobytes())
    h.update(st.tiers.tobytes())
    h.update(canonical_orders(st).tobytes())
    # accounts: only rows below the high-water mark, so capacity does not matter
    hwm = int(st.g[L.G_ACCOUNT_HWM])
    h.update(np.int64(hwm).tobytes())
    h.update(st.position_lots[:hwm].tobytes())
    h.update(st.collateral_micro[:hwm].tobytes())
    h.update(st.cost_basis_micro[:hwm].tobytes())
    h.update(st.acct_mkt[:hwm].tobytes())
    return h.hexdigest()


# ---- snapshots -----------------------------------------------------------------------------------
#
# File layout: b"PERPSNP2", [u32 meta length], meta (msgpack `SnapshotMeta`), every array's raw
# little-endian bytes in `meta.arrays` order, then a 32-byte blake2b digest of everything before it.
# Written to a temporary file in the same directory, fsynced, renamed over the target, and the
# directory fsynced: a crash at any point leaves either the old snapshot or the new one, whole.
# Loading verifies the digest (SNAPSHOT_CORRUPT, 5012) and then recomputes the state hash and
# compares it with the one stored at save time (SNAPSHOT_HASH_MISMATCH, 5013).

SNAPSHOT_MAGIC = b"PERPSNP2"
SNAPSHOT_SCHEMA = 2
_DIGEST_BYTES = 32


class SnapshotArray(msgspec.Struct, frozen=True, array_like=True):
    name: str
    dtype: str
    shape: tuple[int, ...]


class SnapshotMeta(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    schema_version: int
    seq: int  # g[G_SEQ]: the last command the state includes
    state_hash: str  # state_hash(st) at save time
    arrays: tuple[SnapshotArray, ...]
    extra: dict[str, str]  # the caller's metadata: markets config, journal id, ...


class SnapshotError(Exception):
    """A snapshot that must not be used; `code` says why."""

    code: ResultCode = ResultCode.SNAPSHOT_CORRUPT

    def __init__(self, message: str):
        super().__init__(f"{self.code.name} ({int(self.code)}): {message}")


class SnapshotCorrupt(SnapshotError):
    code = ResultCode.SNAPSHOT_CORRUPT


class SnapshotHashMismatch(SnapshotError):
    code = ResultCode.SNAPSHOT_HASH_MISMATCH


class SnapshotMismatch(SnapshotError):
    """A valid snapshot that does not belong to the journal it is recovered with (code 5003)."""

    code = ResultCode.SNAPSHOT_MISMATCH


def _snapshot_chunks(st: EngineState, meta: dict[str, str] | None, h: str | None = None) -> tuple[str, list]:
    """The snapshot format, once for files and blobs: magic, head length, msgpack head (schema,
    seq, state hash, array shapes, `meta`), the arrays as little-endian int64, then a blake2b
    digest of everything before it. `h`: `state_hash(st)` when the caller has it already.
    Returns the state hash and the chunks (digest last)."""
    arrays = [np.ascontiguousarray(getattr(st, name), dtype="<i8") for name in STATE_FIELDS]
    h = state_hash(st) if h is None else h
    head = msgspec.msgpack.encode(SnapshotMeta(
        SNAPSHOT_SCHEMA, int(st.g[L.G_SEQ]), h,
        tuple(SnapshotArray(n, "<i8", tuple(int(d) for d in a.shape)) for n, a in zip(STATE_FIELDS, arrays)),
        dict(meta or {})))
    chunks: list = [SNAPSHOT_MAGIC, struct.pack("<I", len(head)), head, *(memoryview(a).cast("B") for a in arrays)]
    digest = hashlib.blake2b(digest_size=_DIGEST_BYTES)
    for chunk in chunks:
        digest.update(chunk)
    chunks.append(digest.digest())
    return h, chunks


def snapshot_blob(st: EngineState, meta: dict[str, str] | None = None, h: str | None = None) -> bytes:
    """The bytes `save_snapshot` would write, built in memory (no file, no fsync; `h` as in
    `_snapshot_chunks`). `load_snapshot_blob` reads them back; `write_snapshot_file` stores them."""
    return b"".join(_snapshot_chunks(st, meta, h)[1])


def save_snapshot(st: EngineState, path, meta: dict[str, str] | None = None) -> str:
    """Write every array plus `meta` atomically (temp file, fsync, rename, directory fsync); the
    snapshot's sequence number is `g[G_SEQ]`. Returns the state hash stored with it."""
    h, chunks = _snapshot_chunks(st, meta)
    write_snapshot_file(path, chunks)
    return h


def write_snapshot_file(path, data: bytes | list) -> None:
    """Write a snapshot's bytes (`snapshot_blob`, or its chunks) atomically: temp file, fsync,
    rename, directory fsync. Any thread may call it (one writer per path)."""
    path = Path(path)
    chunks = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a writer killed mid-write (one writer per path)
        stale.unlink(missing_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_snapshot_meta(path) -> SnapshotMeta:
    """The verified metadata of a snapshot (checksum checked over the whole file)."""
    return _read_snapshot(Path(path))[0]


def _read_snapshot(path: Path) -> tuple[SnapshotMeta, memoryview]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SnapshotCorrupt(f"{path}: no such snapshot") from None
    return _parse_snapshot(data, path)


def _parse_snapshot(data: bytes, path: Path | str) -> tuple[SnapshotMeta, memoryview]:
    view = memoryview(data)
    if len(data) < len(SNAPSHOT_MAGIC) + 4 + _DIGEST_BYTES or data[: len(SNAPSHOT_MAGIC)] != SNAPSHOT_MAGIC:
        raise SnapshotCorrupt(f"{path}: not a snapshot (bad magic or cut short, {len(data)} bytes)")
    body = view[:-_DIGEST_BYTES]
    if hashlib.blake2b(body, digest_size=_DIGEST_BYTES).digest() != data[-_DIGEST_BYTES:]:
        raise SnapshotCorrupt(f"{path}: checksum mismatch (the file is damaged)")
    (n_head,) = struct.unpack_from("<I", data, len(SNAPSHOT_MAGIC))
    start = len(SNAPSHOT_MAGIC) + 4
    try:
        meta = msgspec.msgpack.decode(body[start:start + n_head], type=SnapshotMeta)
    except msgspec.DecodeError as exc:
        raise SnapshotCorrupt(f"{path}: undecodable metadata: {exc}") from None
    if meta.schema_version != SNAPSHOT_SCHEMA:
        raise SnapshotCorrupt(f"{path}: snapshot schema {meta.schema_version}, this engine reads {SNAPSHOT_SCHEMA}")
    return meta, body[start + n_head:]


def load_snapshot(path) -> tuple[EngineState, dict[str, str]]:
    """The state and the caller's metadata (plus `seq` and `state_hash`), both verified: raises
    `SnapshotCorrupt` (5012) or `SnapshotHashMismatch` (5013); never returns a state that differs
    from the one saved."""
    path = Path(path)
    return _state_of(*_read_snapshot(path), path)


def load_snapshot_blob(data: bytes, name: str = "snapshot") -> tuple[EngineState, dict[str, str]]:
    """`load_snapshot` of bytes from `snapshot_blob` (verified the same way; `name` is for errors)."""
    return _state_of(*_parse_snapshot(data, name), name)


def _state_of(meta: SnapshotMeta, blob: memoryview, path: Path | str) -> tuple[EngineState, dict[str, str]]:
    names = [a.name for a in meta.arrays]
    # the logical arrays must all be there, in order; derived and scratch arrays (not in the hash) may
    # be missing from a snapshot written before they existed and are rebuilt below
    if [n for n in names if n not in DERIVED_FIELDS] != [n for n in STATE_FIELDS if n not in DERIVED_FIELDS] \
            or len(set(names)) != len(names) or not set(names) <= set(STATE_FIELDS):
        raise SnapshotCorrupt(f"{path}: arrays {names}, expected {list(STATE_FIELDS)}")
    arrays: dict[str, np.ndarray] = {}
    pos = 0
    for a in meta.arrays:
        n = 8 * int(np.prod(a.shape, dtype=np.int64))
        if a.dtype != "<i8" or pos + n > len(blob):
            raise SnapshotCorrupt(f"{path}: array {a.name} does not fit the file")
        arrays[a.name] = np.frombuffer(blob[pos:pos + n], dtype="<i8").reshape(a.shape).astype(np.int64, copy=True)
        pos += n
    if pos != len(blob):
        raise SnapshotCorrupt(f"{path}: {len(blob) - pos} bytes after the last array")
    cap = arrays["accounts"].shape[0]
    rebuild = "active" not in arrays
    arrays.setdefault("active", np.zeros((cap + 1, 3), np.int64))
    arrays.setdefault("mkt_undo", np.zeros_like(arrays["mkt"]))
    arrays.setdefault("adl_scratch", np.zeros((cap, 2), np.int64))
    st = EngineState(**arrays)
    if rebuild:
        rebuild_active(st)
    h = state_hash(st)
    if h != meta.state_hash:
        raise SnapshotHashMismatch(f"{path}: the restored state hashes to {h}, "
                                   f"the snapshot was saved at {meta.state_hash}")
    return st, dict(meta.extra) | {"seq": str(meta.seq), "state_hash": meta.state_hash}
