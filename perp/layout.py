"""Integer layouts shared by the Python edge and the numba kernels.

Commands and events cross the kernel boundary as rows of an `int64` matrix; the column indices and
enumerations below are the whole contract. Every value is an integer in the unit its name says:
prices in ticks, sizes in lots, money in micro-USD, time in UTC nanoseconds.

Invariants the kernels keep (checked by tests/):
- a command row is processed entirely or not at all (never half-applied);
- every processed command yields at least one event, all carrying the command's sequence number;
- a rejected command changes nothing but the engine clock and sequence number.
"""

from __future__ import annotations

# ---- sides, order types, time in force, flags -------------------------------------------------
BUY = 0
SELL = 1

LIMIT = 0
MARKET = 1

GTC = 0
IOC = 1
FOK = 2
POST_ONLY = 3

FLAG_REDUCE_ONLY = 1
STP_SHIFT = 4  # bits 4-5 of the flags column hold the self-trade-prevention mode
STP_MASK = 3 << STP_SHIFT
STP_CANCEL_NEWEST = 0  # cancel the incoming (taker) order's remainder
STP_CANCEL_OLDEST = 1  # cancel the resting (maker) order and keep matching
STP_CANCEL_BOTH = 2

# ---- market status -----------------------------------------------------------------------------
ST_ACTIVE = 0
ST_POST_ONLY = 1
ST_CANCEL_ONLY = 2
ST_REDUCE_ONLY = 3
ST_HALTED = 4
N_STATUSES = 5

# ---- command rows ------------------------------------------------------------------------------
CK_PLACE = 1
CK_CANCEL = 2
CK_CANCEL_ALL = 3
CK_AMEND = 4
CK_SET_INDEX = 5
CK_SET_STATUS = 6
CK_DEPOSIT = 7  # C_SIZE = amount, micro-USD
CK_WITHDRAW = 8  # C_SIZE = amount, micro-USD
CK_SET_LEVERAGE = 9  # C_SIZE = leverage (whole x)
CK_LIQUIDATE = 10  # timer: the liquidation sweep over every account (liquidation/kernel.py)
CK_SET_INSURANCE_FLOOR = 11  # operator: C_SIZE = the fund's floor, micro-USD
CK_FUND_DEPOSIT = 12  # retired: always refused (1033); a fund's top-up is the admin fund_top_up (ADMIN_FUND_TOP_UP)
CK_CLOCK_GAP = 13  # operator: the venue was down; cross to C_TS, C_FLAGS = GAP_* settlement mode
GAP_NO_FUNDING = 0  # hours with no samples pay nothing (dYdX pads missing samples with zero premium)
CK_ADMIN = 14  # operator: an admin command (perp/admin.py); C_ORDER_ID = its payload key (the journal's side
#               record), C_CLID = its ADMIN_* kind; the kernel runs the clock and the gate, the edge the rest
ADMIN_FUND_TOP_UP = 7  # the CK_ADMIN kind (perp.commands.ADMIN_KINDS) whose kernel row also credits the fund
#                        C_ACCOUNT with C_SIZE micro-USD: the only way money enters a fund from outside

INDEX_FUNDING_FROZEN = 1  # set_index flags bit: the oracle's gates freeze funding for this anchor

# the oracle's gates, as bits of set_index's C_FLAGS and of mkt[m, M_ORACLE_GATES]
GATE_FUNDING_FROZEN = 1  # = INDEX_FUNDING_FROZEN
GATE_MARGIN_WORSE_OF = 2  # pre-trade margin values positions at the worse of anchor and fix
GATE_REDUCE_ONLY = 4  # only orders that reduce a position
GATE_LIQ_THROTTLED = 8  # liquidations take a bounded slice per sweep
GATE_BAND_FROZEN = 16  # the order band stays centred on the last fresh anchor
GATE_ALL = 31

