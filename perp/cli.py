"""`perp`: one command with subcommands.

- `perp demo`: the main job on the embedded default -- a session on the real H100 index path run
  through the engine, with a summary of what happened;
- `perp replay COMMANDS.jsonl [--events OUT.jsonl]`: audit any command file, print the state hash;
- `perp bench matching|risk`: reproducible benchmarks that print their figures;
- `perp config show`: the effective market config;
- `perp oracle replay`: the hourly anchor over the real daily fixes;
- `perp admin --journal DIR audit|params|apply`: admin commands offline on a stopped venue (perp/admin_cli.py).
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


def _announce_compile() -> None:
    from perp.numba_cache import announce_compile

    announce_compile(lambda text: click.echo(text, err=True))


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
    """Audit a command file through a fresh engine.

    Runs COMMANDS (JSON lines, docs/commands.md) through a fresh engine and prints a summary, whether
    money is conserved and the final state hash; a malformed line stops it with its number and 5004."""
    from perp.replay import ReplayFileError, ReplayInputError, replay_file

    try:
        eng, summary = replay_file(commands, _markets(markets_path), events_path)
    except (ReplayInputError, ReplayFileError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    _print_summary(eng, summary)
    click.echo(f"money_conserved {eng.money_conserved()}")


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


@main.command(short_help="A seeded session on the real H100 index path, with a summary.")
@click.option("--days", default=7, show_default=True, type=click.IntRange(min=1),
              help="days of the real H100 index path, counted back from the last fix (1 or more)")
@click.option("--seed", default=7, show_default=True, help="seed of the takers' orders (same seed, same session)")
@click.option("--csv", "csv_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="daily fixes CSV (default: ../shared/data/gpumarkets/daily_fixings.csv; without it, the "
                   "shipped example session)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out/demo", show_default=True,
              help="where the session's commands and events are written")
def demo(days: int, seed: int, csv_path: str | None, out_dir: str) -> None:
    """A seeded session on the real H100 index path, through the engine; shows what happened."""
    from oracle.readers import default_csv_path
    from perp.replay import replay_file
    from sims.demo_session import (
        LEVERAGED,
        MAKER,
        TAKERS,
        anchor_path,
        build_session,
        utc,
    )

    markets = _markets(None)
    spec = markets.market[0]
    csv_file = Path(csv_path) if csv_path else default_csv_path()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    session = out / "session.jsonl"
    if csv_file.exists():
        path = anchor_path(csv_file, spec, days)
        if len(path) < 24 * days:
            raise click.BadParameter(f"{csv_file} holds {len(path) // 24} days of {spec.series}; asked for {days}",
                                     param_hint="--days")
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
        click.echo(f"index     {csv_file} not found; replaying the shipped example session (two days)")
    _announce_compile()
    events = out / "events.jsonl"
    eng, summary = replay_file(session, markets, events)
    _print_summary(eng, summary)
    click.echo(f"files     {session} (commands), {events} (events)")
    _print_demo_outcome(eng, events, MAKER, list(TAKERS), LEVERAGED)


def _print_demo_outcome(eng, events_path: Path, maker: int, takers: list[int], leveraged: int) -> None:
    """What happened, counted from the events: who was liquidated, the hours funding was paid."""
    from perp.events import Event, FundingPaid, LiquidationStep

    usd = lambda micro: f"{micro / 1e6:,.2f}"  # noqa: E731 - display only
    dec = msgspec.json.Decoder(Event)
    liquidated: set[int] = set()
    sweeps = steps = 0
    funding_hours = paying_hours = 0
    paid_by_longs = paid_by_shorts = 0
    with open(events_path, "rb") as fh:
        for line in fh:
            ev = dec.decode(line)
            if isinstance(ev, LiquidationStep):
                if ev.phase == "sweep":
                    sweeps += 1
                else:
                    steps += 1
                    if ev.phase == "started":
                        liquidated.add(ev.account)
            elif isinstance(ev, FundingPaid):
                funding_hours += 1
                if ev.rate_ppb:
                    paying_hours += 1
                    if ev.rate_ppb > 0:
                        paid_by_longs += ev.paid_micro
                    else:
                        paid_by_shorts += ev.paid_micro
    who = ", ".join(str(a) for a in sorted(liquidated)) or "nobody"
    click.echo(f"liquidated {len(liquidated)} accounts ({who}; {steps} waterfall steps) in {sweeps} sweeps")
    click.echo(f"funding   {funding_hours} hours settled, {paying_hours} at a non-zero rate: longs paid shorts "
               f"{usd(paid_by_longs)} USD, shorts paid longs {usd(paid_by_shorts)} USD")
    m = eng.account(maker)
    if m.positions:
        p = m.positions[0]
        click.echo(f"maker     {maker}: {p.lots} lots, equity {usd(m.equity_micro)} USD, realised "
                   f"{usd(p.realized_pnl_micro)}, fees {usd(p.fees_micro)}, funding {usd(p.funding_micro)}")
    click.echo("takers    " + " ".join(f"{a}:{eng.position_lots(a, 0)}" for a in takers) + " lots")
    lev = eng.account(leveraged)
    click.echo(f"leveraged {leveraged}: {eng.position_lots(leveraged, 0)} lots, equity {usd(lev.equity_micro)} USD")
    g = eng.ledger()
    click.echo(f"ledger    deposits {usd(g['deposits_micro'])} USD, fee ledger {usd(g['fee_ledger_micro'])}, "
               f"insurance fund {usd(g['insurance_fund_micro'])}; money conserved to the micro-dollar: "
               f"{eng.money_conserved()}")


@main.group()
def config() -> None:
    """Configuration."""


@config.command("show")
@click.option("--markets", "markets_path", type=click.Path(exists=True, dir_okay=False),
              help="a markets TOML file (default: the embedded markets.toml)")
def config_show(markets_path: str | None) -> None:
    """The effective config as one JSON document.

    Every market with its leverage tiers and
    derived integers, and the gate's permission table."""
    from perp.gate import RESERVED_ACCOUNTS, permit_table
    from perp.markets import max_position_lots, micro_per_tick_lot, tier_schedule

    markets = _markets(markets_path)
    out = []
    for spec in markets.market:
        d = msgspec.to_builtins(spec)
        sched = tier_schedule(spec)
        d["derived"] = {"micro_per_tick_lot": micro_per_tick_lot(spec), "max_position_lots": max_position_lots(spec),
                        "max_leverage": sched.max_leverage, "tier_imr_ppm": list(sched.imr_ppm),
                        "tier_mm_deduction_micro": list(sched.mm_deduction_micro)}
        out.append(d)
    doc = {"market": out, "gate": {"reserved_accounts_below": RESERVED_ACCOUNTS, "permissions": permit_table()}}
    click.echo(json.dumps(doc, indent=2))


