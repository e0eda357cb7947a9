"""`perp admin --journal DIR ...`: admin commands offline, on a stopped venue's data directory.

`DIR` is what `perp serve --data DIR` writes (`DIR/journal.bin`, `DIR/snapshots/`). Every subcommand
recovers the venue from it (newest valid snapshot + the journal); only `apply --yes` writes, appending
one admin command (and its payload's side record) to the journal. The journal has one writer: run
these only while the venue is stopped. docs/operations.md lists the commands.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import msgspec


@click.group(short_help="Admin commands: offline with --journal DIR, online with --key FILE.")
@click.option("--journal", "data_dir", type=click.Path(file_okay=False), default=None,
              help="a stopped venue's data directory (journal.bin, snapshots/)")
@click.option("--markets", "markets_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="markets TOML the venue started under (default: the embedded markets.toml)")
@click.option("--key", "key_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="online: an admin key's credential file, for a running perp serve (gateway/admin_cli.py)")
@click.option("--url", default="ws://127.0.0.1:8765", show_default=True, help="online: the gateway")
@click.pass_context
def admin(ctx: click.Context, data_dir: str | None, markets_path: str | None, key_path: str | None,
          url: str) -> None:
    """Admin commands (docs/operations.md).

    With --journal DIR they work offline on a stopped venue's data directory; with --key FILE
    they go through a running gateway's admin API."""
    ctx.obj = {"data_dir": data_dir, "markets_path": markets_path, "key_path": key_path, "url": url}


def _venue(ctx: click.Context, writable: bool = False):
    """The recovered venue: a JournaledEngine (writable) or its engine."""
    from perp.cli import _announce_compile, _markets
    from perp.journal import JournalError
    from perp.sequencer import JournaledEngine, recover
    from perp.state import SnapshotError

    data_dir = ctx.obj["data_dir"]
    if data_dir is None:
        raise click.UsageError("give --journal DIR (a stopped venue's data directory), or --key FILE for a running one")
    data = Path(data_dir)
    journal = data / "journal.bin"
    if not journal.exists():
        click.echo(f"error: {journal} does not exist (not a venue's data directory)", err=True)
        sys.exit(2)
    _announce_compile()
    markets = _markets(ctx.obj["markets_path"])
    snaps = data / "snapshots"
    try:
        if writable:
            return JournaledEngine.open(journal, snapshot_dir=snaps if snaps.is_dir() else None, markets=markets)
        return recover(journal, snapshot_dir=snaps if snaps.is_dir() else None, markets=markets)
    except (JournalError, SnapshotError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


@admin.command("audit")
@click.option("--market", default=None, help="only this market's entries (and venue-wide ones)")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@click.pass_context
def admin_audit(ctx: click.Context, market: str | None, as_json: bool) -> None:
    """The audit log, rebuilt by recovery (online with --key: the running venue's)."""
    if ctx.obj["key_path"] and not ctx.obj["data_dir"]:
        from gateway.admin_cli import online_audit

        return online_audit(ctx, market)
    eng = _venue(ctx)
    entries = eng.audit_log(market)
    if as_json:
        for e in entries:
            click.echo(msgspec.json.encode(e).decode())
        return
    if not entries:
        click.echo("no admin changes")
    for e in entries:
        pending = "" if e.effective_ts_ns == e.ts_ns else f" effective {_iso(e.effective_ts_ns)}"
        click.echo(f"seq {e.seq} {_iso(e.ts_ns)} {e.operator} {e.command} {e.market or '*'} {e.field}: "
                   f"{e.old} -> {e.new}{pending} ({e.reason})")


@admin.command("params")
@click.argument("market")
@click.option("--json", "as_json", is_flag=True, help="one JSON object")
@click.pass_context
def admin_params(ctx: click.Context, market: str, as_json: bool) -> None:
    """The parameters in force for MARKET and the changes pending."""
    from perp.admin import AdminRejected

    if ctx.obj["key_path"] and not ctx.obj["data_dir"]:
        from gateway.admin_cli import online_params

        return online_params(ctx, market)
    eng = _venue(ctx)
    try:
        params = eng.market_params(market)
    except AdminRejected as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(params))
        return
    for key, value in params.items():
        if key != "pending":
            click.echo(f"{key}: {json.dumps(value)}")
    for p in params["pending"]:
        click.echo(f"pending from {_iso(p['effective_ts_ns'])} (seq {p['seq']} {p['command']}): "
                   f"{json.dumps({k: v for k, v in p.items() if k in ('changes', 'tiers')})}")


