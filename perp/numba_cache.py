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


KERNEL_PACKAGES = ("perp", "risk", "liquidation")  # where the kernels' njit code lives
SOURCE_TAG_PREFIX = "src-"


def _imports(tree) -> set[str]:
    """Every module name a module imports at its top level (for `from a import b`, both `a` and `a.b`).
    Imports inside functions are left out: compiled code sees only its module's globals, so a lazy
    import is always the Python side's."""
    import ast

    out: set[str] = set()
    nodes = list(tree.body)
    while nodes:
        node = nodes.pop()
        if isinstance(node, (ast.If, ast.Try)):
            nodes.extend(node.body + node.orelse + getattr(node, "finalbody", [])
                         + [b for h in getattr(node, "handlers", []) for b in h.body])
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def kernel_sources(root: Path | None = None) -> list[Path]:
    """The source files compiled code can depend on: every module of the kernel packages that imports
    numba, and every project module those import, transitively (constants such as perp.layout are
    frozen into the compiled code, so they count). Modules no kernel module imports -- the CLI, the
    engine's Python edge, the admin commands' validation, docs -- are left out: editing them does not
    recompile anything."""
    import ast

    root = Path(__file__).resolve().parents[1] if root is None else root

    def module_file(name: str) -> Path | None:
        parts = name.split(".")
        for cand in (root.joinpath(*parts).with_suffix(".py"), root.joinpath(*parts, "__init__.py")):
            if cand.is_file():
                return cand
        return None

    graph: dict[Path, set[str]] = {}
    todo = [f for pkg in KERNEL_PACKAGES for f in sorted((root / pkg).glob("*.py"))]
    seeds = []
    for f in todo:
        graph[f] = _imports(ast.parse(f.read_bytes(), str(f)))
        if any(m == "numba" or m.startswith("numba.") for m in graph[f]):
            seeds.append(f)
    keep: set[Path] = set()
    stack = list(seeds)
    while stack:
        f = stack.pop()
        if f in keep:
            continue
        keep.add(f)
        if f not in graph:
            graph[f] = _imports(ast.parse(f.read_bytes(), str(f)))
        for name in graph[f]:
            dep = module_file(name)
            if dep is not None and dep not in keep and dep.name != "__init__.py":
                stack.append(dep)
    return sorted(keep, key=lambda p: p.relative_to(root).as_posix())


def source_tag(root: Path | None = None) -> str:
    """A digest of the kernel sources (`kernel_sources`). numba keys a cache entry on its own
    function's file only, but the command kernel inlines functions from a dozen modules: without this a
    change to, say, liquidation/kernel.py would silently keep running the old compiled kernel."""
    import hashlib

    root = Path(__file__).resolve().parents[1] if root is None else root
    h = hashlib.blake2b(digest_size=8)
    for f in kernel_sources(root):
        h.update(f.relative_to(root).as_posix().encode())
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
