"""`perp`: one command with subcommands.

- `perp demo`: the main job on the embedded default -- a session on the real H100 index path run
  through the engine, with a summary of what happened;
- `perp replay COMMANDS.jsonl [--events OUT.jsonl]`: audit any command file, print the state hash;
- `perp bench matching|risk`: reproducible benchmarks that print their figures;
- `perp config show`: the effective market config;
- `perp oracle replay`: the hourly anchor over the real daily fixes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import msgspec

from perp.logs import configure_logging


@click.group()
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def main(log_level: str) -> None:
    """GPU-compute perpetual engine."""
    configure_logging(log_level)


def _markets(path: str | None):
    from perp.markets import MarketSpecError, load_markets

    try:
        return load_markets(path)
    except MarketSpecError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.argument("commands", type=click.Path(exists=True, dir_okay=False))
@click.option("--events", "events_path", type=click.Path(dir_okay=False), help="write every event as JSON lines")
@click.option("--markets", "markets_path", type=click.Path(exists=True, dir_okay=False),
              help="markets TOML (default: the embedded markets.toml)")
def replay(commands: str, events_path: str | None, markets_path: str | None) -> None:
    """Run COMMANDS (JSON lines) through a fresh engine; print a summary and the final state hash."""
    from perp.replay import ReplayInputError, replay_file

    try:
        eng, summary = replay_file(commands, _markets(markets_path), events_path)
    except ReplayInputError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    _print_summary(eng, summary)


def _print_summary(eng, summary) -> None:
    from perp.markets import ticks_to_price

    click.echo(f"commands  {summary.commands}")
    click.echo(f"events    {summary.events}  " + " ".join(f"{k}={v}" for k, v in sorted(summary.by_type.items())))
    if summary.rejections:
        click.echo("rejected  " + " ".join(f"{k}={v}" for k, v in sorted(summary.rejections.items())))
    click.echo(f"traded    {summary.traded_lots} lots, fees {summary.fees_micro / 1e6:.6f} USD")
    for m, spec in enumerate(eng.specs):
        bid, ask = eng.best_bid_ask(m)
        fmt = lambda t: "-" if t is None else ticks_to_price(spec, t)  # noqa: E731
        click.echo(f"{spec.symbol:<10}index {fmt(eng.index_ticks(m) or None)}  mark {fmt(eng.mark_ticks(m) or None)}"
                   f"  best bid {fmt(bid)}  best ask {fmt(ask)}")
    click.echo(f"state_hash {summary.state_hash}")


@main.command()
@click.option("--days", default=7, show_default=True, help="days of the real H100 index path")
@click.option("--seed", default=7, show_default=True)
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None,
              help="daily fixes CSV (default: ../shared/data/gpumarkets/daily_fixings.csv)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out/demo", show_default=True)
def demo(days: int, seed: int, csv_path: str | None, out_dir: str) -> None:
    """A seeded session on the real H100 index path, through the engine; shows what happened."""
    from oracle.readers import default_csv_path
    from perp.commands import Command
    from perp.replay import replay_file
    from sims.demo_session import anchor_path, build_session, utc

    markets = _markets(None)
    spec = markets.market[0]
    csv_file = Path(csv_path) if csv_path else default_csv_path()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    session = out / "session.jsonl"
    if csv_file.exists():
        path = anchor_path(csv_file, spec, days)
        cmds = build_session(spec, path, seed)
        enc = msgspec.json.Encoder()
        with open(session, "wb") as fh:
            for c in cmds:
                fh.write(enc.encode(msgspec.structs.asdict(c) | {"type": type(c).__struct_config__.tag}))
                fh.write(b"\n")
        click.echo(f"index     {spec.series}, hourly anchor over {utc(path[0][0])} .. {utc(path[-1][0])} UTC "
                   f"({len(path)} hours); data: GPU Markets, gpumarkets.dev, CC BY 4.0")
    else:
        from importlib import resources

        session.write_text(resources.files("perp").joinpath("examples/h100_session.jsonl").read_text())
        click.echo(f"index     {csv_file} not found; replaying the shipped example session")
    events = out / "events.jsonl"
    eng, summary = replay_file(session, markets, events)
    _print_summary(eng, summary)
    click.echo(f"files     {session} (commands), {events} (events)")
    usd = lambda micro: f"{micro / 1e6:,.2f}"  # noqa: E731 - display only
    maker = eng.account(1)
    if maker.positions:
        p = maker.positions[0]
        click.echo(f"maker     {p.lots} lots, equity {usd(maker.equity_micro)} USD, realised {usd(p.realized_pnl_micro)}, "
                   f"fees {usd(p.fees_micro)}, funding {usd(p.funding_micro)}")
    click.echo("takers    " + " ".join(f"{a}:{eng.position_lots(a, 0)}" for a in range(10, 20)) + " lots")
    g = eng.ledger()
    conserved = eng.money_conserved()
    click.echo(f"ledger    deposits {usd(g['deposits_micro'])} USD, fee ledger {usd(g['fee_ledger_micro'])}, "
               f"insurance fund {usd(g['insurance_fund_micro'])}; money conserved to the micro-dollar: {conserved}")
    _ = Command  # the session is made of documented commands only


@main.group()
def config() -> None:
    """Configuration."""


@config.command("show")
@click.option("--markets", "markets_path", type=click.Path(exists=True, dir_okay=False))
def config_show(markets_path: str | None) -> None:
    """Print the effective market config (JSON)."""
    from perp.markets import micro_per_tick_lot

    markets = _markets(markets_path)
    for spec in markets.market:
        d = msgspec.structs.asdict(spec)
        d["micro_per_tick_lot"] = micro_per_tick_lot(spec)
        click.echo(json.dumps(d, indent=2))


@main.group()
def bench() -> None:
    """Reproducible benchmarks that print their figures."""


@bench.command("matching")
@click.option("--commands", "n", default=1_000_000, show_default=True)
@click.option("--seed", default=42, show_default=True)
@click.option("--batch", default=4096, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="last line is one JSON object")
def bench_matching(n: int, seed: int, batch: int, as_json: bool) -> None:
    """Matching throughput: numba engine vs a plain-Python book on the same seeded stream."""
    from perp.bench import run

    r = run(n=n, seed=seed, batch=batch)
    click.echo(f"stream            {r['commands']:,} commands (seed {r['seed']}, batch {r['batch']}): "
               f"{r['events']:,} events, {r['fills']:,} fills, {r['resting_orders']:,} orders resting at the end")
    click.echo(f"numba engine      {r['commands_per_s']:,.0f} commands/s  "
               f"(batch p50 {r['p50_batch_us']:.0f} us, p99 {r['p99_batch_us']:.0f} us)")
    click.echo(f"plain-Python book {r['python_commands_per_s']:,.0f} commands/s")
    click.echo(f"ratio             {r['ratio_vs_python']:.1f}x")
    click.echo(f"state_hash        {r['state_hash']}")
    if as_json:
        click.echo(json.dumps(r))


@bench.command("risk")
@click.option("--accounts", default=1_000_000, show_default=True, help="accounts in the sweep")
@click.option("--seed", default=7, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="last line is one JSON object")
def bench_risk(accounts: int, seed: int, as_json: bool) -> None:
    """Risk sweep over many accounts: equity + maintenance + funding payment."""
    from risk.bench import main as risk_bench_main

    risk_bench_main(accounts=accounts, seed=seed, as_json=as_json)


@bench.command("liquidation")
@click.option("--accounts", default=1_000_000, show_default=True)
@click.option("--seed", default=11, show_default=True)
@click.option("--fund-usd", default=20_000, show_default=True, help="insurance fund before the gap")
@click.option("--json", "as_json", is_flag=True, help="last line is one JSON object")
def bench_liquidation(accounts: int, seed: int, fund_usd: int, as_json: bool) -> None:
    """A price gap over many accounts: detection plus the whole liquidation waterfall."""
    from liquidation.bench import main as liq_main

    liq_main(accounts=accounts, seed=seed, as_json=as_json, fund_usd=fund_usd)


def _register_oracle() -> None:
    from oracle.cli import oracle_group

    main.add_command(oracle_group, "oracle")


_register_oracle()


def _register_gateway() -> None:
    """`perp serve`, `perp keys` and `perp bench gateway` live with the gateway (gateway/cli.py)."""
    from gateway.cli import bench_gateway_command, keys_group, serve_command

    main.add_command(serve_command, "serve")
    main.add_command(keys_group, "keys")
    bench.add_command(bench_gateway_command, "gateway")


_register_gateway()
