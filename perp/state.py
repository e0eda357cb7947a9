"""Engine state: a struct of numpy arrays, passed to the numba kernels as one namedtuple.

Layout:
- order pool (capacity P): per-slot columns `o_*`; a slot is live iff `o_live[slot] == 1`; free slots
  sit on the `free_slots` stack (`g[G_FREE_TOP]` of them);
- FIFO per price level: `o_prev`/`o_next` link the orders of one level, `lvl_head`/`lvl_tail`
  its ends, `lvl_qty` its total remaining lots, `lvl_count` its order count; levels are indexed
  `[market, side, price_ticks - min_tick]` (a dense ladder);
- per-account order list: `o_aprev`/`o_anext`, `acct_head`; `acct_open[account, market]` counts;
- `position_lots[account, market]`, signed;
- two open-addressing hash maps: engine order id -> slot, (account, client order id) -> slot;
- `mkt` (market state, `M_*` columns), `spec` (market config, `S_*`), `g` (globals, `G_*`).

Capacities grow between batches (never inside a kernel). The state hash is *logical*: it covers
live orders level by level in FIFO order, market rows, positions and counters, not capacities or the
free-slot order, so a snapshot restored into other capacities hashes the same.
"""

from __future__ import annotations

import hashlib
from collections import namedtuple

import numpy as np

from perp import layout as L

STATE_FIELDS = (
    "o_id", "o_account", "o_clid", "o_market", "o_side", "o_price", "o_rem", "o_flags", "o_live",
    "o_prev", "o_next", "o_aprev", "o_anext",
    "free_slots",
    "lvl_head", "lvl_tail", "lvl_qty", "lvl_count",
    "acct_head", "acct_open", "position_lots",
    "id_keys", "id_vals", "clid_keys", "clid_vals",
    "mkt", "spec", "g",
)

EngineState = namedtuple("EngineState", STATE_FIELDS)

_POOL_FIELDS = ("o_id", "o_account", "o_clid", "o_market", "o_side", "o_price", "o_rem", "o_flags",
                "o_live", "o_prev", "o_next", "o_aprev", "o_anext")
_ACCOUNT_FIELDS = ("acct_head", "acct_open", "position_lots")


def _pow2_at_least(n: int) -> int:
    p = 1
    while p < n:
        p <<= 1
    return p


def _alloc_pool(capacity: int) -> dict[str, np.ndarray]:
    return {
        "o_id": np.zeros(capacity, np.int64),
        "o_account": np.zeros(capacity, np.int64),
        "o_clid": np.zeros(capacity, np.int64),
        "o_market": np.zeros(capacity, np.int64),
        "o_side": np.zeros(capacity, np.int64),
        "o_price": np.zeros(capacity, np.int64),
        "o_rem": np.zeros(capacity, np.int64),
        "o_flags": np.zeros(capacity, np.int64),
        "o_live": np.zeros(capacity, np.int8),
        "o_prev": np.full(capacity, -1, np.int32),
        "o_next": np.full(capacity, -1, np.int32),
        "o_aprev": np.full(capacity, -1, np.int32),
        "o_anext": np.full(capacity, -1, np.int32),
    }


def new_state(spec_rows: np.ndarray, order_capacity: int = 1 << 16, account_capacity: int = 1 << 10) -> EngineState:
    """A fresh, empty engine for the given spec table (`n_markets x N_SPEC_COLS`)."""
    n_markets = spec_rows.shape[0]
    n_levels = int((spec_rows[:, L.S_MAX_TICK] - spec_rows[:, L.S_MIN_TICK]).max()) + 1
    pool = _alloc_pool(order_capacity)
    hm = _pow2_at_least(2 * order_capacity)
    mkt = np.zeros((n_markets, L.N_MKT_COLS), np.int64)
    mkt[:, L.M_BEST_BID] = L.NO_PRICE
    mkt[:, L.M_BEST_ASK] = L.NO_PRICE
    g = np.zeros(L.N_GLOBALS, np.int64)
    g[L.G_NEXT_ORDER_ID] = 1
    g[L.G_FREE_TOP] = order_capacity
    return EngineState(
        **pool,
        # pop order: slot 0 first
        free_slots=np.arange(order_capacity - 1, -1, -1, dtype=np.int32),
        lvl_head=np.full((n_markets, 2, n_levels), -1, np.int32),
        lvl_tail=np.full((n_markets, 2, n_levels), -1, np.int32),
        lvl_qty=np.zeros((n_markets, 2, n_levels), np.int64),
        lvl_count=np.zeros((n_markets, 2, n_levels), np.int32),
        acct_head=np.full(account_capacity, -1, np.int32),
        acct_open=np.zeros((account_capacity, n_markets), np.int32),
        position_lots=np.zeros((account_capacity, n_markets), np.int64),
        id_keys=np.full(hm, L.EMPTY_KEY, np.int64),
        id_vals=np.zeros(hm, np.int32),
        clid_keys=np.full(hm, L.EMPTY_KEY, np.int64),
        clid_vals=np.zeros(hm, np.int32),
        mkt=mkt,
        spec=spec_rows.astype(np.int64).copy(),
        g=g,
    )