C_KIND = 0
C_TS = 1
C_ACCOUNT = 2
C_MARKET = 3  # -1 = all markets (cancel_all)
C_SIDE = 4  # set_index: the fix's vintage (FIX_VINTAGE_*)
C_TYPE = 5
C_TIF = 6  # set_index: the fix's UTC date as a date ordinal (0 = none)
C_PRICE = 7  # ticks; place: limit price; amend: new price (0 = unchanged); set_index: index
C_SIZE = 8  # lots; place: size; amend: new remaining size (0 = unchanged); set_index: leverage scale ppm
C_CLID = 9  # client order id, 0 = none; set_index: the oracle's validity code
C_ORDER_ID = 10  # engine order id (cancel/amend), 0 = use client order id; set_index: the last usable fix
C_FLAGS = 11  # reduce-only bit, STP mode bits; set_status: the new status; set_index: GATE_* bits
N_CMD_COLS = 12

# ---- event rows --------------------------------------------------------------------------------
EV_ACCEPTED = 1
EV_REJECTED = 2
EV_FILL = 3
EV_CANCELLED = 4
EV_AMENDED = 5
EV_BOOK = 6
EV_INDEX = 7
EV_MARK = 8
EV_STATUS = 9
EV_CANCEL_ALL_DONE = 10
EV_DEPOSIT = 11  # E_SIZE = amount, E_FEE = collateral after
EV_WITHDRAWAL = 12  # E_SIZE = amount, E_FEE = collateral after
EV_LEVERAGE = 13  # E_SIZE = leverage
EV_FUNDING = 14  # per market and hour: E_PRICE = index, E_FEE = rate ppb, E_SIZE = paid by payers,
#                  E_REMAINING = premium samples, E_OTHER = rounding remainder to the insurance fund,
#                  E_CODE = 1 if frozen
EV_LIQUIDATION = 15  # one step of the waterfall; E_CODE = LQ_* phase (docs/liquidation.md)
EV_INSURANCE_FLOOR = 16  # E_SIZE = the new floor
EV_FUND_DEPOSIT = 17  # operator top-up of a fund: E_ACCOUNT = the fund, E_SIZE = amount, E_FEE = its cash after
EV_CLOCK_GAP = 18  # the clock crossed a gap: E_SIZE = funding hours skipped (paid nothing), E_OTHER = the old clock
EV_ADMIN = 19  # an admin command applied (perp/admin.py): E_CLID = its ADMIN_* kind, E_ORDER_ID = payload key,
#               E_PRICE = effective time (ns), E_CODE = 1 if pending (effective later), E_SIZE = audit entries
EV_ADMIN_EFFECTIVE = 20  # pending admin changes took effect: E_ORDER_ID = the seq of the command that made
#                          them, E_PRICE = their effective time, E_CLID = its ADMIN_* kind

