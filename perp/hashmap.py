"""Open-addressing int64 -> int64 hash maps in one numpy array (numba).

`maps[which, cell, 0]` is a key, `maps[which, cell, 1]` its value; several maps of the same
capacity share the array (the engine keeps order id -> slot and client id -> slot). Keys are
non-negative int64; `EMPTY_KEY` (-1) marks an empty cell. Linear probing; deletion by
backward shift (no tombstones), so lookups stay short however many orders come and go. Capacity is a
power of two kept at least twice the number of keys (the pool never holds more live orders than
half the map), so a probe always ends at an empty cell.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from perp.layout import EMPTY_KEY

_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def _home(key, mask):
    """Home cell: a full 64-bit avalanche (murmur3's finaliser), so keys that differ only in high
    bits (account << 40 | client id) still spread over the low bits the mask keeps."""
    h = np.uint64(key)
    h ^= h >> _S33
    h *= _M1
    h ^= h >> _S33
    h *= _M2
    h ^= h >> _S33
    return np.int64(h & np.uint64(mask))


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def hm_find(maps, which, key):
    """Value stored for `key`, or -1."""
    mask = maps.shape[1] - 1
    i = _home(key, mask)
    while True:
        k = maps[which, i, 0]
        if k == key:
            return maps[which, i, 1]
        if k == EMPTY_KEY:
            return -1
        i = (i + 1) & mask


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def hm_insert(maps, which, key, val):
    """Insert or overwrite."""
    mask = maps.shape[1] - 1
    i = _home(key, mask)
    while True:
        k = maps[which, i, 0]
        if k == EMPTY_KEY or k == key:
            maps[which, i, 0] = key
            maps[which, i, 1] = val
            return
        i = (i + 1) & mask


@njit(cache=True, _nrt=False, error_model="numpy", forceinline=True)
def hm_delete(maps, which, key):
    """Remove `key` if present (backward-shift deletion). Returns True if it was present."""
    mask = maps.shape[1] - 1
    i = _home(key, mask)
    while True:
        k = maps[which, i, 0]
        if k == EMPTY_KEY:
            return False
        if k == key:
            break
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        kj = maps[which, j, 0]
        if kj == EMPTY_KEY:
            break
        home = _home(kj, mask)
        # move kj back into the hole at i unless its home lies cyclically in (i, j]
        if i <= j:
            stays = i < home <= j
        else:
            stays = home > i or home <= j
        if not stays:
            maps[which, i, 0] = kj
            maps[which, i, 1] = maps[which, j, 1]
            i = j
    maps[which, i, 0] = EMPTY_KEY
    return True
