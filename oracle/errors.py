"""Numbered oracle errors (range 3000-3999) and the rejection record the oracle returns.

Invariants:
- Every code is stable: a code once published is never renumbered or reused for another meaning.
- A rejection changes nothing: a rejected record never moves the anchor, and only the price-class
  codes (3020-3029) for a fix day newer than the series' latest may flag the series' validity (see
  ``oracle.anchor``), which is how risk learns that today's publication was unusable.
- Ranges: 3000-3009 configuration and parsing of operator input, 3010-3019 record structure,
  3020-3029 prices (the estimator reuses them for venue quotes), 3030-3039 ordering and vintages,
  3040-3049 readers and transports.
"""

from __future__ import annotations

from enum import IntEnum

import msgspec


class OracleCode(IntEnum):
    """Stable numeric codes for everything the oracle refuses."""

    BAD_CONFIG = 3001
    BAD_HALF_LIFE = 3002
    BAD_TICK_SIZE = 3003

    MALFORMED_RECORD = 3010
    UNKNOWN_SERIES = 3011
    UNKNOWN_SOURCE = 3012
    STRIKE_OUTSIDE_FIX_DATE = 3013
    PUBLISHED_BEFORE_STRIKE = 3014
    SUPPRESSION_INCONSISTENT = 3015
    REVISION_WITHOUT_ORIGINAL = 3016
    PUBLISHED_TOO_LATE = 3017

    MALFORMED_PRICE = 3020
    NON_FINITE_PRICE = 3021
    NON_POSITIVE_PRICE = 3022
    ABSURD_PRICE = 3023

    OUT_OF_ORDER = 3030
    DUPLICATE = 3031
    CONFLICTING_DUPLICATE = 3032
    REVISION_OF_UNKNOWN_FIX = 3033
    REVISION_ORIGINAL_MISMATCH = 3034
    VINTAGE_REGRESSION = 3035

    CSV_SERIES_MISSING = 3040
    CSV_MALFORMED_ROW = 3041
    STREAM_PAYLOAD_MALFORMED = 3042



#: Codes that say the publisher produced an unusable *price* (not a transport or ordering fault).
PRICE_CODES = frozenset(
    {OracleCode.MALFORMED_PRICE, OracleCode.NON_FINITE_PRICE, OracleCode.NON_POSITIVE_PRICE,
     OracleCode.ABSURD_PRICE}
)


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    """Why one input was refused. ``where`` locates it (file line, stream id, record key)."""

    code: OracleCode
    message: str
    where: str = ""


class OracleError(Exception):
    """Raised for operator errors (bad config, bad CLI input); records are rejected, not raised."""

    def __init__(self, code: OracleCode, message: str) -> None:
        super().__init__(f"[{int(code)} {code.name}] {message}")
        self.code = code
        self.message = message
