"""Append-only command journal: a checksummed header, then framed, checksummed records.

File layout (schema 4; the frames are schema 2's, the version says what the rows mean):

    b"PERPJNL4"
    [u32 header length][u32 CRC32 of the header] header: msgpack `JournalHeader`
        (schema version, journal id, hash of the markets config it was written under, first seq)
    records, each  [b"PJR2"][u32 payload length][u32 CRC32 of payload][u32 CRC32 of the 12 bytes before]
                   payload: [i64 seq0][u32 width][u32 rows] + rows x width int64 little-endian
                   or, a side record (width 0): [i64 key][u32 0][u32 n] + n bytes, the msgpack payload
                   of an admin command whose CK_ADMIN row (in the next command record) names `key`

Invariants:

- Records continue the sequence without a gap: a record's `seq0` is the previous record's last
  sequence number + 1 (the first record's is the header's `first_seq`).
- **Torn tail** (code 5002) is *only* what a crash in the middle of an append can leave: the last
  bytes of the file are a prefix of a plausible record -- its magic, and once the 16-byte frame
  header is complete, a frame CRC that matches and a declared length within `MAX_RECORD_BYTES`
  whose end lies past the end of the file. Such a record was never acknowledged (an append returns
  only after the whole record is written).
- **Anything else is corruption** (`JournalCorrupt`, code 5001): a failed frame or payload CRC, a
  bad magic, a zero-filled tail (what a power loss can leave), a sequence gap. Reading never skips
  it and opening for append never truncates it. The operator decides with `perp journal repair`
  (`--dry-run` shows what would be dropped, including the intact acknowledged records after the
  damage); a repair moves the dropped bytes to a side file and logs the decision.
- Opening for append truncates only a proven torn tail, and records that decision: the dropped bytes
  are kept in `<journal>.torn-<offset>` and a line is added to `<journal>.repairs.jsonl`.
- A zero-length journal is refused (`JournalEmpty`, 5010): a journal is created by writing its
  header to a temporary file, fsyncing it, renaming it into place and fsyncing the directory, so
  the writer never leaves an empty file behind.
- Recovery streams records (`JournalReader`), it never reads the whole file into memory.

Durability: `append` returns only after the record is written with one `write` call, and fsynced
according to the policy (`always`: every append; `interval`: when at least `fsync_interval_ms`
passed since the last fsync -- the caller decides what it acknowledges; `never`: the OS decides).
A command is acknowledged only after its record is appended.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import msgspec
import numpy as np
import structlog

from perp import layout as L
from perp.codes import ResultCode

MAGIC = b"PERPJNL4"
# 3: a fund takes an operator's money only by the audited admin `fund_top_up`; a `fund_deposit` row
# (CK_FUND_DEPOSIT), which schema 2 applied, is refused (1033).
# 4: the gate (perp/gate.py) refuses orders schema 3 accepted: an opening order sheltered by resting
# reduce-only lots, a flip's opening half, an amend that reprices through the mark, a close that
# trades an account past bankruptcy, a withdrawal of what resting orders' fills will cost, an order
# past the int64-safe open-interest cap; and the same rows pay funding and liquidate differently (a
# funding change splits a two-hour clock step; a bankrupt account's deficit is split by market). An
# older journal is refused whole (5011) rather than replayed to another state: see docs/journal.md,
# "Schema 4".
SCHEMA_VERSION = 4
SCHEMA_CHANGES = {2: "schema 2 applied fund_deposit rows, which schema 4 refuses (a fund takes an operator's "
                     "money only by the audited fund_top_up): replaying it would not rebuild its state",
                  3: "schema 3's gate accepted orders that schema 4 refuses (opening orders sheltered by resting "
                     "reduce-only lots, flips, amends repriced through the mark, closes past bankruptcy), and its "
                     "rows pay funding and liquidate differently: replaying it would not rebuild its state"}
REC_MAGIC = b"PJR2"
_FILE_HDR = struct.Struct("<II")  # header length, CRC32 of the header
_FRAME = struct.Struct("<4sIII")  # record magic, payload length, payload CRC32, frame CRC32 (first 12 bytes)
_PAYLOAD_HDR = struct.Struct("<qII")  # seq0, width, rows
MAX_RECORD_BYTES = 256 << 20
MAX_HEADER_BYTES = 1 << 16

log = structlog.get_logger("perp.journal")

FsyncPolicy = Literal["always", "interval", "never"]


class JournalHeader(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    schema_version: int
    journal_id: str  # random hex, fixed for the journal's life; snapshots name it
    config_hash: str  # `config_hash()` of the markets the journal was written under
    first_seq: int = 1  # sequence number of the first record's first command


class JournalError(Exception):
    """A journal that cannot be used as it is; `code` says why."""

    code: ResultCode = ResultCode.JOURNAL_CORRUPT

    def __init__(self, message: str):
        super().__init__(f"{self.code.name} ({int(self.code)}): {message}")
        self.detail = message


class JournalCorrupt(JournalError):
    """Damage that a crash mid-append cannot explain (code 5001). `offset` is where the last
    whole, valid record ends: everything from there on is in doubt."""

    code = ResultCode.JOURNAL_CORRUPT

    def __init__(self, message: str, offset: int = 0, next_seq: int = 1):
        super().__init__(message)
        self.offset = offset
        self.next_seq = next_seq


class JournalEmpty(JournalError):
    """A zero-length journal, or a missing one where one is expected (code 5010)."""

    code = ResultCode.JOURNAL_EMPTY


class JournalHeaderMismatch(JournalError):
    """Another schema version or another markets config than the caller's (code 5011)."""

    code = ResultCode.JOURNAL_HEADER_MISMATCH


