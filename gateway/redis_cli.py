"""`perp engine --redis URL` and `perp gateway --redis URL --port N` (registered by perp/cli.py)."""

from __future__ import annotations

import asyncio

import click

_REDIS = click.option("--redis", "redis_url", required=True, help="redis://HOST:PORT/DB of the journal and bus")
_NS = click.option("--namespace", default="perp", show_default=True, help="key prefix: one venue per namespace")
_UNSAFE = click.option("--unsafe", is_flag=True,
                       help="accept a Redis whose settings can lose acknowledged orders (docs/deployment.md)")


@click.command("engine")
@_REDIS
@_NS
@_UNSAFE
@click.option("--markets", "markets_path", default=None, type=click.Path(exists=True, dir_okay=False),
              help="markets config of a new venue (afterwards the one registered in Redis)")
@click.option("--max-batch", default=4096, show_default=True, help="commands per engine batch at most")
@click.option("--liquidation-interval-ms", default=1000, show_default=True)
@click.option("--index-step-s", default=3600, show_default=True, help="the index feed moves once per step")
@click.option("--index-csv", default=None, type=click.Path(exists=True, dir_okay=False))
@click.option("--no-index-feed", is_flag=True)
@click.option("--snapshot-every", default=1_000_000, show_default=True, help="commands between snapshots (0: only on SIGTERM)")
@click.option("--book-interval-ms", default=20, show_default=True,
              help="book deltas at most this often per market, merged, in engine time (0: one per record)")
@click.option("--event-loop", "event_loop", default="auto", show_default=True,
              type=click.Choice(["auto", "uvloop", "asyncio"]))
def engine_command(redis_url: str, namespace: str, unsafe: bool, markets_path: str | None, max_batch: int,
                   liquidation_interval_ms: int, index_step_s: int, index_csv: str | None, no_index_feed: bool,
                   snapshot_every: int, book_interval_ms: int, event_loop: str) -> None:
    """The one sequencer of a scaled-out venue.

    Reads the command stream, runs the engine, writes the sequenced journal; timers, index feed and
    snapshots (docs/deployment.md)."""
    from gateway.cli import loop_factory, until_signal
    from gateway.engine_proc import EngineConfig, EngineProcess
    from gateway.redis_journal import UnsafeRedis
    from perp.numba_cache import announce_compile

    announce_compile(lambda text: click.echo(text, err=True))  # it starts after the compile (perp.warm)

    cfg = EngineConfig(redis_url=redis_url, namespace=namespace, unsafe=unsafe, markets_path=markets_path,
                       max_batch=max_batch, liquidation_interval_ms=liquidation_interval_ms,
                       index_step_s=index_step_s, index_csv=index_csv, index_feed=not no_index_feed,
                       snapshot_every=snapshot_every, book_interval_ms=book_interval_ms)

    async def main() -> None:
        try:
            eng = EngineProcess(cfg)
        except UnsafeRedis as exc:
            raise click.ClickException(str(exc)) from None
        await eng.start()
        click.echo(f"perp engine  {redis_url} namespace {namespace}  (seq {eng.engine.seq}, "
                   f"stream id {eng.seq_id})", nl=True)
        await until_signal(eng.failed)
        if eng.failed.is_set():
            raise click.ClickException("the engine failed (logged); restart it: it recovers from snapshot + stream")
        await eng.stop()
        click.echo(f"stopped      seq {eng.engine.seq}, state_hash {eng.engine.state_hash()}")

    with asyncio.Runner(loop_factory=loop_factory(event_loop)) as runner:
        runner.run(main())


@click.command("gateway")
@_REDIS
@_NS
@_UNSAFE
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, help="0: an ephemeral port (printed)")
@click.option("--keys", "keys_path", required=True, type=click.Path(dir_okay=False), help="API key file")
@click.option("--data", "data_dir", default="data", show_default=True, type=click.Path(file_okay=False))
@click.option("--group-commit-us", default=1000, show_default=True, help="gather commands this long per XADD")
@click.option("--max-batch", default=4096, show_default=True)
@click.option("--ack-timeout-s", default=10.0, show_default=True,
              help="commands the engine has not processed by then are answered 4901 (status unknown)")
@click.option("--order-rate-per-s", default=500.0, show_default=True)
@click.option("--cancel-rate-per-s", default=2000.0, show_default=True)
@click.option("--conn-rate-per-s", default=2000.0, show_default=True)
@click.option("--max-conns-per-ip", default=256, show_default=True)
@click.option("--event-loop", "event_loop", default="auto", show_default=True,
              type=click.Choice(["auto", "uvloop", "asyncio"]))
def gateway_command(redis_url: str, namespace: str, unsafe: bool, host: str, port: int, keys_path: str,
                    data_dir: str, group_commit_us: int, max_batch: int, ack_timeout_s: float,
                    order_rate_per_s: float, cancel_rate_per_s: float, conn_rate_per_s: float,
                    max_conns_per_ip: int, event_loop: str) -> None:
    """One of any number of gateway processes in front of `perp engine`.

    The protocol of `perp serve`; commands go to the Redis command stream and are acknowledged once
    the engine's record of them arrives (docs/deployment.md)."""
    from gateway.cli import loop_factory, until_signal
    from gateway.front import RedisGateway
    from gateway.redis_journal import UnsafeRedis
    from gateway.server import ServerConfig
    from perp.numba_cache import announce_compile

    announce_compile(lambda text: click.echo(text, err=True))  # it starts after the compile (perp.warm)

    config = ServerConfig(host=host, port=port, data_dir=data_dir, keys_path=keys_path,
                          group_commit_us=group_commit_us, max_batch=max_batch, order_rate_per_s=order_rate_per_s,
                          order_burst=int(2 * order_rate_per_s), cancel_rate_per_s=cancel_rate_per_s,
                          cancel_burst=int(2 * cancel_rate_per_s), conn_rate_per_s=conn_rate_per_s,
                          conn_burst=int(2 * conn_rate_per_s), max_conns_per_ip=max_conns_per_ip)

    async def main() -> None:
        try:
            gw = RedisGateway(config, redis_url=redis_url, namespace=namespace, unsafe=unsafe,
                              ack_timeout_s=ack_timeout_s)
        except UnsafeRedis as exc:
            raise click.ClickException(str(exc)) from None
        await gw.start()
        click.echo(f"perp gateway  ws://{host}:{gw.port}  (seq {gw.engine.seq}, {redis_url} namespace {namespace}, "
                   f"id {gw.gid})")
        click.echo(f"health        http://{host}:{gw.port}/healthz   metrics http://{host}:{gw.port}/metrics", nl=True)
        await until_signal(gw.failed)
        await gw.stop()
        if gw.failed.is_set():  # its replica lost the engine: exit for a supervisor to restart it
            click.echo(f"failed        seq {gw.engine.seq}: the replica no longer follows NS:seq (see the "
                       "replica_failed log); a restart recovers from the newest snapshot", err=True)
            raise SystemExit(3)
        click.echo(f"stopped       seq {gw.engine.seq}")

    with asyncio.Runner(loop_factory=loop_factory(event_loop)) as runner:
        runner.run(main())
