"""The operator's admin API over the gateway, and the `/console` page that uses it (docs/protocol.md, Admin API).

Every `admin.*` method needs a key with the `admin` permission (the server's permission check on
`protocol.METHODS`: a `read` or `trade` key is refused with 4107 before anything runs). This module
owns the methods' parameter structs, registers them in the protocol's method table
(`protocol.register_methods`) and binds their handlers on the `Gateway` (`AdminApi.bind`), so
`gateway/server.py` carries three hooks only: the binding, the page's HTTP route and the
per-batch fund sample.

Queries read engine state **between batches** (`Gateway._when_idle`), so each answer is consistent
with one sequence number (`seq` in every result):

- `admin.overview`: per market the mark, anchor, last usable fix with its vintage and date, the oracle's
  validity and gates,
  the funding rate so far this hour (pro rata, what the hour pays if nothing changes), the full-hour
  rate the samples predict, the cap and clamp in force, open interest, status and the fund's floor.
- `admin.fund_history`: each insurance fund's cash and equity over time (`FundWatch` below) and
  its floor.
- `admin.accounts_at_risk`: accounts nearest to liquidation by margin ratio (maintenance margin /
  equity, ceil, in ppm; liquidation at >= 1,000,000), from the engine's own vectorised risk sweep.
- `admin.market_params`, `admin.audit_log`, `admin.what_if_tiers`: the engine's own views
  (perp/admin.py): parameters in force and pending, the audit log, a tier change's what-if.

Commands (`admin.set_tiers`, `admin.set_funding_params`, `admin.submit` for any other admin command)
are sequenced like orders: journaled with one fsync in a group commit, run by the engine, and
answered from the engine's `admin` event ("accepted at seq, effective at T, pending or in force").
The engine validates them (the spec loader's rules); its refusal travels as 4400 with its code, the
field it names and, for a tier change that needs `confirm`, the what-if (`Engine.rejection(seq)`).

Invariants: no method here changes engine state except by sequencing a journaled command through
the gateway's queue like any order; a refused request (4xxx) sequences nothing. The operator named
in an admin command is the authenticated key (id and label), never a client-supplied string.

Known limits: the fund history is sampled by this process from the engine's arrays after each batch
(cash on every change, equity at most once a second while the fund holds positions) and starts at
the server's start-up state; the full cash ledger by kind comes from the event stream
(`insurance_fund.ledger.fund_history` over `perp replay --events`).
"""

from __future__ import annotations

import collections
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import numpy as np
from msgspec import Meta

from gateway import protocol as P
from perp import layout as L
from gateway.errors import GatewayCode as G
from perp import admin as engine_admin
from perp import events as E
from perp.codes import ResultCode
from perp.commands import VALIDITY_CODES, AdminCommand, SetFundingParams, SetTiers
from perp.markets import ticks_to_price
from risk.funding import rate_from_premium_sum_ppb
from risk.tiers import LeverageTier

if TYPE_CHECKING:
    from gateway.server import Conn, Gateway

CONSOLE_CSP = ("default-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
               "base-uri 'none'; form-action 'none'")
FUND_POINTS = 20_000  # samples kept per fund (the oldest are dropped)
FUND_EQUITY_EVERY_NS = 1_000_000_000  # equity sample period while the fund holds positions
MAX_AT_RISK = 200
DEFAULT_AT_RISK = 20
AT_RISK_REUSE_NS = 1_000_000_000  # one risk sweep a second at most, shared by every console
VALIDITY_NAMES = {code: name for name, code in VALIDITY_CODES.items()}  # the engine's M_VALIDITY codes


# ---- parameters ------------------------------------------------------------------------------
class FundHistoryParams(P._Params):
    fund: Annotated[int, Meta(ge=0, le=15)] | None = None  # None: every fund account of the markets
    since_seq: Annotated[int, Meta(ge=0)] = 0  # only points after this sequence number
    limit: Annotated[int, Meta(ge=1, le=FUND_POINTS)] = 2_000  # the newest points


class AccountsAtRiskParams(P._Params):
    limit: Annotated[int, Meta(ge=1, le=MAX_AT_RISK)] = DEFAULT_AT_RISK


class MarketParams(P._Params):
    market: P.Symbol


