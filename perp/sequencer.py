"""The sequencer: journal first, then the engine; recovery is snapshot + journal replay.

`JournaledEngine.submit_rows` appends a batch to the journal (durable per the fsync policy) before
the engine sees it, so every acknowledged command survives a crash. `recover` rebuilds the engine
from an optional snapshot and the journal's records after the snapshot's sequence number; the
result has the same state hash as the engine that wrote them.

Recovery refuses, with a code, everything that would silently give another history:
- a zero-length journal, or a missing one next to a snapshot (`JournalEmpty`, 5010);
- a journal written under another markets config or schema (`JournalHeaderMismatch`, 5011);
- a damaged journal (`JournalCorrupt`, 5001; `perp journal repair` is the operator's decision);
- a snapshot that is damaged (5012) or does not hash to the hash stored with it (5013);
- a snapshot of another journal, of no journal, or ahead of the journal's end (`SnapshotMismatch`, 5003).

Snapshots written by the sequencer name their journal (id and sequence number) inside and in the
file name, `<journal id>-<seq>.snap`; they are taken only after the journal is fsynced up to their
sequence number, so a snapshot is never ahead of the durable journal. With `snapshot_every`, one
is taken every that many commands (the last `keep_snapshots` are kept), which bounds recovery to
one snapshot load plus at most `snapshot_every` commands of replay.

Timers enter the sequence like commands. The liquidation sweep runs after every batch that moved a
mark or an index (the sequencer appends a `liquidate` command, journaled like any other) and on a
timer (`tick`), so replaying the journal replays the sweeps exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog

from perp import layout as L
from perp import state as S
from perp.commands import Liquidate
from perp.engine import Engine
from perp.journal import (
    FsyncPolicy,
    Journal,
    JournalEmpty,
    JournalHeaderMismatch,
    JournalReader,
    ScanResult,
    admin_payloads_of,
)
from perp.markets import MarketsConfig

log = structlog.get_logger("perp.sequencer")

SNAPSHOT_SUFFIX = ".snap"


def engine_config_hash(engine: Engine) -> str:
    """The config hash journals carry: what the engine's kernel saw of the markets and tiers when the venue
    started (admin commands change the parameters in force, not the config the journal started under)."""
    return engine.config_hash


def snapshot_name(journal_id: str, seq: int) -> str:
    return f"{journal_id}-{seq:016d}{SNAPSHOT_SUFFIX}"


def snapshots_of(snapshot_dir: str | Path, journal_id: str) -> list[Path]:
    """The journal's snapshots in `snapshot_dir`, newest (highest sequence) first."""
    return sorted(Path(snapshot_dir).glob(f"{journal_id}-*{SNAPSHOT_SUFFIX}"), reverse=True)


@dataclass(frozen=True)
class Recovery:
    """What `recover_detailed` did."""

    engine: Engine
    scan: ScanResult | None  # None when there was no journal (a new venue)
    snapshot: Path | None
    snapshot_seq: int
    replayed: int
    seconds: float


