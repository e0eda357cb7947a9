"""The sequencer: journal first, then the engine; recovery is snapshot + journal replay.

`JournaledEngine.submit_rows` appends a batch to the journal (durable per the fsync policy) before
the engine sees it, so every acknowledged command survives a crash. `recover` rebuilds the engine
from an optional snapshot and the journal's records after the snapshot's sequence number; the
result has the same state hash as the engine that wrote them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import structlog

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

    def submit_rows(self, rows: np.ndarray) -> np.ndarray:
        self.journal.append(rows)
        return self.engine.submit_rows(rows)

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
