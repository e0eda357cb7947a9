"""Make docs/console.png: the console of a `perp serve --demo` venue (seeded makers and takers trading
through the client on the real H100 index, walked one hourly anchor every few seconds), after an
operator lowered the funding cap and checked a tier change through the page.

    PYTHONPATH=. python3 scripts/console_screenshot.py [--out docs/console.png] [--seconds 60]

Needs Debian's chromium and Playwright (the test extras), like tests/console.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.keys import KeyStore  # noqa: E402
from tests.console.conftest import chromium_page  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"perp serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit("perp serve did not become healthy")


async def shoot(http: str, cred: dict, out: Path, seconds: float, profile: Path) -> None:
    async with chromium_page(profile) as page:
        try:
            await _drive(page, http, cred, out, seconds)
        except Exception:
            print(await page.locator("body").inner_text(), file=sys.stderr)  # what the operator saw
            raise


async def _drive(page, http: str, cred: dict, out: Path, seconds: float) -> None:
    await page.goto(http + "/console")
    await page.fill("#logon-credential", json.dumps(cred))
    await page.click("#logon-button")
    await page.wait_for_selector("#console", state="visible", timeout=30_000)
    await page.wait_for_timeout(seconds * 500)
    await page.fill("#funding-cap", "275000")
    await page.fill("#funding-reason", "halve the cap while the index is aging")
    await page.click("#funding-apply")
    await page.wait_for_function("() => document.querySelector('#funding-result').textContent.startsWith('accepted')",
                                 timeout=30_000)
    # a valid what-if (the first tier keeps the market's default 5x: a lower one is refused, 5101)
    await page.locator("#tiers-table tbody tr:first-child .tier-notional").fill("25000")
    await page.locator("#tiers-table tbody tr:nth-child(2) .tier-leverage").fill("3")
    await page.fill("#tiers-reason", "5x only up to $25,000 until the next fix")
    await page.click("#tiers-check")
    await page.wait_for_timeout(seconds * 500)
    await page.screenshot(path=str(out), full_page=True)
    if page.js_errors:
        raise SystemExit(f"script errors on the page: {page.js_errors}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "docs" / "console.png"))
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        keys = KeyStore(data / "keys.json")
        k, secret = keys.create(30, ("admin", "read"), "ed25519", label="ops")
        port = free_port()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.Popen([sys.executable, "-m", "perp.cli", "serve", "--demo", "--data", str(data),
                                 "--port", str(port), "--index-step-s", "5", "--liquidation-interval-ms", "500"],
                                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            http = f"http://127.0.0.1:{port}"
            wait_healthy(http, proc)
            asyncio.run(shoot(http, {"kind": k.kind, "key": k.key, "secret_hex": secret}, Path(args.out),
                              args.seconds, Path(tmp) / "profile"))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
