"""`perp bench risk`: the risk sweep over many accounts, timed; seeded and reproducible.

Accounts hold one or two positions across two markets (an H100-like and a second GPU market), sized
log-normally from a few lots to millions (so every tier is visited), with collateral of 1.2x-6x the
initial margin rate and entry prices within 5% of the mark, so a few accounts are unhealthy. Each
timed sweep computes equity, maintenance margin and the hour's funding for every account and applies
the funding to collateral (the full hourly sweep; the every-second sweep without funding is cheaper).

As in the engine's arrays, the first 16 rows are the reserved fund accounts (`FUND_ACCOUNTS`):
row 0 is market 0's insurance fund and row 1 market 1's, each holding a position taken over from a
liquidation (the fund is an account the risk engine marks and margins like any other); rows 2-15
are reserved and empty; row 16 is a market maker holding the other side of every market. The
oracle's gates enter the sweep as they do in the engine: a market whose anchor freezes funding
(here market 1, `FUNDING_FROZEN`: an aging fix past the funding cut-off) settles at rate 0 --
no one pays or receives -- while its margin is still computed at the mark.

Two sweeps are timed: the hourly one (equity, maintenance and funding applied: the target's) and
the every-second liquidation check (no funding).

Two more figures make the kernel's one readable on any day and tie it to what the venue runs:

- `stream_read_ms`: the same number of bytes read once by a trivial parallel numba sum, on the same
  threads: the bandwidth floor. This machine's bandwidth varies by 2-3x between days (shared hosts),
  so `sweep_vs_stream` (the sweep's time over the bare read's) is the figure that compares across
  days; well above 1, the sweep is bound by its integer work, not by memory.
- `engine`: the engine's **own** hourly path, not this module's kernel: `Engine.risk_sweep` (the kernel
  above) is the engine's read-only *view*, while the venue settles funding in `risk.ledger.settle_funding`
  (over the active-account list, inside the clock advance) and detects unhealthy accounts in
  `liquidation.kernel.flag_unhealthy`, both run by the timer's `liquidate` command. A 1M-account state
  is built in the engine's arrays (`liquidation.bench.build` without its gap: pairs long/short at the
  index, one market), a maker quotes above the index so that the funding rate is non-zero, and two
  commands are timed end to end through `Engine.submit_rows`: a `liquidate` one hour later (the funding
  hour plus the detection sweep) and a `liquidate` at the same time (the detection sweep alone).

The numba kernel is compiled and run before timing; the numpy baseline is the same sweep as
whole-array expressions (`risk.sweep.risk_sweep_numpy`), checked equal to the kernel on the same
input before anything is timed. Figures: median and p99 milliseconds per sweep, numpy median, their
ratio, and the bytes the sweep must move (reads: collateral, lots, cost basis; writes: collateral,
funding, equity, maintenance).
"""

from __future__ import annotations

import json
import time

import numba
import numpy as np

from risk.sweep import risk_sweep, risk_sweep_numpy
from risk.tiers import default_tiers, pack_tiers

N_MARKETS = 2
MARK_TICKS = np.array([21_432, 9_875], dtype=np.int64)  # $2.1432 and $0.9875 per GPU-hour at $0.0001 ticks
ANCHOR_TICKS = np.array([21_400, 9_880], dtype=np.int64)
MICRO_PER_TICK_LOT = np.array([100, 100], dtype=np.int64)  # 1 GPU-hour lots, $0.0001 ticks
FUNDING_RATE_PPB = np.array([125_000, -500_000], dtype=np.int64)  # +0.0125% and the -0.05% cap
FUNDING_FROZEN = np.array([False, True])  # the oracle's gate per market for this hour
FUND_ACCOUNTS = 16  # rows 0-15: reserved for the insurance funds (row m: market m's fund)
MAKER_ROW = FUND_ACCOUNTS
TARGET_MS = 5.0