@dataclass(frozen=True)
class TornTail:
    """What reading found past the last whole record (code 5002)."""

    offset: int  # where the last whole record ends
    dropped_bytes: int


def config_hash(spec_rows: np.ndarray, tiers: np.ndarray) -> str:
    """Hash of what replaying command rows depends on: the kernel's market spec table and tier table
    (shapes included, so a layout change is a different config)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(b"perp-config-v1")
    for arr in (np.ascontiguousarray(spec_rows, dtype="<i8"), np.ascontiguousarray(tiers, dtype="<i8")):
        h.update(np.asarray(arr.shape, dtype="<i8").tobytes())
        h.update(arr.tobytes())
    return h.hexdigest()


def _frame(payload: bytes) -> bytes:
    head = struct.pack("<4sII", REC_MAGIC, len(payload), zlib.crc32(payload))
    return head + struct.pack("<I", zlib.crc32(head)) + payload


def encode_record(seq0: int, rows: np.ndarray) -> bytes:
    rows = np.ascontiguousarray(rows, dtype="<i8")
    return _frame(_PAYLOAD_HDR.pack(seq0, rows.shape[1], rows.shape[0]) + rows.tobytes())


MAX_SIDE_BYTES = 1 << 20


def encode_side_record(key: int, data: bytes) -> bytes:
    """A side record: an admin command's payload (width 0), named by the key its CK_ADMIN row carries."""
    return _frame(_PAYLOAD_HDR.pack(key, 0, len(data)) + data)


