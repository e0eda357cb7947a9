"""``perp oracle replay``: the hourly anchor over the real GPU Markets fixes, as text, JSON or a plot.

Edge module: reads files, logs rejections (structlog, to stderr), prints, draws. The computation
is ``oracle.replay`` (pure). Data credit: GPU Markets, gpumarkets.dev, CC BY 4.0.
"""

from __future__ import annotations

import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

import click
import msgspec
import structlog

from oracle.anchor import DEFAULT_MAX_HOURLY_MOVE_PPM, AnchorConfig, AnchorPoint
from oracle.errors import OracleCode, OracleError
from oracle.readers import (
    CSV_ATTRIBUTION,
    csv_series,
    default_csv_path,
    log_rejections,
    read_csv_fixes,
)
from oracle.replay import replay_records, summarize
from oracle.units import (
    PPM,
    ns_to_iso,
    parse_half_life_s,
    parse_tick_size,
    ticks_to_usd,
)

_JSON = msgspec.json.Encoder(decimal_format="number")


def _configure_logging() -> None:
    """Logs go to stderr so ``--json`` stdout stays one object per line."""
    if not structlog.is_configured():
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))


def _pct_to_ppm(text: str | None) -> int:
    """--max-hourly-move-pct: None keeps the default cap, "0" turns it off."""
    if text is None:
        return DEFAULT_MAX_HOURLY_MOVE_PPM
    try:
        pct = Decimal(text)
    except InvalidOperation as exc:
        raise OracleError(OracleCode.BAD_CONFIG, f"--max-hourly-move-pct {text!r} is not a decimal") from exc
    ppm = pct * PPM / 100
    if pct == 0:
        return 0
    if not pct.is_finite() or pct < 0 or ppm != ppm.to_integral_value():
        raise OracleError(OracleCode.BAD_CONFIG, f"--max-hourly-move-pct {text!r} must be > 0 with at most 4 decimals")
    return int(ppm)


def _plot(points: list[AnchorPoint], tick: Decimal, series: str, half_life: str, out: Path) -> None:
    import datetime as dt

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [dt.datetime.fromtimestamp(p.ts_ns // 10**9, tz=dt.timezone.utc) for p in points]
    fig, ax = plt.subplots(figsize=(11, 5))
    ax.step(times, [float(ticks_to_usd(p.fix_price_ticks, tick)) for p in points], where="post",
            label="daily fix (target)", color="tab:gray", linewidth=1)
    ax.plot(times, [float(ticks_to_usd(p.anchor_price_ticks, tick)) for p in points],
            label=f"hourly anchor (EMA, half-life {half_life})", color="tab:blue", linewidth=1.4)
    flagged = [(t, float(ticks_to_usd(p.anchor_price_ticks, tick))) for t, p in zip(times, points)
               if p.validity.value != "fresh"]
    if flagged:
        ax.scatter(*zip(*flagged), s=8, color="tab:red", label="not fresh", zorder=3)
    ax.set_ylabel("USD per GPU-hour")
    ax.set_title(f"{series}: daily fix vs hourly anchor\nData: {CSV_ATTRIBUTION}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)


@click.group("oracle")
def oracle_group() -> None:
    """Index fixes, the robust estimator and the hourly EMA anchor."""


@oracle_group.command("replay")
@click.option("--series", required=True, help="series id, e.g. GPUM.H100.SXM.SPOT")
@click.option("--half-life", "half_life", default="6h", show_default=True, help="EMA half-life: 6h, 90m, 3600s, 1d")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="daily fixings CSV [default: ../shared/data/gpumarkets/daily_fixings.csv]")
@click.option("--tick-size", default="0.0001", show_default=True, help="tick size in USD per GPU-hour")
@click.option("--max-hourly-move-pct", default=None, help="cap on the anchor's hourly move, percent (default 1; 0 = no cap)")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write a PNG of fix vs anchor")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per hour, then a summary line")
def replay_command(series: str, half_life: str, csv_path: Path | None, tick_size: str,
                   max_hourly_move_pct: str | None, plot_path: Path | None, as_json: bool) -> None:
    """The hourly anchor over the real daily fixes.

    Prints the anchor path over the GPU Markets daily fixes (CC BY 4.0)."""
    _configure_logging()
    path = csv_path or default_csv_path()
    try:
        half_life_s = parse_half_life_s(half_life)
        tick = parse_tick_size(tick_size)
        config = AnchorConfig(series_id=series, tick_size_usd=tick_size, half_life_s=half_life_s,
                              max_hourly_move_ppm=_pct_to_ppm(max_hourly_move_pct))
        if not path.is_file():
            raise OracleError(OracleCode.CSV_SERIES_MISSING, f"no CSV at {path}")
        if series not in csv_series(path):
            raise OracleError(OracleCode.CSV_SERIES_MISSING,
                              f"series {series!r} is not in {path}; have {', '.join(csv_series(path))}")
        read = read_csv_fixes(path, series)
        points, rejections = replay_records(read.records, config)
    except OracleError as exc:
        raise click.ClickException(str(exc)) from exc
    log_rejections(rejections, series=series)
    summary = summarize(points)
    final_anchor = None if summary.final_anchor_ticks is None else ticks_to_usd(summary.final_anchor_ticks, tick)
    out = click.get_text_stream("stdout")
    if as_json:
        for p in points:
            out.write(_JSON.encode({"time": ns_to_iso(p.ts_ns), "fix": ticks_to_usd(p.fix_price_ticks, tick),
                                    "anchor": ticks_to_usd(p.anchor_price_ticks, tick),
                                    "state": p.validity.value}).decode() + "\n")
        out.write(_JSON.encode({"hours": summary.hours, "final_anchor": final_anchor,
                                "max_hourly_move_pct": summary.max_hourly_move_pct, "series": series,
                                "half_life_s": half_life_s, "source": CSV_ATTRIBUTION}).decode() + "\n")
    else:
        out.write(f"# {series} hourly anchor, half-life {half_life} ({half_life_s} s); "
                  f"data: {CSV_ATTRIBUTION}\n")
        out.write("# time (UTC)           fix (USD/GPU-h)  anchor (USD/GPU-h)  state\n")
        for p in points:
            out.write(f"{ns_to_iso(p.ts_ns)}  {ticks_to_usd(p.fix_price_ticks, tick):>15}  "
                      f"{ticks_to_usd(p.anchor_price_ticks, tick):>18}  {p.validity.value}\n")
        out.write(f"# hours {summary.hours}  final_anchor {final_anchor}  "
                  f"max_hourly_move_pct {summary.max_hourly_move_pct}\n")
    if plot_path is not None:
        _plot(points, tick, series, half_life, plot_path)
        click.echo(f"plot written to {plot_path}", err=True)
