"""The index feed of `perp serve`: the oracle's hourly anchor over the shipped CSV of real fixes.

The oracle (`oracle.replay.replay_records`) turns the GPU Markets daily fixes (CC BY 4.0,
gpumarkets.dev) into an hourly anchor with its validity and gates, exactly as `perp demo` does
(`sims.demo_session.anchor_path`). The shipped series ends on its last fix, while the venue runs on
today's clock, so the feed *replays* the anchor path: wall-clock step k (k = ts_ns // step_ns) uses
point k mod len(path). With the default step of one hour the index moves once an hour on the real
path; a smaller step (tests, demos) walks the path faster. Each step becomes one journaled
`set_index` command stamped by the server's clock, carrying the point's validity and every gate
(the oracle's own `HourlyAnchor.set_index_command`).

The operators' oracle parameters (half-life, hourly move cap, staleness limits) and their manual fix
suppressions are admin commands journaled in the engine (docs/operations.md); `follow(engine)`, which the
server calls before each step, recomputes the path under them when they change, so the next `set_index`
is the anchor they ask for (the steps already sent are journaled and never change).

Every market whose `series` is a column of the fix source gets its own feed (`IndexFeeds`, in market
order): at each step the server (and `perp engine`) queues one set_index per fed market, each following its
own market's operator parameters. A market whose series the source lacks is named once at start (a
warning) and gets no index from the feed: its orders are refused 1010 NO_REFERENCE_PRICE until a set_index
for it enters the stream. The markets fed are those the engine holds when the process starts (after
recovery) and, built from the fix source, each market listed while it runs (`add_listed`, which the
server's and `perp engine`'s timers call about once a second): the listed market's point of the current
step is sent as soon as its path is built, so its orders are accepted within a second or two of the
listing, without a restart.

Restart within a step: the first step after a recovery skips, per market, a set_index the engine already
holds (`in_force`), so a restart sends nothing the journal has and the recovered state hash is the one
that stopped.

Limits: the replay is a demo feed; a live venue reads new fixes (the oracle's Redis reader) instead.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import msgspec
import numpy as np
import structlog

from perp import layout as L
from perp.commands import SetIndex, packed_fix_vintage_date
from perp.markets import MarketSpec

log = structlog.get_logger("gateway.feed")


class IndexFeed:
    def __init__(self, spec: MarketSpec, path: list[tuple[int, int, SetIndex]], step_ns: int,
                 csv_path: Path | None = None, days: int = 180):
        if not path:
            raise ValueError("the anchor path is empty")
        self.spec = spec
        self.path = path
        self.step_ns = step_ns
        self.csv_path = csv_path  # where `follow` recomputes the path from (None: it cannot)
        self.days = days
        self._operators: tuple = ((), ())  # the operator parameters the path was computed under

    @classmethod
    def from_csv(cls, spec: MarketSpec, csv_path: Path | None = None, step_ns: int = 3_600_000_000_000,
                 days: int = 180) -> IndexFeed:
        from oracle.readers import default_csv_path
        from sims.demo_session import anchor_path

        csv_path = csv_path or default_csv_path()
        return cls(spec, anchor_path(csv_path, spec, days), step_ns, csv_path, days)

    def follow(self, engine) -> bool:
        """Recompute the path under the operators' oracle parameters and suppressed fixes if they
        changed since the last call (perp.engine.Engine.oracle_overrides / suppressed_fixes).
        Returns whether it did."""
        from sims.demo_session import anchor_path

        overrides = engine.oracle_overrides(self.spec.symbol)
        suppressed = engine.suppressed_fixes(self.spec.symbol)
        key = (tuple(sorted(overrides.items())), tuple(sorted(suppressed)))
        if key == self._operators or self.csv_path is None:
            return False
        self.path = anchor_path(self.csv_path, self.spec, self.days, overrides=overrides,
                                suppressed=[dt.date.fromisoformat(d) for d in suppressed])
        self._operators = key
        return True

    def step_of(self, ts_ns: int) -> int:
        return ts_ns // self.step_ns

    def point(self, step: int) -> SetIndex:
        """The oracle's set_index command (anchor, validity, gates) for a wall-clock step; the server
        stamps its time."""
        _, _, command = self.path[step % len(self.path)]
        return msgspec.structs.replace(command, ts_ns=0)

    def next_step_ns(self, ts_ns: int) -> int:
        return (self.step_of(ts_ns) + 1) * self.step_ns


def in_force(engine, row: np.ndarray) -> bool:
    """Whether the engine already holds this set_index row: its anchor, validity, gates, leverage
    scale, fix and the fix's vintage and date (the columns perp.commands.CommandEncoder writes)."""
    mkt = engine.state.mkt[int(row[L.C_MARKET])]
    held = (mkt[L.M_INDEX], mkt[L.M_VALIDITY], mkt[L.M_ORACLE_GATES], mkt[L.M_LEVERAGE_SCALE_PPM], mkt[L.M_FIX_TICKS],
            mkt[L.M_FIX_VINTAGE_DATE])
    sent = (row[L.C_PRICE], row[L.C_CLID], row[L.C_FLAGS], row[L.C_SIZE], row[L.C_ORDER_ID],
            packed_fix_vintage_date(row))
    return tuple(map(int, held)) == tuple(map(int, sent))