@main.group(short_help="Reproducible benchmarks that print their figures.")
def bench() -> None:
    """Reproducible benchmarks that print their figures."""


@bench.command("matching", short_help="Matching throughput end to end per batch, vs a Python book.")
@click.option("--commands", "n", default=1_000_000, show_default=True)
@click.option("--seed", default=42, show_default=True, help="seed of the command stream")
@click.option("--batch", default=4096, show_default=True, help="commands per batch")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(min=1),
              help="timed passes per book (interleaved); the median pass is reported")
@click.option("--json", "as_json", is_flag=True, help="last line is one JSON object")
def bench_matching(n: int, seed: int, batch: int, repeats: int, as_json: bool) -> None:
    """Matching throughput, end to end per batch: numba engine vs a plain-Python book."""
    _announce_compile()
    from perp.bench import run

    r = run(n=n, seed=seed, batch=batch, repeats=repeats)
    click.echo(f"stream            {r['commands']:,} commands (seed {r['seed']}, batch {r['batch']}): "
               f"{r['events']:,} events, {r['fills']:,} fills, {r['resting_orders']:,} orders resting at the end; "
               f"{r['cancels']:,} cancels, {r['cancel_unknown']:,} of them unknown ({r['cancel_unknown_rate']:.1%})")
    click.echo(f"numba engine      {r['commands_per_s']:,.0f} commands/s end to end per batch, events handed to a "
               f"consumer (batch p50 {r['p50_batch_us']:.0f} us, p99 {r['p99_batch_us']:.0f} us; "
               f"median of {r['repeats']} passes, best {r['best_commands_per_s']:,})")
    click.echo(f"  kernel only     {r['kernel_commands_per_s']:,.0f} commands/s "
               f"(batch p50 {r['kernel_p50_batch_us']:.0f} us)")
    click.echo(f"plain-Python book {r['python_commands_per_s']:,.0f} commands/s end to end per batch, "
               f"{r['python_events']:,} events handed to the same consumer (best {r['best_python_commands_per_s']:,})")
    click.echo(f"ratio             {r['ratio_vs_python']:.1f}x end to end "
               f"({r['kernel_ratio_vs_python']:.1f}x kernel only); "
               f"targets >= {r['target_commands_per_s']:,} commands/s and >= {r['target_ratio']:.0f}x: "
               f"{'met' if r['meets_target'] else 'NOT met'}")
    click.echo(f"state_hash        {r['state_hash']}")
    if as_json:
        click.echo(json.dumps(r))


