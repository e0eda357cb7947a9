"""The operator console in real headless Chromium against a real gateway over loopback.

The page logs on with an admin key (signed in the browser with WebCrypto), shows live market state
pushed by the gateway, the insurance fund, the accounts nearest to liquidation, and changes a
leverage tier through the what-if, the confirmation, the engine's pending change and its effective
hour, with the audit entry on the page; invalid values show their errors inline.
"""

from __future__ import annotations

import json
import os

from gateway.limits import WallClock
from perp.commands import Liquidate, SetIndex
from tests.console.conftest import chromium_page
from tests.gateway.conftest import ALICE, BOB, MARKET, MINUTE_NS, ManualTime, run, venue
from tests.helpers import fund_top_up

WAIT_MS = 15_000


async def text_of(page, selector: str) -> str:
    return (await page.locator(selector).inner_text()).strip()


async def wait_text(page, selector: str, predicate_js: str) -> None:
    """Wait until the element's text satisfies the JS predicate over `t`; on a timeout the error
    carries the page's text and script errors (what the operator would have seen)."""
    try:
        await page.wait_for_function(
            f"() => {{ const e = document.querySelector({json.dumps(selector)}); if (!e) return false; "
            f"const t = e.textContent.trim(); return {predicate_js}; }}", timeout=WAIT_MS)
    except Exception as exc:
        seen = await page.locator(selector).all_inner_texts()
        body = await page.locator("body").inner_text()
        raise AssertionError(f"{selector}: {predicate_js} never held; it showed {seen}; script errors "
                             f"{page.js_errors}; the page:\n{body}") from exc


async def wait_visible(page, selector: str) -> None:
    try:
        await page.wait_for_selector(selector, state="visible", timeout=WAIT_MS)
    except Exception as exc:
        body = await page.locator("body").inner_text()
        raise AssertionError(f"{selector} never showed; script errors {page.js_errors}; the page:\n{body}") from exc


async def log_on(page, url: str, creds) -> None:
    await page.goto(url.replace("ws://", "http://") + "/console")
    await page.fill("#logon-credential", json.dumps({"kind": creds.kind, "key": creds.key,
                                                     "secret_hex": creds.secret_hex}))
    await page.click("#logon-button")
    await wait_visible(page, "#console")