def admin_payloads_of(rows: np.ndarray, payloads: dict[int, bytes]) -> list[tuple[int, bytes]]:
    """(key, payload) of every admin row in `rows` whose payload is known, in row order, each key once."""
    keys = rows[rows[:, L.C_KIND] == L.CK_ADMIN, L.C_ORDER_ID].tolist() if rows.shape[0] else []
    seen: dict[int, bytes] = {}
    for k in keys:
        if k not in seen and k in payloads:
            seen[k] = payloads[k]
    return list(seen.items())


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_header(fh: BinaryIO, path: Path) -> tuple[JournalHeader, int]:
    head = fh.read(len(MAGIC) + _FILE_HDR.size)
    if not head:
        raise JournalEmpty(f"{path} is empty (0 bytes): not a journal; a venue's history cannot start from "
                           f"an emptied file -- restore it, or delete it to start a new venue")
    if len(head) < len(MAGIC):
        raise JournalCorrupt(f"{path}: not a journal ({len(head)} bytes, cut inside the magic)")
    if head[: len(MAGIC)] != MAGIC:
        if len(head) >= len(MAGIC) and head.startswith(b"PERPJNL"):
            old = head[7:8].decode(errors="replace")
            why = SCHEMA_CHANGES.get(int(old), "") if old.isdigit() else ""
            raise JournalHeaderMismatch(f"{path}: a journal of schema {old} ({head[:8]!r}); this engine reads "
                                        f"schema {SCHEMA_VERSION}" + (f" ({why})" if why else ""))
        raise JournalCorrupt(f"{path}: not a journal (bad magic)")
    if len(head) < len(MAGIC) + _FILE_HDR.size:
        raise JournalCorrupt(f"{path}: header cut short")
    length, crc = _FILE_HDR.unpack_from(head, len(MAGIC))
    if length > MAX_HEADER_BYTES:
        raise JournalCorrupt(f"{path}: header claims {length} bytes")
    body = fh.read(length)
    if len(body) != length or zlib.crc32(body) != crc:
        raise JournalCorrupt(f"{path}: header checksum mismatch")
    try:
        header = msgspec.msgpack.decode(body, type=JournalHeader)
    except msgspec.DecodeError as exc:
        raise JournalCorrupt(f"{path}: undecodable header: {exc}") from None
    if header.schema_version != SCHEMA_VERSION:
        why = SCHEMA_CHANGES.get(header.schema_version, "")
        raise JournalHeaderMismatch(f"{path}: schema version {header.schema_version}, this engine reads "
                                    f"{SCHEMA_VERSION}" + (f" ({why})" if why else ""))
    return header, len(head) + length


class JournalReader:
    """Streams a journal record by record, validating each; after `records()` is exhausted,
    `torn`, `end_offset` (where the last whole record ends) and `next_seq` describe the end.

    Raises `JournalCorrupt` at the first record that a crash mid-append cannot explain.
    """

    def __init__(self, path: str | Path, buffer_bytes: int = 1 << 20):
        self.path = Path(path)
        self._fh = open(self.path, "rb", buffering=buffer_bytes)
        self.size = os.fstat(self._fh.fileno()).st_size
        try:
            self.header, self.end_offset = _read_header(self._fh, self.path)
        except BaseException:
            self._fh.close()
            raise
        self.next_seq = self.header.first_seq
        self.torn: TornTail | None = None
        self.records_read = 0
        self.payloads: dict[int, bytes] = {}  # admin payloads from side records (key -> msgpack bytes)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> JournalReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _corrupt(self, why: str) -> JournalCorrupt:
        return JournalCorrupt(f"{self.path}: {why} at byte {self.end_offset} (after seq {self.next_seq - 1}; "
                              f"{self.size - self.end_offset} bytes from there to the end); "
                              f"see `perp journal repair --dry-run`", self.end_offset, self.next_seq)

    def records(self) -> Iterator[tuple[int, np.ndarray]]:
        """(seq0, rows) for every whole record, in order."""
        fh = self._fh
        while True:
            pos = self.end_offset
            left = self.size - pos
            if left == 0:
                return
            frame = fh.read(min(left, _FRAME.size))
            if len(frame) < _FRAME.size:
                if REC_MAGIC.startswith(frame[:4]) and self._plausible_partial_frame(frame):
                    self.torn = TornTail(pos, left)
                    return
                raise self._corrupt(self._describe_bad_bytes(frame))
            magic, length, crc, frame_crc = _FRAME.unpack(frame)
            if magic != REC_MAGIC or zlib.crc32(frame[:12]) != frame_crc or length > MAX_RECORD_BYTES:
                raise self._corrupt(self._describe_bad_bytes(frame))
            if _FRAME.size + length > left:  # a proven frame whose payload runs past the end: torn
                self.torn = TornTail(pos, left)
                return
            payload = bytearray(length)  # writable: the engine gets the rows without a copy
            if fh.readinto(payload) != length:
                raise self._corrupt("file shrank while reading")
            if zlib.crc32(payload) != crc:
                raise self._corrupt("payload checksum mismatch in the record")
            if length < _PAYLOAD_HDR.size:
                raise self._corrupt("record too short")
            seq0, width, n_rows = _PAYLOAD_HDR.unpack_from(payload)
            if width == 0:  # a side record: an admin payload (key, bytes) for a row of the next record
                if length != _PAYLOAD_HDR.size + n_rows or n_rows > MAX_SIDE_BYTES:
                    raise self._corrupt(f"side record of {n_rows} bytes in {length}")
                self.payloads[seq0] = bytes(payload[_PAYLOAD_HDR.size:])
                self.end_offset = pos + _FRAME.size + length
                self.records_read += 1
                continue
            if width != L.N_CMD_COLS or length != _PAYLOAD_HDR.size + 8 * width * n_rows:
                raise self._corrupt(f"record of width {width} and {n_rows} rows in {length} bytes")
            if seq0 != self.next_seq:
                raise self._corrupt(f"record starting at seq {seq0} where {self.next_seq} was expected")
            rows = np.frombuffer(payload, dtype="<i8", offset=_PAYLOAD_HDR.size).reshape(n_rows, width)
            self.end_offset = pos + _FRAME.size + length
            self.next_seq = seq0 + n_rows
            self.records_read += 1
            yield seq0, rows

    @staticmethod
    def _plausible_partial_frame(frame: bytes) -> bool:
        if len(frame) >= 8:
            (length,) = struct.unpack_from("<I", frame, 4)
            return length <= MAX_RECORD_BYTES
        return True

    def _describe_bad_bytes(self, frame: bytes) -> str:
        if not any(frame):
            self._fh.seek(self.end_offset)
            zeros = _count_zeros(self._fh)
            if self.end_offset + zeros == self.size:
                return f"zero-filled tail ({zeros} bytes, what a power loss can leave)"
            return f"{zeros} zero bytes"
        return "damaged record frame (bad magic, frame checksum or length)"


