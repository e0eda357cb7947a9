"""Readers: where fix records come from (the shared CSV, a JSON feed, Redis), and the only place
the oracle logs what it refuses.

Invariants:
- A reader never guesses: an unreadable row or payload becomes a ``Rejection`` with a code and a
  location (file line, stream id, key), is logged with structlog, and is left out; it never reaches
  the anchor. Readers do not reorder: they return records in the order the source holds them, and
  ordering faults are the anchor's to judge.
- CSV rows are history: each non-empty cell is a ``final`` fix struck and published at 00:30 UTC of
  its ``fix_date_utc`` (source ``gpumarkets.dev``); an empty cell is a suppressed day.
- Redis payloads are JSON ``FixRecord`` objects: stream entries carry them in the field ``record``
  (read with XRANGE/XREAD from a last id the caller keeps), a key holds one object or a list.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable
from pathlib import Path

import msgspec
import structlog

from oracle.errors import OracleCode, Rejection
from oracle.records import (
    FixRecord,
    Vintage,
    decode_record,
    decode_record_list,
    encode_record,
    scheduled_strike_ns,
)

log = structlog.get_logger("oracle.readers")

CSV_SOURCE = "gpumarkets.dev"
CSV_ATTRIBUTION = "GPU Markets, gpumarkets.dev, CC BY 4.0"
STREAM_FIELD = b"record"


class ReadResult(msgspec.Struct, kw_only=True):
    records: list[FixRecord]
    rejections: list[Rejection]


def log_rejections(rejections: Iterable[Rejection], **context: object) -> None:
    """Log each rejection at warning level with its stable code."""
    for r in rejections:
        log.warning("oracle_record_rejected", code=int(r.code), reason=r.code.name, where=r.where,
                    detail=r.message, **context)


def ingest_and_log(anchor, records: Iterable[FixRecord], **context: object) -> list[Rejection]:
    """Feed ``records`` to a ``HourlyAnchor`` in order, logging every refusal (ordering faults included)."""
    rejections = [r for r in (anchor.ingest(record) for record in records) if r is not None]
    log_rejections(rejections, series=anchor.config.series_id, **context)
    return rejections


def default_csv_path() -> Path:
    """``../shared/data/gpumarkets/daily_fixings.csv`` relative to the repository root."""
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gpumarkets" / "daily_fixings.csv"


def csv_series(path: Path) -> list[str]:
    with Path(path).open(newline="") as fh:
        header = next(csv.reader(fh), [])
    return header[1:]


def read_csv_fixes(path: Path, series_id: str) -> ReadResult:
    """One ``final`` record per row of ``series_id`` (struck and published at 00:30 UTC)."""
    records: list[FixRecord] = []
    rejections: list[Rejection] = []
    with Path(path).open(newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "fix_date_utc" not in reader.fieldnames or series_id not in reader.fieldnames:
            rejection = Rejection(code=OracleCode.CSV_SERIES_MISSING, where=str(path),
                                  message=f"no column fix_date_utc and {series_id!r} in the header")
            log_rejections([rejection], series=series_id)
            return ReadResult(records=[], rejections=[rejection])
        for line_no, row in enumerate(reader, start=2):
            where = f"{path}:{line_no}"
            try:
                fix_date = dt.date.fromisoformat((row["fix_date_utc"] or "").strip())
            except ValueError:
                rejections.append(Rejection(code=OracleCode.CSV_MALFORMED_ROW, where=where,
                                            message=f"fix_date_utc {row['fix_date_utc']!r} is not a date"))
                continue
            cell = (row[series_id] or "").strip()
            strike = scheduled_strike_ns(fix_date)
            records.append(FixRecord(
                series_id=series_id, fix_date=fix_date, strike_ts_ns=strike, published_ts_ns=strike,
                vintage=Vintage.FINAL, source=CSV_SOURCE,
                price_usd=cell or None, suppression_reason=None if cell else "empty cell in csv",
            ))
    log_rejections(rejections, series=series_id)
    return ReadResult(records=records, rejections=rejections)


def _decode_one(payload: bytes | str, where: str, code: OracleCode) -> FixRecord | Rejection:
    try:
        return decode_record(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return Rejection(code=code, where=where, message=f"not a fix record: {exc}")


def _split(items: Iterable[FixRecord | Rejection]) -> ReadResult:
    result = ReadResult(records=[], rejections=[])
    for item in items:
        (result.rejections if isinstance(item, Rejection) else result.records).append(item)  # type: ignore[arg-type]
    log_rejections(result.rejections)
    return result


def read_json_feed(payload: bytes | str, where: str = "json") -> ReadResult:
    """A JSON array of records, or JSON lines (one record per line); each bad element is rejected."""
    text = payload.decode() if isinstance(payload, bytes) else payload
    if text.lstrip().startswith("["):
        try:
            raw_items = msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            return _split([Rejection(code=OracleCode.MALFORMED_RECORD, where=where, message=f"bad JSON: {exc}")])
        items = [_decode_one(msgspec.json.encode(item), f"{where}[{i}]", OracleCode.MALFORMED_RECORD)
                 for i, item in enumerate(raw_items)]
        return _split(items)
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    return _split(_decode_one(line, f"{where}:{n}", OracleCode.MALFORMED_RECORD) for n, line in lines)


def read_json_file(path: Path) -> ReadResult:
    return read_json_feed(Path(path).read_bytes(), where=str(path))


# ---------------------------------------------------------------------- Redis
def publish_to_stream(client, stream_key: str, record: FixRecord) -> bytes:
    """XADD one record as JSON in the field ``record``; returns the entry id (publisher side)."""
    return client.xadd(stream_key, {STREAM_FIELD: encode_record(record)})


class RedisStreamReader:
    """Reads fix records from a Redis stream after ``last_id`` (kept here, so reads resume)."""

    def __init__(self, client, stream_key: str, last_id: bytes | str = b"0-0") -> None:
        self.client = client
        self.stream_key = stream_key
        self.last_id = last_id if isinstance(last_id, bytes) else last_id.encode()

    def _convert(self, entries) -> ReadResult:
        items: list[FixRecord | Rejection] = []
        for entry_id, fields in entries:
            self.last_id = entry_id
            where = f"{self.stream_key}#{entry_id.decode()}"
            payload = fields.get(STREAM_FIELD)
            if payload is None:
                items.append(Rejection(code=OracleCode.STREAM_PAYLOAD_MALFORMED, where=where,
                                       message="entry has no 'record' field"))
                continue
            items.append(_decode_one(payload, where, OracleCode.STREAM_PAYLOAD_MALFORMED))
        return _split(items)

    def read_available(self, count: int = 1000) -> ReadResult:
        """Everything after ``last_id`` now (XRANGE, exclusive start), in stream order."""
        result = ReadResult(records=[], rejections=[])
        while True:
            entries = self.client.xrange(self.stream_key, min=b"(" + self.last_id, count=count)
            if not entries:
                return result
            batch = self._convert(entries)
            result.records.extend(batch.records)
            result.rejections.extend(batch.rejections)

    def read_blocking(self, block_ms: int, count: int = 1000) -> ReadResult:
        """XREAD after ``last_id``, waiting up to ``block_ms`` for new entries."""
        reply = self.client.xread({self.stream_key: self.last_id}, count=count, block=block_ms)
        entries = reply[0][1] if reply else []
        return self._convert(entries)


def read_key(client, key: str) -> ReadResult:
    """GET ``key``: a JSON record or a JSON list of records (missing key: nothing)."""
    payload = client.get(key)
    if payload is None:
        return ReadResult(records=[], rejections=[])
    if payload.lstrip().startswith(b"["):
        try:
            return _split(decode_record_list(payload))
        except (msgspec.DecodeError, msgspec.ValidationError):
            return read_json_feed(payload, where=key)
    return _split([_decode_one(payload, key, OracleCode.STREAM_PAYLOAD_MALFORMED)])
