"""Browser fixtures: Debian's chromium (/usr/bin/chromium, installed by .ci/run and scripts/test)
driven by Playwright for Python through `executable_path` (Playwright's own browser download is not
used). A missing chromium fails the test: the console is never skipped.

Launch flags that work on the CI machines: headless, no sandbox (containers run as root), no GPU,
no QUIC, and nothing that phones home (first run, background networking, component updates,
sync), with a fresh profile directory per test.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("PERP_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextlib.asynccontextmanager
async def chromium_page(profile_dir: Path) -> AsyncIterator:
    """One page of a fresh headless Chromium; JavaScript errors of the page are collected in
    `page.js_errors` (tests assert it stays empty)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"chromium is not installed at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        # a persistent context is how Playwright takes a --user-data-dir: a fresh one per test
        ctx = await pw.chromium.launch_persistent_context(str(profile_dir), executable_path=CHROMIUM, headless=True,
                                                          args=LAUNCH_ARGS, viewport={"width": 1400, "height": 1000})
        try:
            page = ctx.pages[0] if ctx.pages else await ctx.new_page()
            page.js_errors = []
            page.on("pageerror", lambda exc: page.js_errors.append(str(exc)))
            yield page
        finally:
            await ctx.close()