def order_capacity(st: EngineState) -> int:
    return int(st.o_id.shape[0])


def account_capacity(st: EngineState) -> int:
    return int(st.acct_head.shape[0])


def grow_orders(st: EngineState, new_capacity: int) -> EngineState:
    """Copy into a larger pool; hash maps are rebuilt from live slots (slot numbers are kept)."""
    from perp.hashmap import hm_insert

    old = order_capacity(st)
    assert new_capacity > old
    pool = _alloc_pool(new_capacity)
    for name in _POOL_FIELDS:
        pool[name][:old] = getattr(st, name)
    n_free_old = int(st.g[L.G_FREE_TOP])
    # new slots go below the existing free stack so that the existing pop order is unchanged
    free = np.empty(new_capacity, np.int32)
    extra = np.arange(new_capacity - 1, old - 1, -1, dtype=np.int32)
    free[: extra.size] = extra
    free[extra.size: extra.size + n_free_old] = st.free_slots[:n_free_old]
    g = st.g.copy()
    g[L.G_FREE_TOP] = n_free_old + extra.size
    hm = _pow2_at_least(2 * new_capacity)
    id_keys = np.full(hm, L.EMPTY_KEY, np.int64)
    id_vals = np.zeros(hm, np.int32)
    clid_keys = np.full(hm, L.EMPTY_KEY, np.int64)
    clid_vals = np.zeros(hm, np.int32)
    live = np.nonzero(pool["o_live"])[0]
    for slot in live:
        hm_insert(id_keys, id_vals, int(pool["o_id"][slot]), int(slot))
        if pool["o_clid"][slot] > 0:
            key = (int(pool["o_account"][slot]) << L.CLID_BITS) | int(pool["o_clid"][slot])
            hm_insert(clid_keys, clid_vals, key, int(slot))
    return st._replace(**pool, free_slots=free, g=g, id_keys=id_keys, id_vals=id_vals,
                       clid_keys=clid_keys, clid_vals=clid_vals)


def grow_accounts(st: EngineState, new_capacity: int) -> EngineState:
    old = account_capacity(st)
    assert new_capacity > old
    n_markets = st.mkt.shape[0]
    acct_head = np.full(new_capacity, -1, np.int32)
    acct_head[:old] = st.acct_head
    acct_open = np.zeros((new_capacity, n_markets), np.int32)
    acct_open[:old] = st.acct_open
    position_lots = np.zeros((new_capacity, n_markets), np.int64)
    position_lots[:old] = st.position_lots
    return st._replace(acct_head=acct_head, acct_open=acct_open, position_lots=position_lots)


def copy_state(st: EngineState) -> EngineState:
    return EngineState(*(np.array(a, copy=True) for a in st))


def state_hash(st: EngineState, include_clock: bool = True) -> str:
    """Logical state hash (hex blake2b-256). `include_clock=False` leaves out the sequence number,
    the last timestamp and the time-driven mark fields: what a rejected command must not change."""
    from perp.kernel import canonical_orders

    h = hashlib.blake2b(digest_size=32)
    h.update(b"perp-state-v1")
    h.update(st.spec.tobytes())
    mkt = st.mkt.copy()
    g = st.g.copy()
    g[L.G_NEED_EVENTS] = 0
    if not include_clock:
        g[L.G_LAST_TS] = 0
        g[L.G_SEQ] = 0
        mkt[:, L.M_NEXT_SAMPLE_TS] = 0
    h.update(mkt.tobytes())
    h.update(g[[L.G_NEXT_ORDER_ID, L.G_LAST_TS, L.G_SEQ]].tobytes())
    h.update(canonical_orders(st).tobytes())
    # accounts: only rows up to the high-water mark, so capacity does not matter
    hwm = int(st.g[L.G_ACCOUNT_HWM])
    h.update(np.int64(hwm).tobytes())
    h.update(st.position_lots[:hwm].tobytes())
    return h.hexdigest()


def save_snapshot(st: EngineState, path, meta: dict[str, str] | None = None) -> None:
    """Write every array plus metadata (`.npz`); the snapshot's sequence number is `g[G_SEQ]`."""
    arrays = {name: getattr(st, name) for name in STATE_FIELDS}
    meta_arr = {f"meta_{k}": np.array(v) for k, v in (meta or {}).items()}
    with open(path, "wb") as fh:
        np.savez(fh, **arrays, **meta_arr)


def load_snapshot(path) -> tuple[EngineState, dict[str, str]]:
    with np.load(path, allow_pickle=False) as data:
        st = EngineState(*(np.array(data[name]) for name in STATE_FIELDS))
        meta = {k[5:]: str(data[k]) for k in data.files if k.startswith("meta_")}
    return st, meta