class AuditLogParams(P._Params):
    market: P.Symbol | None = None  # None: every entry; otherwise the market's and the venue-wide ones
    since_seq: Annotated[int, Meta(ge=0)] = 0


# Values are checked by the engine (perp/admin.py, the spec loader's rules), so that a refusal names
# its field with the engine's code; here only the JSON types and the text lengths.
Reason = Annotated[str, Meta(max_length=2_000)]
Int64 = Annotated[int, Meta(ge=-(1 << 63), le=(1 << 63) - 1)]


class WhatIfTiersParams(P._Params):
    market: P.Symbol
    tiers: Annotated[list[LeverageTier], Meta(max_length=64)]


class SetTiersParams(P._Params):
    market: P.Symbol
    tiers: Annotated[list[LeverageTier], Meta(max_length=64)]
    reason: Reason
    effective_ts_ns: Int64 = 0  # 0: the next funding hour
    confirm: bool = False  # needed when the what-if is not zero


class SetFundingParamsParams(P._Params):
    market: P.Symbol
    cap_ppb: Int64
    clamp_ppb: Int64
    reason: Reason


class SubmitParams(P._Params):
    """Any admin command of perp/commands.py (`{"type": "set_fees", "market": ..., "reason": ...}`);
    the gateway adds the operator (the key) and the time."""

    command: dict[str, Any]


ADMIN_METHODS: dict[str, tuple[type, str]] = {
    "admin.overview": (P.Empty, "admin"),
    "admin.fund_history": (FundHistoryParams, "admin"),
    "admin.accounts_at_risk": (AccountsAtRiskParams, "admin"),
    "admin.market_params": (MarketParams, "admin"),
    "admin.audit_log": (AuditLogParams, "admin"),
    "admin.what_if_tiers": (WhatIfTiersParams, "admin"),
    "admin.set_tiers": (SetTiersParams, "admin"),
    "admin.set_funding_params": (SetFundingParamsParams, "admin"),
    "admin.submit": (SubmitParams, "admin"),
}
# Public, as venues publish their insurance fund's balance: the same series without a logon.
PUBLIC_METHODS: dict[str, tuple[type, str | None]] = {
    "query.insurance_fund": (FundHistoryParams, None),
}
P.register_methods(ADMIN_METHODS)
P.register_methods(PUBLIC_METHODS)


# ---- results ---------------------------------------------------------------------------------
class MarketOverview(msgspec.Struct, frozen=True):
    market: str
    status: int
    mark: str | None
    index: str | None  # the oracle's anchor
    fix_price: str | None  # the last usable fix the engine holds (margin on the worse of anchor and fix)
    oracle_validity: str
    oracle_gates: int  # GATE_* bits (perp/layout.py)
    funding_so_far_ppb: int  # what the hour pays if nothing changes (pro rata for the samples it has)
    funding_predicted_ppb: int  # the full-hour rate the hour's samples give
    funding_cap_ppb: int
    funding_clamp_ppb: int
    last_funding_rate_ppb: int
    next_funding_ts_ns: int
    funding_frozen: bool
    premium_samples: int
    open_interest_lots: int
    insurance_fund_account: int
    insurance_floor_micro: int
    fix_vintage: str | None = None  # the fix's vintage: provisional / final / revised (None: not given)
    fix_date: str | None = None  # the fix's UTC date, YYYY-MM-DD (None: not given)


class Overview(msgspec.Struct, frozen=True):
    seq: int
    ts_ns: int
    markets: list[MarketOverview]


class FundPoint(msgspec.Struct, frozen=True, array_like=True):
    seq: int
    ts_ns: int
    cash_micro: int
    equity_micro: int


class FundSeries(msgspec.Struct, frozen=True):
    fund: int
    markets: list[str]
    floor_micro: int
    cash_micro: int
    equity_micro: int
    points: list[FundPoint]  # [seq, ts_ns, cash_micro, equity_micro], oldest first


class FundHistoryResult(msgspec.Struct, frozen=True):
    seq: int
    funds: list[FundSeries]


class AtRiskPosition(msgspec.Struct, frozen=True):
    market: str
    lots: int
    liquidation_price: str | None  # None: no price liquidates it (or flat)


