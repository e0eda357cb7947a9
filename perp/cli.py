"""`perp`: one command with subcommands (replay, bench, config, oracle, demo)."""

from __future__ import annotations

import click


@click.group()
def main() -> None:
    """GPU-compute perpetual engine."""


@main.group()
def bench() -> None:
    """Reproducible benchmarks that print their figures."""


@bench.command("risk")
@click.option("--accounts", default=1_000_000, show_default=True, help="accounts in the sweep")
@click.option("--seed", default=7, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="last line is one JSON object")
def bench_risk(accounts: int, seed: int, as_json: bool) -> None:
    """Risk sweep over many accounts: equity + maintenance + funding payment."""
    from risk.bench import main as risk_bench_main

    risk_bench_main(accounts=accounts, seed=seed, as_json=as_json)


def _register_oracle() -> None:
    from oracle.cli import oracle_group

    main.add_command(oracle_group, "oracle")


try:  # the oracle package registers its own subcommands (perp oracle replay)
    _register_oracle()
except ImportError:  # pragma: no cover - only while oracle/cli.py does not exist yet
    pass
