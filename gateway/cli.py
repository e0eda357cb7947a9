"""`perp serve` and `perp keys create|list|revoke` (registered on the `perp` group by perp/cli.py)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import click

DEFAULT_DATA = "data"


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, help="0: an ephemeral port (printed)")
@click.option("--data", "data_dir", default=DEFAULT_DATA, show_default=True, type=click.Path(file_okay=False),
              help="journal and snapshots (recovered on start)")
@click.option("--keys", "keys_path", default=None, type=click.Path(dir_okay=False),
              help="API key file (default: DATA/keys.json)")
@click.option("--markets", "markets_path", default=None, type=click.Path(exists=True, dir_okay=False))
@click.option("--fsync", default="always", show_default=True, type=click.Choice(["always", "interval", "never"]))
@click.option("--group-commit-us", default=1000, show_default=True, help="gather commands this long per journal fsync")
@click.option("--max-batch", default=4096, show_default=True, help="...or until this many are queued")
@click.option("--liquidation-interval-ms", default=1000, show_default=True)
@click.option("--index-step-s", default=3600, show_default=True, help="the index feed moves once per step")
@click.option("--index-csv", default=None, type=click.Path(exists=True, dir_okay=False),
              help="daily fixes CSV (default: ../shared/data/gpumarkets/daily_fixings.csv)")
@click.option("--no-index-feed", is_flag=True, help="no index feed (the index stays as the journal left it)")
@click.option("--order-rate-per-s", default=500.0, show_default=True, help="per key: places and amends (burst 2x)")
@click.option("--cancel-rate-per-s", default=2000.0, show_default=True, help="per key: cancels (burst 2x)")
@click.option("--conn-rate-per-s", default=2000.0, show_default=True, help="per connection: frames (burst 2x)")
@click.option("--max-conns-per-ip", default=256, show_default=True)
@click.option("--book-interval-ms", default=20, show_default=True,
              help="book deltas at most this often per market, merged (0: one per batch)")
@click.option("--event-loop", "event_loop", default="auto", show_default=True,
              type=click.Choice(["auto", "uvloop", "asyncio"]), help="auto: uvloop when installed")
@click.option("--snapshot-every", default=1_000_000, show_default=True,
              help="commands between snapshots, written off the order path (0: only on SIGTERM)")
@click.option("--demo", is_flag=True, help="also run seeded market makers and takers through the client")
def serve_command(host: str, port: int, data_dir: str, keys_path: str | None, markets_path: str | None, fsync: str,
                  group_commit_us: int, max_batch: int, liquidation_interval_ms: int, index_step_s: int,
                  index_csv: str | None, no_index_feed: bool, order_rate_per_s: float, cancel_rate_per_s: float,
                  conn_rate_per_s: float, max_conns_per_ip: int, book_interval_ms: int, event_loop: str,
                  snapshot_every: int, demo: bool) -> None:
    """The venue in one process on loopback.

    WebSocket gateway, journal, engine and timers in one process.

    Recovers from DATA/snapshots/ + DATA/journal.bin on start (a snapshot every --snapshot-every
    commands); on SIGTERM stops taking orders, drains, snapshots and exits. Connect with gateway.client.GatewayClient (docs/protocol.md)."""
    from gateway.server import Gateway, ServerConfig
    from perp.numba_cache import announce_compile

    announce_compile(lambda text: click.echo(text, err=True))  # the port opens after the compile (perp.warm)

    config = ServerConfig(host=host, port=port, data_dir=data_dir, keys_path=keys_path, markets_path=markets_path,
                          fsync=fsync, group_commit_us=group_commit_us, max_batch=max_batch,
                          liquidation_interval_ms=liquidation_interval_ms, index_step_s=index_step_s,
                          index_csv=index_csv, index_feed=not no_index_feed, order_rate_per_s=order_rate_per_s,
                          order_burst=int(2 * order_rate_per_s), cancel_rate_per_s=cancel_rate_per_s,
                          cancel_burst=int(2 * cancel_rate_per_s), conn_rate_per_s=conn_rate_per_s,
                          conn_burst=int(2 * conn_rate_per_s), max_conns_per_ip=max_conns_per_ip,
                          book_interval_ms=book_interval_ms, snapshot_every=snapshot_every)

    async def main() -> None:
        gw = Gateway(config)
        await gw.start()
        url = f"ws://{host}:{gw.port}"
        click.echo(f"perp serve  {url}  (seq {gw.engine.seq}, journal {gw.journal_path})")
        click.echo(f"health      http://{host}:{gw.port}/healthz   metrics http://{host}:{gw.port}/metrics")
        click.echo(f"keys        perp keys create --keys {gw.keys.path} --account 20 --perm read,trade --out my.key")
        click.echo("index       GPU Markets daily fixes (gpumarkets.dev, CC BY 4.0) through the oracle's hourly anchor")
        demo_run = None
        if demo:
            from gateway.demo import MAKERS, TAKERS, Demo

            demo_run = Demo(url, gw.keys, gw.specs[0].symbol)
            await demo_run.start()
            click.echo(f"demo        makers {', '.join(map(str, MAKERS))} and takers {TAKERS[0]}-{TAKERS[-1]} "
                       "trading through the client")
            click.echo(f"watch       python3 -m gateway.watch --url {url}")
        click.echo("stop        SIGTERM or Ctrl-C (drains, snapshots, exits)", nl=True)
        await until_signal(gw.failed)
        if demo_run is not None:
            await demo_run.close()
        await gw.stop()  # a failed journal: no snapshot of what may not be on disk
        if gw.failed.is_set():
            click.echo(f"failed      seq {gw.engine.seq}: the journal failed (see the batch_failed log); "
                       "a restart recovers what is durable from snapshot + journal", err=True)
            raise SystemExit(3)
        click.echo(f"stopped     seq {gw.engine.seq}, state_hash {gw.engine.state_hash()}")

    with asyncio.Runner(loop_factory=loop_factory(event_loop)) as runner:
        runner.run(main())


async def until_signal(failed: asyncio.Event | None = None) -> None:
    """Until SIGTERM or SIGINT, or until `failed` is set (a signal does not set it: the caller tells
    a clean stop from a failure by `failed`)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waits = [asyncio.ensure_future(stop.wait())]
    if failed is not None:
        waits.append(asyncio.ensure_future(failed.wait()))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