class AtRiskAccount(msgspec.Struct, frozen=True):
    account: int
    equity_micro: int
    maintenance_margin_micro: int
    margin_ratio_ppm: int | None  # MM / equity (ceil); None: equity <= 0 (bankrupt)
    positions: list[AtRiskPosition]


class AtRiskResult(msgspec.Struct, frozen=True):
    seq: int
    accounts: list[AtRiskAccount]  # the nearest to liquidation first


class AuditLogResult(msgspec.Struct, frozen=True):
    seq: int
    entries: list[engine_admin.AuditEntry]  # oldest first


class AdminAck(msgspec.Struct, frozen=True):
    """An admin command accepted and applied (the engine's `admin` event): in force from `ts_ns`, or
    `pending` until `effective_ts_ns`; `entries` audit entries were written under `seq`."""

    seq: int
    ts_ns: int
    command: str
    market: str | None
    effective_ts_ns: int
    pending: bool
    entries: int


def admin_error(err: engine_admin.AdminError) -> P.ErrorBody:
    """The engine's refusal of an admin command or query: 4400 with its code, the field it names and,
    for a change that needs confirmation, the what-if."""
    return P.ErrorBody(int(G.ENGINE_REJECTED), err.message, err.code, err.field, err.what_if)


# ---- the fund's history ----------------------------------------------------------------------
class FundWatch:
    """Cash and equity of each insurance fund account over time, sampled from the engine's arrays
    after every batch: a point whenever the fund's cash changed, and at most once a second while it
    holds positions (its equity moves with the marks). O(funds) per batch, no event decoding."""

    def __init__(self, gw: Gateway):
        self.gw = gw
        st = gw.engine.state
        self.funds = sorted({int(f) for f in st.spec[:, L.S_FUND_ACCOUNT]})
        self.points: dict[int, collections.deque[FundPoint]] = {
            f: collections.deque(maxlen=FUND_POINTS) for f in self.funds}
        for f in self.funds:
            self._sample(f, gw.engine.seq, int(st.g[L.G_LAST_TS]))

    def _sample(self, f: int, seq: int, ts_ns: int) -> None:
        view = self.gw.engine.account(f)
        self.points[f].append(FundPoint(seq, ts_ns, int(view.collateral_micro), int(view.equity_micro)))

    def after_batch(self, ts_ns: int) -> None:
        st = self.gw.engine.state
        seq = self.gw.engine.seq
        for f in self.funds:
            last = self.points[f][-1]
            if f >= st.collateral_micro.shape[0]:
                continue
            if int(st.collateral_micro[f]) != last.cash_micro:
                self._sample(f, seq, ts_ns)
            elif ts_ns - last.ts_ns >= FUND_EQUITY_EVERY_NS and st.position_lots[f].any():
                self._sample(f, seq, ts_ns)


