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

Limits: the replay is a demo feed; a live venue reads new fixes (the oracle's Redis reader) instead.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec

from perp.commands import SetIndex
from perp.markets import MarketSpec


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
