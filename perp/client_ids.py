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

CLID_SHIFT = 40
assert L.MAX_CLIENT_ORDER_ID < (1 << CLID_SHIFT) and (L.MAX_ACCOUNT_ID << CLID_SHIFT) < (1 << 63)

SNAPSHOT_KEY = "used_client_order_ids"  # the snapshot metadata entry


def clid_key(account: int, client_order_id: int) -> int:
    return (account << CLID_SHIFT) | client_order_id


def _sorted_distinct(keys: np.ndarray) -> np.ndarray:
    """`keys` sorted, each value once. A sort and a neighbour comparison: numpy 2's `np.unique`
    (hash-based) took ~3.5 s on 7M keys here where this takes ~0.1 s."""
    out = np.sort(keys, kind="stable")  # a copy; timsort merges the sorted runs of a concatenation in one pass
    if out.size < 2:
        return out
    keep = np.empty(out.size, np.bool_)
    keep[0] = True
    np.not_equal(out[1:], out[:-1], out=keep[1:])
    return out if keep.all() else out[keep]


class UsedClientOrderIds:
    """The keys as a few sorted, distinct runs (numpy int64 arrays; no Python object per id): each
    batch adds one run, and a run is merged into the one before it while that one is at most twice
    as long (a binary counter), so there are at most ~log2(n) runs and each key is re-sorted
    O(log n) times over its life -- the engine's batch loop pays a few numpy calls per batch (the
    replay of a 10M-command journal re-sorted 7M keys nine times with `np.unique` and spent 36 s
    there before). The first `contains` builds a Python set, which later `add_rows` keep up to date
    (the gateway's per-order check).

    Invariant: the union of the runs is the set of recorded keys; runs are sorted and distinct
    within themselves (a key may be in two runs until they are merged)."""

    __slots__ = ("_runs", "_set")

    def __init__(self, keys: np.ndarray | None = None):
        self._runs: list[np.ndarray] = [] if keys is None else [_sorted_distinct(np.asarray(keys, np.int64))]
        self._set: set[int] | None = None

    def __len__(self) -> int:
        return int(self.keys().shape[0])

    def contains(self, account: int, client_order_id: int) -> bool:
        if self._set is None:
            self._set = set(self.keys().tolist())
        return ((account << CLID_SHIFT) | client_order_id) in self._set

    def add_rows(self, cmds: np.ndarray) -> None:
        """Record the client order ids of the place rows in `cmds` (command rows, perp.layout)."""
        clid = cmds[:, L.C_CLID]
        acct = cmds[:, L.C_ACCOUNT]
        sel = ((cmds[:, L.C_KIND] == L.CK_PLACE) & (clid > 0) & (clid <= L.MAX_CLIENT_ORDER_ID)
               & (acct >= 0) & (acct <= L.MAX_ACCOUNT_ID))  # anything else the kernel refuses
        if not sel.any():
            return
        new = (acct[sel] << CLID_SHIFT) | clid[sel]
        runs = self._runs
        runs.append(_sorted_distinct(new))
        while len(runs) > 1 and runs[-2].shape[0] <= 2 * runs[-1].shape[0]:
            last = runs.pop()
            runs[-1] = _sorted_distinct(np.concatenate((runs[-1], last)))
        if self._set is not None:
            self._set.update(new.tolist())

    def keys(self) -> np.ndarray:
        """The sorted distinct keys (account << 40 | clid)."""
        if not self._runs:
            return np.zeros(0, np.int64)
        if len(self._runs) > 1:
            self._runs = [_sorted_distinct(np.concatenate(self._runs))]
        return self._runs[0]

    def to_text(self) -> str:
        return base64.b64encode(self.keys().astype("<i8").tobytes()).decode("ascii")

    @classmethod
    def from_text(cls, text: str) -> UsedClientOrderIds:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
        if len(raw) % 8:
            raise ValueError("used client order ids: not a whole number of int64 keys")
        return cls(np.frombuffer(raw, dtype="<i8"))
