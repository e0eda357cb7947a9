"""One numba cache location for every entry point, and a word to the user before a cold compile.

`configure()` (called when `perp` is imported, before any kernel module is) points numba's cache at
`<checkout>/.numba_cache/src-<digest of the kernel sources>` when perp runs from a source checkout -- the directory `scripts/test`
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


KERNEL_PACKAGES = ("perp", "risk", "liquidation")  # every module whose njit code is inlined into the kernels
SOURCE_TAG_PREFIX = "src-"


def source_tag(root: Path | None = None) -> str:
    """A digest of every kernel package's Python sources. numba keys a cache entry on its own
    function's file only, but the command kernel inlines functions from a dozen modules: without this a
    change to, say, liquidation/kernel.py would silently keep running the old compiled kernel."""
    import hashlib

    root = Path(__file__).resolve().parents[1] if root is None else root
    h = hashlib.blake2b(digest_size=8)
    for pkg in KERNEL_PACKAGES:
        for f in sorted((root / pkg).glob("*.py")):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return SOURCE_TAG_PREFIX + h.hexdigest()


def configure() -> Path:
    """Point numba's cache at `<base>/src-<digest of the kernel sources>`, where the base is the
    environment's NUMBA_CACHE_DIR or the default; returns the directory in use. Entries of other
    source versions are removed (best effort), so the cache holds one version."""
    base = Path(os.environ.get(ENV) or default_cache_dir())
    if base.name.startswith(SOURCE_TAG_PREFIX):  # configured already (a parent process, or twice)
        base = base.parent
    tag = source_tag()
    path = base / tag
    os.environ[ENV] = str(path)
    try:
        for old in base.glob(SOURCE_TAG_PREFIX + "*"):
            if old.name != tag and old.is_dir():
                import shutil

                shutil.rmtree(old, ignore_errors=True)
    except OSError:
        pass
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
