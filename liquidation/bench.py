"""`perp bench liquidation`: 1,000,000 accounts, a price gap that makes about 1% of them unhealthy,
and the whole waterfall (detection, orders through the book, fees, backstop, ADL) timed as the one
`liquidate` command the sequencer issues after the gap.

The book and accounts are built directly in the engine's arrays (seeded): accounts come in pairs,
long and short 200-2,000 lots at the index, most at 1-3x leverage, 1% of all accounts at 4.5-5x and 0.1% at 8-10x; a
market maker rests bids 1-40 ticks under the new index. The index then drops 15%: the levered longs
fall below maintenance (the few at 8-10x past bankruptcy), everyone else stays healthy.

The timed sweep runs with the waterfall's rate limits off (`limits=False`), so that the whole cascade
goes through one sweep; a second build then runs the same gap under the market's default limits and
reports what they let through and what waits (not timed against the target). The fund's takeovers
are unwound through the maker's bids in both (one paced chunk per sweep).
"""

from __future__ import annotations

import json
import time

import msgspec
import numpy as np

from perp import layout as L
from perp.commands import Liquidate, Place, SetIndex
from perp.engine import Engine
from perp.markets import load_markets
from perp.state import rebuild_active

T0 = 1_767_225_600_000_000_000
FIRST_TRADER = 16  # accounts 0-15 are reserved for the insurance funds


NO_LIMITS = dict(liquidation_max_per_sweep_usd=0, liquidation_max_per_minute_usd=0, insurance_max_loss_per_minute_usd=0)


