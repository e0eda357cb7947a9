"""Risk result codes (the 2000-2999 range of the project's code table) and the error that carries them.

Ranges inside 2000-2999 (never renumber a published code; add new ones at the end of a range):

| range     | what                                                                  |
|-----------|-----------------------------------------------------------------------|
| 2000-2099 | leverage-tier configuration (`risk.tiers` validation)                 |
| 2100-2199 | account rules the engine applies with `risk` functions (pre-trade,    |
|           | withdrawals, open-interest caps, user leverage)                       |
| 2200-2299 | funding inputs (`risk.funding`)                                       |
| 2300-2399 | integer arithmetic (`risk.intmath` checked operations)                |
"""

from __future__ import annotations

from enum import IntEnum


class RiskCode(IntEnum):
    # leverage tiers (configuration)
    TIER_DECODE = 2001  # TOML or structure does not decode (unknown field, wrong type)
    TIER_EMPTY = 2002  # a market has no tiers
    TIER_TOO_MANY = 2003  # more tiers than MAX_TIERS
    TIER_NOT_POSITIVE = 2004  # a bound, leverage or rate is zero or negative
    TIER_BOUNDS_NOT_INCREASING = 2005  # max_notional_usd does not strictly rise (a gap or overlap)
    TIER_LAST_NOT_OPEN_ENDED = 2006  # the last tier has a bound
    TIER_OPEN_ENDED_NOT_LAST = 2007  # a tier other than the last has no bound
    TIER_LEVERAGE_RISES = 2008  # max_leverage rises as notional rises
    TIER_MAINTENANCE_NOT_BELOW_INITIAL = 2009  # maintenance rate >= initial rate (1 / max_leverage)
    TIER_MAINTENANCE_FALLS = 2010  # maintenance rate falls as notional rises
    TIER_DUPLICATE_MARKET = 2011  # two tables for one market
    TIER_BOUND_TOO_LARGE = 2012  # bound does not fit int64 micro-USD

    # account rules (applied by the engine with risk functions)
    INSUFFICIENT_INITIAL_MARGIN = 2101  # pre-trade: the order would leave equity below initial margin
    WITHDRAWAL_BELOW_INITIAL_MARGIN = 2102
    WITHDRAWAL_ABOVE_WITHDRAWABLE = 2103  # unrealised profit only above the transfer floor
    OPEN_INTEREST_CAP = 2104
    LEVERAGE_ABOVE_TIER_LIMIT = 2105  # user-chosen leverage above the first tier's max leverage
    LEVERAGE_NOT_POSITIVE = 2106
    NON_POSITIVE_AMOUNT = 2107  # deposit / withdrawal of zero or a negative amount
    AMOUNT_TOO_LARGE = 2108  # one deposit or withdrawal above MAX_TRANSFER_MICRO ($1bn)
    # 2150-2159: the gate's arithmetic bounds (perp/gate.py)
    BALANCE_LIMIT = 2150  # a deposit would take a balance or the venue's deposit total past its bound
    POSITION_LIMIT = 2151  # the order could take the position past the market's int64-safe bound

    # funding inputs
    FUNDING_NO_SAMPLES = 2201
    FUNDING_NEGATIVE_BOUND = 2202  # clamp or cap below zero
    FUNDING_NON_INTEGER_SAMPLE = 2203
    FUNDING_BAD_INDEX = 2204  # index price <= 0

    # integer arithmetic
    INT_OVERFLOW = 2301


class RiskError(ValueError):
    """A rejected risk input. `code` is a RiskCode; `where` names the field (and tier index)."""

    def __init__(self, code: RiskCode, where: str, message: str) -> None:
        self.code = code
        self.where = where
        super().__init__(f"{code.name} ({int(code)}) at {where}: {message}")
