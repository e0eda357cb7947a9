"""Gateway result codes: 4000-4899 are definite refusals, 4900-4999 mean "status unknown".

A code in 4000-4899 says the request was refused *before* it reached the journal: nothing was
sequenced, nothing changed. A code in 4900-4999 says the gateway cannot tell whether the command was
made durable (for example the journal write failed half way): the client must query (open orders,
`query.order`) before retrying. Engine rejections (codes 1000-3999 in `perp/codes.py`) travel as
`ENGINE_REJECTED` with the engine's own code in `engine_code`.

The same numbers are used as WebSocket close codes (4000-4999 is the application range of RFC 6455)
when the gateway ends a connection.

Never renumber a published code; add new ones at the end of their block.
"""

from __future__ import annotations

from enum import IntEnum


class GatewayCode(IntEnum):
    # 4000-4099: framing and parsing
    BAD_JSON = 4000
    BAD_REQUEST = 4001  # valid JSON, not a valid request envelope
    UNKNOWN_METHOD = 4002
    BAD_PARAMS = 4003
    UNSUPPORTED_VERSION = 4004
    FRAME_TOO_LARGE = 4005
    BINARY_FRAME = 4006

    # 4100-4199: authentication and permissions
    NOT_LOGGED_IN = 4100
    ALREADY_LOGGED_IN = 4101
    UNKNOWN_KEY = 4102
    KEY_REVOKED = 4103
    BAD_SIGNATURE = 4104
    TIMESTAMP_OUTSIDE_WINDOW = 4105
    NONCE_REUSED = 4106
    PERMISSION_DENIED = 4107
    NOT_YOUR_ORDER = 4108  # an order id or client order id of another account
    LOGON_FAILED_TOO_OFTEN = 4109

    # 4200-4299: validation against the market spec (before the engine)
    UNKNOWN_MARKET = 4200
    PRICE_NOT_ON_TICK_GRID = 4201
    BAD_PRICE = 4202
    SIZE_OUT_OF_RANGE = 4203
    DUPLICATE_CLIENT_ORDER_ID = 4204  # this account already sent this client order id
    BAD_CLIENT_ORDER_ID = 4205
    BATCH_TOO_LARGE = 4206
    BAD_ORDER_REFERENCE = 4207  # neither or both of order_id and client_order_id
    UNKNOWN_CHANNEL = 4208
    BAD_TIMEOUT = 4209
    ACCOUNT_NOT_TRADABLE = 4210  # reserved venue accounts (< 16) never trade through the gateway
    ORDER_NOT_OPEN = 4211  # no open order of this account with that id (never sequenced)

    # 4300-4399: protection
    RATE_LIMITED = 4300
    SLOW_CONSUMER = 4301
    TOO_MANY_SUBSCRIPTIONS = 4302
    TOO_MANY_CONNECTIONS = 4303
    IDLE_TIMEOUT = 4304
    SHUTTING_DOWN = 4305  # the server is draining: not taken, nothing changed
    OVERLOADED = 4306  # the sequencer's queue is full: not taken, nothing changed
    JOURNAL_UNAVAILABLE = 4307  # scaled out: Redis (the journal) is unreachable; not placed, nothing sent

    # 4400-4499: the engine said no (the command was sequenced and rejected; it changed nothing)
    ENGINE_REJECTED = 4400

    # 4900-4999: status unknown -- query before retrying
    STATUS_UNKNOWN_JOURNAL = 4900  # the journal append failed; the command may or may not be durable
    STATUS_UNKNOWN_ENGINE = 4901  # the engine failed after the journal had the command (scaled out: or has
    # not processed it within the gateway's ack timeout)
    STATUS_UNKNOWN_REDIS = 4902  # scaled out: Redis went away with the command sent and not yet seen processed


def is_status_unknown(code: int) -> bool:
    return 4900 <= code <= 4999