def make_accounts(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(collateral_micro, position_lots, cost_basis_micro) for n accounts, reproducible from seed."""
    rng = np.random.default_rng(seed)
    size = np.exp(rng.normal(np.log(2_000), 1.6, (n, N_MARKETS)))
    size = np.clip(size, 1, 5_000_000).astype(np.int64)
    sign = np.where(rng.random((n, N_MARKETS)) < 0.5, -1, 1)
    lots = size * sign
    # one or two positions: drop one market for about half of the accounts
    single = rng.random(n) < 0.5
    drop = rng.integers(0, N_MARKETS, n)
    lots[single, drop[single]] = 0
    lots[:FUND_ACCOUNTS] = 0
    lots[0, 0] = 150_000  # market 0's fund holds a long taken over from a liquidation
    lots[1, 1] = -80_000  # market 1's fund a short
    lots[MAKER_ROW] -= lots.sum(axis=0)  # a market maker holds the other side: every market nets to zero lots
    per_lot = MARK_TICKS * MICRO_PER_TICK_LOT
    entry_ticks = (MARK_TICKS[None, :] * rng.uniform(0.95, 1.05, (n, N_MARKETS))).astype(np.int64)
    cost_basis = lots * entry_ticks * MICRO_PER_TICK_LOT[None, :]
    gross = np.abs(lots * per_lot[None, :]).sum(axis=1)
    collateral = (gross * rng.uniform(0.06, 1.2, n)).astype(np.int64)
    collateral[2:FUND_ACCOUNTS] = 0
    collateral[:2] = 20_000_000_000  # each fund: $20,000
    return collateral, lots, cost_basis


def gated_funding_rates_ppb(rates_ppb: np.ndarray, funding_frozen: np.ndarray) -> np.ndarray:
    """The hour's rate per market after the oracle's gate: 0 where the anchor freezes funding."""
    return np.where(funding_frozen, 0, rates_ppb).astype(np.int64)


def _outputs(n: int) -> list[np.ndarray]:
    return [np.zeros(n, np.int64) for _ in range(4)]  # equity, maintenance, funding, unhealthy


def run(accounts: int, seed: int, repeats: int = 60, numpy_repeats: int = 5) -> dict:
    """Time the sweep; return the figures as a dict."""
    tiers = pack_tiers([default_tiers()["H100-PERP"]] * N_MARKETS)
    collateral, lots, basis = make_accounts(accounts, seed)
    rates = gated_funding_rates_ppb(FUNDING_RATE_PPB, FUNDING_FROZEN)
    margin = (MARK_TICKS, MICRO_PER_TICK_LOT, tiers.bound_micro, tiers.mmr_ppm, tiers.mm_deduction_micro)
    fixed = (*margin, True, rates, ANCHOR_TICKS)

    def sweep(fn, coll, outs, settle=True):
        args = fixed if settle else (*margin, False, rates, ANCHOR_TICKS)
        return fn(coll, lots, basis, *args, *outs)

    ref_coll, ref_out = collateral.copy(), _outputs(accounts)
    ref_count, ref_remainder = sweep(risk_sweep_numpy, ref_coll, ref_out)
    coll, out = collateral.copy(), _outputs(accounts)
    count, remainder = sweep(risk_sweep, coll, out)  # compiles (or loads the cache) and checks
    same = (count == ref_count and remainder == ref_remainder and np.array_equal(coll, ref_coll)
            and all(np.array_equal(a, b) for a, b in zip(out[:3], ref_out[:3]))
            and np.array_equal(out[3][:count], ref_out[3][:count]))
    if not same:
        raise AssertionError("risk_sweep and risk_sweep_numpy disagree")
    for _ in range(3):
        sweep(risk_sweep, coll, out)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sweep(risk_sweep, coll, out)
        times.append(time.perf_counter() - t0)
    quick = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sweep(risk_sweep, coll, out, settle=False)
        quick.append(time.perf_counter() - t0)
    np_times = []
    for _ in range(numpy_repeats):
        t0 = time.perf_counter()
        sweep(risk_sweep_numpy, ref_coll, ref_out)
        np_times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1e3
    sweep_ms = float(np.median(ms))
    numpy_ms = float(np.median(np_times) * 1e3)
    bytes_moved = accounts * 8 * (1 + 2 * N_MARKETS + 4)
    return {
        "accounts": accounts,
        "markets": N_MARKETS,
        "positions": int(np.count_nonzero(lots)),
        "threads": numba.get_num_threads(),
        "sweep_ms": round(sweep_ms, 3),
        "sweep_min_ms": round(float(ms.min()), 3),
        "sweep_p99_ms": round(float(np.percentile(ms, 99)), 3),
        "check_sweep_ms": round(float(np.median(quick) * 1e3), 3),
        "fund_accounts": FUND_ACCOUNTS,
        "funding_frozen_markets": [int(m) for m in np.nonzero(FUNDING_FROZEN)[0]],
        "margin_vs_target_pct": round(100 * (TARGET_MS - sweep_ms) / TARGET_MS, 1),
        "numpy_sweep_ms": round(numpy_ms, 3),
        "ratio_vs_numpy": round(numpy_ms / sweep_ms, 3),
        "unhealthy": int(count),
        "funding_remainder_micro": int(remainder),
        "bytes_per_sweep": bytes_moved,
        "effective_gb_per_s": round(bytes_moved / (sweep_ms * 1e-3) / 1e9, 1),
        "target_ms": TARGET_MS,
        "meets_target": sweep_ms < TARGET_MS,
        "seed": seed,
        "repeats": repeats,
    }


@numba.njit(cache=True, parallel=True)
def _stream_sum(words):
    total = 0
    for i in numba.prange(words.shape[0]):
        total += words[i]
    return total


def stream_read_ms(n_bytes: int, repeats: int = 30) -> float:
    """Median time to read `n_bytes` once (a parallel sum of int64 words): the bandwidth floor."""
    words = np.ones(n_bytes // 8, dtype=np.int64)
    _stream_sum(words)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _stream_sum(words)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def engine_path(accounts: int, seed: int = 11, hours: int = 12) -> dict:
    """The engine's own hourly path on a state of `accounts` accounts (see the module docstring)."""
    from liquidation.bench import T0, build
    from perp import layout as L
    from perp.commands import Liquidate, Place

    hour_ns = 3_600_000_000_000

    def venue(n: int):
        eng = build(n, seed, fund_usd=20_000, gap=False)
        maker = int(eng.state.g[L.G_ACCOUNT_HWM]) - 1
        index = int(eng.state.mkt[0, L.M_INDEX])
        quotes = [Place(ts_ns=T0 + 2, account=maker, market="H100-PERP", side=side, size_lots=5_000,
                        price=f"{(index + d) / 10_000:.4f}") for side, d in (("buy", 20), ("sell", 30))]
        eng.submit_rows(eng.encode(quotes))
        return eng

    def timed(eng, ts: int) -> tuple[float, np.ndarray]:
        rows = eng.encode([Liquidate(ts_ns=ts)])
        t0 = time.perf_counter()
        ev = eng.submit_rows(rows)
        return time.perf_counter() - t0, ev

    warm = venue(2_000)  # compile (or load) every kernel on the path before timing it
    timed(warm, T0 + hour_ns + 1)
    timed(warm, T0 + hour_ns + 2)
    eng = venue(accounts)
    hourly, check, rates, paid = [], [], [], 0
    for h in range(1, hours + 1):
        dt, ev = timed(eng, T0 + h * hour_ns + 1)
        funding = ev[ev[:, L.E_KIND] == L.EV_FUNDING]
        if funding.shape[0] != 1:
            raise AssertionError(f"hour {h}: expected one funding event, got {funding.shape[0]}")
        rates.append(int(funding[0, L.E_FEE]))
        paid += int(funding[0, L.E_SIZE])
        hourly.append(dt)
        dt, ev = timed(eng, T0 + h * hour_ns + 2)
        if (ev[:, L.E_KIND] == L.EV_FUNDING).any():
            raise AssertionError("the check sweep paid funding")
        check.append(dt)
    if not eng.money_conserved():
        raise AssertionError("money not conserved after the timed hours")
    return {
        "accounts": accounts,
        "positions": int(np.count_nonzero(eng.state.position_lots)),
        "hours": hours,
        "hourly_ms": round(float(np.median(hourly) * 1e3), 3),
        "hourly_p99_ms": round(float(np.percentile(np.array(hourly) * 1e3, 99)), 3),
        "check_ms": round(float(np.median(check) * 1e3), 3),
        "funding_rate_ppb": sorted(set(rates)),
        "funding_paid_micro": paid,
        "money_conserved": True,
    }


def main(accounts: int = 1_000_000, seed: int = 7, as_json: bool = False) -> dict:
    """Print the figures (human-readable; with as_json the last line is one JSON object)."""
    r = run(accounts, seed)
    r["stream_read_ms"] = round(stream_read_ms(r["bytes_per_sweep"]), 3)
    r["sweep_vs_stream"] = round(r["sweep_ms"] / r["stream_read_ms"], 2)
    r["engine"] = engine_path(accounts)
    print(f"risk sweep: {r['accounts']:,} accounts, {r['positions']:,} positions in {r['markets']} markets, "
          f"{r['threads']} threads (equity + maintenance + funding applied); fund rows 0-{r['fund_accounts'] - 1} "
          f"swept, funding frozen by the oracle's gate in market(s) {r['funding_frozen_markets']}")
    print(f"  numba : median {r['sweep_ms']:.3f} ms  min {r['sweep_min_ms']:.3f} ms  "
          f"p99 {r['sweep_p99_ms']:.3f} ms  over {r['repeats']} sweeps")
    print(f"  every-second check (no funding): median {r['check_sweep_ms']:.3f} ms")
    print(f"  numpy : median {r['numpy_sweep_ms']:.3f} ms  (x{r['ratio_vs_numpy']} slower)")
    print(f"  moved : {r['bytes_per_sweep'] / 1e6:.0f} MB per sweep, {r['effective_gb_per_s']} GB/s; "
          f"target < {r['target_ms']} ms: {'met' if r['meets_target'] else 'NOT met'} "
          f"(margin {r['margin_vs_target_pct']}%)")
    print(f"  unhealthy accounts: {r['unhealthy']:,}; funding remainder to the insurance fund: "
          f"{r['funding_remainder_micro']} micro-USD")
    print(f"  floor : the same {r['bytes_per_sweep'] / 1e6:.0f} MB read once takes {r['stream_read_ms']:.3f} ms "
          f"here today; the sweep is {r['sweep_vs_stream']}x that")
    e = r["engine"]
    print(f"engine's own path ({e['accounts']:,} accounts, {e['positions']:,} positions, through Engine.submit_rows, "
          f"median of {e['hours']} hours): funding hour + detection {e['hourly_ms']:.3f} ms "
          f"(p99 {e['hourly_p99_ms']:.3f}), detection alone {e['check_ms']:.3f} ms; "
          f"rate {e['funding_rate_ppb']} ppb, {e['funding_paid_micro'] / 1e6:,.2f} USD paid, money conserved")
    if as_json:
        print(json.dumps(r, sort_keys=True))
    return r
