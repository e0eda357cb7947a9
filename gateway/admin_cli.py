"""`perp admin --key FILE ...` online: the operator's commands against a running `perp serve` through the
admin API (gateway/admin.py, docs/protocol.md) with an admin key's credential file (`perp keys create
--perm admin,read --out op.key`). Every command prints the gateway's result as JSON; a refusal prints
`{"error": {code, msg, engine_code, field, what_if?}}` on stderr and exits 1.

Changes that hurt (a what-if that is not zero) are never applied by accident: `set-tiers` asks the
gateway for the what-if first and, unless `--yes` is given, prints it and exits 3 without changing
anything; with `--yes` it sends the change with `confirm=true`.

The `perp admin` group is perp/admin_cli.py's (its `--journal DIR` commands work offline on a stopped
venue); `register_online` adds these commands to it, and its `audit` and `params` call `online_audit` /
`online_params` here when given `--key` instead of `--journal`. `--key` and `--url` are the group's
options: `perp admin --key ops.key set-funding H100-PERP ...`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import sys
from typing import Any

import click



@click.group("online")
def _online_commands() -> None:
    """Holder of the online commands until register_online adds them to `perp admin`."""


def register_online(group: click.Group) -> None:
    """Add the online commands to the `perp admin` group (perp/cli.py)."""
    for name, cmd in _online_commands.commands.items():
        group.add_command(cmd, name)


def _target(ctx: click.Context) -> tuple[str, str]:
    obj = ctx.find_root().obj if ctx.obj is None else ctx.obj
    if not obj or not obj.get("key_path"):
        raise click.UsageError("online commands need --key FILE (an admin key's credential file): "
                               "perp admin --key ops.key ...")
    return obj["url"], obj["key_path"]


async def _calls(url: str, key_path: str, calls: list[tuple[str, dict]]) -> list[Any]:
    from gateway.client import Credentials, GatewayClient

    async with GatewayClient(url, Credentials.load(key_path), reconnect=False) as client:
        return [await client.request(method, params) for method, params in calls]


def _run(ctx: click.Context, *calls: tuple[str, dict]) -> list[Any]:
    from gateway.client import ConnectionLost, GatewayError

    url, key_path = _target(ctx)
    try:
        return asyncio.run(_calls(url, key_path, list(calls)))
    except GatewayError as exc:
        doc = {"code": exc.code, "msg": exc.msg, "engine_code": exc.engine_code, "field": exc.field}
        if exc.what_if is not None:
            doc["what_if"] = exc.what_if
        click.echo(json.dumps({"error": doc}), err=True)
        sys.exit(1)
    except (ConnectionLost, OSError) as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from None


def _print(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2))


@_online_commands.command("overview")
@click.pass_context
def overview(ctx: click.Context) -> None:
    """Per market: mark, anchor, fix, oracle validity, funding so far vs the cap, open interest."""
    _print(_run(ctx, ("admin.overview", {}))[0])


@_online_commands.command("fund")
@click.pass_context
@click.option("--fund", type=click.IntRange(0, 15), default=None, help="fund account (default: every fund)")
@click.option("--limit", default=50, show_default=True, help="the newest points")
def fund(ctx: click.Context, fund: int | None, limit: int) -> None:
    """The insurance fund's cash and equity over time, and its floor."""
    _print(_run(ctx, ("admin.fund_history", {"fund": fund, "limit": limit}))[0])


@_online_commands.command("at-risk")
@click.pass_context
@click.option("--limit", default=20, show_default=True)
def at_risk(ctx: click.Context, limit: int) -> None:
    """The accounts nearest to liquidation (margin ratio)."""
    _print(_run(ctx, ("admin.accounts_at_risk", {"limit": limit}))[0])


def online_audit(ctx: click.Context, market: str | None) -> None:
    """`perp admin --key FILE audit`: the running venue's audit log (who changed what, old and new
    value, reason, effective time)."""
    _print(_run(ctx, ("admin.audit_log", {"market": market}))[0])


def online_params(ctx: click.Context, market: str) -> None:
    """`perp admin --key FILE params MARKET`: the parameters in force and the pending changes."""
    _print(_run(ctx, ("admin.market_params", {"market": market}))[0])


