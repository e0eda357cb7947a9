"""The engine state machine: command rows in, event rows out, deterministic.

`Engine` owns an `EngineState` and feeds it to `kernel.process_batch` in batches. Between batches
(never inside one) it grows the order pool and the account tables when a batch could need more;
growth does not change the logical state hash. It reads no clock: time is each command's `ts_ns`.

Invariant: the same command rows, in the same order, from the same state give the same events and
the same `state_hash()`, whatever the batch sizes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from perp import layout as L
from perp import state as S
from perp.client_ids import SNAPSHOT_KEY as CLIDS_KEY
from perp.client_ids import UsedClientOrderIds
from perp.commands import Command, CommandEncoder
from perp.events import Event, decode_rows
from perp.kernel import new_event_buffer, process_batch
from perp.markets import (
    MarketsConfig,
    MarketSpec,
    MarketSpecError,
    load_markets,
    spec_row,
    tier_schedule,
)
from risk.tiers import MAX_TIERS, TierSchedule, pack_tiers


def tier_table(specs: Sequence[MarketSpec], tiers: Mapping[str, TierSchedule] | None = None) -> np.ndarray:
    """Leverage tiers of each market packed as `tiers[market, tier, T_*]`: each spec's own
    `[[market.tier]]` rows, unless `tiers` (by symbol) replaces them."""
    schedules = {s.symbol: tier_schedule(s) for s in specs}
    if tiers is not None:
        missing = [s.symbol for s in specs if s.symbol not in tiers]
        if missing:
            raise MarketSpecError(f"no leverage tiers for market(s) {', '.join(missing)}")
        schedules = dict(tiers)
    packed = pack_tiers([schedules[s.symbol] for s in specs])
    out = np.zeros((len(specs), MAX_TIERS, L.N_T_COLS), np.int64)
    out[:, :, L.T_BOUND_MICRO] = packed.bound_micro
    out[:, :, L.T_IMR_PPM] = packed.imr_ppm
    out[:, :, L.T_MMR_PPM] = packed.mmr_ppm
    out[:, :, L.T_MM_DEDUCTION_MICRO] = packed.mm_deduction_micro
    return out


class Engine:
    def __init__(self, markets: MarketsConfig | None = None, *, tiers: Mapping[str, TierSchedule] | None = None,
                 order_capacity: int = 1 << 14, account_capacity: int = 1 << 10, event_rows: int = 1 << 16,
                 state: S.EngineState | None = None, client_order_ids: UsedClientOrderIds | None = None,
                 client_order_ids_from_seq: int = 0):
        """A fresh engine, or (with `state`) one around a restored state whose spec table must be
        the one `markets` gives; the tiers then come from the state. `client_order_ids` are the
        ids used up to the state's seq (perp.client_ids); `client_order_ids_from_seq` > 0 says they
        are only known after that seq (a snapshot written before they were kept)."""
        self.markets = markets if markets is not None else load_markets()
        self.specs = list(self.markets.market)
        self.encoder = CommandEncoder(self.markets)
        rows = np.stack([spec_row(s) for s in self.specs])
        if state is None:
            state = S.new_state(rows, tier_table(self.specs, tiers), order_capacity, account_capacity)
        elif not np.array_equal(rows, state.spec):
            raise ValueError("snapshot spec table does not match its markets config")
        self.state = state
        self._ev = new_event_buffer(event_rows)
        self.client_order_ids = client_order_ids if client_order_ids is not None else UsedClientOrderIds()
        self.client_order_ids_from_seq = client_order_ids_from_seq

    # ---- capacity ----------------------------------------------------------------------------
    def _ensure_capacity(self, cmds: np.ndarray) -> None:
        st = self.state
        need_free = int((cmds[:, L.C_KIND] == L.CK_PLACE).sum())
        if int(st.g[L.G_FREE_TOP]) < need_free:
            cap = S.order_capacity(st)
            live = cap - int(st.g[L.G_FREE_TOP])
            while cap - live < need_free:
                cap *= 2
            st = S.grow_orders(st, cap)
        accounts = cmds[:, L.C_ACCOUNT]
        accounts = accounts[accounts <= L.MAX_ACCOUNT_ID]
        if accounts.size:
            max_acct = int(accounts.max())
            if max_acct >= S.account_capacity(st):
                cap = S.account_capacity(st)
                while cap <= max_acct:
                    cap *= 2
                st = S.grow_accounts(st, cap)
        self.state = st

    # ---- processing --------------------------------------------------------------------------
    def submit_rows(self, cmds: np.ndarray, batch: int = 4096, kernel_ns: list[int] | None = None) -> np.ndarray:
        """Process command rows; returns all event rows (a copy). With `kernel_ns`, the time spent in
        the kernel for each batch is appended to it (capacity growth and event copies excluded)."""
        out: list[np.ndarray] = []
        self.stream_rows(cmds, lambda ev: out.append(ev.copy()), batch, kernel_ns)
        if not out:
            return new_event_buffer(0)
        return out[0] if len(out) == 1 else np.concatenate(out)

    def stream_rows(self, cmds: np.ndarray, on_events: Callable[[np.ndarray], object], batch: int = 4096,
                    kernel_ns: list[int] | None = None) -> None:
        """Process command rows, handing each kernel call's events to `on_events` as a view of the
        engine's event buffer: valid only until `on_events` returns (copy what you keep). No copy
        is made otherwise -- the publisher's path."""
        cmds = np.ascontiguousarray(cmds, dtype=np.int64)
        for start in range(0, cmds.shape[0], batch):
            chunk = cmds[start:start + batch]
            self._ensure_capacity(chunk)
            self.client_order_ids.add_rows(chunk)
            done = 0
            spent = 0
            while done < chunk.shape[0]:
                t0 = time.perf_counter_ns()
                k, n = process_batch(self.state, chunk[done:], self._ev, 0)
                spent += time.perf_counter_ns() - t0
                if n:
                    on_events(self._ev[:n])
                done += k
                if k == 0:
                    need = int(self.state.g[L.G_NEED_EVENTS])
                    rows = self._ev.shape[0]
                    while rows < need:
                        rows *= 2
                    self._ev = new_event_buffer(rows)
            if kernel_ns is not None:
                kernel_ns.append(spent)

    def submit(self, commands: Iterable[Command]) -> list[Event]:
        rows = self.encode(commands)
        return list(decode_rows(self.submit_rows(rows), self.specs))

    def encode(self, commands: Iterable[Command]) -> np.ndarray:
        rows = [self.encoder.row(c) for c in commands]
        if not rows:
            return np.zeros((0, L.N_CMD_COLS), np.int64)
        return np.stack(rows)

    def decode(self, event_rows: np.ndarray) -> list[Event]:
        return list(decode_rows(event_rows, self.specs))

    # ---- state -------------------------------------------------------------------------------
    @property
    def seq(self) -> int:
        return int(self.state.g[L.G_SEQ])

    def state_hash(self, include_clock: bool = True) -> str:
        return S.state_hash(self.state, include_clock)

    def market_index(self, symbol: str) -> int:
        return self.encoder.market_index[symbol]

    def snapshot(self, path: str | Path, meta: Mapping[str, str] | None = None) -> None:
        """The state arrays (tiers included), the markets config and the used client order ids,
        plus the caller's `meta`, written atomically (perp.state.save_snapshot)."""
        S.save_snapshot(self.state, path, {"markets": _markets_json(self.markets),
                                           CLIDS_KEY: self.client_order_ids.to_text(), **(meta or {})})

    @classmethod
    def from_snapshot(cls, path: str | Path) -> Engine:
        st, meta = S.load_snapshot(path)
        return cls.from_state(st, meta)

    @classmethod
    def from_state(cls, st: S.EngineState, meta: Mapping[str, str]) -> Engine:
        """The engine of a loaded snapshot (`perp.state.load_snapshot`'s state and metadata)."""
        import msgspec

        markets = msgspec.json.decode(meta["markets"], type=MarketsConfig)
        if CLIDS_KEY in meta:
            return cls(markets, state=st, client_order_ids=UsedClientOrderIds.from_text(meta[CLIDS_KEY]))
        return cls(markets, state=st, client_order_ids_from_seq=int(st.g[L.G_SEQ]))

    # ---- views (read-only, for the CLI, gateway and tests) --------------------------------------
    def best_bid_ask(self, market: int) -> tuple[int | None, int | None]:
        row = self.state.mkt[market]
        bid, ask = int(row[L.M_BEST_BID]), int(row[L.M_BEST_ASK])
        return (None if bid == L.NO_PRICE else bid, None if ask == L.NO_PRICE else ask)

    def mark_ticks(self, market: int) -> int:
        return int(self.state.mkt[market, L.M_MARK])

    def index_ticks(self, market: int) -> int:
        return int(self.state.mkt[market, L.M_INDEX])

    def position_lots(self, account: int, market: int) -> int:
        if account >= S.account_capacity(self.state):
            return 0
        return int(self.state.position_lots[account, market])

    def account(self, account: int):
        """The account view (risk.views.EngineAccountView): equity, margins, positions, PnL, funding."""
        from risk.views import engine_account_view

        return engine_account_view(self.state, account, [s.symbol for s in self.specs])

    def adl_standing(self, account: int, market: int = 0):
        """Where the account's position sits in the ADL queue (liquidation.adl.AdlStanding)."""
        from liquidation.adl import adl_standing

        return adl_standing(self.state, account, market, self.specs[market].symbol)

    def predicted_funding_rate_ppb(self, market: int) -> int:
        """The rate the current hour's premium samples give so far (paid at the hour if unchanged)."""
        from risk.ledger import funding_rate_now

        return int(funding_rate_now(self.state, market))

    def risk_sweep(self) -> SweepResult:
        """Equity and maintenance margin of every account at the marks (risk.sweep.risk_sweep, the
        vectorised kernel liquidation runs on), and the accounts below maintenance."""
        from risk.sweep import risk_sweep

        st = self.state
        hwm = int(st.g[L.G_ACCOUNT_HWM])
        n_mkt = st.mkt.shape[0]
        equity = np.zeros(hwm, np.int64)
        maint = np.zeros(hwm, np.int64)
        unhealthy = np.zeros(hwm, np.int64)
        count, _ = risk_sweep(
            st.collateral_micro[:hwm], st.position_lots[:hwm], st.cost_basis_micro[:hwm],
            np.ascontiguousarray(st.mkt[:, L.M_MARK]), np.ascontiguousarray(st.spec[:, L.S_MICRO_PER_TICK_LOT]),
            np.ascontiguousarray(st.tiers[:, :, L.T_BOUND_MICRO]), np.ascontiguousarray(st.tiers[:, :, L.T_MMR_PPM]),
            np.ascontiguousarray(st.tiers[:, :, L.T_MM_DEDUCTION_MICRO]), False, np.zeros(n_mkt, np.int64),
            np.ascontiguousarray(st.mkt[:, L.M_INDEX]), equity, maint, np.zeros(hwm, np.int64), unhealthy)
        return SweepResult(equity, maint, unhealthy[:count].copy())

    def ledger(self) -> dict[str, int]:
        """The money identity's terms (exact integers): sum(collateral of traders) - sum(cost basis, fund's included)
        + insurance fund (the fund account's collateral) + fee ledger == deposits - withdrawals."""
        from risk.intmath import exact_sum

        st = self.state
        funds = sorted({int(f) for f in st.spec[:, L.S_FUND_ACCOUNT]})
        in_funds = sum(int(st.collateral_micro[f]) for f in funds)
        return {  # exact Python-int sums: a wrapped int64 can never read as conserved
            "collateral_micro": exact_sum(st.collateral_micro) - in_funds,
            "cost_basis_micro": exact_sum(st.cost_basis_micro),
            "insurance_fund_micro": in_funds,
            "insurance_funds_micro": {f: int(st.collateral_micro[f]) for f in funds},
            "insurance_floor_micro": int(st.mkt[0, L.M_INSURANCE_FLOOR_MICRO]),
            "fee_ledger_micro": int(st.g[L.G_FEE_LEDGER_MICRO]),
            "deposits_micro": int(st.g[L.G_DEPOSITS_MICRO]),
            "withdrawals_micro": int(st.g[L.G_WITHDRAWALS_MICRO]),
        }

    def money_conserved(self) -> bool:
        """The ledger identity of `ledger()` holds exactly."""
        g = self.ledger()
        return (g["collateral_micro"] - g["cost_basis_micro"] + g["insurance_fund_micro"] + g["fee_ledger_micro"]
                == g["deposits_micro"] - g["withdrawals_micro"])

    @property
    def last_ts_ns(self) -> int:
        """The engine's clock: the timestamp of the last command applied (0 for a new venue)."""
        return int(self.state.g[L.G_LAST_TS])

    def market_view(self, market: int) -> MarketView:
        """The market's public figures besides the prices (see `MarketView`)."""
        row = self.state.mkt[market]
        return MarketView(int(row[L.M_OPEN_INTEREST]), int(row[L.M_LAST_RATE_PPB]), int(row[L.M_NEXT_FUNDING_TS]),
                          bool(row[L.M_FUNDING_FROZEN]), int(row[L.M_VALIDITY]))

    def tier_rows(self, market: int) -> list[TierRow]:
        """The leverage tiers the engine margins the market with (its state: a snapshot's or an
        operator's, not necessarily markets.toml), smallest bound first; the last is unbounded
        (`bound_micro` None)."""
        t = self.state.tiers[market]
        rows = []
        for i in range(t.shape[0]):
            imr = int(t[i, L.T_IMR_PPM])
            if imr == 0:
                break
            bound = int(t[i, L.T_BOUND_MICRO])
            rows.append(TierRow(None if bound == (1 << 63) - 1 else bound, imr, int(t[i, L.T_MMR_PPM]),
                                int(t[i, L.T_MM_DEDUCTION_MICRO])))
            if rows[-1].bound_micro is None:
                break  # the packed table repeats the last tier to its width
        return rows

    def funding_due(self, ts_ns: int) -> list[int]:
        """Markets whose next funding hour is at or before `ts_ns`: a batch stamped `ts_ns` pays them."""
        nxt = self.state.mkt[:, L.M_NEXT_FUNDING_TS]
        return [m for m in range(nxt.shape[0]) if 0 < int(nxt[m]) <= ts_ns]

    def funding_positions(self, accounts: np.ndarray | None = None) -> FundingPositions:
        """Copies of the cumulative funding (`funding_micro`, received +) and the position lots per
        market of `accounts` (default: every account up to the high-water mark; ids beyond the
        tables are dropped). The difference of two readings across a batch is what each position
        was paid or charged in it."""
        st = self.state
        if accounts is None:
            accounts = np.arange(int(st.g[L.G_ACCOUNT_HWM]), dtype=np.int64)
        accounts = np.asarray(accounts, np.int64)
        accounts = accounts[(accounts >= 0) & (accounts < S.account_capacity(st))]
        return FundingPositions(accounts, st.acct_mkt[accounts, :, L.AM_FUNDING_MICRO].copy(),
                                st.position_lots[accounts, :].copy())

    def open_orders(self) -> np.ndarray:
        """Live orders, level by level (see kernel.canonical_orders for the columns)."""
        from perp.kernel import canonical_orders

        return canonical_orders(self.state)


class MarketView(NamedTuple):
    open_interest_lots: int  # lots held long (= lots held short)
    last_funding_rate_ppb: int  # the rate paid at the last funding hour
    next_funding_ts_ns: int  # 0 until the clock has started
    funding_frozen: bool  # the current anchor's gates freeze funding
    oracle_validity: int  # oracle.validity order: 0 = fresh


class TierRow(NamedTuple):
    bound_micro: int | None  # positions up to this notional (None: the last, unbounded tier)
    imr_ppm: int
    mmr_ppm: int
    mm_deduction_micro: int


class FundingPositions(NamedTuple):
    accounts: np.ndarray  # account ids, int64
    funding_micro: np.ndarray  # [account, market] cumulative funding, received (+) / paid (-)
    position_lots: np.ndarray  # [account, market] signed lots


class SweepResult(NamedTuple):
    equity_micro: np.ndarray  # per account (index = account id, up to the high-water mark)
    maintenance_micro: np.ndarray
    unhealthy: np.ndarray  # account ids with equity < maintenance, ascending


def _markets_json(markets: MarketsConfig) -> str:
    import msgspec

    return msgspec.json.encode(markets).decode()
