"""`perp admin --key FILE ...` online: the CLI drives a running gateway through the admin API with an
admin key's credential file; a change that hurts is not applied without --yes."""

from __future__ import annotations

import asyncio
import json

from click.testing import CliRunner

from perp.cli import main
from tests.gateway.conftest import ALICE, BOB, MARKET, run, venue


def _credential_file(v, tmp_path, who: str):
    c = v.creds[who]
    path = tmp_path / f"{who}.key"
    path.write_text(json.dumps({"kind": c.kind, "key": c.key, "secret_hex": c.secret_hex}))
    path.chmod(0o600)
    return str(path)


async def perp_admin(v, key_path: str, *args: str):
    """Run `perp admin --url ... --key ... ARGS` in a thread (it runs its own event loop)."""
    runner = CliRunner()
    argv = ["admin", "--url", v.url, "--key", key_path, *args]
    return await asyncio.get_running_loop().run_in_executor(None, lambda: runner.invoke(main, argv))


def test_perp_admin_reads_state_and_applies_a_tier_change_only_when_confirmed(tmp_path):
    async def body():
        async with venue(tmp_path, deposits=False) as v, v.client("admin") as admin, v.client("alice") as alice, \
                v.client("bob") as bob:
            await admin.deposit(ALICE, 1_000_000_000)
            await admin.deposit(BOB, 1_000_000_000_000)
            await bob.place(MARKET, "sell", 2000, price="2.0000")
            await alice.place(MARKET, "buy", 2000, price="2.0000")  # alice $4,000 long on $1,000
            key = _credential_file(v, tmp_path, "admin")

            r = await perp_admin(v, key, "overview")
            assert r.exit_code == 0, r.output
            assert json.loads(r.output)["markets"][0]["open_interest_lots"] == 2000
            r = await perp_admin(v, key, "at-risk", "--limit", "1")
            assert [a["account"] for a in json.loads(r.output)["accounts"]] == [ALICE]
            r = await perp_admin(v, key, "params", MARKET)
            tiers = json.loads(r.output)["tiers"]

            # the 5x tier up to $1,000 only: alice falls under initial margin -> not applied without --yes
            spec = [f"1000:{tiers[0]['max_leverage']}:{tiers[0]['maintenance_margin_ppm']}"] + [
                f"{t['max_notional_usd'] if t['max_notional_usd'] is not None else 'inf'}:{t['max_leverage']}:"
                f"{t['maintenance_margin_ppm']}" for t in tiers[1:]]
            tier_args = [a for s in spec for a in ("--tier", s)]
            r = await perp_admin(v, key, "set-tiers", MARKET, *tier_args, "--reason", "shrink the 5x tier")
            assert r.exit_code == 3
            assert json.loads(r.stdout)["what_if"]["accounts_below_im"] == 1
            assert v.gw.engine.market_params(MARKET)["pending"] == [] and v.gw.engine.audit_log() == []
            r = await perp_admin(v, key, "set-tiers", MARKET, *tier_args, "--reason", "shrink the 5x tier", "--yes")
            assert r.exit_code == 0, r.output
            ack = json.loads(r.output)
            assert ack["pending"] and ack["command"] == "set_tiers"
            assert v.gw.engine.market_params(MARKET)["pending"][0]["tiers"][0]["max_notional_usd"] == 1000

            r = await perp_admin(v, key, "set-funding", MARKET, "--cap-ppb", "-1", "--clamp-ppb", "0", "--reason", "x")
            assert r.exit_code == 1
            err = json.loads(r.stderr)["error"]
            assert err["code"] == 4400 and "cap" in err["field"]
            r = await perp_admin(v, key, "audit", "--market", MARKET)
            entries = json.loads(r.output)["entries"]
            assert [e["command"] for e in entries] == ["set_tiers"] and entries[0]["seq"] == ack["seq"]

            # a key without the admin permission is refused with its code
            r = await perp_admin(v, _credential_file(v, tmp_path, "alice"), "overview")
            assert r.exit_code == 1 and json.loads(r.stderr)["error"]["code"] == 4107

    run(body())