def test_console_logs_on_shows_live_state_and_applies_a_confirmed_tier_change(tmp_path):
    clock = ManualTime()

    async def body():
        async with venue(tmp_path, deposits=False, clock=WallClock(0, clock)) as v, \
                v.client("admin") as admin, v.client("alice") as alice, v.client("bob") as bob, \
                chromium_page(tmp_path / "profile") as page:
            await admin.deposit(ALICE, 1_000_000_000)  # $1,000
            await admin.deposit(BOB, 1_000_000_000_000)  # $1M
            await log_on(page, v.url, v.creds["admin"])
            row = f'#markets tr[data-market="{MARKET}"]'
            await wait_text(page, f"{row} td[data-col=index]", "t === '2.0000'")
            assert await text_of(page, f"{row} td[data-col=oi]") == "0"
            assert await text_of(page, f"{row} td[data-col=validity]") == "fresh"
            assert "500000 ppb" in await text_of(page, f"{row} td[data-col=cap]")

            # the latest fix with its date and vintage (issue 15), pushed live: a provisional, then its final
            assert await text_of(page, f"{row} td[data-col=fix]") == "–"
            for vintage in ("provisional", "final"):
                await v.gw.submit_system([SetIndex(ts_ns=0, market=MARKET, price="2.0000", fix_price="2.0100",
                                                   fix_vintage=vintage, fix_date="2026-11-30")])
                await wait_text(page, f"{row} td[data-col=fix]", f"t === '2.0100 · 2026-11-30 · {vintage}'")

            # live: a trade moves open interest on the page (the ticker push)
            await bob.place(MARKET, "sell", 2000, price="2.0000")
            await alice.place(MARKET, "buy", 2000, price="2.0000")  # alice: $4,000 long on $1,000
            await wait_text(page, f"{row} td[data-col=oi]", "t === '2000'")
            assert await text_of(page, f"{row} td[data-col=mark]") != "–"

            # the accounts nearest to liquidation: alice first
            await wait_text(page, "#at-risk tbody tr:first-child td:first-child", f"t === '{ALICE}'")

            # the insurance fund: a top-up shows in its equity and on the chart
            fund = v.gw.specs[0].insurance_fund_account
            await v.gw.submit_system([fund_top_up(0, fund, 250_000_000_000)])
            await wait_text(page, "[data-col=fund-equity]", "t.startsWith('$250,000.')")  # + fee share
            assert await page.locator("#fund-equity-line").count() == 1
            assert await page.locator("#fund-floor-line").count() == 1

            # an invalid tier value: the engine's refusal names the field, shown inline
            await page.wait_for_selector("#tiers-table tbody tr .tier-mm", timeout=WAIT_MS)
            tiers_before = v.gw.engine.market_params(MARKET)["tiers"]
            first_mm = page.locator("#tiers-table tbody tr:first-child .tier-mm")
            first_lev = page.locator("#tiers-table tbody tr:first-child .tier-leverage")
            await first_mm.fill("0")
            await page.fill("#tiers-reason", "test: an invalid maintenance margin")
            await page.click("#tiers-apply")
            await wait_text(page, "#tiers-error", "t.includes('maintenance_margin_ppm')")
            assert "invalid" in (await first_mm.get_attribute("class"))
            assert v.gw.engine.market_params(MARKET)["tiers"] == tiers_before
            # a value the page itself refuses (not a number)
            await first_lev.fill("ten")
            await page.click("#tiers-check")
            await wait_text(page, "#tiers-error", "t.includes('whole number')")

            # a change that hurts: the 5x tier only up to $1,000 of notional puts alice's $4,000 long
            # (on $1,000) in the 4x tier, under initial margin
            await first_lev.fill(str(tiers_before[0]["max_leverage"]))
            await first_mm.fill(str(tiers_before[0]["maintenance_margin_ppm"]))
            await page.locator("#tiers-table tbody tr:first-child .tier-notional").fill("1000")
            await page.fill("#tiers-reason", "test: cut leverage on the first tier")
            await page.click("#tiers-apply")
            await wait_visible(page, "#tiers-confirm")
            confirm = await text_of(page, "#tiers-confirm-text")
            assert "below initial margin: 1 account(s)" in confirm
            assert await page.locator("#tiers-error").inner_text() == ""
            await page.click("#tiers-confirm-yes")
            await wait_text(page, "#tiers-result", "t.startsWith('accepted at seq') && t.includes('(pending)')")
            pending = v.gw.engine.market_params(MARKET)["pending"]
            assert pending and pending[0]["tiers"][0]["max_notional_usd"] == 1000
            await wait_text(page, "#pending", f"t.includes('{MARKET} set_tiers (seq {pending[0]['seq']})') && "
                                              "t.includes('tiers $1,000 5x')")

            # the audit entry on the page: operator (the key), field, old -> new, reason
            audit_row = "#audit tbody tr:first-child"
            await wait_text(page, audit_row, "t.includes('set_tiers')")
            audit = await text_of(page, audit_row)
            assert v.creds["admin"].key in audit and "cut leverage on the first tier" in audit
            entry = v.gw.engine.audit_log(MARKET)[-1]
            assert entry.command == "set_tiers" and str(entry.seq) in audit

            # the next funding hour: the engine puts the tiers in force, the page shows them
            effective = pending[0]["effective_ts_ns"]
            while clock.now < effective:
                clock.now += 10 * MINUTE_NS
                await v.gw.submit_system([Liquidate(ts_ns=0)])
            assert v.gw.engine.market_params(MARKET)["tiers"][0]["max_notional_usd"] == 1000
            await wait_text(page, "#tiers-table tbody tr:first-child .tier-in-force", "t.startsWith('$1,000 5x')")
            await wait_text(page, "#pending", "t === ''")
            assert await page.locator("#pending-none").is_visible()

            # the funding cap form: an invalid cap is refused inline, a valid one is accepted
            await page.fill("#funding-cap", "-5")
            await page.fill("#funding-reason", "test: a negative cap")
            await page.click("#funding-apply")
            await wait_text(page, "#funding-error", "t.includes('cap')")
            assert "invalid" in (await page.locator("#funding-cap").get_attribute("class"))
            await page.fill("#funding-cap", "27500")
            await page.fill("#funding-reason", "test: the traded H100 perp's cap")
            await page.click("#funding-apply")
            await wait_text(page, "#funding-result", "t.startsWith('accepted at seq') && t.includes('27500 ppb')")
            await wait_text(page, audit_row, "t.includes('set_funding_params')")

            # the index drops 20%: alice is liquidated into bob's bid; the feed shows the steps live
            await bob.place(MARKET, "buy", 5000, price="1.9000")
            await v.gw.submit_system([SetIndex(ts_ns=0, market=MARKET, price="1.6000"), Liquidate(ts_ns=0)])
            await wait_text(page, "#liq-feed", "t.includes('order sell 2000 lots at 1.') && t.includes('fee')")
            assert "account" not in await text_of(page, "#liq-feed")  # the public channel: no account ids
            await wait_text(page, f"{row} td[data-col=index]", "t === '1.6000'")

            await page.wait_for_timeout(1500)  # one more poll: every panel drawn for the picture
            await page.screenshot(path=str(tmp_path / "console.png"), full_page=True)
            out = os.environ.get("PERP_CONSOLE_SCREENSHOT")  # docs/console.png is made this way
            if out:
                await page.screenshot(path=out, full_page=True)
            assert page.js_errors == []
            assert v.gw.engine.money_conserved()

    run(body(), timeout_s=150.0)
