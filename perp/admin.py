"""Admin commands: validated, journaled, replayed parameter changes with an audit log (issue 15).

An admin command (perp/commands.py `AdminCommand`) is an ordinary command of the stream: it gets a
sequence number, is journaled and replayed, and passes the gate (the permission table's `admin`
column, always allowed, so an operator can act on a halted market). Its text (operator, reason) and
lists (tiers) travel as a **payload**: the struct's msgpack bytes, written by the journal as a side
record next to the CK_ADMIN row that names it by a 62-bit hash (docs/journal.md).

How one admin row is processed (`Engine`, between kernel batches):

1. `prepare` validates it against the engine's state **before** the command's clock step, with the
   rules of the spec loader (`perp.markets.validate_spec`, `risk.tiers.validate_tiers`,
   `oracle.anchor.validate_config`): the error names the field. The spec a change would put in force
   (or a listing's) is packed into its kernel row here (validate_spec ends with `spec_row`), so a
   value the int64 row cannot hold is refused now (5101), never found when `commit` writes it. A
   refusal is a `rejected` event with its code; nothing changes but the sequence number (as for
   every rejected command), and replaying the journal refuses it the same way.
2. The kernel runs the row's clock step and gate (a CK_ADMIN row, or the kernel command an admin
   command is the audited form of: `set_market_status` -> set_status, `set_fund_floor` ->
   set_insurance_floor; `fund_top_up`'s CK_ADMIN row carries the fund and the amount, and its clock step
   credits the fund -- the only way an operator's money enters a fund: the stream's retired
   `fund_deposit` rows are refused, 1033). If the kernel refuses it, nothing changes.
3. `commit` applies it: parameters in force are `AdminState.specs` (the base spec with every change
   applied) and their kernel rows `st.spec[m]`, `st.tiers[m]`; a change with a later effective time is
   **pending** until the clock reaches it. Every changed field is an `AuditEntry`.

Effective times: funding cap and clamp at the next funding hour (the hour in progress is paid under
the values it started with: the change takes effect right after the command whose clock step pays
that hour); tiers at `effective_ts_ns` (0: the next funding hour), in force for every command at or
after that time (applied before such a command runs; undone if the command is refused); everything
else at the command's own time -- `list_market` too: the engine grows its arrays by one market
(perp.state.grow_markets) and every later command can trade it.

Invariants: the audit log, the pending changes and the specs in force are a pure function of the
command stream (replay rebuilds them exactly); `digest()` covers them and the engine's state hash
includes it; a rejected command changes none of it.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass, field

import msgspec
import numpy as np

from perp import layout as L
from perp.codes import ResultCode
from perp.commands import (
    ADMIN_KINDS,
    AdminCommand,
    FundTopUp,
    ListMarket,
    SetFees,
    SetFundFloor,
    SetFundingParams,
    SetLiquidationParams,
    SetMarketStatus,
    SetOpenInterestCap,
    SetOracleParams,
    SetPauses,
    SetTiers,
    SuppressFix,
)
from perp.markets import MarketSpec, MarketSpecError, clip_text, spec_row, validate_spec
from risk.errors import RiskError
from risk.tiers import LeverageTier, validate_tiers

MAX_OPERATOR_CHARS = 64
MAX_REASON_CHARS = 500
MAX_EFFECTIVE_AHEAD_NS = 31 * 86_400 * 1_000_000_000  # a stated time at most 31 days ahead
PAUSE_BITS = {"trading": L.PAUSE_TRADING, "liquidation": L.PAUSE_LIQUIDATION, "funding": L.PAUSE_FUNDING,
              "withdrawals": L.PAUSE_WITHDRAWALS}
STATUS_NAMES = ("active", "post_only", "cancel_only", "reduce_only", "halted")
ORACLE_FIELDS = ("half_life_s", "max_hourly_move_ppm", "fresh_max_age_s", "stale_after_s")

# admin field -> spec field, per command that changes the spec
FUNDING_FIELDS = {"cap_ppb": "funding_cap_ppb", "clamp_ppb": "funding_clamp_ppb"}
FEE_FIELDS = {"maker_fee_ppm": "maker_fee_ppm", "taker_fee_ppm": "taker_fee_ppm",
              "fee_share_to_fund_ppm": "fee_share_to_fund_ppm"}
LIQUIDATION_FIELDS = {f: f for f in SetLiquidationParams.__struct_fields__ if f not in
                      ("ts_ns", "operator", "reason", "market")}
OI_FIELDS = {"open_interest_cap_lots": "open_interest_cap_lots"}


class AuditEntry(msgspec.Struct, frozen=True):
    """One changed field: who, when, what, old and new value (as strings), why, and when it applies."""

    seq: int
    ts_ns: int
    operator: str
    command: str
    market: str | None
    field: str
    old: str
    new: str
    reason: str
    effective_ts_ns: int


class WhatIf(msgspec.Struct, frozen=True):
    """Accounts (and their notional in the market, at the mark) that a tier change would put under
    maintenance / initial margin and that are not under it now."""

    accounts_below_mm: int
    notional_below_mm_micro: int
    accounts_below_im: int
    notional_below_im_micro: int
    effective_ts_ns: int

    @property
    def hurts(self) -> bool:
        return self.accounts_below_mm > 0 or self.accounts_below_im > 0


class PendingChange(msgspec.Struct, frozen=True):
    """Spec fields (and/or tiers) of one market that take effect at `effective_ts_ns`. `after_step`:
    applied right after the command whose clock step reaches that time (funding: that hour is paid
    under the old values); otherwise before any command at or after it."""

    seq: int
    market: int
    command: str
    effective_ts_ns: int
    after_step: bool
    changes: dict[str, int]
    tiers: tuple[LeverageTier, ...] | None = None


class AdminState(msgspec.Struct):
    """Everything admin commands changed that the kernel arrays do not hold; snapshotted with them."""

    base_config_hash: str  # of the markets config (spec and tier tables) the venue started under
    specs: list[MarketSpec]  # in force
    pending: list[PendingChange] = []
    audit: list[AuditEntry] = []
    oracle: dict[str, dict[str, int]] = {}  # market -> the feed's parameters an operator set (the rest: defaults)
    suppressed: dict[str, list[str]] = {}  # market -> fix dates (YYYY-MM-DD) suppressed by an operator

    def digest(self) -> bytes:
        return hashlib.blake2b(msgspec.msgpack.encode(self), digest_size=32).digest()

    def copy(self) -> AdminState:
        return msgspec.msgpack.decode(msgspec.msgpack.encode(self), type=AdminState)

    def is_pristine(self) -> bool:
        return not (self.pending or self.audit or self.oracle or self.suppressed)

    def next_effective(self, after_step: bool) -> int | None:
        times = [p.effective_ts_ns for p in self.pending if p.after_step == after_step]
        return min(times) if times else None


def encode_admin_state(a: AdminState) -> str:
    return msgspec.json.encode(a).decode()


def decode_admin_state(text: str) -> AdminState:
    return msgspec.json.decode(text, type=AdminState)


@dataclass
class AdminError:
    """Why an admin command was refused: a stable code, the field it names, a clear message."""

    code: int
    field: str
    message: str
    what_if: WhatIf | None = None

    def __str__(self) -> str:
        return f"{ResultCode(self.code).name if self.code in ResultCode._value2member_map_ else self.code} " \
               f"({self.code}) at {self.field}: {self.message}"


class AdminRejected(ValueError):
    """Raised by the engine's admin queries (what_if_tiers) for an invalid input."""

    def __init__(self, error: AdminError):
        super().__init__(str(error))
        self.error = error


