"""Result codes: a stable numbered enum, one range per subsystem.

Ranges (never renumber a published code; add new ones at the end of a range):

| range     | subsystem                          |
|-----------|------------------------------------|
| 0         | ok                                 |
| 1000-1999 | matching and market rules (perp/)  |
| 2000-2999 | risk (risk/)                       |
| 3000-3999 | oracle (oracle/)                   |
| 4000-4999 | gateway (gateway/)                 |
| 5000-5999 | engine / system (journal, replay)  |

Cancel reasons share this table so that one number says why an order left the book.
"""

from __future__ import annotations

from enum import IntEnum


class ResultCode(IntEnum):
    OK = 0

    # matching / market rules
    UNKNOWN_MARKET = 1001
    UNKNOWN_ACCOUNT = 1002
    INVALID_SIDE = 1003
    INVALID_ORDER_TYPE = 1004
    INVALID_TIME_IN_FORCE = 1005
    SIZE_BELOW_MIN = 1006
    SIZE_ABOVE_MAX = 1007
    PRICE_OUT_OF_RANGE = 1008
    PRICE_OUTSIDE_BAND = 1009
    NO_REFERENCE_PRICE = 1010
    POST_ONLY_WOULD_TAKE = 1011
    REDUCE_ONLY_WOULD_INCREASE = 1012
    TOO_MANY_OPEN_ORDERS = 1013
    DUPLICATE_CLIENT_ORDER_ID = 1014
    INVALID_CLIENT_ORDER_ID = 1015
    UNKNOWN_ORDER = 1016
    MISSING_ORDER_REFERENCE = 1017
    MARKET_STATUS_FORBIDS = 1018
    AMEND_NO_CHANGE = 1019
    AMEND_WOULD_CROSS = 1020
    INVALID_STP_MODE = 1021
    INVALID_STATUS = 1022
    INVALID_PRICE = 1023
    TIMESTAMP_REGRESSION = 1024
    UNKNOWN_COMMAND = 1025
    ORDER_POOL_FULL = 1026
    RESERVED_ACCOUNT = 1027  # a venue account (insurance fund, id < 16) named in a trader command
    TIMESTAMP_TOO_FAR_AHEAD = 1028  # beyond the clock's bound: the next funding hour + max_clock_step_s
    INVALID_TIMESTAMP = 1029  # negative, or past the engine's time horizon (2**62 ns)
    ORACLE_REDUCE_ONLY = 1030  # the oracle's gates allow only orders that reduce a position
    INVALID_GAP_MODE = 1031  # clock_gap: unknown settlement mode
    OPERATION_PAUSED = 1032  # an operator paused this operation in the market (set_pauses)
    FUND_DEPOSIT_RETIRED = 1033  # fund_deposit: a fund takes an operator's money only by the audited fund_top_up

    # cancel reasons (carried by `cancelled` events)
    CANCEL_BY_USER = 1101
    CANCEL_ALL_BY_USER = 1102
    CANCEL_IOC_REMAINDER = 1103
    CANCEL_FOK_NOT_FILLED = 1104
    CANCEL_SELF_TRADE = 1105
    CANCEL_REDUCE_ONLY = 1106
    CANCEL_LIQUIDATION = 1107  # open orders of an account entering liquidation

    # engine / system
    JOURNAL_CORRUPT = 5001
    JOURNAL_TORN_TAIL = 5002
    SNAPSHOT_MISMATCH = 5003
    BAD_COMMAND_FORMAT = 5004
    # durable history (journal and snapshots, issue 11): 5010-5039
    JOURNAL_EMPTY = 5010  # a zero-length journal, or none where one is expected (next to a snapshot)
    JOURNAL_HEADER_MISMATCH = 5011  # another schema version or markets config than the engine's
    SNAPSHOT_CORRUPT = 5012  # bad magic, framing or checksum
    SNAPSHOT_HASH_MISMATCH = 5013  # the restored state does not hash to the hash stored with it
    # admin commands (issue 15, perp/admin.py, docs/operations.md): 5100-5149; tier values keep their
    # risk codes (2001-2012), an unknown market its 1001
    ADMIN_INVALID_VALUE = 5101  # a field out of its bounds or against the spec loader's rules; the message names it
    ADMIN_CONFIRM_REQUIRED = 5102  # the what-if is not zero: the change needs confirm=true (the reply carries it)
    ADMIN_BAD_IDENTITY = 5103  # operator or reason empty, too long, or with control characters
    ADMIN_BAD_EFFECTIVE_TIME = 5104  # an effective time before the command's time or too far ahead
    ADMIN_PAYLOAD_MISSING = 5105  # an admin row whose payload (the journal's side record) is unknown
    ADMIN_NO_CHANGE = 5106  # the command changes nothing (every value already in force or pending)


def describe(code: int) -> str:
    """Name of a code for logs and errors, from its subsystem's enum (`UNKNOWN(1234)` if unpublished)."""
    if 2000 <= code < 3000:
        from risk.errors import RiskCode as enum
    elif 3000 <= code < 4000:
        from oracle.errors import OracleCode as enum
    elif 4000 <= code < 5000:
        from gateway.errors import GatewayCode as enum
    else:
        enum = ResultCode
    try:
        return enum(code).name
    except ValueError:
        return f"UNKNOWN({code})"