def _count_zeros(fh: BinaryIO) -> int:
    n = 0
    while True:
        block = fh.read(1 << 16)
        if not block:
            return n
        stripped = block.lstrip(b"\0")
        n += len(block) - len(stripped)
        if stripped:
            return n


@dataclass(frozen=True)
class ScanResult:
    header: JournalHeader
    records: int
    next_seq: int  # the sequence number the next append gets
    end_offset: int  # where the last whole record ends
    size: int
    torn: TornTail | None


def scan(path: str | Path) -> ScanResult:
    """Validate the whole journal (streaming); raises `JournalCorrupt` / `JournalEmpty`."""
    with JournalReader(path) as r:
        for _ in r.records():
            pass
        return ScanResult(r.header, r.records_read, r.next_seq, r.end_offset, r.size, r.torn)


def read_rows(path: str | Path) -> np.ndarray:
    """Every command row of a (valid) journal, in sequence order -- for tests and tools; recovery
    streams instead."""
    with JournalReader(path) as r:
        parts = [rows.copy() for _, rows in r.records()]
    return np.concatenate(parts) if parts else np.zeros((0, L.N_CMD_COLS), np.int64)


def _record_decision(path: Path, decision: dict) -> None:
    """Append one JSON line to `<journal>.repairs.jsonl` (fsynced): what was dropped and why."""
    log_path = path.with_name(path.name + ".repairs.jsonl")
    with open(log_path, "ab") as fh:
        fh.write(json.dumps(decision, sort_keys=True).encode() + b"\n")
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(path.parent)


def _cut(path: Path, offset: int, side_name: str) -> Path:
    """Move the bytes from `offset` to the end into a side file (fsynced), then truncate."""
    side = path.with_name(f"{path.name}.{side_name}-{offset}")
    with open(path, "r+b") as fh:
        fh.seek(offset)
        with open(side, "wb") as out:
            while block := fh.read(1 << 20):
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        fh.truncate(offset)
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(path.parent)
    return side


