"""Fix records: the typed edge of the oracle, and their stateless validation.

A *fix* is one day's index value for one series from one source, struck at 00:30 UTC (or later,
off-schedule). It arrives in vintages: ``provisional`` at the strike, ``final`` 24 hours later,
``revised`` when corrected (a revision carries the price it replaces in ``original_price_usd``). A
day with too few surviving venues is *suppressed*: no price, a ``suppression_reason`` instead.

Invariants (enforced by ``check_record``; anything else is a ``Rejection`` with a code):
- Prices are decimal strings (``"3.1373"``), finite, > 0, at least one tick and at most the
  configured ``max_price_usd``; they are never floats.
- ``fix_date`` 00:00 UTC <= ``strike_ts_ns`` < next day 00:00 UTC, and
  ``strike_ts_ns <= published_ts_ns <= strike_ts_ns + 366 days`` (a record is known from its
  publication, not its strike; the upper bound keeps a corrupt timestamp from stepping the anchor
  through centuries of hours).
- Exactly one of ``price_usd`` / ``suppression_reason`` is set; ``original_price_usd`` is set iff the
  vintage is ``revised``.
- ``series_id`` and ``source`` must be ones the consumer was configured for.
Ordering, duplicates and vintage progressions need history and are checked in ``oracle.anchor``.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from enum import Enum

import msgspec

from oracle.errors import OracleCode, Rejection
from oracle.units import DAY_NS, NS_PER_S, date_start_ns, parse_decimal

SCHEDULED_STRIKE_OFFSET_S = 30 * 60  # 00:30 UTC
MAX_PUBLICATION_DELAY_NS = 366 * DAY_NS  # a record published more than a year after its strike is corrupt


class Vintage(str, Enum):
    PROVISIONAL = "provisional"
    FINAL = "final"
    REVISED = "revised"


VINTAGE_RANK = {Vintage.PROVISIONAL: 0, Vintage.FINAL: 1, Vintage.REVISED: 2}


class FixRecord(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One published fix (or suppression) of one series by one source."""

    series_id: str
    fix_date: dt.date
    strike_ts_ns: int
    published_ts_ns: int
    vintage: Vintage
    source: str
    price_usd: str | None = None
    original_price_usd: str | None = None
    suppression_reason: str | None = None

    def key(self) -> str:
        return f"{self.series_id}/{self.source}/{self.fix_date.isoformat()}/{self.vintage.value}"


def scheduled_strike_ns(fix_date: dt.date) -> int:
    """00:30 UTC of ``fix_date``: when the index is scheduled to strike."""
    return date_start_ns(fix_date) + SCHEDULED_STRIKE_OFFSET_S * NS_PER_S


def check_price(text: str, label: str, tick_usd: Decimal, max_price_usd: Decimal) -> Decimal | Rejection:
    """Parse one price string and apply the price invariants."""
    try:
        value = parse_decimal(text)
    except (InvalidOperation, TypeError) as exc:
        return Rejection(code=OracleCode.MALFORMED_PRICE, message=f"{label} {text!r} is not a decimal: {exc}")
    if not value.is_finite():
        return Rejection(code=OracleCode.NON_FINITE_PRICE, message=f"{label} {text!r} is not finite")
    if value <= 0:
        return Rejection(code=OracleCode.NON_POSITIVE_PRICE, message=f"{label} {text!r} is not positive")
    if value < tick_usd or value > max_price_usd:
        return Rejection(code=OracleCode.ABSURD_PRICE,
                         message=f"{label} {text!r} is outside the plausible range "
                                 f"[{tick_usd}, {max_price_usd}] USD per GPU-hour")
    return value


def check_record(record: FixRecord, *, series_id: str, sources: tuple[str, ...], tick_usd: Decimal,
                 max_price_usd: Decimal) -> tuple[Decimal | None, Decimal | None] | Rejection:
    """Stateless checks; returns ``(price, original_price)`` as exact decimals, or a rejection."""
    where = record.key()

    def reject(code: OracleCode, message: str) -> Rejection:
        return Rejection(code=code, message=message, where=where)

    if record.series_id != series_id:
        return reject(OracleCode.UNKNOWN_SERIES, f"series {record.series_id!r} is not {series_id!r}")
    if record.source not in sources:
        return reject(OracleCode.UNKNOWN_SOURCE, f"source {record.source!r} is not one of {list(sources)}")
    day_start = date_start_ns(record.fix_date)
    if not day_start <= record.strike_ts_ns < day_start + DAY_NS:
        return reject(OracleCode.STRIKE_OUTSIDE_FIX_DATE,
                      f"strike {record.strike_ts_ns} ns is not on fix date {record.fix_date.isoformat()}")
    if record.published_ts_ns < record.strike_ts_ns:
        return reject(OracleCode.PUBLISHED_BEFORE_STRIKE,
                      f"published at {record.published_ts_ns} ns, before its strike {record.strike_ts_ns} ns")
    if record.published_ts_ns - record.strike_ts_ns > MAX_PUBLICATION_DELAY_NS:
        return reject(OracleCode.PUBLISHED_TOO_LATE,
                      f"published more than 366 days after its strike ({record.published_ts_ns} ns)")
    suppressed = bool(record.suppression_reason)
    if suppressed == (record.price_usd is not None):
        return reject(OracleCode.SUPPRESSION_INCONSISTENT,
                      "exactly one of price_usd and suppression_reason must be set")
    revised = record.vintage is Vintage.REVISED
    if revised != (record.original_price_usd is not None) or (suppressed and revised):
        return reject(OracleCode.REVISION_WITHOUT_ORIGINAL,
                      "original_price_usd is required on a priced revision and forbidden otherwise")
    if suppressed:
        return (None, None)
    price = check_price(record.price_usd, "price", tick_usd, max_price_usd)  # type: ignore[arg-type]
    if isinstance(price, Rejection):
        return reject(price.code, price.message)
    original = None
    if record.original_price_usd is not None:
        original = check_price(record.original_price_usd, "original price", tick_usd, max_price_usd)
        if isinstance(original, Rejection):
            return reject(original.code, original.message)
    return (price, original)


_DECODER = msgspec.json.Decoder(FixRecord)
_LIST_DECODER = msgspec.json.Decoder(list[FixRecord])
_ENCODER = msgspec.json.Encoder()


def decode_record(payload: bytes | str) -> FixRecord:
    """One JSON object -> ``FixRecord`` (raises ``msgspec.DecodeError`` / ``ValidationError``)."""
    return _DECODER.decode(payload)


def decode_record_list(payload: bytes | str) -> list[FixRecord]:
    return _LIST_DECODER.decode(payload)


def encode_record(record: FixRecord) -> bytes:
    return _ENCODER.encode(record)
