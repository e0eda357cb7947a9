"""Event analytics: metrics of a run computed from the engine's own events (perp.events).

Liquidation steps are classified by their `phase` string. The waterfall channels are:
  book      -- fills of liquidation orders (the `order` steps' order ids matched to Fill events);
  fund      -- `backstop` takeovers by the insurance fund at the bankruptcy price;
  adl       -- `adl` steps (counterparties closed at the bankruptcy price);
  bad_debt  -- `bad_debt` amounts paid by the fund;
and every phase, known or not (the waterfall is being extended: new phases such as fund takeover,
unwind, below-floor, deferred or rate-limited steps), is counted under its own name in `phases`, so an
unknown phase is reported, never a crash. Lots are converted to dollars at the step's own price.

The fund's equity (cash plus its positions at the mark) is sampled by the runner after every step.
"""

from __future__ import annotations

from collections import Counter

from perp import events as E
from perp.markets import micro_per_tick_lot

MICRO = 1_000_000


def usd(micro: int | float) -> float:
    return round(micro / MICRO, 2)


def liquidation_steps(events) -> list[E.LiquidationStep]:
    return [e for e in events if isinstance(e, E.LiquidationStep)]


def of_kind(events, kind: type) -> list:
    """Per-kind filter of event rows."""
    return [e for e in events if isinstance(e, kind)]


def waterfall(events, mptl: int) -> dict:
    """Totals per channel (lots and USD) and per phase (count, lots, amount)."""
    steps = liquidation_steps(events)
    liq_orders = {e.order_id for e in steps if e.phase == "order" and e.order_id}
    book_lots = book_micro = 0
    for f in of_kind(events, E.Fill):
        if f.order_id in liq_orders:
            book_lots += f.size_lots
            book_micro += f.size_lots * f.price_ticks * mptl
    channels = {"book": {"lots": book_lots, "usd": usd(book_micro)},
                "fund": {"lots": 0, "usd": 0.0}, "adl": {"lots": 0, "usd": 0.0}, "bad_debt": {"usd": 0.0}}
    phases: dict[str, dict[str, int]] = {}
    fund_micro = adl_micro = bad_micro = 0
    for e in steps:
        p = phases.setdefault(e.phase, {"count": 0, "lots": 0, "filled": 0, "amount_micro": 0})
        p["count"] += 1
        p["lots"] += e.lots
        p["filled"] += e.filled
        p["amount_micro"] += e.amount_micro
        if e.phase == "backstop":
            channels["fund"]["lots"] += e.lots
            fund_micro += e.lots * e.price_ticks * mptl
        elif e.phase == "adl":
            channels["adl"]["lots"] += e.lots
            adl_micro += e.lots * e.price_ticks * mptl
        elif e.phase == "bad_debt":
            bad_micro += e.amount_micro
    channels["fund"]["usd"] = usd(fund_micro)
    channels["adl"]["usd"] = usd(adl_micro)
    channels["bad_debt"]["usd"] = usd(bad_micro)
    return {"channels": channels, "phases": dict(sorted(phases.items()))}