LQ_STARTED = 1  # E_FEE = equity, E_OTHER = maintenance margin
LQ_ORDER = 2  # a liquidation order through the book: E_SIZE = lots asked, E_REMAINING = lots filled,
#               E_PRICE = its limit (the bankruptcy price, or a chunk's restoring price), E_ORDER_ID = its
#               order id, E_CLID = the mark it was sized at
LQ_FEE = 3  # E_FEE = liquidation fee paid to the insurance fund, E_SIZE = the lots it was charged on
LQ_BACKSTOP = 4  # E_SIZE = lots the fund took over at E_PRICE (the mark, or the bankruptcy price of an insolvent account), E_FEE = the fund's
#                  loss at the mark (negative: a gain), E_OTHER = the fund's equity after
LQ_ADL = 5  # E_ACCOUNT = the deleveraged counterparty, E_SIZE lots at E_PRICE, E_FEE = its ADL rank,
#             E_OTHER = the bankrupt account, E_REMAINING = lots still to absorb after this one,
#             E_CLID = its haircut: what it gave up against the mark (issue 10)
LQ_BAD_DEBT = 6  # a flat account's debt settled: E_FEE = paid by the fund, E_REMAINING = the whole debt,
#                  E_OTHER = the part socialised over winners (LQ_SOCIALISED), E_CLID = the fund's equity after
LQ_DONE = 7  # E_FEE = equity after, E_OTHER = maintenance margin after
LQ_SWEEP = 8  # per sweep: E_SIZE = accounts liquidated, E_REMAINING = accounts checked, E_OTHER = accounts
#               selected, E_FEE = flat debts settled, E_CLID = positions left waiting (deferred, rate-limited)
LQ_FUND_BELOW_FLOOR = 9  # the fund below its floor, always with its equity in E_OTHER and the floor in
#                          E_REMAINING: it took E_SIZE lots at E_PRICE with no solvent counterparty left
#                          (E_FEE = the loss at the mark), paid a debt nobody else could (E_SIZE = 0,
#                          E_FEE = the amount), or a sweep found it below its floor (E_ACCOUNT = the
#                          fund, E_SIZE = its position, deleveraged next)
LQ_ADL_START = 10  # E_SIZE = lots to deleverage at E_PRICE, E_FEE = the fund's equity, E_OTHER = its floor,
#                    E_REMAINING = the bankrupt account's equity before
# issue 10 (a solvent waterfall; docs/liquidation.md "Events"). E_CLID carries one more number where said.
LQ_FUND_TAKEOVER = 11  # the fund's side of a takeover: E_ACCOUNT = the fund, E_SIZE lots at E_PRICE, E_FEE = the
#                        fund's equity after (at the marks), E_REMAINING = its maintenance margin after,
#                        E_OTHER = the liquidated account, E_CLID = the market's floor
LQ_FUND_UNWIND = 12  # the fund closes backstop positions through the book: E_ACCOUNT = the fund, E_ORDER_ID,
#                      E_SIDE, E_PRICE = the order's limit, E_SIZE = lots asked, E_REMAINING = lots filled,
#                      E_FEE = the fund's equity after, E_OTHER = its position after, E_CLID = the floor
LQ_DEFERRED = 13  # the market's status defers liquidation: E_SIZE = unhealthy positions waiting in it,
#                   E_OTHER = the market status, E_FEE = the fund's equity
LQ_RATE_LIMITED = 14  # a limit bound: E_ACCOUNT = the account (-1: the fund's unwind), E_SIZE = lots that wait
#                       (or go on down the waterfall, E_OTHER = 3), E_FEE = the budget left, micro-USD,
#                       E_OTHER = which limit (RL_*), E_REMAINING = 1 if the oracle's throttle gate is on
LQ_SOCIALISED = 15  # flat accounts' debts (pooled per market and sweep) charged to a winner: E_ACCOUNT = the
#                     winner, E_FEE = its charge, E_OTHER = -1 (pooled), E_REMAINING = its unrealised profit before
# which limit a LQ_RATE_LIMITED event names (E_OTHER)
RL_SWEEP_NOTIONAL = 1
RL_MINUTE_NOTIONAL = 2
RL_INSURANCE_LOSS = 3
RL_UNWIND_PACE = 4

E_KIND = 0
E_SEQ = 1
E_TS = 2
E_MARKET = 3
E_ACCOUNT = 4
E_ORDER_ID = 5
E_CLID = 6
E_SIDE = 7
E_PRICE = 8  # ticks
E_SIZE = 9  # lots: accepted size, fill size, cancelled size, book level total
E_REMAINING = 10  # lots left on the order after a fill; order count for book events
E_FEE = 11  # micro-USD (fills); mark events: the basis EMA in micro-ticks; index events: M_FIX_VINTAGE_DATE
E_CODE = 12  # rejection / cancel reason; fills: 1 = maker, 2 = taker; amend: 1 = kept priority
E_OTHER = 13  # fills: counterparty order id; rejects: the command kind; accepted: type*16+tif
N_EV_COLS = 14

LIQ_MAKER = 1
LIQ_TAKER = 2