class JournaledEngine:
    def __init__(self, engine: Engine, journal: Journal, *, snapshot_dir: str | Path | None = None,
                 snapshot_every: int = 0, keep_snapshots: int = 2):
        if journal.next_seq != engine.seq + 1:
            raise ValueError(f"journal continues at seq {journal.next_seq} but the engine is at {engine.seq}")
        if snapshot_every and snapshot_dir is None:
            raise ValueError("snapshot_every needs a snapshot_dir")
        self.engine = engine
        self.journal = journal
        self.snapshot_dir = Path(snapshot_dir) if snapshot_dir is not None else None
        self.snapshot_every = snapshot_every
        self.keep_snapshots = max(1, keep_snapshots)
        self._last_snapshot_seq = engine.seq

    @classmethod
    def open(cls, journal_path: str | Path, *, snapshot: str | Path | None = None,
             snapshot_dir: str | Path | None = None, snapshot_every: int = 0, keep_snapshots: int = 2,
             markets: MarketsConfig | None = None, fsync: FsyncPolicy = "always") -> JournaledEngine:
        """Recover whatever the journal (and snapshot) hold, then continue appending. A missing
        journal with no snapshot is a new venue: a journal is created under the engine's config."""
        rec = recover_detailed(journal_path, snapshot=snapshot, snapshot_dir=snapshot_dir, markets=markets)
        journal = Journal(journal_path, fsync=fsync, config=engine_config_hash(rec.engine), scanned=rec.scan)
        return cls(rec.engine, journal, snapshot_dir=snapshot_dir, snapshot_every=snapshot_every,
                   keep_snapshots=keep_snapshots)

    def submit_rows(self, rows: np.ndarray, auto_liquidate: bool = True) -> np.ndarray:
        """Journal the batch, run it, and run the liquidation sweep after it if it moved a mark or
        an index. The batch is written before the engine sees it and fsynced (per the policy)
        before this returns -- one fsync for the batch and its sweep -- so whatever the caller
        acknowledges or publishes afterwards is durable."""
        events = self.run_rows(rows, auto_liquidate)
        self.journal.commit()
        if self.snapshot_every and self.engine.seq - self._last_snapshot_seq >= self.snapshot_every:
            self.snapshot()
        return events

    def run_rows(self, rows: np.ndarray, auto_liquidate: bool = True) -> np.ndarray:
        """`submit_rows` without the fsync: the batch (and its sweep) is written to the journal
        before the engine sees it, and is durable only once `commit_upto(engine.seq)` returned.
        Whoever calls this must not acknowledge or publish anything of the batch before then."""
        self.journal.append(rows, admin_payloads_of(rows, self.engine.encoder.payloads), sync=False)
        events = self.engine.submit_rows(rows)
        if auto_liquidate and rows.shape[0] and moved_mark_or_index(events):  # the caller's commit covers both records
            events = np.concatenate([events, self.tick(self.engine.last_ts_ns, sync=False)])
        return events

    def commit_upto(self, last_seq: int) -> None:
        """Fsync (per the policy) what `run_rows` wrote up to `last_seq`; safe from a worker thread
        while the owner thread runs the next batch (perp.journal.Journal.commit_upto)."""
        self.journal.commit_upto(last_seq)

    @property
    def durable_seq(self) -> int:
        """The last sequence number on disk: what may be acknowledged. Equal to `engine.seq` after
        every batch with fsync `always`; with `interval` it lags until the next fsync (or `sync()`)."""
        return self.journal.synced_seq

    def sync(self) -> int:
        """Fsync the journal now; returns the durable sequence number."""
        self.journal.sync()
        return self.durable_seq

    def tick(self, ts_ns: int, sync: bool = True) -> np.ndarray:
        """The liquidation sweep as a journaled timer command at `ts_ns` (with `sync=False` its fsync
        is left to the caller's commit, as `run_rows` does)."""
        row = self.engine.encode([Liquidate(ts_ns=ts_ns)])
        self.journal.append(row, sync=sync)
        return self.engine.submit_rows(row)

    def snapshot(self, path: str | Path | None = None) -> Path:
        """Fsync the journal, then write a snapshot bound to it (journal id + sequence number),
        atomically; without `path`, into `snapshot_dir` under `snapshot_name`, pruning old ones."""
        self.journal.sync()
        seq = self.engine.seq
        if path is None:
            if self.snapshot_dir is None:
                raise ValueError("snapshot() needs a path or a snapshot_dir")
            self.snapshot_dir.mkdir(parents=True, exist_ok=True)
            path = self.snapshot_dir / snapshot_name(self.journal.journal_id, seq)
        path = Path(path)
        self.engine.snapshot(path, self._snapshot_meta())
        self._last_snapshot_seq = seq
        self._written(path, seq)
        return path

    def snapshot_due(self) -> bool:
        """Whether `snapshot_every` commands ran since the last snapshot (never without a snapshot_dir)."""
        return bool(self.snapshot_every) and self.engine.seq - self._last_snapshot_seq >= self.snapshot_every

    def snapshot_job(self) -> tuple[int, Callable[[], Path]]:
        """`snapshot()` in two steps, for a pipelined owner (perp serve): the copy of the engine now
        (Engine.snapshot_job, a few ms), and a function that hashes, encodes and writes it into
        `snapshot_dir` (atomic, fsynced, pruning old ones) from any thread, while the engine goes
        on. The caller runs that function only once the journal is durable through the returned
        sequence number (its batch's fsync returned): a snapshot is never ahead of the journal."""
        if self.snapshot_dir is None:
            raise ValueError("snapshot_job() needs a snapshot_dir")
        seq = self.engine.seq
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        path = self.snapshot_dir / snapshot_name(self.journal.journal_id, seq)
        build = self.engine.snapshot_job(self._snapshot_meta())
        self._last_snapshot_seq = seq

        def write() -> Path:
            S.write_snapshot_file(path, build())
            self._written(path, seq)
            return path
        return seq, write

    def _snapshot_meta(self) -> dict[str, str]:
        return {"journal_id": self.journal.journal_id, "config_hash": engine_config_hash(self.engine)}

    def _written(self, path: Path, seq: int) -> None:
        """After a snapshot is on disk: prune the old ones beyond `keep_snapshots`, log it."""
        if self.snapshot_dir is not None and path.parent == self.snapshot_dir:
            for old in snapshots_of(self.snapshot_dir, self.journal.journal_id)[self.keep_snapshots:]:
                old.unlink(missing_ok=True)
        log.info("snapshot_written", path=str(path), seq=seq, journal_id=self.journal.journal_id)

    def close(self) -> None:
        self.journal.close()