def loop_factory(choice: str = "auto"):
    """uvloop (libuv: several times less CPU per socket operation than the default loop) when asked
    for or, with "auto", when installed; the standard loop otherwise."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise click.ClickException("uvloop is not installed") from None
        return None
    return uvloop.new_event_loop


@click.group("keys")
def keys_group() -> None:
    """API keys: one account each, with permissions read, trade, admin."""


def _store(path: str):
    from gateway.keys import KeyStore

    try:
        return KeyStore(path)
    except PermissionError as exc:
        raise click.ClickException(str(exc)) from None


_KEYS_OPTION = click.option("--keys", "keys_path", default=str(Path(DEFAULT_DATA) / "keys.json"), show_default=True,
                            type=click.Path(dir_okay=False), help="the server's key file (created 0600)")


@keys_group.command("create")
@_KEYS_OPTION
@click.option("--account", type=click.IntRange(0, (1 << 22) - 1), required=True)
@click.option("--perm", "perms", default="read,trade", show_default=True, help="comma-separated: read,trade,admin")
@click.option("--kind", default="ed25519", show_default=True, type=click.Choice(["ed25519", "hmac"]))
@click.option("--label", default="")
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="write the client's credential here (0600) instead of printing it")
def keys_create(keys_path: str, account: int, perms: str, kind: str, label: str, out_path: str | None) -> None:
    """Create a key. Ed25519: the server keeps only the public key; the private key is shown once."""
    store = _store(keys_path)
    try:
        k, credential = store.create(account, tuple(p.strip() for p in perms.split(",") if p.strip()), kind, label)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    doc = {"kind": k.kind, "key": k.key, "secret_hex": credential, "account": k.account}
    if out_path:
        fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh)
        click.echo(f"key {k.key} ({k.kind}) for account {k.account}, permissions {','.join(k.permissions)}; "
                   f"credential written to {out_path}")
    else:
        click.echo(json.dumps(doc))


@keys_group.command("list")
@_KEYS_OPTION
def keys_list(keys_path: str) -> None:
    """Keys in the file (never their secrets)."""
    for k in _store(keys_path).keys.values():
        click.echo(f"{k.key}  {k.kind:<7}  account {k.account:<8}  {','.join(k.permissions):<16}  "
                   f"{'REVOKED' if k.revoked else 'active'}  {k.label}")


@keys_group.command("revoke")
@_KEYS_OPTION
@click.argument("key")
def keys_revoke(keys_path: str, key: str) -> None:
    """Revoke KEY; its sessions end.

    A running server refuses it within a second and ends its sessions (4103)."""
    store = _store(keys_path)
    if key not in store.keys:
        raise click.ClickException(f"no key {key!r} in {keys_path}")
    store.revoke(key)
    click.echo(f"revoked {key}")


@click.command("gateway")
@click.option("--procs", default=2, show_default=True, help="client processes")
@click.option("--accounts-per-proc", default=4, show_default=True)
@click.option("--seconds", default=5.0, show_default=True, help="length of the throughput phase")
@click.option("--rate", default=10_000, show_default=True, help="orders/s of the latency phase")
@click.option("--window", default=128, show_default=True, help="frames in flight per account in the throughput phase")
@click.option("--subscribers", default=1000, show_default=True, help="book subscribers connected during the run")
@click.option("--group-commit-us", default=1000, show_default=True)
@click.option("--book-interval-ms", default=20, show_default=True, help="the server's book delta interval")
@click.option("--bare", is_flag=True, help="the same clients against a bare websockets server (decode + ack only)")
@click.option("--redis", "redis_url", default=None,
              help="also through `perp engine` + two `perp gateway` processes on this Redis (the `redis` object)")
@click.option("--unsafe", is_flag=True, help="with --redis: accept a Redis without appendfsync always")
@click.option("--json", "as_json", is_flag=True, help="last line is one JSON object")
def bench_gateway_command(procs: int, accounts_per_proc: int, seconds: float, rate: int, window: int, subscribers: int,
                          group_commit_us: int, book_interval_ms: int, bare: bool, redis_url: str | None,
                          unsafe: bool, as_json: bool) -> None:
    """The whole order path over loopback.

    Client processes: logon, validation, journal + fsync, engine, ack."""
    from gateway.bench import run, run_bare

    if bare:
        r = run_bare(procs=procs, accounts_per_proc=accounts_per_proc, seconds=seconds, rate=rate, window=window)
        click.echo(f"bare server  {r['orders_per_s']:,} frames/s acked ({r['procs']} client processes, "
                   f"{r['accounts']} connections, window {r['window']}); server CPU {r['server_cpu_us_per_order']} us "
                   f"per frame; p50 {r['p50_ack_ms_at_10k']} ms, p99 {r['p99_ack_ms_at_10k']} ms at {rate:,}/s")
        if as_json:
            click.echo(json.dumps(r, allow_nan=False))
        return
    r = run(procs=procs, accounts_per_proc=accounts_per_proc, seconds=seconds, rate=rate, window=window,
            subscribers=subscribers, group_commit_us=group_commit_us, book_interval_ms=book_interval_ms)
    if redis_url:
        from gateway.bench_redis import run_redis

        r["redis"] = run_redis(redis_url, procs=procs, accounts_per_proc=accounts_per_proc, seconds=seconds, rate=rate,
                               window=window, subscribers=subscribers, group_commit_us=group_commit_us, unsafe=unsafe)
    from gateway.bench_machine import text as machine_text

    click.echo(f"machine      {machine_text(r['machine'])}")
    click.echo(f"throughput   {r['orders_per_s']:,} order frames/s acked (one order per frame, fsync per group "
               f"commit; {r['procs']} client processes, {r['accounts']} accounts, window {r['window']})")
    click.echo(f"server CPU   {r['server_cpu_us_per_order']} us per order frame (load average {r['load_average_1m']:.1f} "
               "on this machine during the run)")
    click.echo(f"cores        {_budget_text(r['max_phase_cpu_cores'])} over the throughput phase")
    click.echo(f"latency      p50 {r['p50_ack_ms_at_10k']} ms, p99 {r['p99_ack_ms_at_10k']} ms at {rate:,} orders/s "
               f"({r['paced_acks']:,} acks)")
    click.echo(f"batch frames {r['batch_frame_orders_per_s']:,} orders/s in order.batch frames of 20")
    if r["fanout_samples"]:
        click.echo(f"fan-out      {r['subscribers']} book subscribers: p50 {r['p50_fanout_ms']} ms, "
                   f"p99 {r['p99_fanout_ms']} ms ({r['fanout_samples']:,} deltas received, one per "
                   f"{r['book_interval_ms']} ms at most; lag counted from the first batch a delta covers)")
    else:
        click.echo(f"fan-out      {r['subscribers']} book subscribers: no deltas received (null in the JSON)")
    if redis_url:
        x = r["redis"]
        click.echo(f"redis        {x['orders_per_s']:,} order frames/s acked through {x['gateways']} gateway processes "
                   f"and one engine (appendfsync {x['appendfsync']}); p50 {x['p50_ack_ms_at_10k']} ms, "
                   f"p99 {x['p99_ack_ms_at_10k']} ms at {rate:,} orders/s; CPU per order: engine "
                   f"{x['engine_cpu_us_per_order']} us, gateways {x['gateway_cpu_us_per_order']} us")
        click.echo(f"redis cores  {_budget_text(x['max_phase_cpu_cores'])} over the throughput phase")
        stages = ", ".join(f"{k} {v['p50_ms']}/{v['p99_ms']}" for k, v in x["stages_ms_at_10k"].items())
        click.echo(f"redis stages p50/p99 ms of an own group commit at {rate:,}/s: {stages or 'none timed'}")
    if as_json:
        click.echo(json.dumps(r, allow_nan=False))


@click.command("fanout")
@click.option("--subscribers", default=1000, show_default=True, help="book subscribers (raw sockets, one process)")
@click.option("--pushes", default=100, show_default=True, help="pushes per path and round")
@click.option("--interval-ms", default=20.0, show_default=True, help="between pushes (the book delta interval)")
@click.option("--rounds", default=3, show_default=True, help="alternating rounds of the two paths (medians reported)")
@click.option("--json", "as_json", is_flag=True, help="last line is one JSON object")
def bench_fanout_command(subscribers: int, pushes: int, interval_ms: float, rounds: int, as_json: bool) -> None:
    """Fan-out cost: queue path vs kernel.

    The loop thread's CPU per subscriber per push, written through the connections' queues and
    by the fan-out kernel (gateway.fanout)."""
    from gateway.bench_fanout import run

    r = run(subscribers=subscribers, pushes=pushes, interval_ms=interval_ms, rounds=rounds)
    click.echo(f"fan-out      {r['subscribers']} book subscribers, a {r['frame_bytes']}-byte delta every "
               f"{r['interval_ms']} ms, {r['rounds']} x {r['pushes_per_round']} pushes per path")
    click.echo(f"queue path   {r['queue_us_per_subscriber']} us of the loop thread per subscriber per push "
               f"(rounds {r['queue_us_rounds']})")
    click.echo(f"kernel path  {r['kernel_us_per_subscriber']} us (rounds {r['kernel_us_rounds']}): "
               f"{r['ratio']}x less")
    if as_json:
        click.echo(json.dumps(r, allow_nan=False))


def _budget_text(b: dict) -> str:
    """`cores 2: machine 1.93 busy (0.02 stolen); server 0.95, subscribers 0.61, traders 0.34`."""
    roles = ", ".join(f"{k} {v}" for k, v in b.items() if k not in ("cores", "machine_busy", "machine_steal"))
    return f"{b['cores']} on the machine: {b['machine_busy']} busy ({b['machine_steal']} stolen); {roles}"

