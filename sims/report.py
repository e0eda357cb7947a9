"""Run directories: what a run writes, and the report rendered from those files alone.

`write_run(res, out)` writes
  scenario.json   the validated scenario (re-loadable with msgspec)
  metrics.json    sims.analytics.metrics
  samples.csv     one row per step: fix, anchor (the engine's index), mark, mid, fund equity, OI, rate
  events.jsonl    the engine's events (book deltas, acceptances and cancels left out), documented JSON
`render_report(out)` reads them back and writes PNG plots and a one-page index.html; `perp sim report
DIR` runs it again on an existing directory. Floats only here, at the edge (plots, USD figures).
"""

from __future__ import annotations

import csv
import html
import json
from dataclasses import asdict, fields
from pathlib import Path

import msgspec

from perp import events as E
from sims.runner import RunResult, Sample

SOURCE_CREDIT = "Index data: GPU Markets (gpumarkets.dev), CC BY 4.0."
PLOTS = ("prices", "funding", "fund", "liquidations", "open_interest")


def write_run(res: RunResult, out: str | Path, metrics: dict) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scenario.json").write_bytes(msgspec.json.format(msgspec.json.encode(res.scenario), indent=2))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=False) + "\n")
    with (out / "samples.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([f.name for f in fields(Sample)])
        for s in res.samples:
            w.writerow(["" if v is None else v for v in asdict(s).values()])
    with (out / "events.jsonl").open("wb") as fh:
        for ev in res.events:
            fh.write(E.to_json_line(ev) + b"\n")
    (out / "meta.json").write_text(json.dumps({"start_ns": res.start_ns, "tick_size_usd": res.spec.tick_size_usd,
                                               "funding_cap_ppb": res.spec.funding_cap_ppb,
                                               "wall_s": round(res.wall_s, 3), "via": res.via,
                                               "gateway_refusals": res.gateway_refusals}) + "\n")
    return out


def _read(out: Path):
    meta = json.loads((out / "meta.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    scenario = json.loads((out / "scenario.json").read_text())
    with (out / "samples.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    dec = msgspec.json.Decoder(E.Event)
    events = [dec.decode(line) for line in (out / "events.jsonl").read_bytes().splitlines() if line]
    return meta, metrics, scenario, rows, events


def render_plots(out: str | Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    meta, metrics, scenario, rows, events = _read(out)
    t0, tick = meta["start_ns"], float(meta["tick_size_usd"])
    hrs = [(int(r["ts_ns"]) - t0) / 3.6e12 for r in rows]

    def px(key):
        return [int(r[key]) * tick if r[key] not in ("", "0") else float("nan") for r in rows]

    paths = []

    def save(fig, name):
        fig.tight_layout()
        p = out / f"{name}.png"
        fig.savefig(p, dpi=80)
        plt.close(fig)
        paths.append(p)

    fig, ax = plt.subplots(figsize=(8, 3))
    ax.plot(hrs, px("fix_ticks"), label="fix", drawstyle="steps-post", color="grey", lw=1)
    ax.plot(hrs, px("index_ticks"), label="anchor (index)", lw=1.5)
    ax.plot(hrs, px("mark_ticks"), label="mark", lw=1)
    ax.plot(hrs, px("mid_ticks"), label="mid", lw=0.6, alpha=0.7)
    ax.set_xlabel("hour")
    ax.set_ylabel("USD / GPU-hour")
    ax.set_title(f"{metrics['scenario']}: fix, anchor, mark, mid")
    ax.legend(fontsize=7, loc="best")
    save(fig, "prices")

    fund = [e for e in events if isinstance(e, E.FundingPaid)]
    cap = meta["funding_cap_ppb"] / 1e7  # ppb -> % per hour
    steps = [(0.0, cap)] + [(float(c["at_hour"]), c["funding_cap_ppb"] / 1e7) for c in scenario.get("changes", [])
                            if c.get("funding_cap_ppb") is not None]  # the scenario's mid-run cap changes
    xs = [h for h, _ in steps] + [float(metrics["hours"])]
    caps = [c for _, c in steps] + [steps[-1][1]]
    fig, ax = plt.subplots(figsize=(8, 2.6))
    ax.step([(e.ts_ns - t0) / 3.6e12 for e in fund], [e.rate_ppb / 1e7 for e in fund], where="post", label="rate paid")
    ax.step(xs, caps, where="post", color="red", lw=0.8, ls="--", label=f"cap (+-{cap:.5f}%/h at the start)")
    ax.step(xs, [-c for c in caps], where="post", color="red", lw=0.8, ls="--")
    ax.set_ylabel("% per hour")
    ax.set_xlabel("hour")
    ax.set_title("funding rate vs cap")
    ax.legend(fontsize=7)
    save(fig, "funding")

    fig, ax = plt.subplots(figsize=(8, 2.6))
    ax.plot(hrs, [int(r["fund_equity_micro"]) / 1e6 for r in rows])
    ax.set_ylabel("USD")
    ax.set_xlabel("hour")
    ax.set_title("insurance fund equity (cash + positions at the mark)")
    save(fig, "fund")

    liq = [e for e in events if isinstance(e, E.LiquidationStep)]
    n_h = max(1, int(metrics["hours"]))
    started = [0] * n_h
    adl = [0] * n_h
    for e in liq:
        h = min(n_h - 1, max(0, int((e.ts_ns - t0) // 3_600_000_000_000)))
        if e.phase == "started":
            started[h] += 1
        elif e.phase == "adl":
            adl[h] += 1
    fig, ax = plt.subplots(figsize=(8, 2.6))
    ax.bar(range(n_h), started, label="liquidations started", width=1.0)
    ax.bar(range(n_h), adl, bottom=started, label="ADL steps", width=1.0, color="crimson")
    ax.set_xlabel("hour")
    ax.set_title("liquidations and ADL per hour")
    ax.legend(fontsize=7)
    save(fig, "liquidations")

    fig, ax = plt.subplots(figsize=(8, 2.6))
    ax.plot(hrs, [int(r["open_interest_lots"]) for r in rows])
    ax.set_ylabel("lots (long side)")
    ax.set_xlabel("hour")
    ax.set_title("open interest")
    save(fig, "open_interest")
    return paths


def _table(d: dict, prefix: str = "") -> list[tuple[str, str]]:
    rows = []
    for k, v in d.items():
        if isinstance(v, dict):
            rows += _table(v, f"{prefix}{k}.")
        else:
            rows.append((f"{prefix}{k}", str(v)))
    return rows


def render_report(out: str | Path) -> Path:
    out = Path(out)
    render_plots(out)
    meta, metrics, scenario, _, _ = _read(out)
    m = metrics
    ch = m["waterfall"]["channels"]
    headline = (f"{m['liquidations']['count']} liquidations (${m['liquidations']['notional_usd']:,.0f}: "
                f"book ${ch['book']['usd']:,.0f}, fund ${ch['fund']['usd']:,.0f}, ADL ${ch['adl']['usd']:,.0f}, "
                f"bad debt ${ch['bad_debt']['usd']:,.0f}); fund min equity ${m['fund']['min_equity_usd']:,.0f}; "
                f"{m['adl']['count']} ADL; max |mark - index| {m['max_abs_mark_minus_index_bps']} bp; "
                f"funding longs paid ${m['funding']['longs_paid_usd']:,.0f}; money conserved: {m['money_conserved']}")
    for c in m.get("mark_push_bound", []):
        headline += (f"; push by {c['account']} (hours {c['push_hours'][0]}-{c['push_hours'][1]}): max |mark - index| "
                     f"{c['measured_bps']} bp vs the proven bound {c['bound_this_book_bps']} bp for the books held "
                     f"({c['bound_any_book_bps']} bp for any book)")
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in _table(m))
    imgs = "".join(f'<figure><img src="{p}.png" alt="{p}"></figure>' for p in PLOTS)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(m['scenario'])}</title>
<style>body{{font-family:sans-serif;max-width:900px;margin:1em auto;}} td{{padding:1px 8px;font-size:12px}}
tr:nth-child(odd){{background:#f3f3f3}} img{{max-width:100%}} figure{{margin:0}} pre{{white-space:pre-wrap}}</style>
</head><body>
<h1>Scenario {html.escape(m['scenario'])}</h1>
<p>{html.escape(scenario.get('description', ''))}</p>
<p><b>{html.escape(headline)}</b></p>
<p>Seed {m['seed']}, {m['hours']} hours, funding cap {m['funding_cap_ppb']} ppb/h; run on the real engine in
{meta['wall_s']} s (via {meta.get('via', 'engine')}). Final state hash <code>{m['state_hash']}</code>.</p>
{imgs}
<h2>Metrics</h2><table>{rows}</table>
<h2>Scenario</h2><pre>{html.escape(json.dumps(scenario, indent=1))}</pre>
<p>{SOURCE_CREDIT}</p>
</body></html>
"""
    p = out / "index.html"
    p.write_text(page)
    return p