@bench.command("replay", short_help="Recovery speed: a binary journal into a fresh engine.")
@click.option("--commands", "n", default=10_000_000, show_default=True, help="commands in the journal")
@click.option("--seed", default=42, show_default=True, help="seed of the command stream")
@click.option("--record-rows", default=4096, show_default=True, help="commands per journal record (batch size)")
@click.option("--cold", is_flag=True, help="evict the journal from the page cache before reading it")
@click.option("--dir", "workdir", type=click.Path(file_okay=False, exists=True), default=None,
              help="where to write the journal (default: the system temp dir; ~96 bytes per command)")
@click.option("--keep", is_flag=True, help="keep the journal instead of deleting it")
@click.option("--json", "as_json", is_flag=True, help="last line is one JSON object")
def bench_replay(n: int, seed: int, record_rows: int, cold: bool, workdir: str | None, keep: bool,
                 as_json: bool) -> None:
    """Recovery: a binary journal of --commands replayed into a fresh engine."""
    _announce_compile()
    from perp.bench_replay import main as replay_main

    replay_main(n, seed, record_rows, cold, workdir, keep, as_json)


@bench.command("risk", short_help="The risk sweep over 1M accounts, with funds and gates.")
@click.option("--accounts", default=1_000_000, show_default=True, help="accounts in the sweep")
@click.option("--seed", default=7, show_default=True, help="seed of the accounts' positions")
@click.option("--json", "as_json", is_flag=True, help="last line is one JSON object")
def bench_risk(accounts: int, seed: int, as_json: bool) -> None:
    """Risk sweep over many accounts: equity + maintenance + funding payment."""
    _announce_compile()
    from risk.bench import main as risk_bench_main

    risk_bench_main(accounts=accounts, seed=seed, as_json=as_json)


@bench.command("liquidation", short_help="A price gap over 1M accounts: the whole waterfall.")
@click.option("--accounts", default=1_000_000, show_default=True, help="accounts in the book")
@click.option("--seed", default=11, show_default=True, help="seed of the accounts' positions")
@click.option("--fund-usd", default=20_000, show_default=True, help="insurance fund before the gap")
@click.option("--json", "as_json", is_flag=True, help="last line is one JSON object")
def bench_liquidation(accounts: int, seed: int, fund_usd: int, as_json: bool) -> None:
    """A price gap over many accounts: detection plus the whole liquidation waterfall."""
    _announce_compile()
    from liquidation.bench import main as liq_main

    liq_main(accounts=accounts, seed=seed, as_json=as_json, fund_usd=fund_usd)