# ---- market table (state, one row per market) ----------------------------------------------------
M_STATUS = 0
M_BEST_BID = 1  # ticks, NO_PRICE when that side is empty
M_BEST_ASK = 2
M_INDEX = 3  # ticks, 0 until the first set_index
M_MARK = 4  # ticks, 0 until there is an index
M_BASIS_EMA_UT = 5  # EMA of (impact mid - index), micro-ticks
M_NEXT_SAMPLE_TS = 6  # ns; 0 = not started
M_N_BID_ORDERS = 7
M_N_ASK_ORDERS = 8
M_OPEN_INTEREST = 9  # lots held long (= lots held short)
M_PREMIUM_SUM_PPB = 10  # premium samples of the current funding hour
M_PREMIUM_N = 11
M_FROZEN_N = 12  # samples taken while funding was frozen
M_NEXT_PREMIUM_TS = 13
M_NEXT_FUNDING_TS = 14
M_LAST_RATE_PPB = 15
M_FUNDING_FROZEN = 16  # 1 while the current anchor's gates freeze funding
M_INSURANCE_FLOOR_MICRO = 17  # below this equity the market's fund takes no more losses: ADL
# the oracle's gates for this market, set by every set_index (perp/gate.py applies them)
M_ORACLE_GATES = 18  # GATE_* bits
M_LEVERAGE_SCALE_PPM = 19  # the oracle's leverage scale for new risk (1e6 = none; 0 until the first index)
M_BAND_ANCHOR = 20  # ticks: centre of the order band while GATE_BAND_FROZEN (the last fresh anchor)
M_FIX_TICKS = 21  # ticks: the last usable fix (margin on the worse of anchor and fix); 0 = none
M_VALIDITY = 22  # the oracle's validity code (oracle.validity order: 0 = fresh)
M_PAUSED_OPS = 23  # PAUSE_* bits: operations an operator paused in this market (set_pauses)
# 24-31: the liquidation waterfall's per-market state (rate-limit windows, fund unwind)
M_LIQ_WINDOW_START_NS = 24  # start of the current one-minute rate-limit window (UTC minute grid; 0 = none)
M_LIQ_WINDOW_NOTIONAL_MICRO = 25  # notional liquidated in the window (at the mark)
M_LIQ_WINDOW_FUND_LOSS_MICRO = 26  # the fund's losses in the window (takeovers at the mark, bad debt)
M_LIQ_SWEEP_NOTIONAL_MICRO = 27  # notional liquidated by the last sweep (reset at each sweep's start)
M_FUND_UNWIND_WINDOW_START_NS = 28  # start of the fund-unwind pace window (UTC minute grid)
M_FUND_UNWIND_WINDOW_MICRO = 29  # notional the fund unwound in that window
M_LIQ_WAITING = 30  # unhealthy positions the last sweep left waiting (deferred or rate-limited)
# the last usable fix's vintage and UTC date, set by every set_index: FIX_DAY_SHIFT bits of vintage code
# (FIX_VINTAGE_*) under the date's proleptic Gregorian ordinal (datetime.date.toordinal; 0 = no date)
M_FIX_VINTAGE_DATE = 31
N_MKT_COLS = 32

NO_PRICE = -1

# the fix's vintage (set_index's C_SIDE, the low FIX_DAY_SHIFT bits of mkt[m, M_FIX_VINTAGE_DATE])
FIX_VINTAGE_NONE = 0
FIX_VINTAGE_PROVISIONAL = 1
FIX_VINTAGE_FINAL = 2
FIX_VINTAGE_REVISED = 3
FIX_DAY_SHIFT = 2
MAX_FIX_DAY = 3_652_059  # datetime.date.max.toordinal(): set_index's C_TIF is the fix date's ordinal

# per-operation pauses (mkt[m, M_PAUSED_OPS]), as Drift has
PAUSE_TRADING = 1  # no place or amend (cancels always pass)
PAUSE_LIQUIDATION = 2  # the sweep defers this market
PAUSE_FUNDING = 4  # premium samples count as frozen: the hour pays nothing for them
PAUSE_WITHDRAWALS = 8  # no withdrawal by an account holding a position or orders here
PAUSE_ALL = 15