@admin.command("apply", short_help="Validate one admin command; with --yes, journal it.")
@click.argument("command_file", type=click.File("rb"))
@click.option("--yes", is_flag=True, help="append it to the journal (without: validate and show only)")
@click.option("--json", "as_json", is_flag=True, help="last line is one JSON object")
@click.pass_context
def admin_apply(ctx: click.Context, command_file, yes: bool, as_json: bool) -> None:
    """Validate one admin command (a JSON file, - for stdin) against the stopped venue; with --yes journal it.

    A ts_ns of 0 means the venue's clock (the time of its last command)."""
    from perp import layout as L
    from perp.commands import ADMIN_TYPES, CommandFormatError, SetTiers, decode_command

    try:
        cmd = decode_command(command_file.read())
    except CommandFormatError as exc:
        raise click.ClickException(f"BAD_COMMAND_FORMAT (5004): {exc}") from None
    if not isinstance(cmd, ADMIN_TYPES):
        raise click.ClickException(f"{cmd.__struct_config__.tag} is not an admin command (docs/operations.md)")
    venue = _venue(ctx, writable=yes)
    eng = venue.engine if yes else venue
    if cmd.ts_ns == 0:
        cmd = msgspec.structs.replace(cmd, ts_ns=int(eng.state.g[L.G_LAST_TS]))
    info: dict = {"command": cmd.__struct_config__.tag, "ts_ns": cmd.ts_ns, "seq": eng.seq + 1}
    if isinstance(cmd, SetTiers):
        try:
            wi = eng.what_if_tiers(cmd.market, cmd.tiers)
            info["what_if"] = msgspec.to_builtins(wi)
            click.echo(f"what-if: {wi.accounts_below_mm} account(s) below maintenance "
                       f"({wi.notional_below_mm_micro / 1e6:,.2f} USD), {wi.accounts_below_im} below initial "
                       f"({wi.notional_below_im_micro / 1e6:,.2f} USD)")
        except ValueError:
            pass  # the refusal below names the field
    error = eng.check_admin(cmd, cmd.ts_ns)
    if error is not None:
        info |= {"applied": False, "code": error.code, "field": error.field, "message": error.message}
        click.echo(f"refused: {error}", err=True)
        if as_json:
            click.echo(json.dumps(info))
        if yes:
            venue.close()
        sys.exit(1)
    if not yes:
        info["applied"] = False
        click.echo("valid; nothing written (add --yes to append it to the journal)")
        if as_json:
            click.echo(json.dumps(info))
        return
    try:
        events = eng.decode(venue.submit_rows(eng.encode([cmd]), auto_liquidate=False))
    finally:
        venue.close()
    applied = [e for e in events if type(e).__struct_config__.tag == "admin"]
    if not applied:
        rejected = eng.rejection(events[-1].seq) if events else None
        info |= {"applied": False, "code": getattr(events[-1], "code", None) if events else None}
        click.echo(f"refused: {rejected or events[-1]}", err=True)
        if as_json:
            click.echo(json.dumps(info))
        sys.exit(1)
    ev = applied[0]
    info |= {"applied": True, "seq": ev.seq, "effective_ts_ns": ev.effective_ts_ns, "pending": ev.pending}
    click.echo(f"applied at seq {ev.seq}; effective {_iso(ev.effective_ts_ns)}"
               f"{' (pending)' if ev.pending else ''}")
    if as_json:
        click.echo(json.dumps(info))


def _iso(ts_ns: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ts_ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
