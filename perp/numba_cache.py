"""One numba cache location for every entry point, and a word to the user before a cold compile.

`configure()` (called when `perp` is imported, before any kernel module is) points numba's cache at
`<checkout>/.numba_cache` when perp runs from a source checkout -- the directory `scripts/test`
uses -- and at `$XDG_CACHE_HOME/perp/numba` (default `~/.cache/perp/numba`) for an installed
package. An explicit `NUMBA_CACHE_DIR` always wins. Without this the CLI cached into `__pycache__`
while the tests cached into `.numba_cache`, so each compiled everything again (~40 s).

`kernels_cached()` says whether the engine's main kernels have a cache entry that matches their
source (numba's index records the source file's stamp); the CLI prints "compiling kernels (first
run only, about a minute ...)" when they do not (measured: 56 s of CPU for `perp demo` on a cold cache).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV = "NUMBA_CACHE_DIR"


def default_cache_dir() -> Path:
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "perp").is_dir():
        return checkout / ".numba_cache"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "perp" / "numba"


def configure() -> Path:
    """Set the cache directory unless the environment already names one; returns the one in use."""
    if not os.environ.get(ENV):
        os.environ[ENV] = str(default_cache_dir())
    path = Path(os.environ[ENV])
    numba = sys.modules.get("numba")
    if numba is not None:  # numba read its config at import: tell it too (kernels not decorated yet)
        numba.config.CACHE_DIR = str(path)
    return path


def kernels_cached() -> bool:
    """True when the matching kernel and the risk sweep load from the cache (no compile)."""
    from perp.kernel import process_batch
    from risk.sweep import risk_sweep

    try:
        return all(bool(d._cache._cache_file._load_index()) for d in (process_batch, risk_sweep))
    except Exception:  # numba internals moved: say nothing rather than something wrong
        return True


def announce_compile(echo) -> None:
    """Tell the user, once, before a cold compile: the first run is silent for ~40 s otherwise."""
    if not kernels_cached():
        echo(f"compiling kernels (first run only, about a minute; cached in {os.environ.get(ENV)})")
