"""`perp bench gateway --redis URL`: the same client phases through two `perp gateway` processes in
front of one `perp engine`, over the given Redis (in a fresh namespace, deleted afterwards).

The order path measured: client frame -> gateway (parse, logon'd session, validation, rate limit)
-> group commit -> `XADD NS:cmd` (Redis fsyncs its AOF before replying) -> engine batch -> `XADD
NS:seq` (fsynced) -> every gateway's replica -> ack. Trader processes alternate between the two
gateways; book subscribers are split between them. The figures go into the `redis` object of the
bench's JSON (gateway/bench.py has the embedded ones).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway.bench import _cpu_s, _machine_cpu_s, _merge_codes, _pct, _prepare, _subscriber_proc, bench_keys, cpu_budget, run_phase


def _spawn(args: list[str], expect: str, env: dict) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen([sys.executable, "-c", "from perp.cli import main; main()", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, env=env)
    while True:
        line = p.stdout.readline()
        if not line:
            raise RuntimeError(f"perp {args[0]} exited with {p.wait()}")
        if line.startswith(expect):
            return p, line


def run_redis(redis_url: str, procs: int = 2, accounts_per_proc: int = 4, seconds: float = 5.0, rate: int = 10_000,
              window: int = 128, subscribers: int = 1000, group_commit_us: int = 1000, gateways: int = 2,
              unsafe: bool = False) -> dict:
    from gateway import redis_journal as RJ
    from gateway.keys import KeyStore

    ns = f"bench-{os.getpid()}-{time.time_ns() & 0xFFFFFF:06x}"
    tmp = Path(tempfile.mkdtemp(prefix="perp-bench-redis-"))
    store = KeyStore(tmp / "keys.json")
    admin, admin_secret, trader_creds = bench_keys(store, procs, accounts_per_proc)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    common = ["--redis", redis_url, "--namespace", ns] + (["--unsafe"] if unsafe else [])
    started: list[subprocess.Popen] = []
    try:
        eng, _ = _spawn(["engine", *common, "--liquidation-interval-ms", "0", "--index-step-s", "86400"],
                        "perp engine", env)
        started.append(eng)
        urls = []
        for _ in range(gateways):
            gw, line = _spawn(["gateway", *common, "--port", "0", "--keys", str(store.path), "--data",
                               str(tmp / "data"), "--group-commit-us", str(group_commit_us),
                               "--max-conns-per-ip", str(subscribers + 64),
                               "--order-rate-per-s", "1e7", "--cancel-rate-per-s", "1e7", "--conn-rate-per-s", "1e7"],
                              "perp gateway", env)
            started.append(gw)
            urls.append(re.search(r"(ws://\S+)", line).group(1))
        prices = asyncio.run(_prepare(urls[0], {"kind": "hmac", "key": admin.key, "secret_hex": admin_secret},
                                      [c["account"] for row in trader_creds for c in row]))
        ctx = mp.get_context("spawn")
        q: mp.Queue = ctx.Queue()
        stop = ctx.Event()
        subs = []
        for i, url in enumerate(urls):
            ready = ctx.Event()
            n = subscribers // gateways + (1 if i < subscribers % gateways else 0)
            s = ctx.Process(target=_subscriber_proc, args=(url, n, ready, stop, q))
            s.start()
            if not ready.wait(120):
                raise RuntimeError("subscribers did not connect")
            subs.append(s)

        def phase(name: str, amount: float) -> list[dict]:
            return run_phase(ctx, q, urls, trader_creds, prices, name, amount, window, seconds)

        redis_pid = _local_redis_pid(redis_url)
        pids = [p.pid for p in started] + ([redis_pid] if redis_pid else [])
        cpu0, sub0, machine0 = [_cpu_s(pid) for pid in pids], [_cpu_s(s.pid) for s in subs], _machine_cpu_s()
        res_max = phase("max", seconds)
        cpu = [_cpu_s(pid) - c for pid, c in zip(pids, cpu0, strict=True)]
        wall = res_max[-1]["wall_s"]
        budget = cpu_budget(wall, machine0, _machine_cpu_s(), engine=cpu[0], gateways=sum(cpu[1:len(started)]),
                            **({"redis": cpu[-1]} if redis_pid else {}),
                            subscribers=sum(_cpu_s(s.pid) - c for s, c in zip(subs, sub0, strict=True)),
                            traders=sum(r.get("cpu_s", 0.0) for r in res_max[:-1]))
        acks = sum(r.get("acks", 0) for r in res_max[:-1])
        stages0 = stage_counts(urls)
        res_paced = phase("paced", rate / procs)
        stages = stage_percentiles(stages0, stage_counts(urls))
        lat = [x for r in res_paced[:-1] for x in r.get("lat", [])]
        stop.set()
        lags = []
        for _ in subs:
            lags += q.get(timeout=60)["lags_ms"]
        for s in subs:
            s.join(30)
        return {
            "orders_per_s": round(acks / (wall - 1.0 if wall > 2 else wall)),
            "order_frames_acked": acks,
            "order_frames_refused": sum(r.get("errors", 0) for r in res_max[:-1]),
            "refusal_codes": _merge_codes(res_max[:-1] + res_paced[:-1]),
            "p50_ack_ms_at_10k": _pct(lat, 0.50, 1e3),
            "p99_ack_ms_at_10k": _pct(lat, 0.99, 1e3),
            "stages_ms_at_10k": stages,
            "paced_rate_target": rate,
            "paced_acks": sum(r.get("acks", 0) for r in res_paced[:-1]),
            "engine_cpu_us_per_order": round(cpu[0] / max(1, acks) * 1e6, 1),
            "gateway_cpu_us_per_order": round(sum(cpu[1:len(started)]) / max(1, acks) * 1e6, 1),
            "gateways": gateways,
            "subscribers": subscribers,
            "p99_fanout_ms": _pct(lags, 0.99),
            "load_average_1m": os.getloadavg()[0],
            "redis": redis_url,
            "appendfsync": _appendfsync(redis_url),
            "max_phase_cpu_cores": budget,
        }
    finally:
        for p in started[::-1]:
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        r = RJ.connect_sync(redis_url)
        names = [k for k in r.scan_iter(match=f"{ns}:*")]
        if names:
            r.delete(*names)
        r.close()
        shutil.rmtree(tmp, ignore_errors=True)


def stage_counts(urls: list[str]) -> dict[str, dict[float, float]]:
    """Every gateway's `perp_gateway_stage_seconds` buckets, summed: stage -> {le: cumulative count}
    (read from each one's /metrics, on its WebSocket port)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[float, float]] = {}
    for url in urls:
        with urllib.request.urlopen(url.replace("ws://", "http://", 1).rstrip("/") + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
        for fam in text_string_to_metric_families(text):
            if fam.name != "perp_gateway_stage_seconds":
                continue
            for sample in fam.samples:
                if sample.name.endswith("_bucket"):
                    by_le = out.setdefault(sample.labels["stage"], {})
                    le = float(sample.labels["le"])
                    by_le[le] = by_le.get(le, 0.0) + sample.value
    return out


def stage_percentiles(before: dict[str, dict[float, float]], after: dict[str, dict[float, float]]) -> dict:
    """Per stage, between two `stage_counts`: the number of own group commits and their p50 / p99 in
    ms, interpolated within the histogram bucket that holds it (as Prometheus's histogram_quantile;
    the buckets are 0.25-0.5 ms wide under 2 ms, gateway.front.STAGE_BUCKETS_S), null past the last
    finite bound."""
    from gateway.front import STAGES

    res: dict[str, dict] = {}
    for stage in STAGES:
        a, b = after.get(stage, {}), before.get(stage, {})
        les = sorted(a)
        cum = [a[le] - b.get(le, 0.0) for le in les]
        n = cum[-1] if cum else 0.0
        if n <= 0:
            continue

        def quantile(q: float) -> float | None:
            i = next(i for i, c in enumerate(cum) if c >= q * n)
            if les[i] == float("inf"):
                return None
            lo, below = (les[i - 1], cum[i - 1]) if i else (0.0, 0.0)
            inside = cum[i] - below
            return round((lo + (les[i] - lo) * ((q * n - below) / inside if inside else 1.0)) * 1e3, 3)

        res[stage] = {"batches": int(n), "p50_ms": quantile(0.50), "p99_ms": quantile(0.99)}
    return res


def _local_redis_pid(url: str) -> int | None:
    """The redis-server's process id when it runs on this machine (its CPU counts in the budget);
    None for a remote one."""
    from gateway import redis_journal as RJ

    r = RJ.connect_sync(url)
    try:
        pid = int(r.info("server").get("process_id", 0))
    finally:
        r.close()
    return pid if pid and Path(f"/proc/{pid}/stat").exists() else None


def _appendfsync(url: str) -> str:
    from gateway import redis_journal as RJ

    r = RJ.connect_sync(url)
    try:
        return str(r.config_get("appendfsync").get("appendfsync", "?"))
    except Exception:  # noqa: BLE001 - CONFIG disabled
        return "?"
    finally:
        r.close()