def build(accounts: int, seed: int, fund_usd: int, limits: bool = False, gap: bool = True) -> Engine:
    """The seeded book of the module docstring; with `gap` (the default) the index then drops 15% and
    the maker bids under it; without, the accounts stay at the index (`perp bench risk` times the
    engine's own hourly path on this state)."""
    rng = np.random.default_rng(seed)
    # a million accounts of up to 2,000 lots is ~550M lots of open interest: lift the launch cap
    base = load_markets()
    overrides = dict(open_interest_cap_lots=0, **({} if limits else NO_LIMITS))
    markets = msgspec.structs.replace(base, market=[msgspec.structs.replace(base.market[0], **overrides)])
    eng = Engine(markets, account_capacity=accounts + FIRST_TRADER + 2, order_capacity=1 << 12)
    index = 21_432
    eng.submit([SetIndex(ts_ns=T0, market="H100-PERP", price="2.1432")])
    st = eng.state
    k = int(st.spec[0, L.S_MICRO_PER_TICK_LOT])
    n = accounts - accounts % 2
    lots = rng.integers(200, 2001, n // 2)
    longs = np.arange(FIRST_TRADER, FIRST_TRADER + n, 2)
    shorts = longs + 1
    st.position_lots[longs, 0] = lots
    st.position_lots[shorts, 0] = -lots
    notional = lots * index * k
    st.cost_basis_micro[longs, 0] = notional
    st.cost_basis_micro[shorts, 0] = -notional
    lev_ppm = rng.integers(1_000_000, 3_000_001, n // 2)  # 1x-3x
    risky = rng.random(n // 2) < 0.02  # about 1% of all accounts...
    lev_ppm[risky] = rng.integers(4_500_000, 5_000_001, int(risky.sum()))
    reckless = rng.random(n // 2) < 0.002  # ...and a few that the gap makes bankrupt
    lev_ppm[reckless] = rng.integers(8_000_000, 10_000_001, int(reckless.sum()))
    st.collateral_micro[longs] = notional * 1_000_000 // lev_ppm
    st.collateral_micro[shorts] = notional * 1_000_000 // rng.integers(1_000_000, 3_000_001, n // 2)
    st.collateral_micro[L.FUND_ACCOUNT] = fund_usd * 1_000_000
    st.mkt[0, L.M_INSURANCE_FLOOR_MICRO] = fund_usd * 1_000_000  # the fund may not lose: losses go to ADL
    st.mkt[0, L.M_OPEN_INTEREST] = int(lots.sum())
    st.g[L.G_ACCOUNT_HWM] = FIRST_TRADER + n
    st.g[L.G_DEPOSITS_MICRO] = int(st.collateral_micro.sum())
    # the gap: the index drops 8%; a market maker (the last account) bids under it
    maker = FIRST_TRADER + n
    st.collateral_micro[maker] = 10**13
    st.g[L.G_DEPOSITS_MICRO] += 10**13
    st.g[L.G_ACCOUNT_HWM] = FIRST_TRADER + n + 1
    rebuild_active(st)  # built in the arrays, not by commands: list the accounts the sweep visits
    if not gap:
        return eng
    new_index = index * 85 // 100
    eng.submit([SetIndex(ts_ns=T0 + 1, market="H100-PERP", price=f"{new_index / 10_000:.4f}")])
    eng.submit([Place(ts_ns=T0 + 2, account=maker, market="H100-PERP", side="buy", size_lots=5_000,
                      price=f"{(new_index - d) / 10_000:.4f}") for d in range(1, 41)])
    return eng


def _outcomes(eng: Engine, ev: np.ndarray) -> dict[str, int | float | bool]:
    liq = ev[ev[:, L.E_KIND] == L.EV_LIQUIDATION]
    phase = liq[:, L.E_CODE]
    orders = liq[phase == L.LQ_ORDER]
    unwinds = liq[phase == L.LQ_FUND_UNWIND]
    g = eng.ledger()
    return {
        "liquidations": int((phase == L.LQ_STARTED).sum()),
        "events": int(ev.shape[0]),
        "through_book": int((orders[:, L.E_REMAINING] > 0).sum()),
        "lots_through_book": int(orders[:, L.E_REMAINING].sum()),
        "backstop": int((phase == L.LQ_BACKSTOP).sum()),
        "lots_backstopped": int(liq[phase == L.LQ_BACKSTOP, L.E_SIZE].sum()),
        "adl": int((phase == L.LQ_ADL).sum()),
        "adl_accounts": int((phase == L.LQ_ADL_START).sum()),
        "lots_deleveraged": int(liq[phase == L.LQ_ADL, L.E_SIZE].sum()),
        "fund_below_floor": int((phase == L.LQ_FUND_BELOW_FLOOR).sum()),
        "bad_debt": int((phase == L.LQ_BAD_DEBT).sum()),
        "socialised": int((phase == L.LQ_SOCIALISED).sum()),
        "rate_limited": int((phase == L.LQ_RATE_LIMITED).sum()),
        "fund_unwinds": int(unwinds.shape[0]),
        "lots_unwound": int(unwinds[:, L.E_REMAINING].sum()),
        "liquidation_fees_usd": round(int(liq[phase == L.LQ_FEE, L.E_FEE].sum()) / 1e6, 2),
        "unhealthy_after": int(eng.risk_sweep().unhealthy.size),
        "insurance_fund_usd": round(g["insurance_fund_micro"] / 1e6, 2),
        "insurance_fund_equity_usd": round(eng.account(L.FUND_ACCOUNT).equity_micro / 1e6, 2),
        "money_conserved": bool(eng.money_conserved()),
    }


def _unwind(eng: Engine, minutes: int = 5) -> dict[str, int]:
    """After the cascade: the maker bids again each minute and the sweeps unwind the fund's
    takeovers through the book at the policy's pace (chunk, price limit, per-minute cap)."""
    st = eng.state
    maker = int(st.g[L.G_ACCOUNT_HWM]) - 1
    mark = int(st.mkt[0, L.M_MARK])
    held = abs(int(st.position_lots[L.FUND_ACCOUNT, 0]))
    side = "buy" if st.position_lots[L.FUND_ACCOUNT, 0] > 0 else "sell"
    unwinds = lots = 0
    for k in range(1, minutes + 1):
        ts = T0 + 3 + k * 60 * 1_000_000_000
        quotes = [Place(ts_ns=ts, account=maker, market="H100-PERP", side=side, size_lots=5_000,
                        price=f"{(mark - d if side == 'buy' else mark + d) / 10_000:.4f}") for d in range(1, 21)]
        ev = eng.submit_rows(eng.encode([*quotes, Liquidate(ts_ns=ts)]))
        liq = ev[(ev[:, L.E_KIND] == L.EV_LIQUIDATION) & (ev[:, L.E_CODE] == L.LQ_FUND_UNWIND)]
        unwinds += int(liq.shape[0])
        lots += int(liq[:, L.E_REMAINING].sum())
    return {"minutes": minutes, "fund_lots_before": held, "fund_unwinds": unwinds, "lots_unwound": lots,
            "fund_lots_after": abs(int(st.position_lots[L.FUND_ACCOUNT, 0]))}


def run(accounts: int = 1_000_000, seed: int = 11, fund_usd: int = 20_000,
        with_limits: bool = True) -> dict[str, int | float | bool]:
    """The fund starts at `fund_usd` with its floor there too, so it takes over only what its fees
    let it margin; the rest goes to ADL. Timed: one sweep without rate limits."""
    warm = build(2_000, seed, fund_usd)  # compile (or load) the sweep before timing it
    warm.submit_rows(warm.encode([Liquidate(ts_ns=T0 + 3)]))
    eng = build(accounts, seed, fund_usd)
    before = eng.risk_sweep()
    rows = eng.encode([Liquidate(ts_ns=T0 + 3)])
    t0 = time.perf_counter()
    ev = eng.submit_rows(rows)
    cascade_s = time.perf_counter() - t0
    out: dict = {"accounts": accounts, "fund_usd_before": fund_usd, "unhealthy_before": int(before.unhealthy.size),
                 "cascade_s": round(cascade_s, 4), **_outcomes(eng, ev), "meets_target": cascade_s < 1.0}
    out["unwind_after"] = _unwind(eng)
    if with_limits:  # the same gap under the market's default rate limits: what one sweep lets through
        del eng
        limited = build(accounts, seed, fund_usd, limits=True)
        t0 = time.perf_counter()
        ev = limited.submit_rows(limited.encode([Liquidate(ts_ns=T0 + 3)]))
        first_s = time.perf_counter() - t0
        out["with_default_limits"] = {"sweep_s": round(first_s, 4), **_outcomes(limited, ev)}
    return out


def main(accounts: int, seed: int, as_json: bool, fund_usd: int = 20_000) -> None:
    r = run(accounts, seed, fund_usd)
    print(f"accounts        {r['accounts']:,}; unhealthy after a 15% gap: {r['unhealthy_before']:,}")
    print(f"cascade         {r['cascade_s'] * 1000:.1f} ms for {r['liquidations']:,} liquidations "
          f"(detection over the listed accounts + the whole waterfall, no rate limits), {r['events']:,} events")
    print(f"outcomes        through the book {r['through_book']:,} ({r['lots_through_book']:,} lots), "
          f"backstop {r['backstop']:,} ({r['lots_backstopped']:,} lots), "
          f"ADL {r['adl_accounts']:,} accounts -> {r['adl']:,} counterparties ({r['lots_deleveraged']:,} lots), "
          f"fund below floor {r['fund_below_floor']:,}, bad debt {r['bad_debt']:,}, "
          f"fund unwinds {r['fund_unwinds']:,} ({r['lots_unwound']:,} lots)")
    print(f"fund            cash {r['insurance_fund_usd']:,} USD (incl. {r['liquidation_fees_usd']:,} USD of liquidation fees), "
          f"equity at the mark {r['insurance_fund_equity_usd']:,} USD; "
          f"unhealthy after: {r['unhealthy_after']}; money conserved: {r['money_conserved']}")
    u = r["unwind_after"]
    print(f"fund unwind     {u['minutes']} minutes of sweeps after it (the maker bidding again): {u['fund_unwinds']} "
          f"unwind orders, {u['lots_unwound']:,} of the fund's {u['fund_lots_before']:,} lots "
          f"(at most $200k a minute), {u['fund_lots_after']:,} left")
    lim = r.get("with_default_limits")
    if lim:
        print(f"default limits  one sweep in {lim['sweep_s'] * 1000:.1f} ms: {lim['liquidations']:,} started, "
              f"{lim['rate_limited']:,} rate-limited (wait for the next sweep), unhealthy after {lim['unhealthy_after']:,}")
    print(f"target < 1 s    {'met' if r['meets_target'] else 'NOT met'}")
    if as_json:
        print(json.dumps(r))
