"""Parameter sweeps: one scenario run per point of a grid of dotted-key overrides.

`grid_points({"market.funding_cap_ppb": [27_500, 500_000], "fund.deposit_usd": [5_000, 50_000]})` is
the cartesian product in a fixed order; `sweep(...)` runs every point in-process (`jobs=1`), in local
worker processes (`jobs>1`), or on a Dask cluster (`dask_address`, through `dask.distributed.Client`),
and returns the same table whichever way it ran: one row per point, in grid order (each run is
deterministic; the executor only changes where it runs).
"""

from __future__ import annotations

import csv
import html
import itertools
from collections.abc import Sequence
from pathlib import Path

import msgspec

from sims.scenario import Scenario, with_overrides

COLUMNS = ("liquidations", "liquidated_usd", "book_usd", "fund_usd", "adl_usd", "bad_debt_usd", "fund_min_equity_usd",
           "adl_count", "adl_largest_haircut_bps", "max_mark_index_bps", "longs_paid_funding_usd",
           "manipulator_pnl_usd", "money_conserved", "state_hash")


def parse_value(text: str):
    for conv in (int, float):
        try:
            return conv(text.replace("_", ""))
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text, text)


def parse_grid(specs: Sequence[str]) -> dict[str, list]:
    """`key=v1,v2,...` strings to a grid."""
    grid: dict[str, list] = {}
    for s in specs:
        key, sep, values = s.partition("=")
        if not sep or not key or not values:
            raise ValueError(f"grid {s!r}: expected key=v1,v2,...")
        grid[key.strip()] = [parse_value(v.strip()) for v in values.split(",")]
    return grid


def grid_points(grid: dict[str, list]) -> list[dict]:
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def summary_row(m: dict) -> dict:
    ch = m["waterfall"]["channels"]
    return {"liquidations": m["liquidations"]["count"], "liquidated_usd": m["liquidations"]["notional_usd"],
            "book_usd": ch["book"]["usd"], "fund_usd": ch["fund"]["usd"], "adl_usd": ch["adl"]["usd"],
            "bad_debt_usd": ch["bad_debt"]["usd"], "fund_min_equity_usd": m["fund"]["min_equity_usd"],
            "adl_count": m["adl"]["count"], "adl_largest_haircut_bps": m["adl"]["largest_haircut_bps"],
            "max_mark_index_bps": m["max_abs_mark_minus_index_bps"],
            "longs_paid_funding_usd": m["funding"]["longs_paid_usd"],
            "manipulator_pnl_usd": round(sum(m["manipulator_pnl_usd"].values()), 2),
            "money_conserved": m["money_conserved"] and m["money_conserved_every_step"], "state_hash": m["state_hash"]}


def run_point(scenario_json: bytes, point: dict) -> dict:
    """One grid point (top-level and picklable: it runs in worker processes and on Dask workers)."""
    from sims.analytics import metrics
    from sims.runner import run_scenario

    sc = with_overrides(msgspec.json.decode(scenario_json, type=Scenario), point)
    return dict(point) | summary_row(metrics(run_scenario(sc)))


def sweep(sc: Scenario, grid: dict[str, list], jobs: int = 1, dask_address: str | None = None) -> list[dict]:
    points = grid_points(grid)
    for p in points:  # fail fast on a bad key or value, before any run
        with_overrides(sc, p)
    blob = msgspec.json.encode(sc)
    if dask_address:
        from dask.distributed import Client

        with Client(dask_address) as client:
            futures = client.map(run_point, [blob] * len(points), points, pure=False)
            return client.gather(futures)
    if jobs <= 1:
        return [run_point(blob, p) for p in points]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: numba's OpenMP threads make a forked child unsafe
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(run_point, [blob] * len(points), points))


def write_table(rows: list[dict], out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    keys = list(rows[0]) if rows else list(COLUMNS)
    with (out / "sweep.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r[k]))}</td>" for k in keys) + "</tr>" for r in rows)
    (out / "sweep.html").write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>sweep</title>"
                                    f"<style>td,th{{font-size:12px;padding:1px 6px}}</style></head><body>"
                                    f"<table><tr>{head}</tr>{body}</table></body></html>\n")
    return out / "sweep.csv", out / "sweep.html"


HEATMAP_METRICS = ("fund_min_equity_usd", "adl_usd", "liquidated_usd", "max_mark_index_bps", "longs_paid_funding_usd")


def write_heatmaps(rows: list[dict], grid: dict[str, list], out: str | Path) -> list[Path]:
    """One PNG per outcome metric over the first two grid keys with more than one value (the mean
    over the other keys' points)."""
    axes = [k for k, v in grid.items() if len(v) > 1][:2]
    if len(axes) < 2 or not rows:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    out = Path(out)
    ky, kx = axes
    ys, xs = grid[ky], grid[kx]
    paths = []
    for metric in HEATMAP_METRICS:
        cells = np.full((len(ys), len(xs)), np.nan)
        for i, y in enumerate(ys):
            for j, x in enumerate(xs):
                vals = [float(r[metric]) for r in rows if r[ky] == y and r[kx] == x]
                if vals:
                    cells[i, j] = sum(vals) / len(vals)
        fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(xs), 1.0 + 0.5 * len(ys)))
        im = ax.imshow(cells, aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(xs)), [str(x) for x in xs], fontsize=7)
        ax.set_yticks(range(len(ys)), [str(y) for y in ys], fontsize=7)
        ax.set_xlabel(kx, fontsize=8)
        ax.set_ylabel(ky, fontsize=8)
        for i in range(len(ys)):
            for j in range(len(xs)):
                if not np.isnan(cells[i, j]):
                    ax.text(j, i, f"{cells[i, j]:,.0f}", ha="center", va="center", fontsize=6, color="white")
        ax.set_title(metric, fontsize=9)
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        p = out / f"heatmap_{metric}.png"
        fig.savefig(p, dpi=80)
        plt.close(fig)
        paths.append(p)
    return paths
