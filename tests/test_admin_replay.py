"""Admin commands through the journal: replay rebuilds the parameter history and the audit log exactly (the
state hash covers them), snapshots keep them, and recovery crosses a pending change (issue 15)."""

from __future__ import annotations

import numpy as np
import pytest

from perp import layout as L
from perp.codes import ResultCode
from perp.commands import Deposit, Place, SetFundingParams, SetIndex, SetTiers
from perp.engine import Engine
from perp.journal import JournalReader, read_rows
from perp.sequencer import JournaledEngine, recover, recover_detailed
from risk.tiers import LeverageTier
from tests.helpers import SECOND, T0

M = "H100-PERP"
HOUR = 3600 * SECOND
WHO = {"operator": "ops-1", "reason": "quarterly review"}
LOOSE = (LeverageTier(max_leverage=5, maintenance_margin_ppm=80_000, max_notional_usd=500_000),
         LeverageTier(max_leverage=2, maintenance_margin_ppm=200_000))


def session(t0: int = T0) -> list:
    """Trading with admin commands in between: an immediate-looking cap change (pending to the hour), a
    tier change at a stated time, a refused one, and trading across both effective times."""
    cmds = [SetIndex(ts_ns=t0, market=M, price="2.1432"),
            Deposit(ts_ns=t0 + 1, account=101, amount_micro=10**9),
            Deposit(ts_ns=t0 + 2, account=102, amount_micro=10**9),
            Place(ts_ns=t0 + 3, account=101, market=M, side="buy", price="2.1400", size_lots=500),
            Place(ts_ns=t0 + 4, account=102, market=M, side="sell", price="2.1400", size_lots=200),
            SetFundingParams(ts_ns=t0 + 5, market=M, cap_ppb=200_000, clamp_ppb=30_000, **WHO),
            SetTiers(ts_ns=t0 + 6, market=M, tiers=LOOSE, effective_ts_ns=t0 + 30 * SECOND, **WHO),
            SetFundingParams(ts_ns=t0 + 7, market=M, cap_ppb=-3, clamp_ppb=0, **WHO),  # refused
            Place(ts_ns=t0 + 31 * SECOND, account=102, market=M, side="sell", price="2.1400", size_lots=100)]
    for h in range(1, 4):
        cmds.append(SetIndex(ts_ns=t0 + h * HOUR + 1, market=M, price="2.1432"))
    cmds.append(SetFundingParams(ts_ns=t0 + 3 * HOUR + 9, market=M, cap_ppb=400_000, clamp_ppb=30_000, **WHO))
    return cmds


def test_replaying_the_journal_rebuilds_parameters_and_audit_log_exactly(tmp_path):
    j = JournaledEngine.open(tmp_path / "venue.journal")
    for c in session():
        j.submit_rows(j.engine.encode([c]))
    live = j.engine
    j.close()
    assert [e.field for e in live.audit_log()] == ["cap_ppb", "clamp_ppb", "tiers", "cap_ppb"]
    assert live.market_params(M)["funding_cap_ppb"] == 200_000
    assert live.market_params(M)["pending"][0]["changes"] == {"funding_cap_ppb": 400_000}
    again = recover(tmp_path / "venue.journal")
    assert again.state_hash() == live.state_hash()
    assert again.audit_log() == live.audit_log()
    assert again.market_params(M) == live.market_params(M)
    assert np.array_equal(again.state.tiers, live.state.tiers) and np.array_equal(again.state.spec, live.state.spec)


def test_the_state_hash_covers_pending_changes_and_the_audit_log():
    a, b = Engine(), Engine()
    base = [SetIndex(ts_ns=T0, market=M, price="2.1432")]
    a.submit(base)
    b.submit(base)
    assert a.state_hash() == b.state_hash()
    a.submit([SetFundingParams(ts_ns=T0 + 1, market=M, cap_ppb=100_000, clamp_ppb=50_000, **WHO)])
    b.submit([SetFundingParams(ts_ns=T0 + 1, market=M, cap_ppb=100_000, clamp_ppb=50_000,
                               operator="someone-else", reason="quarterly review")])
    # same parameters in force and pending, another operator in the audit log: another state
    assert np.array_equal(a.state.spec, b.state.spec)
    assert a.state_hash() != b.state_hash()