class Journal:
    """Appender. A new journal gets a header (schema, a fresh journal id, the config hash) written
    atomically; an existing one is validated (streaming), a proven torn tail is cut (recorded),
    corruption raises and nothing is truncated. With `config` given, the header's config hash must
    equal it (`JournalHeaderMismatch`, 5011)."""

    def __init__(self, path: str | Path, fsync: FsyncPolicy = "always", fsync_interval_ms: int = 10, *,
                 config: str | None = None, scanned: ScanResult | None = None):
        self.path = Path(path)
        self.fsync_policy = fsync
        self.fsync_interval_ns = fsync_interval_ms * 1_000_000
        self.torn: TornTail | None = None
        if not self.path.exists():
            if config is None:
                raise ValueError("a new journal needs the config hash it is written under (journal.config_hash)")
            self.header = JournalHeader(SCHEMA_VERSION, os.urandom(8).hex(), config, 1)
            _create(self.path, self.header)
            self.next_seq = 1
        else:
            result = scanned if scanned is not None else scan(self.path)
            self.header = result.header
            if config is not None and result.header.config_hash != config:
                raise JournalHeaderMismatch(
                    f"{self.path} was written under markets config {result.header.config_hash}, "
                    f"not {config}: replaying it under another config gives another state")
            if result.torn is not None:
                self.torn = result.torn
                side = _cut(self.path, result.torn.offset, "torn")
                _record_decision(self.path, {"action": "cut_torn_tail", "offset": result.torn.offset,
                                             "dropped_bytes": result.torn.dropped_bytes, "kept_in": side.name,
                                             "next_seq": result.next_seq, "code": int(ResultCode.JOURNAL_TORN_TAIL)})
                log.warning("journal_torn_tail_cut", path=str(self.path), offset=result.torn.offset,
                            dropped_bytes=result.torn.dropped_bytes, kept_in=str(side), code=5002)
            self.next_seq = result.next_seq
        self.journal_id = self.header.journal_id
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._last_sync_ns = time.monotonic_ns()
        self.synced_seq = self.next_seq - 1  # every command up to here is on disk

    def append(self, rows: np.ndarray, payloads: list[tuple[int, bytes]] = (), sync: bool = True) -> int:
        """Append a batch as one record (one write, after the side records of its admin payloads);
        returns the sequence number of its first row. With `sync=False` the fsync the policy asks for
        is left to the caller's next `append` or `commit()` (one fsync for several records);
        `synced_seq` says what is durable."""
        rows = np.ascontiguousarray(rows, dtype="<i8")
        if rows.ndim != 2 or rows.shape[1] != L.N_CMD_COLS:
            raise ValueError(f"journal rows must be (n, {L.N_CMD_COLS})")
        seq0 = self.next_seq
        data = memoryview(b"".join([*(encode_side_record(k, d) for k, d in payloads), encode_record(seq0, rows)]))
        while data:
            data = data[os.write(self._fd, data):]
        self.next_seq += rows.shape[0]
        if sync:
            self._sync()
        return seq0

    def commit(self) -> None:
        """Fsync what `append(sync=False)` left, as the policy says (`always`: now)."""
        if self.synced_seq < self.next_seq - 1:
            self._sync()

    def commit_upto(self, last_seq: int) -> None:
        """Make records up to `last_seq` durable as the policy says, from another thread than the
        one appending (the gateway's pipelined group commit: batch N is fsynced while batch N+1 is
        appended). Only `last_seq` is claimed: records appended after it was chosen are covered
        by their own call. Calls must come in seq order from one thread."""
        if self.synced_seq < last_seq and self._fsync_per_policy(False):
            self.synced_seq = max(self.synced_seq, last_seq)

    def _sync(self, force: bool = False) -> None:
        if self._fsync_per_policy(force):
            self.synced_seq = self.next_seq - 1

    def _fsync_per_policy(self, force: bool) -> bool:
        """Fsync now if the policy (or `force`) says so; whether it did."""
        if force or self.fsync_policy == "always":
            os.fsync(self._fd)
            return True
        if self.fsync_policy == "interval":
            now = time.monotonic_ns()
            if now - self._last_sync_ns < self.fsync_interval_ns:
                return False
            os.fsync(self._fd)
            self._last_sync_ns = now
            return True
        return False

    def sync(self) -> None:
        """Make every appended record durable now (before a snapshot names this sequence)."""
        self._sync(force=True)

    def close(self) -> None:
        """Fsync what was appended, then close; the file is closed even when that fsync raises
        (the error is raised after it)."""
        if self._fd >= 0:
            try:
                self._sync(force=True)
            finally:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _create(path: Path, header: JournalHeader) -> None:
    body = msgspec.msgpack.encode(header)
    tmp = path.with_name(f".{path.name}.creating-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(MAGIC + _FILE_HDR.pack(len(body), zlib.crc32(body)) + body)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        try:
            os.link(tmp, path)  # fails if someone created the journal meanwhile: never overwrite one
        except FileExistsError:
            raise
        except OSError:  # a filesystem without hard links: rename, having checked there is none
            if path.exists():
                raise FileExistsError(path) from None
            os.rename(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


# ---- repair ------------------------------------------------------------------------------------

class RepairPlan(msgspec.Struct, frozen=True):
    """What `repair` would do: cut the journal at `cut_offset` (where the last valid record ends),
    keeping commands up to `kept_last_seq`. `intact_after` counts the records after the damage whose
    own checksums still pass (acknowledged commands that the cut drops, seqs `dropped_seq_range`)."""

    path: str
    size: int
    reason: str
    code: int
    cut_offset: int
    dropped_bytes: int
    kept_last_seq: int
    intact_after: int
    dropped_seq_range: tuple[int, int] | None


def plan_repair(path: str | Path) -> RepairPlan | None:
    """None when the journal is whole (nothing to repair); raises what a bad header raises."""
    path = Path(path)
    try:
        result = scan(path)
    except JournalCorrupt as exc:
        intact, seq_range = _intact_records_after(path, exc.offset)
        return RepairPlan(str(path), path.stat().st_size, exc.detail, int(exc.code), exc.offset,
                          path.stat().st_size - exc.offset, exc.next_seq - 1, intact, seq_range)
    if result.torn is None:
        return None
    return RepairPlan(str(path), result.size, "torn tail (a record cut short by a crash mid-append)",
                      int(ResultCode.JOURNAL_TORN_TAIL), result.torn.offset, result.torn.dropped_bytes,
                      result.next_seq - 1, 0, None)


def repair(path: str | Path, plan: RepairPlan) -> Path:
    """Carry out `plan` (made by `plan_repair` on the same, unchanged file): the dropped bytes go to
    `<journal>.dropped-<offset>`, the decision to `<journal>.repairs.jsonl`. Returns the side file."""
    path = Path(path)
    if path.stat().st_size != plan.size:
        raise JournalError(f"{path} changed since the plan was made ({plan.size} -> {path.stat().st_size} bytes)")
    side = _cut(path, plan.cut_offset, "dropped")
    _record_decision(path, msgspec.structs.asdict(plan) | {"action": "repair", "kept_in": side.name})
    log.warning("journal_repaired", path=str(path), cut_offset=plan.cut_offset, dropped_bytes=plan.dropped_bytes,
                intact_after=plan.intact_after, kept_in=str(side), code=plan.code)
    return side


def _intact_records_after(path: Path, offset: int) -> tuple[int, tuple[int, int] | None]:
    """Records after a damaged spot whose frame and payload checksums pass (found by searching for
    the record magic): what a cut there would drop."""
    buf = path.read_bytes()  # an offline tool: the operator's repair, not the recovery path
    count, first, last = 0, None, None
    pos = buf.find(REC_MAGIC, offset + 1)
    while pos >= 0 and pos + _FRAME.size <= len(buf):
        _, length, crc, frame_crc = _FRAME.unpack_from(buf, pos)
        end = pos + _FRAME.size + length
        if (zlib.crc32(buf[pos:pos + 12]) == frame_crc and length >= _PAYLOAD_HDR.size and end <= len(buf)
                and zlib.crc32(buf[pos + _FRAME.size:end]) == crc):
            seq0, width, n_rows = _PAYLOAD_HDR.unpack_from(buf, pos + _FRAME.size)
            if width == 0:  # a side record carries no commands
                pos = buf.find(REC_MAGIC, end)
                continue
            count += 1
            first = seq0 if first is None else first
            last = seq0 + n_rows - 1
            pos = buf.find(REC_MAGIC, end)
        else:
            pos = buf.find(REC_MAGIC, pos + 1)
    return count, (first, last) if count else None
