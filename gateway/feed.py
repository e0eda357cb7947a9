"""The index feed of `perp serve`: the oracle's hourly anchor over the shipped CSV of real fixes.

The oracle (`oracle.replay.replay_records`) turns the GPU Markets daily fixes (CC BY 4.0,
gpumarkets.dev) into an hourly anchor with its validity and gates, exactly as `perp demo` does
(`sims.demo_session.anchor_path`). The shipped series ends on its last fix, while the venue runs on
today's clock, so the feed *walks* the anchor path, one hour of it per step: a new walk starts at point
k mod len(path) of the wall-clock step k (k = ts_ns // step_ns) and moves on one point per step from
there. It never goes back to the start: at the end of the shipped history the oracle keeps stepping
with no new fix, so the anchor holds (logged once, `index_feed_history_ended`) and the oracle's
staleness rules apply as for a real feed that stopped (aging after 26 h, stale -- funding frozen,
reduce-only -- after 48 h). With the default step of one hour the index moves once an hour on the
real path; a smaller step (tests, demos) walks the path faster. Each step becomes one journaled
`set_index` command stamped by the server's clock, carrying the point's validity and every gate
(the oracle's own `HourlyAnchor.set_index_command`); consecutive ones obey the oracle's hourly move cap.

The operators' oracle parameters (half-life, hourly move cap, staleness limits) and their manual fix
suppressions are admin commands journaled in the engine (docs/operations.md); `follow(engine)`, which the
server calls before each step, applies them when they change from the step after the last one sent,
stepping the oracle's anchor on from that point (`HourlyAnchor.reconfigure`), so the next `set_index`
moves from the last one under the cap (the steps already sent are journaled and never change).

Every market whose `series` is a column of the fix source gets its own feed (`IndexFeeds`, in market
order): at each step the server (and `perp engine`) queues one set_index per fed market, each following its
own market's operator parameters. A market whose series the source lacks is named once at start (a
warning) and gets no index from the feed: its orders are refused 1010 NO_REFERENCE_PRICE until a set_index
for it enters the stream. The markets fed are those the engine holds when the process starts (after
recovery) and, built from the fix source, each market listed while it runs (`add_listed`, which the
server's and `perp engine`'s timers call about once a second): the listed market's point of the current
step is sent as soon as its path is built, so its orders are accepted within a second or two of the
listing, without a restart.

Restart: a feed's first step, when the engine already holds an index for its market (a recovery), places
the walk on it (`IndexFeed.resume`: the first point of the walk, under the operators' parameters, whose
command is in force) and steps on from there; the first step after a recovery skips, per market, a
set_index the engine already holds (`in_force`), so a restart sends nothing the journal has and the
recovered state hash is the one that stopped. Where the walk does not hold the engine's index (a restart
after an operator change, an index set by hand), `capped` moves the index from the one held by at most
the cap per step until the walk meets it (`index_feed_capped`).

Limits: the replay is a demo feed; a live venue reads new fixes (the oracle's Redis reader) instead.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import msgspec
import numpy as np
import structlog

from oracle.anchor import hourly_cap_ticks
from perp import layout as L
from perp.commands import SetIndex, packed_fix_vintage_date
from perp.markets import MarketSpec, price_to_ticks, ticks_to_price

log = structlog.get_logger("gateway.feed")


HOUR_NS = 3_600_000_000_000
RESUME_SEARCH_STEPS = 14 * 24  # how far past the end of the history a restart looks for the anchor it held


class IndexFeed:
    """One market's walk along the oracle's hourly anchor over the shipped history, one point per step.

    Invariants: the positions sent never go back (step k+1 is the hour after step k's, or the same hour
    held); at the end of the history the oracle keeps stepping with no new fix, so the anchor holds
    (walking the rest of the way to the last fix within the cap) while the fix ages into `aging` and
    `stale` -- the oracle's rules for a feed that stopped; an operator's parameter change (half-life,
    cap, staleness, suppressed fixes) applies from the step after the last one rendered, stepping the
    oracle's own anchor from where it was (`HourlyAnchor.reconfigure`: past anchors are never
    rewritten), so consecutive points obey the oracle's hourly move cap."""

    def __init__(self, spec: MarketSpec, path: list[tuple[int, int, SetIndex]], step_ns: int,
                 csv_path: Path | None = None, days: int = 180):
        if not path:
            raise ValueError("the anchor path is empty")
        self.spec = spec
        self.path = path  # the shipped history's points under the parameters the feed started with
        self.step_ns = step_ns
        self.csv_path = csv_path  # where the walk is stepped on from after its history (None: it holds)
        self.days = days
        self._operators: tuple = ((), ())  # the operator parameters the walk follows now
        # the walk: (anchor ticks, set_index) by position (position p is the hour path[0] + p hours)
        self._track: list[tuple[int, SetIndex]] = [(ticks, cmd) for _, ticks, cmd in path]
        # the parameters along the walk: (position after which they apply, overrides, suppressed days)
        self._log: list[tuple[int, dict[str, int], tuple[dt.date, ...]]] = [(-1, {}, ())]
        self._anchor = None  # the oracle's HourlyAnchor stepped through the last position of _track
        self._fixes: list = []  # its fix records (read when it is first needed)
        self._next_fix = 0  # the next of its fix records to ingest
        self._origin: int | None = None  # the wall-clock step of position 0
        self._last: int | None = None  # the last position rendered (`point`)
        self._ended = False  # the end of the history was logged

    @classmethod
    def from_csv(cls, spec: MarketSpec, csv_path: Path | None = None, step_ns: int = 3_600_000_000_000,
                 days: int = 180) -> IndexFeed:
        from oracle.readers import default_csv_path
        from sims.demo_session import anchor_path

        csv_path = csv_path or default_csv_path()
        return cls(spec, anchor_path(csv_path, spec, days), step_ns, csv_path, days)

    def follow(self, engine) -> bool:
        """Take the operators' oracle parameters and suppressed fixes (perp.engine.Engine.oracle_overrides
        / suppressed_fixes) if they changed since the last call: from the step after the last point
        rendered, continuing the oracle's anchor from that point (before any point, the whole walk is
        computed under them). Returns whether they changed."""
        from sims.demo_session import anchor_path

        overrides = engine.oracle_overrides(self.spec.symbol)
        suppressed = engine.suppressed_fixes(self.spec.symbol)
        key = (tuple(sorted(overrides.items())), tuple(sorted(suppressed)))
        if key == self._operators or self.csv_path is None:
            return False
        days = tuple(sorted(dt.date.fromisoformat(d) for d in suppressed))
        self._operators = key
        if self._last is None:  # nothing rendered yet: the history as if they had always applied
            self.path = anchor_path(self.csv_path, self.spec, self.days, overrides=overrides, suppressed=days)
            self._track = [(ticks, cmd) for _, ticks, cmd in self.path]
            self._log = [(-1, dict(overrides), days)]
        else:
            del self._track[self._last + 1:]
            self._log.append((self._last, dict(overrides), days))
        self._anchor = None  # stepped on again from the walk's last position, under the log
        return True

    def step_of(self, ts_ns: int) -> int:
        return ts_ns // self.step_ns

    @property
    def started(self) -> bool:
        """Whether the walk has rendered a point (or been placed by `resume`)."""
        return self._last is not None

    def position(self, step: int) -> int:
        """The walk's position of a wall-clock step. The first step a feed renders (unless `resume` placed
        it) starts at `step mod len(path)`, as the replay always did; from there one position per step."""
        if self._origin is None:
            self._origin = step - step % len(self.path)
        return max(0, step - self._origin)

    def point(self, step: int) -> SetIndex:
        """The oracle's set_index command (anchor, validity, gates) for a wall-clock step; the server
        stamps its time. Past the end of the history: the oracle stepped on without a new fix."""
        pos = self.position(step)
        self._extend(pos)
        self._last = pos
        return msgspec.structs.replace(self._track[pos][1], ts_ns=0)

    def resume(self, engine, step: int) -> bool:
        """After a recovery: place the walk so that `step` renders the anchor the engine holds for the
        market (the journal's last set_index: the first position of the walk, under the operators'
        parameters, whose command is in force), so the next steps continue from it. Returns whether it
        was found (the history, then up to RESUME_SEARCH_STEPS past its end); if not, the walk starts as a
        new one would and the feeds' cap guard (`IndexFeeds.rows`) walks the index from the held anchor."""
        m = engine.market_index(self.spec.symbol)
        held = int(engine.state.mkt[m, L.M_INDEX])
        if held <= 0:
            return False
        for pos in range(len(self.path) + RESUME_SEARCH_STEPS):
            self._extend(pos)
            ticks, cmd = self._track[pos]
            if ticks == held and in_force(engine, engine.encoder.row(cmd)):
                self._origin, self._last = step - pos, pos
                log.info("index_feed_resumed", market=self.spec.symbol, position=pos, history=len(self.path))
                return True
        log.warning("index_feed_resume_not_found", market=self.spec.symbol, index_ticks=held)
        return False

    def next_step_ns(self, ts_ns: int) -> int:
        return (self.step_of(ts_ns) + 1) * self.step_ns

    # ---- the walk ------------------------------------------------------------------------------
    def _hour(self, pos: int) -> int:
        return self.path[0][0] + pos * HOUR_NS

    def _extend(self, pos: int) -> None:
        """Step the oracle's anchor on until the walk has position `pos`."""
        while len(self._track) <= pos:
            if self.csv_path is None:  # an injected path and no source: hold its last point
                self._track.append(self._track[-1])
                continue
            if self._anchor is None:
                self._rebuild(len(self._track) - 1)
            hour = self._hour(len(self._track))
            points = self._step_to(hour)
            if not points or points[-1].ts_ns != hour:
                raise ValueError(f"the oracle gave no point for {hour}")
            p = points[-1]
            cmd = msgspec.convert(self._anchor.set_index_command(p, self.spec.symbol), SetIndex)
            self._track.append((p.anchor_price_ticks, cmd))
            if len(self._track) > len(self.path) and not self._ended:
                self._ended = True
                log.warning("index_feed_history_ended", market=self.spec.symbol, series=self.spec.series,
                            last_fix=str(p.fix_date), hold="the last anchor; the oracle's staleness rules apply")

    def _rebuild(self, pos: int) -> None:
        """The oracle's anchor stepped through position `pos` under the parameter log, from the first fix."""
        from oracle.anchor import HourlyAnchor
        from oracle.readers import read_csv_fixes
        from sims.demo_session import anchor_config

        self._fixes = read_csv_fixes(self.csv_path, self.spec.series).records
        _, overrides, days = self._log[0]
        self._anchor = HourlyAnchor(anchor_config(self.spec, overrides=overrides))
        self._anchor.set_manual_suppressions(days)
        self._next_fix = 0
        for after, overrides, days in self._log[1:]:
            self._step_to(self._hour(after))
            if any(getattr(self._anchor.config, k) != v for k, v in overrides.items()):
                self._anchor.reconfigure(**overrides)
            self._anchor.set_manual_suppressions(days)
        self._step_to(self._hour(pos))

    def _step_to(self, hour: int) -> list:
        """Ingest the fixes published at or before `hour` and step every hour up to it: the oracle's
        own `HourlyAnchor.replay` of the fixes not ingested yet (the same points, in pieces)."""
        fixes, end = self._fixes, self._next_fix
        while end < len(fixes) and fixes[end].published_ts_ns <= hour:
            end += 1
        points, _ = self._anchor.replay(fixes[self._next_fix:end], hour)
        self._next_fix = end
        return points