def test_journal_keeps_admin_payloads_as_side_records_named_by_the_rows(tmp_path):
    j = JournaledEngine.open(tmp_path / "v.journal")
    cmd = SetFundingParams(ts_ns=T0, market=M, cap_ppb=100_000, clamp_ppb=50_000, **WHO)
    j.submit_rows(j.engine.encode([SetIndex(ts_ns=T0, market=M, price="2.1432"), cmd]), auto_liquidate=False)
    j.close()
    rows = read_rows(tmp_path / "v.journal")
    assert rows.shape[0] == 2 and rows[1, L.C_KIND] == L.CK_ADMIN
    with JournalReader(tmp_path / "v.journal") as r:
        list(r.records())
        assert set(r.payloads) == {int(rows[1, L.C_ORDER_ID])}
        assert r.records_read == 2  # the side record and the command record


def test_an_admin_row_without_its_payload_is_refused_in_the_live_engine_and_in_replay_alike(tmp_path):
    e = Engine()
    e.submit([SetIndex(ts_ns=T0, market=M, price="2.1432")])
    r = np.zeros((1, L.N_CMD_COLS), np.int64)
    r[0, [L.C_KIND, L.C_TS, L.C_MARKET, L.C_ORDER_ID, L.C_CLID]] = (L.CK_ADMIN, T0 + 1, 0, 12345, 1)
    before = e.state_hash(include_clock=False)
    (ev,) = e.decode(e.submit_rows(r))
    assert ev.code == ResultCode.ADMIN_PAYLOAD_MISSING and e.state_hash(include_clock=False) == before


def test_snapshot_and_journal_recovery_across_a_pending_change(tmp_path):
    jpath, sdir = tmp_path / "venue.journal", tmp_path / "snaps"
    cmds = session()
    j = JournaledEngine.open(jpath, snapshot_dir=sdir)
    cut = 7  # after the tier change (pending until t0+30s) and the funding change (pending until the hour)
    for c in cmds[:cut]:
        j.submit_rows(j.engine.encode([c]))
    snap = j.snapshot()
    assert len(j.engine.market_params(M)["pending"]) == 2
    for c in cmds[cut:]:
        j.submit_rows(j.engine.encode([c]))
    live_hash, live_audit = j.engine.state_hash(), j.engine.audit_log()
    j.close()
    rec = recover_detailed(jpath, snapshot=snap)
    assert rec.snapshot_seq == 8 and rec.replayed > 0  # seq 1 set_index + its sweep, then 6 more
    assert rec.engine.state_hash() == live_hash and rec.engine.audit_log() == live_audit
    # the snapshot alone holds the pending changes and the audit log so far
    from perp.state import load_snapshot

    st, meta = load_snapshot(snap)
    at_snap = Engine.from_state(st, meta)
    assert [p["command"] for p in at_snap.market_params(M)["pending"]] == ["set_tiers", "set_funding_params"]
    assert len(at_snap.audit_log()) == 3
    # reopening the journal for append after changes: its header keeps the config it started under
    j2 = JournaledEngine.open(jpath, snapshot_dir=sdir)
    assert j2.engine.state_hash() == live_hash
    j2.close()


def test_a_snapshot_whose_admin_state_was_tampered_with_is_refused(tmp_path):
    from perp.state import SnapshotHashMismatch, load_snapshot, save_snapshot

    e = Engine()
    e.submit([SetIndex(ts_ns=T0, market=M, price="2.1432"),
              SetFundingParams(ts_ns=T0 + 1, market=M, cap_ppb=100_000, clamp_ppb=50_000, **WHO)])
    meta = e.snapshot_meta()
    meta["admin"] = meta["admin"].replace("ops-1", "ops-2")
    save_snapshot(e.state, tmp_path / "s.snap", meta)
    st, loaded = load_snapshot(tmp_path / "s.snap")
    with pytest.raises(SnapshotHashMismatch):
        Engine.from_state(st, loaded)


def test_perp_replay_of_json_lines_with_admin_commands_gives_the_journal_replays_hash(tmp_path):
    import msgspec

    from perp.replay import replay

    lines = [msgspec.json.encode(c) for c in session()]
    eng, summary = replay(lines)
    direct = Engine()
    direct.submit(session())
    assert summary.state_hash == direct.state_hash()
    assert summary.by_type["admin"] == 3 and summary.rejections["ADMIN_INVALID_VALUE"] == 1


