"""A short, seeded trading session on the real H100 index path, as documented engine commands.

The oracle turns the GPU Markets daily fixes (CC BY 4.0, gpumarkets.dev) into an hourly anchor; each
hour the session sets the index, a market maker (account 100) requotes a ladder around its fair
value -- the anchor plus a lean of up to 16 ticks (0.07%) that wanders from hour to hour; when it
is deeper than the impact depth the book's premium over the index, and so funding, is not zero -- and a few takers (accounts 101-110) trade
against it with market and IOC orders. A leveraged trader (account 111) opens a long at about 4.5x
in the first hour and holds it: over a long enough stretch of the real path (the index fell about
30% over the 180 days) it is liquidated; over the default week it is not. One trader also sends an
order outside the price band, which the engine rejects. Deterministic for a given seed.

Accounts below 16 are reserved for the insurance funds (docs/liquidation.md): the session uses none.

This module only writes commands; it re-implements no engine rule.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path

import msgspec

from oracle.anchor import AnchorConfig, HourlyAnchor
from oracle.readers import read_csv_fixes
from perp.commands import (
    Cancel,
    CancelAll,
    Command,
    Deposit,
    Liquidate,
    Place,
    SetIndex,
)
from perp.markets import MarketSpec, micro_per_tick_lot, ticks_to_price

HOUR_NS = 3_600_000_000_000
MAKER = 100
TAKERS = range(101, 111)
LEVERAGED = 111
LEVERAGED_DEPOSIT_MICRO = 1_200_000_000  # $1,200
LEVERAGED_X10 = 45  # opens 4.5x its deposit of notional at the first hour's anchor
MAX_LEAN_TICKS = 16  # beyond the impact depth (~10 ticks) the premium, and so funding, is not zero


def anchor_config(spec: MarketSpec, half_life_s: int = 21_600, overrides: Mapping[str, int] | None = None) -> AnchorConfig:
    """The oracle's config of the demo's and the venue feed's anchor for `spec`, operators' overrides applied."""
    config = AnchorConfig(series_id=spec.series, tick_size_usd=spec.tick_size_usd, half_life_s=half_life_s)
    return msgspec.structs.replace(config, **overrides) if overrides else config


def anchor_path(csv_path: Path, spec: MarketSpec, days: int, half_life_s: int = 21_600,
                overrides: Mapping[str, int] | None = None,
                suppressed: Iterable[dt.date] = ()) -> list[tuple[int, int, SetIndex]]:
    """(ts_ns, anchor_price_ticks, set_index command) for each hour of the last `days` days of the
    series; the command is the oracle's own, with that hour's validity and every gate. `overrides`
    (AnchorConfig fields) and `suppressed` fix dates are the operators' (perp.engine.Engine.oracle_overrides
    and suppressed_fixes), applied over the whole path."""
    fixes = read_csv_fixes(csv_path, spec.series).records
    anchor = HourlyAnchor(anchor_config(spec, half_life_s, overrides))
    anchor.set_manual_suppressions(suppressed)
    points, _ = anchor.replay(fixes, max(f.strike_ts_ns for f in fixes) + 24 * HOUR_NS - 1)
    return [(p.ts_ns, p.anchor_price_ticks, msgspec.convert(anchor.set_index_command(p, spec.symbol), SetIndex))
            for p in points[-24 * days:]]


def build_session(spec: MarketSpec, path: list[tuple[int, int, SetIndex]], seed: int = 7) -> list[Command]:
    rng = random.Random(seed)
    out: list[Command] = []
    sym = spec.symbol
    clid = 0

    def px(ticks: int) -> str:
        return ticks_to_price(spec, ticks)

    start = path[0][0]
    out.append(Deposit(ts_ns=start, account=MAKER, amount_micro=2_000_000_000_000))  # $2M
    out.extend(Deposit(ts_ns=start, account=a, amount_micro=50_000_000_000) for a in TAKERS)  # $50k each
    out.append(Deposit(ts_ns=start, account=LEVERAGED, amount_micro=LEVERAGED_DEPOSIT_MICRO))
    lean = 0
    for hour, (ts, anchor, set_index) in enumerate(path):
        out.append(set_index)
        out.append(Liquidate(ts_ns=ts))  # what the sequencer does after every index move
        t = ts + 1_000_000_000
        out.append(CancelAll(ts_ns=t, account=MAKER, market=sym))
        # the maker quotes a ladder around its fair value: the anchor plus a lean that wanders
        lean = max(-MAX_LEAN_TICKS, min(MAX_LEAN_TICKS, lean + rng.choice((-2, 0, 2))))
        fair = anchor + lean
        for level in range(1, 6):
            spread = 5 * level
            t += 1_000_000
            clid += 1
            out.append(Place(ts_ns=t, account=MAKER, market=sym, side="buy", price=px(fair - spread),
                             size_lots=200 * level, client_order_id=clid, tif="post_only"))
            t += 1_000_000
            clid += 1
            out.append(Place(ts_ns=t, account=MAKER, market=sym, side="sell", price=px(fair + spread),
                             size_lots=200 * level, client_order_id=clid, tif="post_only"))
        if hour == 0:
            t += 1_000_000
            lots = LEVERAGED_DEPOSIT_MICRO * LEVERAGED_X10 // (10 * anchor * micro_per_tick_lot(spec))
            out.append(Place(ts_ns=t, account=LEVERAGED, market=sym, side="buy", order_type="market",
                             size_lots=lots))
        for _ in range(rng.randint(3, 8)):
            t += rng.randint(1, 300) * 1_000_000_000
            taker = rng.choice(TAKERS)
            side = rng.choice(("buy", "sell"))
            size = rng.randint(10, 400)
            if rng.random() < 0.5:
                out.append(Place(ts_ns=t, account=taker, market=sym, side=side, order_type="market", size_lots=size))
            else:
                off = rng.randint(0, 12)
                price = anchor + off if side == "buy" else anchor - off
                out.append(Place(ts_ns=t, account=taker, market=sym, side=side, price=px(price), size_lots=size,
                                 tif="ioc"))
        if hour % 24 == 12:
            # a fat finger: 50% through the index, outside the band -> rejected, nothing changes
            out.append(Place(ts_ns=t + 1, account=TAKERS[0], market=sym, side="buy",
                             price=px(int(Decimal(anchor) * Decimal("1.5"))), size_lots=10))
        if hour % 6 == 3:
            out.append(Cancel(ts_ns=t + 2, account=MAKER, client_order_id=clid))
    return out


def utc(ts_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