# ---- market spec table (config, one row per market) --------------------------------------------
S_MIN_TICK = 0  # lowest price on the ladder, ticks (>= 1)
S_MAX_TICK = 1
S_MIN_SIZE = 2
S_MAX_SIZE = 3
S_BAND_BPS = 4  # limit orders must be within this many bps of the mark
S_PROTECT_BPS = 5  # market orders never fill beyond mark +- this many bps
S_MAKER_FEE_PPM = 6
S_TAKER_FEE_PPM = 7
S_MAX_OPEN_ORDERS = 8  # per account, per market
S_MICRO_PER_TICK_LOT = 9  # micro-USD of notional per tick per lot (exact integer)
S_IMPACT_TICK_LOTS = 10  # impact notional in tick-lots (micro-USD / micro_per_tick_lot, rounded up)
S_SAMPLE_NS = 11  # mark basis sampling interval
S_ALPHA_PPM = 12  # EMA weight of each basis sample, parts per million
S_MARK_BAND_BPS = 13  # the basis term of the mark is bounded to +- this around the index
S_OI_CAP_LOTS = 14  # the open-interest cap in force, > 0 (perp.markets.open_interest_cap_in_force)
S_PREMIUM_SAMPLE_NS = 15
S_FUNDING_INTERVAL_NS = 16
S_INTEREST_PPB = 17  # per funding interval
S_CLAMP_PPB = 18
S_CAP_PPB = 19
S_DEFAULT_LEVERAGE = 20
S_WITHDRAW_FLOOR_PPM = 21  # unrealised profit withdrawable only above this share of notional
S_FEE_SHARE_TO_FUND_PPM = 22  # share of each positive trading fee credited to the insurance fund
S_LIQ_FEE_SHARE_PPM = 23  # liquidation fee: this share of the closed part's maintenance margin
S_LIQ_PARTIAL_ABOVE_MICRO = 24  # positions above this notional are liquidated in chunks
S_LIQ_CHUNK_PPM = 25  # the smallest chunk, as a share of the position
S_LIQ_COOLDOWN_NS = 26  # between chunks of one account's position
S_LIQ_BUFFER_PPM = 27  # a chunk restores equity >= MM x (1 + buffer)
S_FUND_ACCOUNT = 28  # the account that is this market's insurance fund (shared when equal)
# 29-38: the liquidation waterfall's limits (fee cap, rate limits, fund unwind policy); a limit of 0 = none
S_LIQ_MAX_FEE_PPM = 29  # the liquidation fee is at most this share of the closed notional (at the mark)
S_LIQ_MAX_SWEEP_MICRO = 30  # notional liquidated per sweep and market
S_LIQ_MAX_MINUTE_MICRO = 31  # notional liquidated per UTC minute and market
S_LIQ_MAX_FUND_LOSS_MINUTE_MICRO = 32  # the fund's losses per UTC minute and market (beyond: ADL)
S_LIQ_THROTTLE_PPM = 33  # the limits above are scaled by this while the oracle's throttle gate is on
S_FUND_UNWIND_CHUNK_MICRO = 34  # the fund's unwind order: at most this notional (0: no unwind)
S_FUND_UNWIND_LIMIT_BPS = 35  # ...limited at mark -+ this many bps
S_FUND_UNWIND_MINUTE_MICRO = 36  # ...and at most this notional per UTC minute
S_LIQ_RESERVED_37 = 37
S_LIQ_RESERVED_38 = 38
# 39-44: the gate's limits
S_MAX_CLOCK_STEP_NS = 39  # a command more than this beyond the next funding hour is rejected
S_MAX_POSITION_LOTS = 40  # int64 headroom: no worst-case position beyond this (derived at load)
N_SPEC_COLS = 45

