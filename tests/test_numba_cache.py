"""The numba cache is keyed by the kernel packages' sources: a change in any module the command kernel
inlines (not only perp/kernel.py, which is all numba itself watches) compiles afresh."""

from __future__ import annotations

import os

from perp.numba_cache import KERNEL_PACKAGES, kernel_sources, source_tag


def test_a_change_in_any_kernel_package_changes_the_cache_directory(tmp_path):
    for pkg in KERNEL_PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "kernel.py").write_text("from numba import njit\nx = 1\n")
    before = source_tag(tmp_path)
    assert source_tag(tmp_path) == before
    (tmp_path / "liquidation" / "kernel.py").write_text("from numba import njit\nx = 2\n")
    assert source_tag(tmp_path) != before


def test_the_digest_follows_what_the_kernels_import_and_ignores_the_python_edge(tmp_path):
    """A constants module a kernel module imports (its values are frozen into compiled code) changes
    the directory; the CLI, which no kernel module imports, does not; nor does a lazy import."""
    (tmp_path / "perp").mkdir()
    (tmp_path / "perp" / "layout.py").write_text("C_KIND = 0\n")
    (tmp_path / "perp" / "kernel.py").write_text(
        "from numba import njit\nfrom perp import layout as L\n\ndef f():\n    from perp import cli\n")
    (tmp_path / "perp" / "cli.py").write_text("import click\n")
    assert [p.name for p in kernel_sources(tmp_path)] == ["kernel.py", "layout.py"]
    before = source_tag(tmp_path)
    (tmp_path / "perp" / "cli.py").write_text("import click  # a new subcommand\n")
    assert source_tag(tmp_path) == before
    (tmp_path / "perp" / "layout.py").write_text("C_KIND = 1\n")
    assert source_tag(tmp_path) != before


def test_every_module_that_compiles_code_is_in_the_digest():
    """No module of the kernel packages that uses numba is left out of the key (checked on this tree)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    keyed = set(kernel_sources(root))
    for pkg in KERNEL_PACKAGES:
        for f in (root / pkg).glob("*.py"):
            if re.search(r"^\s*@(numba\.)?(njit|jit|vectorize|guvectorize)\b", f.read_text(), re.M):
                assert f in keyed, f


def test_the_process_compiles_into_the_directory_of_its_sources():
    import numba

    assert os.environ["NUMBA_CACHE_DIR"].endswith(source_tag())
    assert numba.config.CACHE_DIR == os.environ["NUMBA_CACHE_DIR"]
