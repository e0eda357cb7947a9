"""liquidation: the waterfall inside the engine kernel (docs/liquidation.md, ../shared/DESIGN.md)."""

from perp.numba_cache import configure as _configure_numba_cache

_configure_numba_cache()  # one numba cache whichever package a program imports first