def parse_tier(text: str) -> dict:
    """`NOTIONAL_USD:LEVERAGE:MM_PPM`, NOTIONAL_USD `inf` for the last tier (no upper bound)."""
    parts = text.split(":")
    if len(parts) != 3:
        raise click.BadParameter(f"{text!r}: expected NOTIONAL_USD:LEVERAGE:MM_PPM (e.g. 100000:10:50000 or inf:5:100000)")
    try:
        notional = None if parts[0] in ("inf", "") else int(parts[0])
        return {"max_notional_usd": notional, "max_leverage": int(parts[1]), "maintenance_margin_ppm": int(parts[2])}
    except ValueError:
        raise click.BadParameter(f"{text!r}: whole numbers only") from None


def parse_effective(text: str) -> int:
    """`next` (the next funding hour: 0) or an ISO UTC time (`2026-12-02T05:00:00`) in ns."""
    if text == "next":
        return 0
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{text!r}: 'next' or an ISO UTC time") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return int(t.timestamp()) * 1_000_000_000 + t.microsecond * 1_000


@_online_commands.command("what-if-tiers")
@click.pass_context
@click.argument("market")
@click.option("--tier", "tiers", multiple=True, required=True, help="NOTIONAL_USD:LEVERAGE:MM_PPM, lowest first")
def what_if_tiers(ctx: click.Context, market: str, tiers: tuple[str, ...]) -> None:
    """What new tiers would do to the accounts now (nothing changes)."""
    _print(_run(ctx, ("admin.what_if_tiers", {"market": market, "tiers": [parse_tier(t) for t in tiers]}))[0])


@_online_commands.command("set-tiers")
@click.pass_context
@click.argument("market")
@click.option("--tier", "tiers", multiple=True, required=True, help="NOTIONAL_USD:LEVERAGE:MM_PPM, lowest first")
@click.option("--reason", required=True)
@click.option("--effective", default="next", show_default=True, help="'next' funding hour or an ISO UTC time")
@click.option("--yes", is_flag=True, help="confirm a change whose what-if is not zero")
def set_tiers(ctx: click.Context, market: str, tiers: tuple[str, ...], reason: str, effective: str,
              yes: bool) -> None:
    """Change MARKET's leverage tiers (what-if first; a change that hurts needs --yes)."""
    parsed = [parse_tier(t) for t in tiers]
    when = parse_effective(effective)
    if not yes:
        (w,) = _run(ctx, ("admin.what_if_tiers", {"market": market, "tiers": parsed}))
        if w["accounts_below_mm"] or w["accounts_below_im"]:
            _print({"what_if": w})
            click.echo("not applied: this change puts accounts under margin; re-run with --yes to confirm", err=True)
            sys.exit(3)
    _print(_run(ctx, ("admin.set_tiers", {"market": market, "tiers": parsed, "reason": reason,
                                                     "effective_ts_ns": when, "confirm": yes}))[0])


@_online_commands.command("set-funding")
@click.pass_context
@click.argument("market")
@click.option("--cap-ppb", type=int, required=True, help="the hourly funding cap, ppb (500000 = 0.05%)")
@click.option("--clamp-ppb", type=int, required=True)
@click.option("--reason", required=True)
def set_funding(ctx: click.Context, market: str, cap_ppb: int, clamp_ppb: int, reason: str) -> None:
    """Change MARKET's funding cap and clamp (effective at the next funding hour)."""
    _print(_run(ctx, ("admin.set_funding_params", {"market": market, "cap_ppb": cap_ppb,
                                                              "clamp_ppb": clamp_ppb, "reason": reason}))[0])


@_online_commands.command("submit")
@click.pass_context
@click.argument("command_json")
def submit(ctx: click.Context, command_json: str) -> None:
    """Any admin command as JSON (docs/operations.md), e.g. '{"type": "set_fees", "market": "H100-PERP",
    "maker_fee_ppm": 50, "taker_fee_ppm": 400, "reason": "..."}'; the operator is the key."""
    try:
        command = json.loads(command_json)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    _print(_run(ctx, ("admin.submit", {"command": command}))[0])