# ---- the API ---------------------------------------------------------------------------------
class AdminApi:
    """The `admin.*` handlers of one Gateway (bound as its `_m_admin_*` methods)."""

    def __init__(self, gw: Gateway):
        self.gw = gw
        self.fund_watch = FundWatch(gw)
        self._page: dict[str, tuple[str, bytes]] = {}
        self._at_risk: tuple[int, AtRiskResult, int] | None = None  # (monotonic ns, result, accounts asked)

    @classmethod
    def bind(cls, gw: Gateway) -> AdminApi:
        api = cls(gw)
        for method in ADMIN_METHODS:
            setattr(gw, "_m_" + method.replace(".", "_"), getattr(api, "m_" + method.split(".", 1)[1]))
        gw._m_query_insurance_fund = api.m_fund_history  # the public copy of admin.fund_history
        return api

    # ---- queries -----------------------------------------------------------------------------
    def after_batch(self, ts_ns: int) -> None:
        """The server's per-batch hook (after the engine ran it, before its acks)."""
        self.fund_watch.after_batch(ts_ns)

    def m_overview(self, conn: Conn, rid: int, p: P.Empty, now: int) -> None:
        self.gw._when_idle(lambda: self.gw._reply(conn, rid, self.overview()))

    def overview(self) -> Overview:
        eng = self.gw.engine
        st = eng.state
        out = []
        for m, spec in enumerate(self.gw.specs):
            row = st.mkt[m]
            sp = st.spec[m]
            px = (lambda t, spec=spec: ticks_to_price(spec, int(t)) if int(t) > 0 else None)
            n = int(row[L.M_PREMIUM_N])
            predicted = 0
            if n and int(row[L.M_INDEX]) > 0:
                predicted = int(rate_from_premium_sum_ppb(row[L.M_PREMIUM_SUM_PPB], row[L.M_PREMIUM_N],
                                                          sp[L.S_INTEREST_PPB], sp[L.S_CLAMP_PPB], sp[L.S_CAP_PPB]))
            validity = int(row[L.M_VALIDITY])
            mv = eng.market_view(m)
            out.append(MarketOverview(
                spec.symbol, int(row[L.M_STATUS]), px(eng.mark_ticks(m)), px(eng.index_ticks(m)), px(row[L.M_FIX_TICKS]),
                VALIDITY_NAMES.get(validity, str(validity)),
                int(row[L.M_ORACLE_GATES]), eng.predicted_funding_rate_ppb(m), predicted, int(sp[L.S_CAP_PPB]),
                int(sp[L.S_CLAMP_PPB]), int(row[L.M_LAST_RATE_PPB]), int(row[L.M_NEXT_FUNDING_TS]),
                bool(row[L.M_FUNDING_FROZEN]), n, int(row[L.M_OPEN_INTEREST]), int(sp[L.S_FUND_ACCOUNT]),
                int(row[L.M_INSURANCE_FLOOR_MICRO]), mv.fix_vintage,
                None if mv.fix_date is None else mv.fix_date.isoformat()))
        return Overview(eng.seq, int(st.g[L.G_LAST_TS]), out)

    def m_fund_history(self, conn: Conn, rid: int, p: FundHistoryParams, now: int) -> None:
        self.gw._when_idle(lambda: self.gw._reply(conn, rid, self.fund_history(p)))

    def fund_history(self, p: FundHistoryParams) -> FundHistoryResult | None:
        eng = self.gw.engine
        st = eng.state
        funds = self.fund_watch.funds if p.fund is None else [f for f in self.fund_watch.funds if f == p.fund]
        out = []
        for f in funds:
            markets = [i for i, s in enumerate(self.gw.specs) if s.insurance_fund_account == f]
            pts = [q for q in self.fund_watch.points[f] if q.seq > p.since_seq][-p.limit:]
            view = eng.account(f)
            out.append(FundSeries(f, [self.gw.specs[m].symbol for m in markets],
                                  int(st.mkt[markets[0], L.M_INSURANCE_FLOOR_MICRO]), int(view.collateral_micro),
                                  int(view.equity_micro), pts))
        return FundHistoryResult(eng.seq, out)

    def m_accounts_at_risk(self, conn: Conn, rid: int, p: AccountsAtRiskParams, now: int) -> None:
        self.gw._when_idle(lambda: self.gw._reply(conn, rid, self._at_risk_cached(p.limit, now)))

    def _at_risk_cached(self, limit: int, now_mono_ns: int) -> AtRiskResult:
        """The engine's whole-array risk sweep costs ~1.5 us per account on this machine (75 ms at
        50,000 accounts) and runs between batches, so every console polling it shares one sweep per
        AT_RISK_REUSE_NS, or per engine seq if nothing was sequenced since."""
        if self._at_risk is not None:
            mono_ns, res, n = self._at_risk
            fresh = res.seq == self.gw.engine.seq or now_mono_ns - mono_ns < AT_RISK_REUSE_NS
            if fresh and limit <= n:
                return AtRiskResult(res.seq, res.accounts[:limit])  # consistent with its own seq
        n = max(limit, DEFAULT_AT_RISK)
        res = self.accounts_at_risk(n)
        self._at_risk = (now_mono_ns, res, n)
        return AtRiskResult(res.seq, res.accounts[:limit])

    def accounts_at_risk(self, limit: int) -> AtRiskResult:
        """Accounts holding maintenance margin, the nearest to liquidation first: bankrupt ones
        (equity <= 0) by account id, then by margin ratio descending, ties by account id. Venue
        accounts (< 16) are left out. Ranked in numpy over the engine's risk sweep (the ranking key
        is the float ratio, a display order); the ratios reported are exact integers (ceil)."""
        from gateway.server import RESERVED_ACCOUNTS

        eng = self.gw.engine
        sweep = eng.risk_sweep()
        equity = sweep.equity_micro[RESERVED_ACCOUNTS:]
        maint = sweep.maintenance_micro[RESERVED_ACCOUNTS:]
        held = np.flatnonzero(maint > 0)
        eq = equity[held].astype(np.float64)
        bankrupt = eq <= 0
        ratio = np.where(bankrupt, np.inf, maint[held] / np.where(bankrupt, 1.0, eq))
        order = np.lexsort((held, -ratio))[:limit]  # last key first: ratio descending, then account id
        out = []
        for i in order.tolist():
            a = int(held[i]) + RESERVED_ACCOUNTS
            e, mm = int(sweep.equity_micro[a]), int(sweep.maintenance_micro[a])
            view = eng.account(a)
            out.append(AtRiskAccount(a, e, mm, None if e <= 0 else -(-mm * 1_000_000 // e),
                                     [AtRiskPosition(pv.market, pv.lots, self._price(pv.market, pv.liquidation_price_ticks))
                                      for pv in view.positions if pv.lots]))
        return AtRiskResult(eng.seq, out)

    def _price(self, market: str, ticks: int | None) -> str | None:
        if ticks is None or ticks <= 0:
            return None
        return ticks_to_price(self.gw.specs[self.gw.market_index[market]], ticks)

    # ---- parameters, audit log, what-if --------------------------------------------------------
    def _engine_market(self, conn: Conn, rid: int, market: str) -> bool:
        if market not in self.gw.market_index:
            self.gw._reply(conn, rid, error=P.ErrorBody(int(G.UNKNOWN_MARKET), f"unknown market {market!r}"))
            return False
        return True

    def m_market_params(self, conn: Conn, rid: int, p: MarketParams, now: int) -> None:
        if self._engine_market(conn, rid, p.market):
            self.gw._when_idle(lambda: self.gw._reply(
                conn, rid, {"seq": self.gw.engine.seq, **self.gw.engine.market_params(p.market)}))

    def m_audit_log(self, conn: Conn, rid: int, p: AuditLogParams, now: int) -> None:
        if p.market is not None and not self._engine_market(conn, rid, p.market):
            return

        def go() -> None:
            entries = [e for e in self.gw.engine.audit_log(p.market) if e.seq > p.since_seq]
            self.gw._reply(conn, rid, AuditLogResult(self.gw.engine.seq, entries))

        self.gw._when_idle(go)

    def m_what_if_tiers(self, conn: Conn, rid: int, p: WhatIfTiersParams, now: int) -> None:
        """What the tiers would do to the accounts now (the engine's what_if_tiers: nothing is
        sequenced, nothing changes). Invalid tiers: 4400 with the engine's code and field."""
        if not self._engine_market(conn, rid, p.market):
            return

        def go() -> None:
            try:
                w = self.gw.engine.what_if_tiers(p.market, tuple(p.tiers))
            except engine_admin.AdminRejected as exc:
                self.gw._reply(conn, rid, error=admin_error(exc.error))
                return
            self.gw._reply(conn, rid, w)

        self.gw._when_idle(go)

    # ---- commands ------------------------------------------------------------------------------
    def operator(self, conn: Conn) -> str:
        """The operator an admin command names: the key that signed the logon, and its label."""
        key = conn.key
        label = "".join(ch for ch in key.label if ch.isprintable()).strip()
        text = f"{key.key} ({label})" if label else key.key
        return text[: engine_admin.MAX_OPERATOR_CHARS]

    def m_set_tiers(self, conn: Conn, rid: int, p: SetTiersParams, now: int) -> None:
        self._sequence(conn, rid, now, SetTiers(ts_ns=0, operator=self.operator(conn), reason=p.reason,
                                                market=p.market, tiers=tuple(p.tiers),
                                                effective_ts_ns=p.effective_ts_ns, confirm=p.confirm))

    def m_set_funding_params(self, conn: Conn, rid: int, p: SetFundingParamsParams, now: int) -> None:
        self._sequence(conn, rid, now, SetFundingParams(ts_ns=0, operator=self.operator(conn), reason=p.reason,
                                                        market=p.market, cap_ppb=p.cap_ppb, clamp_ppb=p.clamp_ppb))

    def m_submit(self, conn: Conn, rid: int, p: SubmitParams, now: int) -> None:
        if p.command.get("type") == "fund_deposit":  # retired: one audited path into a fund
            self.gw._reply(conn, rid, error=P.ErrorBody(
                int(G.BAD_PARAMS), "admin.submit: fund_deposit is retired (1033 FUND_DEPOSIT_RETIRED): a fund takes "
                "an operator's money only by fund_top_up (account, amount_micro, reason)",
                engine_code=int(ResultCode.FUND_DEPOSIT_RETIRED), field="type"))
            return
        claimed = sorted({"operator", "ts_ns"} & set(p.command))
        if claimed:
            self.gw._reply(conn, rid, error=P.ErrorBody(int(G.BAD_PARAMS), f"admin.submit: {', '.join(claimed)} "
                                                        "are set by the gateway (the key, its clock)"))
            return
        fields = {**p.command, "operator": self.operator(conn), "ts_ns": 0}
        try:
            cmd = msgspec.convert(fields, AdminCommand)
        except msgspec.ValidationError as exc:
            self.gw._reply(conn, rid, error=P.ErrorBody(int(G.BAD_PARAMS), f"admin.submit: {exc}"))
            return
        self._sequence(conn, rid, now, cmd)

    def _sequence(self, conn: Conn, rid: int, now: int, cmd: Any) -> None:
        """Journal and run one admin command like an order (group commit, fsync, engine batch); the
        reply is the engine's `admin` event, or its refusal with the field and the what-if."""
        from gateway.server import Pending

        market = getattr(cmd, "market", None)
        if market is not None and not self._engine_market(conn, rid, market):
            return
        if (e := self.gw._refuse_commands()) is not None:
            self.gw._reply(conn, rid, error=e)
            return
        try:
            row = self.gw.engine.encoder.row(cmd)
        except Exception as exc:  # noqa: BLE001 - the encoder's refusal of a malformed command
            self.gw._reply(conn, rid, error=P.ErrorBody(int(G.BAD_PARAMS), str(exc)))
            return

        def done(seq: int, evs: list, error: P.ErrorBody | None, result: Any = None, received_ns: int = 0) -> None:
            if error is not None and error.engine_code is not None:
                rejection = self.gw.engine.rejection(seq)
                if rejection is not None:
                    error = admin_error(rejection)
            elif error is None:
                applied = next((e for e in evs if type(e) is E.AdminApplied), None)
                if applied is None:
                    error = P.ErrorBody(int(G.STATUS_UNKNOWN_ENGINE), "the engine reported no outcome")
                else:
                    result = AdminAck(applied.seq, applied.ts_ns, applied.command, applied.market,
                                      applied.effective_ts_ns, applied.pending, applied.entries)
            conn.log.info("admin_command", seq=seq, command=type(cmd).__name__, market=market,
                          code=None if error is None else error.code)
            self.gw._reply(conn, rid, result, error, received_ns)

        self.gw._enqueue(Pending(row, "admin", conn.key.account, done, now))

    # ---- the page ----------------------------------------------------------------------------
    def http(self, connection: Any, request: Any) -> Any:
        """`GET /console` (and its script and style): the operator console, static files shipped
        in gateway/console/. None for any other path."""
        path = request.path.split("?", 1)[0]
        name = {"/console": "index.html", "/console/": "index.html", "/console/console.js": "console.js",
                "/console/console.css": "console.css"}.get(path)
        if name is None:
            return None
        if name not in self._page:
            ctype = {"html": "text/html", "js": "text/javascript", "css": "text/css"}[name.rsplit(".", 1)[1]]
            self._page[name] = (ctype + "; charset=utf-8",
                                resources.files("gateway").joinpath("console", name).read_bytes())
        ctype, body = self._page[name]
        resp = connection.respond(200, body.decode())  # sets Content-Length
        del resp.headers["Content-Type"]  # websockets' Headers is multi-valued: replace, not add
        resp.headers["Content-Type"] = ctype
        resp.headers["Cache-Control"] = "no-store"
        # an operator's page: never framed by another site (clickjacking), scripts and sockets only
        # from this server
        resp.headers["Content-Security-Policy"] = CONSOLE_CSP
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp
