"""The perpetual engine core: market specs, order book, matching, mark price, engine state machine."""

from perp.numba_cache import configure as _configure_numba_cache

_configure_numba_cache()  # before any kernel module is imported: one cache for every entry point