def moved_mark_or_index(events: np.ndarray) -> bool:
    """Whether a batch's events moved a mark or an index: the sequencer then sweeps (a `liquidate`
    at the batch's time), here and in the Redis sequencer (gateway/redis_journal.py)."""
    kinds = events[:, L.E_KIND]
    return bool(np.any((kinds == L.EV_MARK) | (kinds == L.EV_INDEX)))


def recover(journal_path: str | Path, *, snapshot: str | Path | None = None,
            snapshot_dir: str | Path | None = None, markets: MarketsConfig | None = None) -> Engine:
    """The engine the journal (after the snapshot, if any) describes; see the module docstring for
    what is refused."""
    return recover_detailed(journal_path, snapshot=snapshot, snapshot_dir=snapshot_dir, markets=markets).engine


def _load_bound_snapshot(path: Path, journal_id: str) -> Engine:
    st, meta = S.load_snapshot(path)
    bound_to = meta.get("journal_id")
    if bound_to is None:
        raise S.SnapshotMismatch(f"{path} names no journal; recovery needs a snapshot taken by the sequencer")
    if bound_to != journal_id:
        raise S.SnapshotMismatch(f"{path} belongs to journal {bound_to}, not to {journal_id}")
    return Engine.from_state(st, meta, path)


def _engine_from_snapshot_dir(snapshot_dir: Path, journal_id: str) -> tuple[Engine | None, Path | None]:
    """The newest snapshot of the journal that loads; a damaged one is skipped (logged with its
    code) for the one before it -- the journal still holds every command since."""
    for path in snapshots_of(snapshot_dir, journal_id):
        try:
            return _load_bound_snapshot(path, journal_id), path
        except (S.SnapshotCorrupt, S.SnapshotHashMismatch) as exc:
            log.warning("snapshot_skipped", path=str(path), error=str(exc), code=int(exc.code))
    return None, None


def recover_detailed(journal_path: str | Path, *, snapshot: str | Path | None = None,
                     snapshot_dir: str | Path | None = None, markets: MarketsConfig | None = None) -> Recovery:
    t0 = time.perf_counter()
    path = Path(journal_path)
    snap_dir = Path(snapshot_dir) if snapshot_dir is not None else None
    if not path.exists():
        if snapshot is not None or (snap_dir is not None and any(snap_dir.glob(f"*{SNAPSHOT_SUFFIX}"))):
            raise JournalEmpty(f"{path} is missing but a snapshot exists: the journal holds the acknowledged "
                               f"history, a snapshot alone is not a venue")
        return Recovery(Engine(markets), None, None, 0, 0, time.perf_counter() - t0)
    with JournalReader(path) as reader:
        journal_id = reader.header.journal_id
        used: Path | None = None
        if snapshot is not None:
            used = Path(snapshot)
            engine = _load_bound_snapshot(used, journal_id)
        elif snap_dir is not None:
            engine, used = _engine_from_snapshot_dir(snap_dir, journal_id)
            engine = engine if engine is not None else Engine(markets)
        else:
            engine = Engine(markets)
        if markets is not None and used is not None:
            expected = engine_config_hash(Engine(markets))
            if engine_config_hash(engine) != expected:
                raise JournalHeaderMismatch(f"snapshot {used} was taken under another markets config")
        cfg = engine_config_hash(engine)
        if reader.header.config_hash != cfg:
            raise JournalHeaderMismatch(
                f"{path} was written under markets config {reader.header.config_hash}; this engine's is {cfg}: "
                f"replaying it under another config would give another state")
        snap_seq = engine.seq
        if snap_seq < reader.header.first_seq - 1:
            raise S.SnapshotMismatch(f"snapshot at seq {snap_seq}; {path} starts at seq {reader.header.first_seq}")
        replayed = 0
        for seq0, rows in reader.records():
            end = seq0 + rows.shape[0] - 1
            if end <= engine.seq:
                continue
            skip = engine.seq + 1 - seq0
            engine.encoder.payloads.update(reader.payloads)  # the side records read so far
            engine.stream_rows(rows[skip:], None)  # recovery publishes nothing: events produced and dropped
            replayed += rows.shape[0] - skip
        last_seq = reader.next_seq - 1
        if snap_seq > last_seq:
            raise S.SnapshotMismatch(
                f"snapshot {used} is at seq {snap_seq} but {path} ends at seq {last_seq}: the journal has lost "
                f"acknowledged commands (or was replaced); refusing to recover")
        if reader.torn is not None:
            log.warning("journal_torn_tail", path=str(path), offset=reader.torn.offset,
                        dropped_bytes=reader.torn.dropped_bytes, code=5002)
        scan = ScanResult(reader.header, reader.records_read, reader.next_seq, reader.end_offset, reader.size,
                          reader.torn)
    seconds = time.perf_counter() - t0
    log.info("recovered", path=str(path), snapshot=str(used) if used else None, snapshot_seq=snap_seq,
             replayed=replayed, seq=engine.seq, seconds=round(seconds, 3))
    return Recovery(engine, scan, used, snap_seq, replayed, seconds)