def adl_haircuts(events, mptl: int) -> dict:
    """Each ADL against the mark in force when it happened (the last `mark` event before it)."""
    mark = 0
    worst_bps = 0
    worst_usd = 0.0
    count = lots = notional = 0
    for e in events:
        if isinstance(e, E.MarkChanged):
            mark = e.price_ticks
        elif isinstance(e, E.LiquidationStep) and e.phase == "adl":
            count += 1
            lots += e.lots
            notional += e.lots * e.price_ticks * mptl
            if mark:
                gap = abs(e.price_ticks - mark)
                worst_bps = max(worst_bps, gap * 10_000 // mark)
                worst_usd = max(worst_usd, usd(gap * e.lots * mptl))
    return {"count": count, "lots": lots, "notional_usd": usd(notional), "largest_haircut_bps": worst_bps,
            "largest_haircut_usd": worst_usd}


def funding_per_side(events) -> dict:
    """Funding paid by longs and shorts (USD; negative: received), from the hourly funding events.
    A positive rate: longs pay `paid`, shorts receive `paid - remainder` (the rounding goes to the fund)."""
    longs = shorts = 0
    hours = frozen = 0
    max_rate = 0
    for f in of_kind(events, E.FundingPaid):
        hours += 1
        frozen += int(f.frozen)
        max_rate = max(max_rate, abs(f.rate_ppb))
        received = f.paid_micro - f.remainder_micro
        if f.rate_ppb > 0:
            longs += f.paid_micro
            shorts -= received
        elif f.rate_ppb < 0:
            shorts += f.paid_micro
            longs -= received
    return {"hours": hours, "frozen_hours": frozen, "longs_paid_usd": usd(longs), "shorts_paid_usd": usd(shorts),
            "max_abs_rate_ppb": max_rate}


def res_depth_bps(res) -> int:
    from sims.runner import DEPTH_BPS

    return DEPTH_BPS


def book_depth(samples, within_bps: int) -> dict:
    """Resting depth within `within_bps` of the mid per side over the run's samples (USD)."""
    import statistics

    out = {"within_bps": within_bps,
           "two_sided_share": round(sum(x.mid_ticks is not None for x in samples) / max(1, len(samples)), 3)}
    for side in ("bid", "ask"):
        xs = [getattr(x, f"depth_{side}_micro") for x in samples]
        out[f"{side}_min_usd"] = usd(min(xs)) if xs else 0.0
        out[f"{side}_median_usd"] = usd(statistics.median(xs)) if xs else 0.0
    return out


def push_bound_check(res) -> list[dict]:
    """For each manipulator, from the start of its push to the end of the run (the push, the hold and
    the unwind), the measured |mark - index| against the proven bound (sims.bookview.
    push_bound_ticks, with the time since the push started) at every sample: `any_book` from the parameters
    alone (the book can be anything), `this_book` with the samples capped by the largest |basis
    sample| the runner saw in the books held since just before the window (the book is read at each
    step's end; it changes only at the agents' commands). The basis before the window is the start."""
    from sims.bookview import push_bound_ticks

    out = []
    s, spec, hour_ns = res.samples, res.spec, 3_600_000_000_000
    for ag in res.agents:
        if ag.role != "manipulator":
            continue
        c = ag.cfg
        w0 = res.start_ns + c.start_hour * hour_ns
        before = [x for x in s if x.ts_ns < w0]
        inside = [x for x in s if w0 <= x.ts_ns]
        if not inside:
            continue
        b0 = abs(before[-1].mark_ticks - before[-1].index_ticks) if before else 0
        cap = abs(before[-1].basis_sample_ut) / MICRO if before else 0.0
        worst = {"measured_bps": -1.0}
        holds_any = holds_book = True
        for x in inside:
            cap = max(cap, abs(x.basis_sample_ut) / MICRO)
            measured = abs(x.mark_ticks - x.index_ticks)
            any_book = push_bound_ticks(spec, x.index_ticks, (x.ts_ns - w0) // 1_000_000_000, None, b0)
            this_book = push_bound_ticks(spec, x.index_ticks, (x.ts_ns - w0) // 1_000_000_000, cap, b0)
            holds_any &= measured <= any_book
            holds_book &= measured <= this_book
            bps = measured * 10_000 / x.index_ticks
            if bps > worst["measured_bps"]:
                worst = {"measured_bps": round(bps, 2), "at_hour": round((x.ts_ns - res.start_ns) / hour_ns, 2),
                         "bound_any_book_bps": round(any_book * 10_000 / x.index_ticks, 2),
                         "bound_this_book_bps": round(this_book * 10_000 / x.index_ticks, 2)}
        out.append({"account": c.account, "push_hours": [c.start_hour, c.start_hour + c.hours], **worst,
                    "holds_any_book": holds_any, "holds_this_book": holds_book})
    return out


def metrics(res) -> dict:
    """metrics.json of a run (see docs/sims.md for each field)."""
    ev = res.events
    eng = res.engine
    mptl = micro_per_tick_lot(res.spec)
    steps = liquidation_steps(ev)
    started = [e for e in steps if e.phase == "started"]
    wf = waterfall(ev, mptl)
    ch = wf["channels"]
    marks = of_kind(ev, E.MarkChanged)
    max_mark_bps = max((abs(m.price_ticks - m.index_ticks) * 10_000 / m.index_ticks for m in marks if m.index_ticks),
                       default=0.0)
    s = res.samples
    max_mark_bps = max([max_mark_bps] + [abs(x.mark_ticks - x.index_ticks) * 10_000 / x.index_ticks
                                         for x in s if x.index_ticks and x.mark_ticks])
    max_mid_bps = max((abs(x.mid_ticks - x.index_ticks) * 10_000 / x.index_ticks for x in s
                       if x.mid_ticks is not None and x.index_ticks), default=0.0)
    fund_eq = [x.fund_equity_micro for x in s]
    manip = {}
    manip_fills = {}
    for ag in res.agents:
        if ag.role == "manipulator":
            a = ag.cfg.account
            manip[str(a)] = usd(eng.account(a).equity_micro - ag.cfg.deposit_usd * MICRO)
            mine = [f for f in of_kind(ev, E.Fill) if f.account == a]
            bought = sum(f.size_lots for f in mine if f.side == "buy")
            sold = sum(f.size_lots for f in mine if f.side == "sell")
            manip_fills[str(a)] = {"bought_lots": bought, "sold_lots": sold,
                                   "traded_usd": usd(sum(f.size_lots * f.price_ticks * mptl for f in mine)),
                                   "fees_usd": usd(sum(f.fee_micro for f in mine)),
                                   "stated_notional_usd": ag.cfg.notional_usd}
    pnl_by_role: Counter = Counter()
    for ag in res.agents:
        for a, dep in ag.deposits():
            pnl_by_role[ag.role] += eng.account(a).equity_micro - dep
    triggers: Counter = Counter()  # the traders' own take-profit / stop triggers on the mark
    for ag in res.agents:
        for t in getattr(ag, "triggers", ()):
            triggers[t[2]] += 1
    rejected = Counter(f"{e.command}:{e.reason}" for e in of_kind(ev, E.Rejected))
    roles = Counter()
    for ag in res.agents:
        for a in ag.accounts:
            if any(e.account == a for e in started):
                roles[ag.role] += 1
    spec = res.spec
    return {
        "scenario": res.scenario.name,
        "seed": res.scenario.seed,
        "hours": res.scenario.hours,
        "funding_cap_ppb": spec.funding_cap_ppb,
        "liquidations": {
            "count": len(started),
            "accounts": len({e.account for e in started}),
            "accounts_by_role": dict(sorted(roles.items())),
            "notional_usd": round(ch["book"]["usd"] + ch["fund"]["usd"] + ch["adl"]["usd"], 2),
            "healthy_at_index": len({a for _, a in res.healthy_at_index_liquidated}),
        },
        "waterfall": wf,
        "fund": {
            "start_equity_usd": usd(fund_eq[0]) if fund_eq else 0.0,
            "min_equity_usd": usd(min(fund_eq)) if fund_eq else 0.0,
            "end_equity_usd": usd(fund_eq[-1]) if fund_eq else 0.0,
            "end_cash_usd": usd(eng.ledger()["insurance_fund_micro"]),
        },
        "adl": adl_haircuts(ev, mptl),
        "max_abs_mark_minus_index_bps": round(max_mark_bps, 2),
        "max_abs_mid_minus_index_bps": round(max_mid_bps, 2),
        "book_depth": book_depth(s, res_depth_bps(res)),
        "mark_push_bound": push_bound_check(res),
        "funding": funding_per_side(ev),
        "manipulator_pnl_usd": manip,
        "manipulator_fills": manip_fills,
        "pnl_by_role_usd": {k: usd(v) for k, v in sorted(pnl_by_role.items())},
        "trader_triggers": {"stop": triggers["stop"], "take_profit": triggers["take_profit"]},
        "rejected": dict(sorted(rejected.items())),
        "parameter_changes": res.changes,
        "oracle_validity_hours": dict(sorted(Counter(x.validity for x in s[:: res.scenario.steps_per_hour]).items())),
        "money_conserved": bool(eng.money_conserved()),
        "money_conserved_every_step": res.conserved_every_step,
        "state_hash": eng.state_hash(),
        "engine_seq": eng.seq,
    }