def test_a_journal_holding_an_admin_value_beyond_int64_replays_it_as_the_refusal_the_live_engine_gives(tmp_path):
    """Such a command in an old journal: the old gateway journaled it, the engine batch raised (the venue
    stopped) and every restart's replay raised again. Written here as that gateway wrote it (journal
    first, the engine never finishing), then recovered: refused at its seq, as live, and the venue goes on."""
    import msgspec

    from perp.commands import ListMarket, SetLiquidationParams
    from perp.events import Rejected
    from perp.journal import admin_payloads_of
    from tests.test_admin_list_market import A100_SPEC

    cmds = [SetIndex(ts_ns=T0, market=M, price="2.1432"),
            SetLiquidationParams(ts_ns=T0 + 1, market=M, liquidation_cooldown_s=10**10, **WHO),
            ListMarket(ts_ns=T0 + 2, spec=msgspec.structs.replace(A100_SPEC, withdraw_floor_ppm=2**63), **WHO),
            Deposit(ts_ns=T0 + 3, account=101, amount_micro=10**9)]
    j = JournaledEngine.open(tmp_path / "old.journal")
    for c in cmds:  # journaled, never run: what reached the disk before the old engine raised
        rows = j.engine.encode([c])
        j.journal.append(rows, admin_payloads_of(rows, j.engine.encoder.payloads))
    j.journal.close()
    again = recover(tmp_path / "old.journal")
    live = Engine()
    evs = live.submit(cmds)
    assert [e.code for e in evs if isinstance(e, Rejected)] == [ResultCode.ADMIN_INVALID_VALUE] * 2
    assert again.seq == live.seq == 4 and again.state_hash() == live.state_hash()
    assert again.rejection(2).field == live.rejection(2).field == "liquidation_cooldown_s"
    assert again.rejection(3).field == "spec.withdraw_floor_ppm" and len(again.specs) == 1
    assert again.audit_log() == [] and again.ledger() == live.ledger()
    JournaledEngine.open(tmp_path / "old.journal").close()  # and the venue reopens it to go on appending


def test_a_clock_step_split_at_a_funding_change_replays_to_the_same_state_from_the_journal_and_a_snapshot(tmp_path):
    """The cap cut at 00:00:30 bounds 01:00-02:00 even when one command at 02:00 pays both hours: the engine
    splits that step at 01:00 by itself (no journal record of its own), so recovery from the journal alone and
    from a snapshot taken while the change was pending reach the live state hash."""
    jpath, sdir = tmp_path / "venue.journal", tmp_path / "snaps"
    rich = [SetIndex(ts_ns=T0, market=M, price="2.1432"),
            Deposit(ts_ns=T0 + 1, account=101, amount_micro=10**12),
            Deposit(ts_ns=T0 + 2, account=102, amount_micro=10**12),
            Place(ts_ns=T0 + 3, account=101, market=M, side="buy", price="2.2400", size_lots=2000),
            Place(ts_ns=T0 + 4, account=102, market=M, side="sell", price="2.2450", size_lots=2000),
            Place(ts_ns=T0 + 5, account=101, market=M, side="buy", price="2.1432", size_lots=1),
            Place(ts_ns=T0 + 6, account=102, market=M, side="sell", price="2.1432", size_lots=1),
            SetFundingParams(ts_ns=T0 + 30 * SECOND, market=M, cap_ppb=100_000, clamp_ppb=50_000, **WHO)]
    j = JournaledEngine.open(jpath, snapshot_dir=sdir)
    for c in rich:
        j.submit_rows(j.engine.encode([c]))
    snap = j.snapshot()
    assert len(j.engine.market_params(M)["pending"]) == 1
    n_rows = len(read_rows(jpath))
    j.submit_rows(j.engine.encode([SetIndex(ts_ns=T0 + 2 * HOUR, market=M, price="2.1432")]))
    live = j.engine
    assert live.market_view(0).last_funding_rate_ppb == 100_000  # 01:00-02:00 paid under the new cap
    live_hash = live.state_hash()
    j.close()
    new = read_rows(jpath)[n_rows:]  # the command and perhaps its sweep: the split wrote nothing
    assert new[0, L.C_KIND] == L.CK_SET_INDEX and set(new[1:, L.C_KIND].tolist()) <= {L.CK_LIQUIDATE}
    assert recover(jpath).state_hash() == live_hash
    rec = recover_detailed(jpath, snapshot=snap)
    assert rec.replayed == new.shape[0] and rec.engine.state_hash() == live_hash