def capped(cmd: SetIndex, engine) -> SetIndex:
    """`cmd` with its anchor moved at most the oracle's hourly cap (`oracle.anchor.hourly_cap_ticks` of
    the market's `max_hourly_move_ppm` in force, as the oracle caps a step) from the index the engine
    holds -- the last journaled set_index. A walk that follows on from that index never needs it;
    it walks the index back in capped steps when a feed could not place itself on it (a restart after
    an operator change, an index set by hand), logged `index_feed_capped`."""
    m = engine.market_index(cmd.market)
    held = int(engine.state.mkt[m, L.M_INDEX])
    cap_ppm = engine.oracle_params(cmd.market)["max_hourly_move_ppm"]
    if held <= 0 or not cap_ppm:
        return cmd
    spec = engine.specs[m]
    ticks = price_to_ticks(spec, cmd.price)
    cap = hourly_cap_ticks(held, cap_ppm)
    if abs(ticks - held) <= cap:
        return cmd
    walked = held + cap if ticks > held else held - cap
    log.warning("index_feed_capped", market=cmd.market, oracle_ticks=ticks, held_ticks=held, sent_ticks=walked)
    return msgspec.structs.replace(cmd, price=ticks_to_price(spec, walked))


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
            if not feed.started:  # its first step: continue from an anchor the engine holds (a restart)
                feed.resume(engine, step)
            cmd = capped(feed.point(step), engine)
            row = engine.encoder.row(cmd)
            if resumed and in_force(engine, row):
                continue
            out.append((cmd, row))
        return out