# ---- per account and market: acct_mkt[account, market, AM_*] ------------------------------------
AM_LEVERAGE = 0  # user-chosen leverage (0 = the market's default)
AM_OPEN_BUY_LOTS = 1  # resting buy lots
AM_OPEN_SELL_LOTS = 2
AM_REALIZED_PNL_MICRO = 3  # cumulative
AM_FEES_MICRO = 4  # cumulative, paid (+) / rebated (-)
AM_FUNDING_MICRO = 5  # cumulative, received (+) / paid (-)
AM_LIQ_COOLDOWN_TS = 6  # no new liquidation chunk before this time (unless bankrupt)
AM_LIQ_FLAG = 7  # the sweep's mark: its seq when ADL took this position to its solvency limit (skipped for the
#                 rest of that sweep); market 0's row holds a flat debtor's fund payment during a sweep (0 after)
N_AM_COLS = 8

# ---- leverage tiers: tiers[market, tier, T_*] ------------------------------------------------------
T_BOUND_MICRO = 0
T_IMR_PPM = 1
T_MMR_PPM = 2
T_MM_DEDUCTION_MICRO = 3
N_T_COLS = 4

# ---- order pool: one int64 row per slot --------------------------------------------------------
O_ID = 0
O_ACCOUNT = 1
O_CLID = 2
O_MARKET = 3
O_SIDE = 4
O_PRICE = 5
O_REM = 6  # remaining lots
O_FLAGS = 7
O_LIVE = 8  # 1 while the slot holds a resting order
O_PREV = 9  # FIFO links within the price level (-1 = none)
O_NEXT = 10
O_APREV = 11  # links in the account's order list (-1 = none)
O_ANEXT = 12
O_FREE = 13  # not a field of the slot: row k of this column is entry k of the free-slot stack
N_ORDER_COLS = 14

# ---- price levels: levels[market, side, price - min_tick, LV_*] ---------------------------------
LV_HEAD = 0
LV_TAIL = 1
LV_QTY = 2
LV_COUNT = 3
N_LEVEL_COLS = 4

# ---- accounts: accounts[account, AC_*]; open orders of market m at column AC_OPEN + m -------------
AC_HEAD = 0  # newest open order (-1 = none)
AC_OPEN = 1

# ---- hash maps: maps[MAP_*, cell, 0] = key, maps[MAP_*, cell, 1] = slot -------------------------
MAP_ORDER_ID = 0
MAP_CLID = 1

# ---- globals -----------------------------------------------------------------------------------
G_NEXT_ORDER_ID = 0
G_FREE_TOP = 1  # number of free slots on the free-slot stack
G_LAST_TS = 2
G_SEQ = 3  # sequence number of the last processed command
G_NEED_EVENTS = 4  # set by the kernel when it stopped for lack of event space
G_ACCOUNT_HWM = 5  # 1 + highest account id that ever held an order, position or collateral
# (slot 6 is unused)
G_FEE_LEDGER_MICRO = 7  # venue fee ledger
G_DEPOSITS_MICRO = 8  # all deposits ever
G_WITHDRAWALS_MICRO = 9  # all withdrawals ever
G_ADL_KEY = 10  # scratch of the liquidation sweep: which ADL queue adl_scratch holds (0: none)
G_ADL_LEN = 11
G_ADL_HEAD = 12
G_UNDO_LAST_TS = 13  # scratch: the clock before this command's advance (restored if it is rejected)
G_SCRATCH = 16  # scratch space for kernels (not state): 2 x 64 slots
N_SCRATCH = 128
N_GLOBALS = G_SCRATCH + N_SCRATCH

# ---- identifiers -------------------------------------------------------------------------------
FUND_ACCOUNT = 0  # the default insurance fund account (a market's spec may name its own)
CLID_BITS = 40
MAX_CLIENT_ORDER_ID = (1 << CLID_BITS) - 1
MAX_ACCOUNT_ID = (1 << 22) - 1
MAX_TS_NS = (1 << 62) - 1  # the engine's time horizon (year 2116)
MAX_DEPOSITS_TOTAL_MICRO = 1 << 62  # all deposits ever, venue-wide: keeps every money sum inside int64
EMPTY_KEY = -1  # hash-map empty slot
