"""The sequencer: journal first, then the engine; recovery is snapshot + journal replay.

`JournaledEngine.submit_rows` appends a batch to the journal (durable per the fsync policy) before
the engine sees it, so every acknowledged command survives a crash. `recover` rebuilds the engine
from an optional snapshot and the journal's records after the snapshot's sequence number; the
result has the same state hash as the engine that wrote them.

Timers enter the sequence like commands. The liquidation sweep runs after every batch that moved a
mark or an index (the sequencer appends a `liquidate` command, journaled like any other) and on a
timer (`tick`), so replaying the journal replays the sweeps exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import structlog

from perp import layout as L
from perp.commands import Liquidate
from perp.engine import Engine
from perp.journal import FsyncPolicy, Journal, iter_rows_after, read_journal
from perp.markets import MarketsConfig

log = structlog.get_logger("perp.sequencer")


class JournaledEngine:
    def __init__(self, engine: Engine, journal: Journal):
        if journal.next_seq != engine.seq + 1:
            raise ValueError(f"journal continues at seq {journal.next_seq} but the engine is at {engine.seq}")
        self.engine = engine
        self.journal = journal

    @classmethod
    def open(cls, journal_path: str | Path, *, snapshot: str | Path | None = None,
             markets: MarketsConfig | None = None, fsync: FsyncPolicy = "always") -> JournaledEngine:
        """Recover whatever the journal (and snapshot) hold, then continue appending."""
        engine = recover(journal_path, snapshot=snapshot, markets=markets)
        journal = Journal(journal_path, fsync=fsync)
        return cls(engine, journal)

    def submit_rows(self, rows: np.ndarray, auto_liquidate: bool = True) -> np.ndarray:
        self.journal.append(rows)
        events = self.engine.submit_rows(rows)
        if auto_liquidate and rows.shape[0]:
            kinds = events[:, L.E_KIND]
            if np.any((kinds == L.EV_MARK) | (kinds == L.EV_INDEX)):
                events = np.concatenate([events, self.tick(int(self.engine.state.g[L.G_LAST_TS]))])
        return events

    def tick(self, ts_ns: int) -> np.ndarray:
        """The liquidation sweep as a journaled timer command at `ts_ns`."""
        row = self.engine.encode([Liquidate(ts_ns=ts_ns)])
        self.journal.append(row)
        return self.engine.submit_rows(row)

    def close(self) -> None:
        self.journal.close()


def recover(journal_path: str | Path, *, snapshot: str | Path | None = None,
            markets: MarketsConfig | None = None) -> Engine:
    engine = Engine.from_snapshot(snapshot) if snapshot is not None else Engine(markets)
    path = Path(journal_path)
    if not path.exists():
        return engine
    torn = read_journal(path).torn
    if torn is not None:
        log.warning("journal_torn_tail", path=str(path), offset=torn.offset, dropped_bytes=torn.dropped_bytes,
                    code=5002)
    replayed = 0
    for first_seq, rows in iter_rows_after(path, engine.seq):
        if first_seq != engine.seq + 1:
            raise ValueError(f"journal {path} resumes at seq {first_seq}; the engine is at {engine.seq} (gap)")
        engine.submit_rows(rows)
        replayed += rows.shape[0]
    log.info("recovered", path=str(path), snapshot=str(snapshot) if snapshot else None, replayed=replayed,
             seq=engine.seq)
    return engine
