"""risk: the pure-math layer of the risk engine (integer formulas and numba kernels, no state).

Modules: `intmath` (scales, overflow-safe mul-div, checked ops), `tiers` (leverage tiers, margin
functions), `margin` (the withdrawal formula for array views), `ledger` (the engine-state rules), `funding` (premium, hourly rate,
settlement), `sweep` (the all-accounts kernel and its numpy reference), `views` (account view),
`errors` (RiskCode 2000-2999), `bench` (`perp bench risk`). See docs/risk.md.

Invariants: every balance is an int64 of micro-USD, every rate an int64 in ppm (margin) or ppb
(funding); every division names its rounding; funding transfers sum to zero exactly with the
remainder returned for the insurance fund; no function here keeps state or places orders.
"""

from perp.numba_cache import configure as _configure_numba_cache

_configure_numba_cache()  # one numba cache whichever package a program imports first
