"""Client order ids ever used, per account: what makes a retried place safe (gateway code 4204).

The engine's kernel refuses a client order id only while an order with it is live (1014); the
gateway promises more: an id is consumed for good once its place is sequenced, whatever its fate.
`UsedClientOrderIds` is the record of that promise, kept by the engine from its own command stream
(every `place` row that carries a client order id, accepted by the kernel or not: exactly the rows
the journal holds), saved with every snapshot and rebuilt by replaying the journal after it. A
restart therefore costs one snapshot load plus the journal's tail, never a scan of the whole
journal.

Invariants:
- after the engine has processed command rows R (in any batch sizes), the set holds exactly
  {(account, clid) : r in R, r is a place, clid > 0} on top of what it was restored with;
- a key is `account << 40 | clid` (clid < 2^40, account < 2^22, so a key fits an int64); the
  snapshot form is the sorted int64 keys, base64 in the snapshot's metadata (covered by the
  snapshot's checksum);
- it is not part of the state hash: it changes nothing the kernel computes, and a state hash must
  stay comparable with engines built before it existed.

Known limit: the gateway's set costs one Python int per id (about 60-70 bytes; 8 bytes in a snapshot).
"""

from __future__ import annotations

import base64

import numpy as np

from perp import layout as L
from perp.batch_facts import CLID_SHIFT, batch_facts

assert L.MAX_CLIENT_ORDER_ID < (1 << CLID_SHIFT) and (L.MAX_ACCOUNT_ID << CLID_SHIFT) < (1 << 63)

SNAPSHOT_KEY = "used_client_order_ids"  # the snapshot metadata entry


def clid_key(account: int, client_order_id: int) -> int:
    return (account << CLID_SHIFT) | client_order_id


def _sorted_distinct(keys: np.ndarray) -> np.ndarray:
    """`keys` sorted, each value once: a sort (a copy) and a neighbour comparison. numpy 2's
    `np.unique` (hash-based) took ~3.5 s on 7M keys here where this takes ~0.07 s."""
    out = np.sort(keys)
    if out.size < 2:
        return out
    keep = np.empty(out.size, np.bool_)
    keep[0] = True
    np.not_equal(out[1:], out[:-1], out=keep[1:])
    return out if keep.all() else out[keep]


MIN_COMPACT_KEYS = 1 << 20  # no compaction below this many recorded keys
COMPACT_GROWTH = 4  # compact when the recorded keys reach this many times the distinct count last found


