"""The numba cache is keyed by the kernel packages' sources: a change in any module the command kernel
inlines (not only perp/kernel.py, which is all numba itself watches) compiles afresh."""

from __future__ import annotations

import os

from perp.numba_cache import KERNEL_PACKAGES, source_tag


def test_a_change_in_any_kernel_package_changes_the_cache_directory(tmp_path):
    for pkg in KERNEL_PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "kernel.py").write_text("x = 1\n")
    before = source_tag(tmp_path)
    assert source_tag(tmp_path) == before
    (tmp_path / "liquidation" / "kernel.py").write_text("x = 2\n")
    assert source_tag(tmp_path) != before


def test_the_process_compiles_into_the_directory_of_its_sources():
    import numba

    assert os.environ["NUMBA_CACHE_DIR"].endswith(source_tag())
    assert numba.config.CACHE_DIR == os.environ["NUMBA_CACHE_DIR"]
