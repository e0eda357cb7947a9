"""Append-only command journal: length-prefixed msgpack records, each with a CRC32.

File layout: the 8-byte magic `PERPJNL1`, then records
`[u32 little-endian payload length][u32 CRC32 of payload][payload]`, where the payload is a msgpack
`JournalRecord` holding a batch of command rows and the sequence number of its first command.

Durability: `append` returns only after the bytes are written and flushed, and fsynced according to
the policy (`always`: every append; `interval`: when at least `fsync_interval_ms` passed since the
last fsync -- the caller decides what it acknowledges; `never`: the OS decides). A command is
acknowledged only after its record is appended.

Recovery: a record cut short at the end of the file (a crash mid-write) is a *torn tail*: reading
stops at the last whole record and says so; opening for append truncates the tail. A bad record
followed by more data is corruption and raises `JournalCorrupt` (never silently skipped).
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec
import numpy as np
import structlog

from perp import layout as L

MAGIC = b"PERPJNL1"
_HEADER = struct.Struct("<II")
MAX_RECORD_BYTES = 256 << 20

log = structlog.get_logger("perp.journal")

FsyncPolicy = Literal["always", "interval", "never"]


class JournalRecord(msgspec.Struct, frozen=True, array_like=True):
    seq0: int  # sequence number of the first command row
    width: int  # columns per row (layout.N_CMD_COLS)
    rows: bytes  # int64 little-endian, row-major


class JournalCorrupt(Exception):
    """A record in the middle of the journal fails its checksum or framing (code 5001)."""


@dataclass(frozen=True)
class TornTail:
    """What reading found past the last whole record (code 5002)."""

    offset: int  # where the last whole record ends
    dropped_bytes: int


@dataclass
class ReadResult:
    records: list[JournalRecord]
    torn: TornTail | None
    end_offset: int


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(JournalRecord)


def record_rows(rec: JournalRecord) -> np.ndarray:
    arr = np.frombuffer(rec.rows, dtype="<i8")
    return arr.reshape(-1, rec.width).astype(np.int64, copy=False)


def read_journal(path: str | Path) -> ReadResult:
    """Read every whole record; report a torn tail; raise `JournalCorrupt` on damage mid-file."""
    data = Path(path).read_bytes()
    if len(data) < len(MAGIC):
        if MAGIC.startswith(data):
            return ReadResult([], TornTail(0, len(data)) if data else None, 0)
        raise JournalCorrupt(f"{path}: not a journal (bad magic)")
    if data[: len(MAGIC)] != MAGIC:
        raise JournalCorrupt(f"{path}: not a journal (bad magic)")
    pos = len(MAGIC)
    records: list[JournalRecord] = []
    expected_seq: int | None = None
    while pos < len(data):
        if len(data) - pos < _HEADER.size:
            return ReadResult(records, TornTail(pos, len(data) - pos), pos)
        length, crc = _HEADER.unpack_from(data, pos)
        end = pos + _HEADER.size + length
        if length > MAX_RECORD_BYTES:
            raise JournalCorrupt(f"{path}: record at byte {pos} claims {length} bytes")
        if end > len(data):
            return ReadResult(records, TornTail(pos, len(data) - pos), pos)
        payload = data[pos + _HEADER.size: end]
        if zlib.crc32(payload) != crc:
            if end == len(data):  # the last record was cut inside its payload
                return ReadResult(records, TornTail(pos, len(data) - pos), pos)
            raise JournalCorrupt(f"{path}: checksum mismatch in the record at byte {pos}")
        try:
            rec = _dec.decode(payload)
        except msgspec.DecodeError as exc:
            raise JournalCorrupt(f"{path}: undecodable record at byte {pos}: {exc}") from None
        if rec.width != L.N_CMD_COLS or len(rec.rows) % (8 * rec.width):
            raise JournalCorrupt(f"{path}: record at byte {pos} has width {rec.width}")
        if expected_seq is not None and rec.seq0 != expected_seq:
            raise JournalCorrupt(f"{path}: record at byte {pos} starts at seq {rec.seq0}, expected {expected_seq}")
        expected_seq = rec.seq0 + len(rec.rows) // (8 * rec.width)
        records.append(rec)
        pos = end
    return ReadResult(records, None, pos)


class Journal:
    """Appender. Opening an existing file validates it and truncates a torn tail (logged)."""

    def __init__(self, path: str | Path, fsync: FsyncPolicy = "always", fsync_interval_ms: int = 10):
        self.path = Path(path)
        self.fsync_policy = fsync
        self.fsync_interval_ns = fsync_interval_ms * 1_000_000
        self.torn: TornTail | None = None
        self.next_seq = 1
        if self.path.exists() and self.path.stat().st_size > 0:
            result = read_journal(self.path)
            if result.torn is not None:
                log.warning("journal_torn_tail_truncated", path=str(self.path), offset=result.torn.offset,
                            dropped_bytes=result.torn.dropped_bytes, code=5002)
                self.torn = result.torn
                with open(self.path, "r+b") as fh:
                    fh.truncate(max(result.end_offset, len(MAGIC)))
                    if result.end_offset < len(MAGIC):
                        fh.seek(0)
                        fh.write(MAGIC)
            if result.records:
                last = result.records[-1]
                self.next_seq = last.seq0 + len(last.rows) // (8 * last.width)
            self._fh = open(self.path, "ab")
        else:
            self._fh = open(self.path, "wb")
            self._fh.write(MAGIC)
            self._sync(force=True)
        self._last_sync_ns = time.monotonic_ns()

    def append(self, rows: np.ndarray) -> int:
        """Append a batch; returns the sequence number of its first row."""
        rows = np.ascontiguousarray(rows, dtype="<i8")
        if rows.ndim != 2 or rows.shape[1] != L.N_CMD_COLS:
            raise ValueError(f"journal rows must be (n, {L.N_CMD_COLS})")
        seq0 = self.next_seq
        payload = _enc.encode(JournalRecord(seq0, L.N_CMD_COLS, rows.tobytes()))
        self._fh.write(_HEADER.pack(len(payload), zlib.crc32(payload)))
        self._fh.write(payload)
        self.next_seq += rows.shape[0]
        self._sync()
        return seq0

    def _sync(self, force: bool = False) -> None:
        self._fh.flush()
        if force or self.fsync_policy == "always":
            os.fsync(self._fh.fileno())
        elif self.fsync_policy == "interval":
            now = time.monotonic_ns()
            if now - self._last_sync_ns >= self.fsync_interval_ns:
                os.fsync(self._fh.fileno())
                self._last_sync_ns = now

    def close(self) -> None:
        if not self._fh.closed:
            self._sync(force=True)
            self._fh.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_rows_after(path: str | Path, after_seq: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first seq, command rows) with sequence numbers > `after_seq`, record by record (a torn tail
    is ignored)."""
    for rec in read_journal(path).records:
        rows = record_rows(rec)
        end = rec.seq0 + rows.shape[0]
        if end - 1 <= after_seq:
            continue
        skip = max(0, after_seq + 1 - rec.seq0)
        yield rec.seq0 + skip, rows[skip:]