class IndexFeeds:
    """The feeds of a venue, one per fed market, in market order, all on one step.

    Invariants: at most one feed per market; every feed has the same `step_ns`; `rows(engine, step,
    resumed)` is a pure function of the engine's state and the step (what it returns is journaled
    before it acts), so the same journal replays to the same state."""

    def __init__(self, feeds: list[IndexFeed], *, step_ns: int | None = None, csv_path: Path | None = None,
                 columns: frozenset[str] = frozenset(), days: int = 180, considered: frozenset[str] = frozenset()):
        """`feeds` as injected, or (from_csv) built from `csv_path`, whose `columns` are the series it
        holds: only then does `add_listed` feed markets listed later. `considered`: the markets already
        fed or warned about. No feed at all needs `step_ns` (a source that may feed a listing)."""
        if not feeds and step_ns is None:
            raise ValueError("no feed")
        steps = {f.step_ns for f in feeds} | ({step_ns} if step_ns is not None else set())
        if len(steps) != 1:
            raise ValueError("the feeds step at different rates")
        if len({f.spec.symbol for f in feeds}) != len(feeds):
            raise ValueError("two feeds for one market")
        self.feeds = list(feeds)
        self.step_ns = steps.pop()
        self.csv_path = csv_path
        self.days = days
        self._columns = columns
        self._considered = set(considered) | {f.spec.symbol for f in feeds}

    @classmethod
    def of(cls, feed: IndexFeed | IndexFeeds | list[IndexFeed] | None) -> IndexFeeds | None:
        """What a caller injects (one feed, a list, IndexFeeds or None) as IndexFeeds (None: no feed)."""
        if feed is None or isinstance(feed, IndexFeeds):
            return feed
        feeds = [feed] if isinstance(feed, IndexFeed) else list(feed)
        return cls(feeds) if feeds else None

    @classmethod
    def from_csv(cls, specs: list[MarketSpec], csv_path: Path | None = None, step_ns: int = 3_600_000_000_000,
                 days: int = 180) -> IndexFeeds | None:
        """A feed for each market whose series is a column of the CSV; each other market is logged once
        (`index_feed_no_series`, market and series) and left without an index. With no market fed it
        still feeds a market listed later whose series the CSV has (`add_listed`)."""
        from oracle.readers import csv_series, default_csv_path

        csv_path = csv_path or default_csv_path()
        columns = frozenset(csv_series(csv_path))
        feeds = []
        for spec in specs:
            if spec.series in columns:
                feeds.append(IndexFeed.from_csv(spec, csv_path, step_ns, days))
            else:
                log.warning("index_feed_no_series", market=spec.symbol, series=spec.series, source=str(csv_path))
        return cls(feeds, step_ns=step_ns, csv_path=csv_path, columns=columns, days=days,
                   considered=frozenset(s.symbol for s in specs))

    async def add_listed(self, specs: list[MarketSpec]) -> list[str]:
        """Feed each market of `specs` (the engine's, in market order) not seen before whose series the
        fix source holds -- a market listed while the process runs; one the source lacks is warned about
        once (`index_feed_no_series`). Each path is built in a worker thread (~0.15 s of the oracle's
        replay), so the caller's loop keeps sequencing meanwhile. Returns the symbols now fed, for the
        caller to send their point of the current step (`rows(..., only=...)`). Injected feeds (no
        `csv_path`) feed only what they were given."""
        new: list[str] = []
        for spec in specs:
            if spec.symbol in self._considered or self.csv_path is None:
                continue
            self._considered.add(spec.symbol)
            if spec.series not in self._columns:
                log.warning("index_feed_no_series", market=spec.symbol, series=spec.series, source=str(self.csv_path))
                continue
            self.feeds.append(await asyncio.to_thread(IndexFeed.from_csv, spec, self.csv_path, self.step_ns, self.days))
            new.append(spec.symbol)
            log.info("index_feed_listed", market=spec.symbol, series=spec.series)
        return new

    @property
    def markets(self) -> list[str]:
        return [f.spec.symbol for f in self.feeds]

    def step_of(self, ts_ns: int) -> int:
        return ts_ns // self.step_ns

    def next_step_ns(self, ts_ns: int) -> int:
        return (self.step_of(ts_ns) + 1) * self.step_ns

    def rows(self, engine, step: int, resumed: bool = False,
             only: list[str] | None = None) -> list[tuple[SetIndex, np.ndarray]]:
        """The set_index commands (and their encoded rows) of `step`, one per fed market the engine
        knows (or of `only` these), in market order, each after its feed followed the operators' oracle
        parameters. With `resumed` (the first step after a recovery) a market's command the engine
        already holds is left out: the journal has it, and sending it again would only move the clock."""
        index = {s.symbol: m for m, s in enumerate(engine.specs)}
        out = []
        fed = (f for f in self.feeds if f.spec.symbol in index and (only is None or f.spec.symbol in only))
        for feed in sorted(fed, key=lambda f: index[f.spec.symbol]):
            if feed.follow(engine):
                log.info("index_feed_reconfigured", market=feed.spec.symbol,
                         overrides=engine.oracle_overrides(feed.spec.symbol),
                         suppressed=engine.suppressed_fixes(feed.spec.symbol))
            cmd = feed.point(step)
            row = engine.encoder.row(cmd)
            if resumed and in_force(engine, row):
                continue
            out.append((cmd, row))
        return out
