"""The engine state machine: command rows in, event rows out, deterministic.

`Engine` owns an `EngineState` and feeds it to `kernel.process_batch` in batches. Between batches
(never inside one) it grows the order pool and the account tables when a batch could need more;
growth does not change the logical state hash. It reads no clock: time is each command's `ts_ns`.

Invariant: the same command rows, in the same order, from the same state give the same events and
the same `state_hash()`, whatever the batch sizes.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

import msgspec

from perp import admin as admin_mod
from perp import layout as L
from perp import state as S
from perp.admin import AdminError, AdminRejected, AdminState, AuditEntry, WhatIf, decode_admin_state, encode_admin_state
from perp.batch_facts import batch_facts, first_special
from perp.client_ids import SNAPSHOT_KEY as CLIDS_KEY
from perp.client_ids import UsedClientOrderIds
from perp.codes import ResultCode, describe
from perp.commands import Command, CommandEncoder, fix_vintage_date, payload_key
from perp.journal import config_hash
from perp.events import Event, decode_rows
from perp.kernel import new_event_buffer, process_batch
from perp.markets import (
    MarketsConfig,
    MarketSpec,
    MarketSpecError,
    clip_text,
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
                 state: S.EngineState | None = None, admin: AdminState | None = None,
                 client_order_ids: UsedClientOrderIds | None = None, client_order_ids_from_seq: int = 0):
        """A fresh engine, or (with `state`) one around a restored state. `markets` is the config the
        venue started under; the parameters in force are the state's (`admin`: what admin commands
        changed, from the snapshot). Without `admin` the state's spec table must be the one `markets`
        gives (a snapshot of a venue no admin command changed); the tiers come from the state.
        `client_order_ids` are the ids used up to the state's seq (perp.client_ids);
        `client_order_ids_from_seq` > 0 says they are only known after that seq (a snapshot written
        before they were kept)."""
        self.markets = markets if markets is not None else load_markets()
        self.encoder = CommandEncoder(self.markets)
        rows = np.stack([spec_row(s) for s in self.markets.market])
        if state is None:
            state = S.new_state(rows, tier_table(self.markets.market, tiers), order_capacity, account_capacity)
        if admin is None:
            if not np.array_equal(rows, state.spec):
                raise ValueError("snapshot spec table does not match its markets config")
            admin = AdminState(config_hash(state.spec, state.tiers), list(self.markets.market))
        elif (len(admin.specs) < rows.shape[0]
              or [s.symbol for s in admin.specs[:rows.shape[0]]] != [s.symbol for s in self.markets.market]
              or not np.array_equal(np.stack([spec_row(s) for s in admin.specs]), state.spec)):
            raise ValueError("snapshot spec table does not match the parameters its admin log put in force")
        for spec in admin.specs[rows.shape[0]:]:  # markets an operator listed (list_market) after the start
            self.encoder.add_market(spec)
        self.state = state
        self.admin = admin
        self.specs = admin.specs  # in force (admin commands replace entries)
        self.admin_rejections: dict[int, AdminError] = {}  # seq -> why (the last MAX_KEPT_REJECTIONS)
        self._ev = new_event_buffer(event_rows)
        self._keys = np.empty(4096, np.int64)  # batch_facts' client order id keys, reused per kernel call
        self.client_order_ids = client_order_ids if client_order_ids is not None else UsedClientOrderIds()
        self.client_order_ids_from_seq = client_order_ids_from_seq

    # ---- capacity ----------------------------------------------------------------------------
    def _ensure_capacity(self, places: int, max_account: int) -> None:
        """Room for `places` new orders and for account ids up to `max_account` (what
        `batch_facts` found in the next kernel call's rows)."""
        st = self.state
        if int(st.g[L.G_FREE_TOP]) < places:
            cap = S.order_capacity(st)
            live = cap - int(st.g[L.G_FREE_TOP])
            while cap - live < places:
                cap *= 2
            st = S.grow_orders(st, cap)
        if max_account >= S.account_capacity(st):
            cap = S.account_capacity(st)
            while cap <= max_account:
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

    def stream_rows(self, cmds: np.ndarray, on_events: Callable[[np.ndarray], object] | None, batch: int = 4096,
                    kernel_ns: list[int] | None = None) -> None:
        """Process command rows, handing each kernel call's events to `on_events` as a view of the
        engine's event buffer: valid only until `on_events` returns (copy what you keep). No copy
        is made otherwise -- the publisher's path. With `on_events=None` (recovery) the events are
        produced and dropped: the kernel writes each command's into the same few rows
        (`process_batch(keep_events=False)`); the state is the same. Admin rows, and the first rows
        at or after a pending change's effective time, are processed one by one (perp/admin.py)."""
        cmds = np.ascontiguousarray(cmds, dtype=np.int64)
        start = 0
        total = cmds.shape[0]
        while start < total:
            stop = self._next_special(cmds, start)
            self._kernel_rows(cmds[start:stop], on_events, batch, kernel_ns)
            if stop < total:
                self._special_row(cmds[stop], on_events if on_events is not None else _drop_events)
            start = stop + 1

    def _next_special(self, cmds: np.ndarray, start: int) -> int:
        """Index of the first row from `start` that is an admin command or reaches a pending change."""
        due = min(p.effective_ts_ns for p in self.admin.pending) if self.admin.pending else 0
        return int(first_special(cmds, start, bool(self.admin.pending), due))

    def _kernel_rows(self, cmds: np.ndarray, on_events: Callable[[np.ndarray], object] | None, batch: int,
                     kernel_ns: list[int] | None) -> None:
        keep = on_events is not None
        if self._keys.shape[0] < min(batch, cmds.shape[0]):
            self._keys = np.empty(min(batch, cmds.shape[0]), np.int64)
        keys = self._keys
        for start in range(0, cmds.shape[0], batch):
            chunk = cmds[start:start + batch]
            places, max_account, n_keys = batch_facts(chunk, keys)
            self._ensure_capacity(places, max_account)
            self.client_order_ids.add_keys(keys[:n_keys])
            done = 0
            spent = 0
            while done < chunk.shape[0]:
                t0 = time.perf_counter_ns()
                k, n = process_batch(self.state, chunk[done:], self._ev, 0, keep)
                spent += time.perf_counter_ns() - t0
                if n and keep:
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

    def _one_row(self, row: np.ndarray) -> np.ndarray:
        out: list[np.ndarray] = []
        self._kernel_rows(row.reshape(1, -1), lambda ev: out.append(ev.copy()), 1, None)
        return np.concatenate(out) if len(out) > 1 else out[0]

    def _special_row(self, row: np.ndarray, on_events: Callable[[np.ndarray], object]) -> None:
        """One row by the edge's rules: an admin command (validate, kernel clock step, apply), or a row
        that reaches a pending change's effective time (applied before it; undone if it is refused).

        A funding change (after-step: the hour ending at its time H is paid under the old values) whose H
        lies inside this row's step while the step would also pay a later hour of that market (a step of
        up to `max_clock_step_s` past the next funding hour pays two) splits the step: the clock first
        advances to H by an engine-internal row (`_clock_to`, not journaled: the replay of this row, live
        or from a snapshot, splits it the same way), the change takes effect at H, then the row runs, so
        the hour starting at H is paid under the new values (docs/operations.md). The split belongs to
        this row: if the row is refused, the split is undone with it (clock, samples, funding paid and the
        activation) and the change stays pending -- a refused command changes nothing but the sequence
        number; the next accepted command crosses H the same way."""
        st = self.state
        seq = int(st.g[L.G_SEQ]) + 1
        ts = int(row[L.C_TS])
        plan = None
        kernel_row = row
        if row[L.C_KIND] == L.CK_ADMIN:
            plan = self._admin_plan(row, seq, ts)
            if isinstance(plan, AdminError):
                st.g[L.G_SEQ] = seq
                self._remember_rejection(seq, plan)
                on_events(_admin_reject_row(row, seq, plan.code))
                return
            kernel_row = plan.kernel_row
        saved = (self.admin.copy(), st.spec.copy(), st.tiers.copy()) if self.admin.pending else None
        crossed = self._crossed_hours(row, ts) if saved is not None else []
        whole = S.copy_state(st) if crossed else None  # the split's undo
        parts = []
        for hour in crossed:  # a pending change due inside this step: the clock reaches it first
            parts.append(self._clock_to(hour))
            parts.append(self._effective_rows(admin_mod.activate(self, hour, after_step=True), seq, hour))
        st = self.state
        before = admin_mod.activate(self, ts, after_step=False) if saved is not None else []
        ev = self._one_row(kernel_row)
        if ev.shape[0] == 1 and ev[0, L.E_KIND] == L.EV_REJECTED:
            if whole is not None:  # undo the split's clock advance and funding too: only the seq moves
                self._restore(whole)
                self.state.g[L.G_SEQ] = seq
                st = self.state
            if saved is not None:  # undo the activation; engine.specs stays the same list object
                self.admin, spec, tiers = saved
                self.specs[:] = self.admin.specs
                self.admin.specs = self.specs
                st.spec[:] = spec
                st.tiers[:] = tiers
            if plan is not None:
                ev[0, L.E_OTHER] = L.CK_ADMIN
                ev[0, L.E_CLID] = row[L.C_CLID]
                self._remember_rejection(seq, AdminError(int(ev[0, L.E_CODE]), "ts_ns" if ev[0, L.E_CODE] in
                                                         _CLOCK_CODES else "type", describe(int(ev[0, L.E_CODE]))))
            on_events(ev)
            return
        if before:
            parts.append(self._effective_rows(before, seq, ts))
        if plan is not None and ev[-1, L.E_KIND] == L.EV_ADMIN:
            ev = ev[:-1]  # the kernel's clock-step event: the full admin event replaces it below
        parts.append(ev)
        if plan is not None:
            admin_mod.commit(self, plan, seq, ts)
            parts.append(_admin_event_row(row, seq, ts, plan))
        st = self.state  # list_market replaced it
        after = admin_mod.activate(self, int(st.g[L.G_LAST_TS]), after_step=True) if self.admin.pending else []
        if after:
            parts.append(self._effective_rows(after, seq, int(st.g[L.G_LAST_TS])))
        on_events(np.concatenate(parts) if len(parts) > 1 else parts[0])

    def _crossed_hours(self, row: np.ndarray, ts: int) -> list[int]:
        """The effective times H of pending after-step changes (a funding cap or clamp: perp/admin.py) that
        this row's clock step would cross with a later funding hour of the same market still to pay: the
        engine clock < H and H + funding interval <= `ts`, so one step would pay the hour starting at H
        under the old values. Ascending, without repeats. Empty for a row whose time the kernel refuses
        (the clock's rules are checked on the state before any split, so a split never lets through a row
        the kernel would refuse as too far ahead) and for a `clock_gap` (which pays the hour in progress
        and nothing after it)."""
        st = self.state
        last = int(st.g[L.G_LAST_TS])
        if row[L.C_KIND] == L.CK_CLOCK_GAP or not 0 <= ts <= L.MAX_TS_NS or ts < last:
            return []
        nxt = st.mkt[:, L.M_NEXT_FUNDING_TS]
        if np.any((nxt > 0) & (ts - nxt > st.spec[:, L.S_MAX_CLOCK_STEP_NS])):
            return []  # TIMESTAMP_TOO_FAR_AHEAD, as the kernel will say
        return sorted({p.effective_ts_ns for p in self.admin.pending
                       if p.after_step and last < p.effective_ts_ns
                       and p.effective_ts_ns + int(st.spec[p.market, L.S_FUNDING_INTERVAL_NS]) <= ts})

    def _clock_to(self, hour: int) -> np.ndarray:
        """Advance the clock to `hour` inside the step of the row about to run (whose seq its events
        carry): an engine-internal kernel row, never journaled, that the replay of the same row performs
        identically -- a venue-wide CK_ADMIN row (market -1, no payload), whose kernel part is the clock
        step alone (samples, funding hours due, marks). Its own admin event is dropped and the sequence
        number it took is given back: the row that follows is the journal record this step belongs to."""
        st = self.state
        seq = int(st.g[L.G_SEQ])
        r = np.zeros(L.N_CMD_COLS, np.int64)
        r[[L.C_KIND, L.C_TS, L.C_MARKET, L.C_ACCOUNT]] = (L.CK_ADMIN, hour, -1, -1)
        ev = self._one_row(r)
        self.state.g[L.G_SEQ] = seq
        if ev.shape[0] == 0 or ev[-1, L.E_KIND] != L.EV_ADMIN:  # cannot happen: the row's time was checked
            raise AssertionError(f"the engine-internal clock step to {hour} was refused")
        return ev[:-1]

    def _restore(self, saved: S.EngineState) -> None:
        """Put back a copy of the state arrays taken earlier in this row (in place where the shapes are
        the same; a capacity growth since is logically invisible, so the copy itself then replaces it)."""
        if all(a.shape == b.shape for a, b in zip(self.state, saved)):
            for a, b in zip(self.state, saved):
                a[...] = b
        else:
            self.state = saved

    def _admin_plan(self, row: np.ndarray, seq: int, ts: int):
        from perp.commands import decode_admin_payload

        key = int(row[L.C_ORDER_ID])
        data = self.encoder.payloads.get(key)
        if data is None or payload_key(data) != key:
            return AdminError(int(ResultCode.ADMIN_PAYLOAD_MISSING), "payload",
                              f"no payload {key} for this admin row (the journal's side record is missing)")
        try:
            cmd = decode_admin_payload(data)
        except msgspec.ValidationError as exc:  # a struct built in Python with a value its type refuses
            text = str(exc)
            path = text.rsplit("at `$.", 1)[-1].split("`")[0].split("[")[0].split(".")[0] if "at `$." in text else "type"
            return AdminError(int(ResultCode.ADMIN_INVALID_VALUE), path, clip_text(text, 160))
        except msgspec.DecodeError as exc:
            return AdminError(int(ResultCode.ADMIN_PAYLOAD_MISSING), "payload", f"undecodable payload: {exc}")
        return admin_mod.prepare(self, cmd, ts, key)

    def _remember_rejection(self, seq: int, error: AdminError) -> None:
        self.admin_rejections[seq] = error
        while len(self.admin_rejections) > MAX_KEPT_REJECTIONS:
            self.admin_rejections.pop(next(iter(self.admin_rejections)))

    def _effective_rows(self, changes, seq: int, ts: int) -> np.ndarray:
        from perp.commands import ADMIN_KINDS

        out = np.zeros((len(changes), L.N_EV_COLS), np.int64)
        for i, p in enumerate(changes):
            out[i, [L.E_KIND, L.E_SEQ, L.E_TS, L.E_MARKET, L.E_ACCOUNT, L.E_ORDER_ID, L.E_CLID, L.E_PRICE]] = (
                L.EV_ADMIN_EFFECTIVE, seq, ts, p.market, -1, p.seq, ADMIN_KINDS[p.command], p.effective_ts_ns)
        return out

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
        """The kernel state's logical hash, combined with the admin state's digest (parameters in force
        and pending, audit log, oracle overrides) once an admin command has changed anything."""
        return _with_admin(S.state_hash(self.state, include_clock), None if self.admin.is_pristine() else self.admin.digest())

    def market_index(self, symbol: str) -> int:
        return self.encoder.market_index[symbol]

    def snapshot(self, path: str | Path, meta: Mapping[str, str] | None = None) -> None:
        """The state arrays (tiers included), the markets config, the admin state and the used client
        order ids, plus the caller's `meta`, written atomically (perp.state.write_snapshot_file)."""
        S.write_snapshot_file(path, self.snapshot_blob(meta))

    def snapshot_blob(self, meta: Mapping[str, str] | None = None) -> bytes:
        """The bytes `snapshot` would write, in memory (perp.state.snapshot_blob)."""
        return self.snapshot_job(meta)()

    def snapshot_job(self, meta: Mapping[str, str] | None = None) -> Callable[[], bytes]:
        """`snapshot_blob` in two steps, so that an engine with a journal of its own (the Redis
        engine) pauses only for the copy: this call copies the state arrays and captures the
        admin state, the used client order ids and the markets (a few ms for a 20 MB state); the
        function it returns hashes and encodes that copy -- the same bytes `snapshot_blob` gives
        now, whatever the engine does meanwhile -- and may run in another thread (blake2b
        releases the GIL on large buffers)."""
        st = S.copy_state(self.state)
        base = self._snapshot_base()
        caller = dict(meta or {})
        admin_digest = None if self.admin.is_pristine() else self.admin.digest()

        def build() -> bytes:
            h = S.state_hash(st)  # once: the kernel's hash in the head, and under the full one
            return S.snapshot_blob(st, base | {"state_hash_full": _with_admin(h, admin_digest)} | caller, h)
        return build

    def snapshot_meta(self) -> dict[str, str]:
        """What a snapshot stores besides the arrays: the base markets config, the admin state, the
        used client order ids and the full state hash (the same keys, in the same order, as
        `snapshot_job`'s: both give the same bytes)."""
        return self._snapshot_base() | {"state_hash_full": self.state_hash()}

    def _snapshot_base(self) -> dict[str, str]:
        return {"markets": _markets_json(self.markets), "admin": encode_admin_state(self.admin),
                CLIDS_KEY: self.client_order_ids.to_text()}

    @classmethod
    def from_snapshot(cls, path: str | Path) -> Engine:
        st, meta = S.load_snapshot(path)
        return cls.from_state(st, meta, path)

    @classmethod
    def from_state(cls, st: S.EngineState, meta: Mapping[str, str], path: str | Path = "snapshot") -> Engine:
        """The engine of a loaded snapshot: its markets config, its admin state (verified: the full state
        hash must be the one stored)."""
        admin = decode_admin_state(meta["admin"]) if "admin" in meta else None
        markets = msgspec.json.decode(meta["markets"], type=MarketsConfig)
        if CLIDS_KEY in meta:
            eng = cls(markets, state=st, admin=admin, client_order_ids=UsedClientOrderIds.from_text(meta[CLIDS_KEY]))
        else:
            eng = cls(markets, state=st, admin=admin, client_order_ids_from_seq=int(st.g[L.G_SEQ]))
        if "state_hash_full" in meta and eng.state_hash() != meta["state_hash_full"]:
            raise S.SnapshotHashMismatch(f"{path}: the restored admin state hashes to {eng.state_hash()}, "
                                         f"the snapshot was saved at {meta['state_hash_full']}")
        return eng

    @property
    def config_hash(self) -> str:
        """The hash of the markets config the venue started under (what its journal's header names)."""
        return self.admin.base_config_hash

    # ---- admin (perp/admin.py, docs/operations.md) ---------------------------------------------
    def add_market(self, spec: MarketSpec, status: int = L.ST_ACTIVE) -> int:
        """List a validated market (admin `list_market`, applied after its clock step): the state grows by
        one market (perp.state.grow_markets), the admin state, the specs in force and the encoder know its
        symbol. It shares the floor of a market naming the same insurance fund (0 if none). `self.specs`
        becomes a new list (one longer); gateways read it through (gateway.server `Gateway.specs`) and add
        the market's views after the batch that listed it. Returns the market's index."""
        st = self.state
        same_fund = np.flatnonzero(st.spec[:, L.S_FUND_ACCOUNT] == spec.insurance_fund_account)
        floor = int(st.mkt[same_fund[0], L.M_INSURANCE_FLOOR_MICRO]) if same_fund.size else 0
        self.state = S.grow_markets(st, spec_row(spec), tier_table([spec])[0], status, floor)
        self.specs = self.admin.specs = [*self.admin.specs, spec]
        return self.encoder.add_market(spec)

    def check_admin(self, cmd, ts_ns: int | None = None) -> AdminError | None:
        """Why `cmd` would be refused now (at `ts_ns`, default the engine's clock), or None; changes nothing.
        The clock's own refusals (time going back, too far ahead) are the kernel's and not checked here."""
        ts = int(self.state.g[L.G_LAST_TS]) if ts_ns is None else ts_ns
        plan = admin_mod.prepare(self, cmd, ts, 0)
        return plan if isinstance(plan, AdminError) else None

    def rejection(self, seq: int) -> AdminError | None:
        """Why the admin command at `seq` was refused (field and message; the what-if for 5102)."""
        return self.admin_rejections.get(seq)

    def what_if_tiers(self, market: str, tiers) -> WhatIf:
        """What `set_tiers(market, tiers)` would do to the accounts now, without changing anything.
        Raises AdminRejected (the error names the field) for tiers `set_tiers` would refuse (the same
        validation: admin.market_tiers)."""
        m = self._admin_market(market)
        checked, bad = admin_mod.market_tiers(self.admin, m, market, tiers)
        if bad is not None:
            raise AdminRejected(bad)
        eff = admin_mod.next_funding_hour(self.state.spec, m, int(self.state.g[L.G_LAST_TS]))
        return admin_mod.what_if(self.state, m, admin_mod.tier_row(market, checked), eff)

    def audit_log(self, market: str | None = None) -> list[AuditEntry]:
        """Every applied admin change, oldest first (one entry per changed field); with `market`, that
        market's and the venue-wide ones."""
        return [e for e in self.admin.audit if market is None or e.market in (None, market)]

    def market_params(self, market: str) -> dict:
        """The parameters in force for `market` and the changes pending, with their effective times."""
        m = self._admin_market(market)
        return admin_mod.market_params(self, m)

    def oracle_params(self, market: str) -> dict[str, int]:
        """The oracle feed's parameters for `market` (AnchorConfig fields), operators' changes applied."""
        return admin_mod.oracle_params(self.admin, self._admin_market(market))

    def oracle_overrides(self, market: str) -> dict[str, int]:
        """Only the oracle parameters an operator set for `market` (what a feed applies over its own config)."""
        return dict(self.admin.oracle.get(self.specs[self._admin_market(market)].symbol, {}))

    def suppressed_fixes(self, market: str) -> list[str]:
        """Fix dates (YYYY-MM-DD) an operator suppressed for `market`'s series."""
        self._admin_market(market)
        return list(self.admin.suppressed.get(market, []))

    def _admin_market(self, market: str) -> int:
        try:
            return self.encoder.market_index[market]
        except KeyError:
            raise AdminRejected(AdminError(int(ResultCode.UNKNOWN_MARKET), "market",
                                           f"unknown market {clip_text(market)}")) from None

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
        vintage, day = fix_vintage_date(row[L.M_FIX_VINTAGE_DATE])
        return MarketView(int(row[L.M_OPEN_INTEREST]), int(row[L.M_LAST_RATE_PPB]), int(row[L.M_NEXT_FUNDING_TS]),
                          bool(row[L.M_FUNDING_FROZEN]), int(row[L.M_VALIDITY]), int(row[L.M_FIX_TICKS]), vintage, day)

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
    fix_ticks: int  # the last usable fix the last set_index carried (0: none)
    fix_vintage: str | None  # its vintage: provisional / final / revised (None: not given)
    fix_date: _dt.date | None  # its UTC date (None: not given)


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
    return msgspec.json.encode(markets).decode()


MAX_KEPT_REJECTIONS = 1024
_CLOCK_CODES = {int(ResultCode.TIMESTAMP_REGRESSION), int(ResultCode.TIMESTAMP_TOO_FAR_AHEAD),
                int(ResultCode.INVALID_TIMESTAMP)}


def _drop_events(_events: np.ndarray) -> None:
    return None


def _admin_reject_row(row: np.ndarray, seq: int, code: int) -> np.ndarray:
    """The `rejected` event of an admin command the edge refused (as the kernel's _reject writes it)."""
    ev = np.zeros((1, L.N_EV_COLS), np.int64)
    ev[0, [L.E_KIND, L.E_SEQ, L.E_TS, L.E_MARKET, L.E_ACCOUNT, L.E_ORDER_ID, L.E_CLID, L.E_CODE, L.E_OTHER]] = (
        L.EV_REJECTED, seq, row[L.C_TS], row[L.C_MARKET], row[L.C_ACCOUNT], row[L.C_ORDER_ID], row[L.C_CLID], code,
        L.CK_ADMIN)
    return ev


def _admin_event_row(row: np.ndarray, seq: int, ts: int, plan) -> np.ndarray:
    """The `admin` event of an applied admin command: kind, payload key, effective time, pending, entries."""
    ev = np.zeros((1, L.N_EV_COLS), np.int64)
    ev[0, [L.E_KIND, L.E_SEQ, L.E_TS, L.E_MARKET, L.E_ACCOUNT, L.E_ORDER_ID, L.E_CLID, L.E_PRICE, L.E_SIZE,
           L.E_CODE]] = (L.EV_ADMIN, seq, ts, plan.market, -1, row[L.C_ORDER_ID], row[L.C_CLID],
                         plan.effective_ts_ns, len(plan.entries), 1 if plan.pending is not None else 0)
    return ev


def _with_admin(kernel_hash: str, admin_digest: bytes | None) -> str:
    """The full state hash: the kernel's alone while the admin state is pristine (None), else both."""
    if admin_digest is None:
        return kernel_hash
    return hashlib.blake2b(b"perp-admin-v1" + bytes.fromhex(kernel_hash) + admin_digest, digest_size=32).hexdigest()
