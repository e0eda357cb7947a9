"""Open-addressing int64 -> int32 hash map over two numpy arrays (numba).

Keys are non-negative int64; `EMPTY_KEY` (-1) marks an empty cell. Linear probing; deletion by
backward shift (no tombstones), so lookups stay short however many orders come and go. Capacity is a
power of two kept at least twice the number of keys (the pool never holds more live orders than
half the map), so a probe always ends at an empty cell.
"""

from __future__ import annotations

from numba import njit

from perp.layout import EMPTY_KEY


@njit(cache=True, inline="always")
def _home(key, mask):
    h = key * 6364136223846793005  # wraps in int64: a multiplicative hash
    return (h ^ (h >> 29)) & mask


@njit(cache=True)
def hm_find(keys, vals, key):
    """Value stored for `key`, or -1."""
    mask = keys.shape[0] - 1
    i = _home(key, mask)
    while True:
        k = keys[i]
        if k == key:
            return vals[i]
        if k == EMPTY_KEY:
            return -1
        i = (i + 1) & mask


@njit(cache=True)
def hm_insert(keys, vals, key, val):
    """Insert or overwrite."""
    mask = keys.shape[0] - 1
    i = _home(key, mask)
    while True:
        k = keys[i]
        if k == EMPTY_KEY or k == key:
            keys[i] = key
            vals[i] = val
            return
        i = (i + 1) & mask


@njit(cache=True)
def hm_delete(keys, vals, key):
    """Remove `key` if present (backward-shift deletion). Returns True if it was present."""
    mask = keys.shape[0] - 1
    i = _home(key, mask)
    while True:
        k = keys[i]
        if k == EMPTY_KEY:
            return False
        if k == key:
            break
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        kj = keys[j]
        if kj == EMPTY_KEY:
            break
        home = _home(kj, mask)
        # move kj back into the hole at i unless its home lies cyclically in (i, j]
        if i <= j:
            stays = i < home <= j
        else:
            stays = home > i or home <= j
        if not stays:
            keys[i] = kj
            vals[i] = vals[j]
            i = j
    keys[i] = EMPTY_KEY
    return True