class UsedClientOrderIds:
    """The keys in one growing int64 buffer (no Python object per id): `add_keys` appends (a copy of
    a few thousand keys per batch -- the engine's batch loop pays nothing else). The buffer is
    *compacted* (sorted, each key once) when `keys()` is asked for it (snapshots, `len`, the first
    `contains`) and when it reaches `COMPACT_GROWTH` times the distinct count of the last
    compaction (at least `MIN_COMPACT_KEYS`), which bounds the memory a stream of re-used ids could
    take to that factor and costs ~1.3 sorts per key over its life. (Compacting everything with
    `np.unique` every 256 batches re-sorted 7M keys nine times while a 10M-command journal was
    replayed: 36 of its 41 s.) The first `contains` or `seen` builds a Python set, which later
    additions keep up to date (the gateway's per-order check, the Redis sequencer's per-batch one).

    Invariant: the recorded keys are `_buf[:_n]`; `_buf[:_sorted_n]` is sorted and distinct, and
    after a compaction `_sorted_n == _n`."""

    __slots__ = ("_buf", "_n", "_sorted_n", "_set")

    def __init__(self, keys: np.ndarray | None = None):
        start = _sorted_distinct(np.asarray(keys, np.int64)) if keys is not None else np.zeros(0, np.int64)
        self._buf = np.empty(max(1 << 12, 2 * start.shape[0]), np.int64)
        self._buf[:start.shape[0]] = start
        self._n = self._sorted_n = start.shape[0]
        self._set: set[int] | None = None

    def __len__(self) -> int:
        return int(self.keys().shape[0])

    def _lookup(self) -> set[int]:
        if self._set is None:
            self._set = set(self.keys().tolist())
        return self._set

    def contains(self, account: int, client_order_id: int) -> bool:
        return ((account << CLID_SHIFT) | client_order_id) in self._lookup()

    def seen(self, keys: np.ndarray) -> np.ndarray:
        """For `keys` (`account << 40 | clid`) in order, a bool array: True where the key is already
        recorded or occurs earlier in `keys` -- the places the Redis sequencer refuses (4204,
        gateway/engine_proc.py). Records nothing: the kept rows' keys are added when they run."""
        ks = keys.tolist()
        out = np.fromiter(map(self._lookup().__contains__, ks), np.bool_, len(ks))
        if len(set(ks)) < len(ks):  # a key twice in `keys`: every use after its first
            first: set[int] = set()
            for i, k in enumerate(ks):
                if k in first:
                    out[i] = True
                first.add(k)
        return out

    def add_rows(self, cmds: np.ndarray) -> None:
        """Record the client order ids of the place rows in `cmds` (command rows, perp.layout): those
        with 0 < clid <= MAX_CLIENT_ORDER_ID and 0 <= account <= MAX_ACCOUNT_ID (anything else the
        kernel refuses), accepted by the kernel or not."""
        cmds = np.ascontiguousarray(cmds, dtype=np.int64)
        keys = np.empty(cmds.shape[0], np.int64)
        _, _, n_keys = batch_facts(cmds, keys)
        self.add_keys(keys[:n_keys])

    def add_keys(self, keys: np.ndarray) -> None:
        """Record keys (`account << 40 | clid`, as `perp.batch_facts.batch_facts` writes them); they
        are copied (the caller may reuse its array)."""
        k = keys.shape[0]
        if not k:
            return
        end = self._n + k
        if end > max(MIN_COMPACT_KEYS, COMPACT_GROWTH * self._sorted_n):
            self._compact()
            end = self._n + k
        if end > self._buf.shape[0]:
            grown = np.empty(max(2 * self._buf.shape[0], end), np.int64)
            grown[:self._n] = self._buf[:self._n]
            self._buf = grown
        self._buf[self._n:end] = keys
        self._n = end
        if self._set is not None:
            self._set.update(keys.tolist())

    def _compact(self) -> None:
        if self._sorted_n == self._n:
            return
        kept = _sorted_distinct(self._buf[:self._n])
        self._buf[:kept.shape[0]] = kept
        self._n = self._sorted_n = kept.shape[0]

    def keys(self) -> np.ndarray:
        """The sorted distinct keys (account << 40 | clid); a view, valid until the next addition."""
        self._compact()
        return self._buf[:self._n]

    def to_text(self) -> str:
        return base64.b64encode(self.keys().astype("<i8").tobytes()).decode("ascii")

    @classmethod
    def from_text(cls, text: str) -> UsedClientOrderIds:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
        if len(raw) % 8:
            raise ValueError("used client order ids: not a whole number of int64 keys")
        return cls(np.frombuffer(raw, dtype="<i8"))


def reused_places(cmds: np.ndarray, ids: UsedClientOrderIds) -> np.ndarray:
    """Indices (ascending) of the place rows in `cmds` whose (account, client order id) `ids` holds or
    an earlier place row of `cmds` uses: the rows a sequencer leaves out so that an id is consumed
    once (4204). Only rows `add_rows` would record are considered (0 < clid <= MAX_CLIENT_ORDER_ID,
    0 <= account <= MAX_ACCOUNT_ID); nothing is recorded."""
    kind, acct, clid = cmds[:, L.C_KIND], cmds[:, L.C_ACCOUNT], cmds[:, L.C_CLID]
    rows = np.flatnonzero((kind == L.CK_PLACE) & (clid > 0) & (clid <= L.MAX_CLIENT_ORDER_ID)
                          & (acct >= 0) & (acct <= L.MAX_ACCOUNT_ID))
    if not rows.shape[0]:
        return rows
    return rows[ids.seen((acct[rows] << CLID_SHIFT) | clid[rows])]