@dataclass
class Plan:
    """A validated admin command, ready to apply after the kernel ran its clock step."""

    cmd: AdminCommand
    market: int  # -1: every market / none
    kernel_row: np.ndarray
    entries: list[tuple[str, str, str]] = field(default_factory=list)  # (field, old, new)
    effective_ts_ns: int = 0
    pending: PendingChange | None = None
    spec_changes: dict[str, int] = field(default_factory=dict)  # applied now
    tiers_now: tuple[LeverageTier, ...] | None = None
    pauses: int | None = None  # new PAUSE_* bits
    oracle: dict[str, int] | None = None
    suppressed: list[str] | None = None
    listing: MarketSpec | None = None  # list_market: the new market's spec


# ---- helpers ------------------------------------------------------------------------------------------
def next_funding_hour(spec_rows: np.ndarray, m: int, ts: int) -> int:
    fi = int(spec_rows[m, L.S_FUNDING_INTERVAL_NS])
    return (ts // fi + 1) * fi


def tiers_text(tiers: tuple[LeverageTier, ...]) -> str:
    return json.dumps([msgspec.to_builtins(t) for t in tiers], separators=(",", ":"))


def latest_spec(admin: AdminState, m: int) -> MarketSpec:
    """The spec in force with every pending change of market m applied (what a new change must agree with)."""
    spec = admin.specs[m]
    for p in sorted(admin.pending, key=lambda p: (p.effective_ts_ns, p.seq)):
        if p.market == m:
            spec = _applied(spec, p.changes, p.tiers)
    return spec


def _applied(spec: MarketSpec, changes: dict[str, int], tiers: tuple[LeverageTier, ...] | None) -> MarketSpec:
    kw: dict[str, object] = dict(changes)
    if tiers is not None:
        kw["tier"] = tuple(tiers)
    return msgspec.structs.replace(spec, **kw)


def _err(code: ResultCode | int, field_: str, message: str, what_if: WhatIf | None = None) -> AdminError:
    return AdminError(int(code), field_, message, what_if)


def _identity_error(cmd: AdminCommand) -> AdminError | None:
    for name, limit in (("operator", MAX_OPERATOR_CHARS), ("reason", MAX_REASON_CHARS)):
        text = getattr(cmd, name)
        if not isinstance(text, str) or not text.strip():
            return _err(ResultCode.ADMIN_BAD_IDENTITY, name, f"{name} must not be empty")
        if len(text) > limit:
            return _err(ResultCode.ADMIN_BAD_IDENTITY, name, f"{name} is longer than {limit} characters")
        if not text.isprintable():
            return _err(ResultCode.ADMIN_BAD_IDENTITY, name,
                        f"{name} {clip_text(text)} has control characters")
    return None


def _spec_error(exc: MarketSpecError, fields: dict[str, str]) -> AdminError:
    """The loader's error, naming the command's field it is about (the first one the message names)."""
    text = str(exc)
    for admin_name, spec_name in fields.items():
        if spec_name in text:
            return _err(ResultCode.ADMIN_INVALID_VALUE, admin_name, text)
    return _err(ResultCode.ADMIN_INVALID_VALUE, next(iter(fields), "market"), text)


def _check_spec(spec: MarketSpec, fields: dict[str, str]) -> AdminError | None:
    try:
        validate_spec(spec)
    except MarketSpecError as exc:
        return _spec_error(exc, fields)
    return None


def _kernel_row(ts: int, market: int, key: int, kind: int) -> np.ndarray:
    r = np.zeros(L.N_CMD_COLS, np.int64)
    r[L.C_KIND] = L.CK_ADMIN
    r[L.C_TS] = ts
    r[L.C_MARKET] = market
    r[L.C_ORDER_ID] = key
    r[L.C_CLID] = kind
    return r


# ---- what-if ------------------------------------------------------------------------------------------
def what_if(st, m: int, tiers_table_row: np.ndarray, effective_ts_ns: int) -> WhatIf:
    """How many accounts holding a position in market m, and how much of their notional in m (at the
    mark), the tier table row `tiers_table_row` (MAX_TIERS x N_T_COLS) would put below maintenance /
    initial margin (resting orders at their worst case) that are not below it at the tiers in force.
    Computed with the engine's own margin function (risk.whatif over risk.ledger.account_margin, one
    compiled loop); changes nothing."""
    from risk.whatif import BELOW_IM, BELOW_MM, shortfall_flags

    trial = st.tiers.copy()
    trial[m] = tiers_table_row
    hwm = int(st.g[L.G_ACCOUNT_HWM])
    holders = np.ascontiguousarray(np.nonzero(st.position_lots[:hwm, m])[0], dtype=np.int64)
    flags = np.zeros(holders.shape[0], np.int64)
    shortfall_flags(st, st._replace(tiers=trial), holders, flags)
    k = int(st.spec[m, L.S_MICRO_PER_TICK_LOT])
    mark = int(st.mkt[m, L.M_MARK])
    lots = np.abs(st.position_lots[holders, m])
    below_mm = (flags & BELOW_MM) != 0
    below_im = (flags & BELOW_IM) != 0
    n_mm, n_im = int(below_mm.sum()), int(below_im.sum())
    notional_mm = sum(int(x) for x in lots[below_mm].tolist()) * mark * k  # Python ints: no int64 wrap
    notional_im = sum(int(x) for x in lots[below_im].tolist()) * mark * k
    return WhatIf(n_mm, notional_mm, n_im, notional_im, effective_ts_ns)


def tier_row(symbol: str, tiers) -> np.ndarray:
    """One market's packed tier row (MAX_TIERS x N_T_COLS) from validated tiers."""
    from perp.engine import tier_table

    spec = MarketSpec(symbol=symbol, series="-", tick_size_usd="1", lot_gpu_hours="1", min_price_usd="1",
                      max_price_usd="2", tier=tuple(tiers))
    return tier_table([spec])[0]


def check_tiers(symbol: str, tiers) -> tuple[tuple[LeverageTier, ...] | None, AdminError | None]:
    """Tiers as structs, validated by risk.tiers (the error keeps its risk code and names the tier field)."""
    try:
        tiers = tuple(msgspec.convert(t, LeverageTier) if not isinstance(t, LeverageTier) else t for t in tiers)
    except (msgspec.ValidationError, TypeError) as exc:
        return None, _err(ResultCode.ADMIN_INVALID_VALUE, "tiers", clip_text(str(exc), 160))
    try:
        validate_tiers(symbol, tiers)
    except RiskError as exc:
        where = exc.where.split(".", 1)[1] if "." in exc.where else exc.where
        return None, _err(exc.code, where.replace("tier[", "tiers[", 1), str(exc))
    return tiers, None


def market_tiers(admin: AdminState, m: int, symbol: str,
                 tiers) -> tuple[tuple[LeverageTier, ...] | None, AdminError | None]:
    """Tiers for market m checked as `set_tiers` checks them: risk.tiers' rules (check_tiers), then the
    spec loader's with the market's other fields in force or pending (a first tier below the market's
    `default_leverage` is refused, 5101). `Engine.what_if_tiers` uses the same function, so a what-if
    refuses exactly what the change would."""
    checked, bad = check_tiers(symbol, tiers)
    if bad is not None:
        return None, bad
    bad = _check_spec(_applied(latest_spec(admin, m), {}, checked), {"tiers": "tier"})
    return (None, bad) if bad is not None else (checked, None)


# ---- prepare: validate, and say what would change ------------------------------------------------------
def prepare(engine, cmd: AdminCommand, ts: int, key: int) -> Plan | AdminError:
    """Validate `cmd` at time `ts` against the engine's state (before its clock step). Never raises for
    a value of the command: one the engine's integers cannot hold is refused (5101) like any other bad
    value, the same way live and in a journal's replay, so a journaled command can always be replayed."""
    try:
        return _prepare(engine, cmd, ts, key)
    except (OverflowError, ArithmeticError) as exc:  # a value no bound caught, e.g. beyond int64
        return _err(ResultCode.ADMIN_INVALID_VALUE, _first_value_field(cmd),
                    f"a value cannot be represented in the engine's integers: {clip_text(str(exc), 160)}")


def _first_value_field(cmd: AdminCommand) -> str:
    """The first field of `cmd` that carries a value (not its identity, time or market), for an error."""
    skip = {"ts_ns", "operator", "reason", "market"}
    return next((f for f in cmd.__struct_fields__ if f not in skip and getattr(cmd, f) is not None), "type")


def _prepare(engine, cmd: AdminCommand, ts: int, key: int) -> Plan | AdminError:
    st = engine.state
    admin: AdminState = engine.admin
    bad = _identity_error(cmd)
    if bad is not None:
        return bad
    kind = ADMIN_KINDS[cmd.__struct_config__.tag]
    market_name = getattr(cmd, "market", None)
    m = -1 if market_name is None else engine.encoder.market_index.get(market_name, -2)
    if m == -2:
        return _err(ResultCode.UNKNOWN_MARKET, "market", f"unknown market {clip_text(market_name)}")
    plan = Plan(cmd, m, _kernel_row(ts, m, key, kind), effective_ts_ns=ts)

    if isinstance(cmd, (SetFundingParams, SetOpenInterestCap, SetFees, SetLiquidationParams)):
        fields = {SetFundingParams: FUNDING_FIELDS, SetOpenInterestCap: OI_FIELDS, SetFees: FEE_FIELDS,
                  SetLiquidationParams: LIQUIDATION_FIELDS}[type(cmd)]
        base = latest_spec(admin, m)
        changes = {}
        for admin_name, spec_name in fields.items():
            value = getattr(cmd, admin_name)
            if value is None:
                continue
            old = getattr(base, spec_name)
            if value != old:
                changes[spec_name] = int(value)
                plan.entries.append((admin_name, str(old), str(value)))
        if not changes:
            return _err(ResultCode.ADMIN_NO_CHANGE, next(iter(fields)),
                        f"{', '.join(fields)}: every value given is already the one in force or pending")
        bad = _check_spec(_applied(base, changes, None), fields)
        if bad is not None:
            return bad
        if isinstance(cmd, SetFundingParams):
            plan.effective_ts_ns = next_funding_hour(st.spec, m, ts)
            plan.pending = PendingChange(0, m, "set_funding_params", plan.effective_ts_ns, True, changes)
        else:
            plan.spec_changes = changes
        return plan

    if isinstance(cmd, SetTiers):
        tiers, bad = market_tiers(admin, m, market_name, cmd.tiers)
        if bad is not None:
            return bad
        if tuple(latest_spec(admin, m).tier) == tiers:
            return _err(ResultCode.ADMIN_NO_CHANGE, "tiers", "these tiers are already in force or pending")
        eff = cmd.effective_ts_ns if cmd.effective_ts_ns else next_funding_hour(st.spec, m, ts)
        if eff < ts:
            return _err(ResultCode.ADMIN_BAD_EFFECTIVE_TIME, "effective_ts_ns",
                        f"effective_ts_ns {eff} is before the command's time {ts}")
        if eff - ts > MAX_EFFECTIVE_AHEAD_NS:
            return _err(ResultCode.ADMIN_BAD_EFFECTIVE_TIME, "effective_ts_ns",
                        f"effective_ts_ns {eff} is more than 31 days after the command's time {ts}")
        wi = what_if(st, m, tier_row(market_name, tiers), eff)
        if wi.hurts and not cmd.confirm:
            return _err(ResultCode.ADMIN_CONFIRM_REQUIRED, "confirm",
                        f"{wi.accounts_below_mm} account(s) would fall below maintenance margin and "
                        f"{wi.accounts_below_im} below initial margin at these tiers: send confirm=true to apply",
                        wi)
        plan.effective_ts_ns = eff
        plan.entries.append(("tiers", tiers_text(tuple(admin.specs[m].tier)), tiers_text(tiers)))
        if eff == ts:
            plan.tiers_now = tiers
        else:
            plan.pending = PendingChange(0, m, "set_tiers", eff, False, {}, tiers)
        return plan

    if isinstance(cmd, SetFundFloor):
        if not 0 <= cmd.floor_micro <= L.MAX_DEPOSITS_TOTAL_MICRO:
            return _err(ResultCode.ADMIN_INVALID_VALUE, "floor_micro",
                        f"floor_micro {cmd.floor_micro} must be between 0 and {L.MAX_DEPOSITS_TOTAL_MICRO}")
        olds = {int(st.mkt[i, L.M_INSURANCE_FLOOR_MICRO]) for i in range(st.mkt.shape[0]) if m in (-1, i)}
        if olds == {cmd.floor_micro}:
            return _err(ResultCode.ADMIN_NO_CHANGE, "floor_micro", "the floor is already this value")
        plan.entries.append(("floor_micro", ",".join(str(v) for v in sorted(olds)), str(cmd.floor_micro)))
        r = plan.kernel_row
        r[L.C_KIND] = L.CK_SET_INSURANCE_FLOOR
        r[L.C_SIZE] = cmd.floor_micro
        r[L.C_ORDER_ID] = 0
        r[L.C_CLID] = 0
        return plan

    if isinstance(cmd, FundTopUp):
        if cmd.amount_micro <= 0:
            return _err(ResultCode.ADMIN_INVALID_VALUE, "amount_micro", "amount_micro must be positive")
        funds = {int(f) for f in st.spec[:, L.S_FUND_ACCOUNT]}
        if cmd.account not in funds:
            return _err(ResultCode.ADMIN_INVALID_VALUE, "account",
                        f"account {cmd.account} is no market's insurance fund (funds: {sorted(funds)})")
        old = int(st.collateral_micro[cmd.account])
        plan.entries.append(("fund_cash_micro", str(old), str(old + cmd.amount_micro)))
        r = plan.kernel_row  # CK_ADMIN, kind ADMIN_FUND_TOP_UP: the kernel's clock step credits the fund
        r[L.C_ACCOUNT] = cmd.account
        r[L.C_SIZE] = cmd.amount_micro
        r[L.C_MARKET] = -1
        return plan

    if isinstance(cmd, SetMarketStatus):
        old = STATUS_NAMES[int(st.mkt[m, L.M_STATUS])]
        if old == cmd.status:
            return _err(ResultCode.ADMIN_NO_CHANGE, "status", f"the market is already {old}")
        plan.entries.append(("status", old, cmd.status))
        r = plan.kernel_row
        r[L.C_KIND] = L.CK_SET_STATUS
        r[L.C_FLAGS] = STATUS_NAMES.index(cmd.status)
        r[L.C_ORDER_ID] = 0
        r[L.C_CLID] = 0
        return plan

    if isinstance(cmd, SetPauses):
        bits = 0
        for op in cmd.paused:
            if op not in PAUSE_BITS:
                return _err(ResultCode.ADMIN_INVALID_VALUE, "paused", f"unknown operation {clip_text(op)}")
            bits |= PAUSE_BITS[op]
        olds = sorted({int(st.mkt[i, L.M_PAUSED_OPS]) for i in range(st.mkt.shape[0]) if m in (-1, i)})
        if olds == [bits]:
            return _err(ResultCode.ADMIN_NO_CHANGE, "paused", "these operations are already the ones paused")
        plan.entries.append(("paused", ";".join(pause_names(b) for b in olds), pause_names(bits)))
        plan.pauses = bits
        return plan

    if isinstance(cmd, SetOracleParams):
        from oracle.anchor import AnchorConfig, validate_config
        from oracle.errors import OracleError

        spec = admin.specs[m]
        current = oracle_params(admin, m)
        new = dict(current)
        overrides = dict(admin.oracle.get(spec.symbol, {}))
        for f in ORACLE_FIELDS:
            v = getattr(cmd, f)
            if v is not None and v != current[f]:
                new[f] = overrides[f] = int(v)
                plan.entries.append((f, str(current[f]), str(v)))
        if new == current:
            return _err(ResultCode.ADMIN_NO_CHANGE, "half_life_s", "every value is already the one in force")
        try:
            validate_config(AnchorConfig(series_id=spec.series, tick_size_usd=spec.tick_size_usd, **new))
        except (OracleError, ValueError, OverflowError) as exc:
            text = getattr(exc, "message", str(exc))
            named = next((f for f in ORACLE_FIELDS if f in text and new[f] != current[f]), None)
            named = named or next((f for f in ORACLE_FIELDS if f in text), None) or plan.entries[0][0]
            return _err(ResultCode.ADMIN_INVALID_VALUE, named, f"market {spec.symbol!r}: {text}")
        plan.oracle = overrides
        return plan

    if isinstance(cmd, SuppressFix):
        try:
            day = _dt.date.fromisoformat(cmd.fix_date)
        except (TypeError, ValueError):
            return _err(ResultCode.ADMIN_INVALID_VALUE, "fix_date",
                        f"fix_date {clip_text(cmd.fix_date)} is not a date (YYYY-MM-DD)")
        text = day.isoformat()
        days = list(admin.suppressed.get(market_name, []))
        if cmd.lift:
            if text not in days:
                return _err(ResultCode.ADMIN_NO_CHANGE, "fix_date", f"the fix of {text} is not suppressed")
            days.remove(text)
            plan.entries.append(("suppressed_fix", text, "lifted"))
        else:
            if text in days:
                return _err(ResultCode.ADMIN_NO_CHANGE, "fix_date", f"the fix of {text} is already suppressed")
            days = sorted(days + [text])
            plan.entries.append(("suppressed_fix", "", text))
        plan.suppressed = days
        return plan

    if isinstance(cmd, ListMarket):
        bad = check_listing(engine, cmd.spec)
        if bad is not None:
            return bad
        plan.market = len(admin.specs)  # the index it gets (the kernel row's market stays -1: not listed yet)
        plan.listing = cmd.spec
        plan.entries.append(("spec", "", msgspec.json.encode(cmd.spec).decode()))
        plan.entries.append(("status", "", cmd.status))
        return plan

    return _err(ResultCode.UNKNOWN_COMMAND, "type", f"unsupported admin command {type(cmd).__name__}")


MAX_MARKETS = 64  # a venue lists at most this many markets (every account row has a column per market)
SPEC_FIELDS = tuple(f for f in MarketSpec.__struct_fields__ if f != "tier")


def check_listing(engine, spec: MarketSpec) -> AdminError | None:
    """A new market's spec against the markets file's rules (perp.markets.validate_spec, risk.tiers for its
    tiers) and the venue: a symbol not listed yet, at most MAX_MARKETS markets. The error names the spec's
    field (`spec.insurance_fund_account`, `spec.tier[1].max_leverage`)."""
    if not isinstance(spec, MarketSpec):
        return _err(ResultCode.ADMIN_INVALID_VALUE, "spec", "spec must be a market spec")
    if spec.symbol in engine.encoder.market_index:
        return _err(ResultCode.ADMIN_INVALID_VALUE, "spec.symbol", f"market {clip_text(spec.symbol)} is already listed")
    if len(engine.admin.specs) >= MAX_MARKETS:
        return _err(ResultCode.ADMIN_INVALID_VALUE, "spec", f"the venue already lists {MAX_MARKETS} markets")
    if spec.tier:
        _, bad = check_tiers(spec.symbol, spec.tier)
        if bad is not None:
            return _err(bad.code, "spec." + bad.field.replace("tiers", "tier", 1), bad.message)
    try:
        validate_spec(spec)
    except MarketSpecError as exc:
        text = str(exc)
        after = text.split(": ", 1)[-1]  # the loader's text after "market 'X': " names the field first
        named = min((f for f in (*SPEC_FIELDS, "tier") if f in after), key=lambda f: (after.index(f), -len(f)),
                    default=None)
        return _err(ResultCode.ADMIN_INVALID_VALUE, f"spec.{named}" if named else "spec", text)
    return None


def pause_names(bits: int) -> str:
    return ",".join(name for name, bit in PAUSE_BITS.items() if bits & bit) or "none"


def oracle_params(admin: AdminState, m: int) -> dict[str, int]:
    """The feed's parameters for market m: AnchorConfig's defaults under the operator's overrides."""
    from oracle.anchor import AnchorConfig

    default = AnchorConfig(series_id=admin.specs[m].series)
    values = {f: int(getattr(default, f)) for f in ORACLE_FIELDS}
    values.update(admin.oracle.get(admin.specs[m].symbol, {}))
    return values


# ---- commit: apply after the kernel accepted the clock step -------------------------------------------
def set_spec(engine, m: int, spec: MarketSpec) -> None:
    """Make `spec` the one in force for market m: its kernel row (only the admin-settable columns can
    differ) and its tier row. Both rows are built first, so a spec that cannot be packed raises with
    nothing changed (prepare refuses such a spec, so this does not happen for a committed plan)."""
    from perp.engine import tier_table

    row, tiers = spec_row(spec), tier_table([spec])[0]  # both built before anything is assigned
    engine.admin.specs[m] = spec
    engine.specs[m] = spec
    engine.state.spec[m] = row
    engine.state.tiers[m] = tiers


def commit(engine, plan: Plan, seq: int, ts: int) -> None:
    """Apply a prepared command whose kernel step was accepted; append its audit entries."""
    admin: AdminState = engine.admin
    st = engine.state
    cmd = plan.cmd
    m = plan.market
    if plan.spec_changes or plan.tiers_now is not None:
        set_spec(engine, m, _applied(admin.specs[m], plan.spec_changes, plan.tiers_now))
    if plan.pending is not None:
        admin.pending.append(msgspec.structs.replace(plan.pending, seq=seq))
    if plan.pauses is not None:
        for i in range(st.mkt.shape[0]):
            if m in (-1, i):
                st.mkt[i, L.M_PAUSED_OPS] = plan.pauses
    if plan.oracle is not None:
        admin.oracle[admin.specs[m].symbol] = plan.oracle
    if plan.suppressed is not None:
        sym = admin.specs[m].symbol
        if plan.suppressed:
            admin.suppressed[sym] = plan.suppressed
        else:
            admin.suppressed.pop(sym, None)
    if plan.listing is not None:
        engine.add_market(plan.listing, STATUS_NAMES.index(cmd.status))
    market_name = plan.listing.symbol if plan.listing is not None else getattr(cmd, "market", None)
    command = cmd.__struct_config__.tag
    for f, old, new in plan.entries:
        admin.audit.append(AuditEntry(seq, ts, cmd.operator, command, market_name, f, old, new, cmd.reason,
                                      plan.effective_ts_ns))


def activate(engine, ts: int, after_step: bool) -> list[PendingChange]:
    """Apply (in effective-time, then sequence order) the pending changes of this kind due at `ts`."""
    admin: AdminState = engine.admin
    due = sorted((p for p in admin.pending if p.after_step == after_step and p.effective_ts_ns <= ts),
                 key=lambda p: (p.effective_ts_ns, p.seq))
    if not due:
        return []
    admin.pending = [p for p in admin.pending if p not in due]
    for p in due:
        set_spec(engine, p.market, _applied(admin.specs[p.market], p.changes, p.tiers))
    return due


# ---- views --------------------------------------------------------------------------------------------
PARAM_FIELDS = ("funding_cap_ppb", "funding_clamp_ppb", "funding_interest_ppb", "open_interest_cap_lots",
                "maker_fee_ppm", "taker_fee_ppm", "fee_share_to_fund_ppm", *LIQUIDATION_FIELDS)


def market_params(engine, m: int) -> dict:
    """Parameters in force for market m (spec field names; tiers as a list), the insurance floor, status,
    pauses, the oracle feed's parameters and suppressed fixes, and the pending changes with their
    effective times (`changes` in spec field names)."""
    admin: AdminState = engine.admin
    st = engine.state
    spec = admin.specs[m]
    out: dict = {"market": spec.symbol}
    out.update({f: getattr(spec, f) for f in PARAM_FIELDS})
    out["tiers"] = [msgspec.to_builtins(t) for t in spec.tier]
    out["insurance_floor_micro"] = int(st.mkt[m, L.M_INSURANCE_FLOOR_MICRO])
    out["status"] = STATUS_NAMES[int(st.mkt[m, L.M_STATUS])]
    out["paused"] = [n for n, b in PAUSE_BITS.items() if int(st.mkt[m, L.M_PAUSED_OPS]) & b]
    out["oracle"] = oracle_params(admin, m)
    out["suppressed_fixes"] = list(admin.suppressed.get(spec.symbol, []))
    out["next_funding_ts_ns"] = int(st.mkt[m, L.M_NEXT_FUNDING_TS])
    out["pending"] = [
        {"seq": p.seq, "command": p.command, "effective_ts_ns": p.effective_ts_ns, "changes": dict(p.changes),
         **({"tiers": [msgspec.to_builtins(t) for t in p.tiers]} if p.tiers is not None else {})}
        for p in sorted(admin.pending, key=lambda p: (p.effective_ts_ns, p.seq)) if p.market == m]
    return out