@main.group()
def journal() -> None:
    """Inspect and repair a command journal (docs/journal.md)."""


@journal.command("verify")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="last line is one JSON object")
def journal_verify(path: str, as_json: bool) -> None:
    """Check every record of PATH.

    Streams the file; exit 1 if it is damaged, 2 if it is empty."""
    from perp.journal import JournalCorrupt, JournalError, scan

    try:
        r = scan(path)
    except JournalCorrupt as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except JournalError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    info = {"path": path, "schema_version": r.header.schema_version, "journal_id": r.header.journal_id,
            "config_hash": r.header.config_hash, "first_seq": r.header.first_seq, "last_seq": r.next_seq - 1,
            "records": r.records, "bytes": r.size, "torn_tail_bytes": r.torn.dropped_bytes if r.torn else 0}
    click.echo(f"journal   {path}: {r.records:,} records, seq {r.header.first_seq:,}..{r.next_seq - 1:,}, "
               f"{r.size:,} bytes (schema {r.header.schema_version}, id {r.header.journal_id}, "
               f"config {r.header.config_hash})")
    if r.torn:
        click.echo(f"torn tail {r.torn.dropped_bytes} bytes at byte {r.torn.offset} (code 5002): an append cut "
                   f"short by a crash, never acknowledged; the next open for append cuts it (kept aside)")
    else:
        click.echo("whole     every record checks")
    if as_json:
        click.echo(json.dumps(info))


@journal.command("recover")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--snapshot", "snapshot", type=click.Path(exists=True, dir_okay=False), default=None,
              help="a snapshot taken by the sequencer of this journal")
@click.option("--snapshot-dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="use the newest valid snapshot of this journal in this directory")
@click.option("--markets", "markets_path", type=click.Path(exists=True, dir_okay=False),
              help="markets TOML the journal was written under (default: the embedded markets.toml)")
@click.option("--json", "as_json", is_flag=True, help="last line is one JSON object")
def journal_recover(path: str, snapshot: str | None, snapshot_dir: str | None, markets_path: str | None,
                    as_json: bool) -> None:
    """Recover from PATH, changing no file.

    Recovers the engine from PATH (and a snapshot) without changing any file; prints what it reached."""
    from perp.journal import JournalError
    from perp.sequencer import recover_detailed
    from perp.state import SnapshotError

    if not Path(path).exists():
        click.echo(f"error: {path} does not exist", err=True)
        sys.exit(2)
    _announce_compile()
    try:
        rec = recover_detailed(path, snapshot=snapshot, snapshot_dir=snapshot_dir, markets=_markets(markets_path))
    except (JournalError, SnapshotError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    eng = rec.engine
    info = {"path": path, "snapshot": str(rec.snapshot) if rec.snapshot else None, "snapshot_seq": rec.snapshot_seq,
            "replayed": rec.replayed, "seq": eng.seq, "seconds": round(rec.seconds, 3),
            "torn_tail_bytes": rec.scan.torn.dropped_bytes if rec.scan and rec.scan.torn else 0,
            "money_conserved": eng.money_conserved(), "state_hash": eng.state_hash()}
    click.echo(f"recovered seq {eng.seq:,} in {rec.seconds:.3f} s: snapshot {info['snapshot'] or '-'} "
               f"(seq {rec.snapshot_seq:,}) + {rec.replayed:,} commands replayed")
    click.echo(f"money conserved to the micro-dollar: {info['money_conserved']}")
    click.echo(f"state_hash {info['state_hash']}")
    if as_json:
        click.echo(json.dumps(info))


@journal.command("repair")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--dry-run", is_flag=True, help="show what would be dropped; change nothing")
@click.option("--yes", is_flag=True, help="cut the journal at the last valid record (the dropped bytes are kept)")
@click.option("--json", "as_json", is_flag=True, help="last line is the plan as one JSON object")
def journal_repair(path: str, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Cut a damaged journal (dry run first).

    Cuts a damaged journal at its last valid record, after an operator's decision.

    Every acknowledged command after the cut is lost to the venue (the dry run counts them);
    restore the journal from a replica instead whenever one exists. The dropped bytes go to
    PATH.dropped-OFFSET and the decision to PATH.repairs.jsonl.
    """
    from perp.journal import JournalError, plan_repair, repair

    try:
        plan = plan_repair(path)
    except JournalError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if plan is None:
        click.echo(f"journal   {path} is whole: nothing to repair")
        return
    click.echo(f"damage    {plan.reason} (code {plan.code})")
    click.echo(f"cut at    byte {plan.cut_offset:,} of {plan.size:,}: keeps seq 1..{plan.kept_last_seq:,}, "
               f"drops {plan.dropped_bytes:,} bytes")
    if plan.intact_after:
        lo, hi = plan.dropped_seq_range
        click.echo(f"WARNING   {plan.intact_after:,} intact records after the damage (seq {lo:,}..{hi:,}) would be "
                   f"dropped: these were acknowledged commands")
    if as_json:
        click.echo(msgspec.json.encode(plan).decode())
    if dry_run:
        sys.exit(1)
    if not yes:
        click.echo("refused   re-run with --yes to cut (or --dry-run to only look)", err=True)
        sys.exit(2)
    side = repair(path, plan)
    click.echo(f"repaired  dropped bytes kept in {side}; decision logged in {path}.repairs.jsonl")


def _register_oracle() -> None:
    from oracle.cli import oracle_group

    main.add_command(oracle_group, "oracle")


_register_oracle()


def _register_gateway() -> None:
    """`perp serve`, `perp keys` and `perp bench gateway` live with the gateway (gateway/cli.py)."""
    from gateway.cli import bench_fanout_command, bench_gateway_command, keys_group, serve_command

    main.add_command(serve_command, "serve")
    main.add_command(keys_group, "keys")
    bench.add_command(bench_gateway_command, "gateway")
    bench.add_command(bench_fanout_command, "fanout")
    from gateway.redis_cli import engine_command, gateway_command  # the Redis scale-out (docs/deployment.md)

    main.add_command(engine_command, "engine")
    main.add_command(gateway_command, "gateway")


_register_gateway()

# ---- perp sim: the scenario simulator (sims/) ------------------------------------------------
@click.group("sim", short_help="The scenario simulator: scenarios on the real engine, reports, sweeps.")
def sim_group() -> None:
    """Scenarios (TOML) run on the real engine with the oracle's anchor, agents and the venue's timers."""


def _library_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "sims" / "scenarios"


def _scenario_path(name: str) -> Path:
    p = Path(name)
    if p.exists():
        return p
    lib = _library_dir() / (name if name.endswith(".toml") else f"{name}.toml")
    if lib.exists():
        return lib
    raise click.BadParameter(f"{name}: no such file, and not a library scenario (perp sim list)",
                             param_hint="SCENARIO")


def _load(name: str):
    from sims.scenario import ScenarioError, load_scenario

    try:
        return load_scenario(_scenario_path(name))
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from None


@sim_group.command("list")
def sim_list() -> None:
    """The shipped scenario library (sims/scenarios/*.toml)."""
    from sims.scenario import load_scenario

    for p in sorted(_library_dir().glob("*.toml")):
        sc = load_scenario(p)
        first = " ".join(sc.description.split())[:100]
        click.echo(f"{p.stem:24s} {sc.hours:4d} h  {first}")


@sim_group.command("run")
@click.argument("scenario")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="run directory (default: out/sims/NAME)")
@click.option("--seed", type=int, default=None, help="override the scenario's seed")
@click.option("--via", type=click.Choice(["engine", "gateway"]), default="engine", show_default=True,
              help="gateway: end to end through perp serve's gateway and the client on loopback")
def sim_run(scenario: str, out_dir: str | None, seed: int | None, via: str) -> None:
    """Run SCENARIO (a TOML file or a library name); write metrics.json, plots and index.html."""
    from sims.analytics import metrics
    from sims.report import render_report, write_run
    from sims.runner import run_scenario

    sc = _load(scenario)
    if seed is not None:
        sc = msgspec.structs.replace(sc, seed=seed)
    out = Path(out_dir) if out_dir else Path("out") / "sims" / sc.name
    _announce_compile()
    if via == "gateway":
        from perp.logs import configure_logging

        configure_logging("warning")  # the gateway logs every logon and connection
    with click.progressbar(length=sc.hours, label=f"{sc.name}", file=sys.stderr) as bar:
        done = [0]

        def progress(h: int, total: int) -> None:
            bar.update(h - done[0])
            done[0] = h

        res = run_scenario(sc, progress, via=via)
    m = metrics(res)
    write_run(res, out, m)
    page = render_report(out)
    ch = m["waterfall"]["channels"]
    click.echo(f"run       {sc.name}: {sc.hours} h in {res.wall_s:.1f} s via {via}"
               + (f" (refused before sequencing: {res.gateway_refusals})" if res.gateway_refusals else ""))
    click.echo(f"liquid.   {m['liquidations']['count']} (${m['liquidations']['notional_usd']:,.0f}): book "
               f"${ch['book']['usd']:,.0f}, fund ${ch['fund']['usd']:,.0f}, ADL ${ch['adl']['usd']:,.0f}, "
               f"bad debt ${ch['bad_debt']['usd']:,.0f}")
    click.echo(f"fund      min equity ${m['fund']['min_equity_usd']:,.2f}; ADL {m['adl']['count']}")
    click.echo(f"mark      max |mark - index| {m['max_abs_mark_minus_index_bps']} bp; funding longs paid "
               f"${m['funding']['longs_paid_usd']:,.2f}")
    click.echo(f"money     conserved: {m['money_conserved']}; state hash {m['state_hash']}")
    click.echo(f"report    {page}")
    if not (m["money_conserved"] and m["money_conserved_every_step"]):
        sys.exit(1)


@sim_group.command("report")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
def sim_report(run_dir: str) -> None:
    """Re-render the plots and index.html of a run directory from its files."""
    from sims.report import render_report

    click.echo(f"report    {render_report(run_dir)}")


@sim_group.command("sweep")
@click.argument("scenario")
@click.option("--grid", "grid", multiple=True, required=True, help="key=v1,v2,... (dotted scenario key); repeatable")
@click.option("--jobs", default=2, show_default=True, type=click.IntRange(min=1), help="local worker processes")
@click.option("--dask", "dask_address", default=None, help="a Dask scheduler address (tcp://host:8786)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="where sweep.csv and sweep.html go (default: out/sims/NAME-sweep)")
def sim_sweep(scenario: str, grid: tuple[str, ...], jobs: int, dask_address: str | None, out_dir: str | None) -> None:
    """Run SCENARIO at every point of the grid; a summary table (CSV and HTML)."""
    from sims.scenario import ScenarioError
    from sims.sweep import parse_grid, sweep, write_heatmaps, write_table

    sc = _load(scenario)
    try:
        axes = parse_grid(grid)
        rows = sweep(sc, axes, jobs=jobs, dask_address=dask_address)
    except (ValueError, ScenarioError) as exc:
        raise click.ClickException(str(exc)) from None
    out = Path(out_dir) if out_dir else Path("out") / "sims" / f"{sc.name}-sweep"
    csv_path, html_path = write_table(rows, out)
    maps = write_heatmaps(rows, axes, out)
    click.echo(f"sweep     {len(rows)} points; {csv_path}; {html_path}; {len(maps)} heatmaps")


main.add_command(sim_group, "sim")

from perp.admin_cli import admin as admin_group  # noqa: E402 - registered last, like the simulator's group
from gateway.admin_cli import register_online  # noqa: E402 - `perp admin --key FILE ...` (the admin API)

register_online(admin_group)
main.add_command(admin_group, "admin")


if __name__ == "__main__":
    main()
