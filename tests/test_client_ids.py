"""The engine keeps the client order ids ever used (perp.client_ids): from its command rows, in its
snapshots, rebuilt by replaying the journal after a snapshot; an older snapshot without them says
from which seq they are known."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from perp import layout as L
from perp import state as S
from perp.bench import make_stream
from perp import client_ids
from perp.client_ids import SNAPSHOT_KEY, UsedClientOrderIds
from perp.commands import Place
from perp.engine import Engine
from perp.markets import load_markets
from perp.sequencer import JournaledEngine, recover_detailed

MARKETS = load_markets()


@pytest.fixture(scope="module")
def stream() -> np.ndarray:
    return make_stream(3_000, seed=21, index_ticks=21432, accounts=40)


def _used(rows: np.ndarray) -> set[tuple[int, int]]:
    sel = (rows[:, L.C_KIND] == L.CK_PLACE) & (rows[:, L.C_CLID] > 0)
    return set(zip(rows[sel, L.C_ACCOUNT].tolist(), rows[sel, L.C_CLID].tolist(), strict=True))


def _as_pairs(ids: UsedClientOrderIds) -> set[tuple[int, int]]:
    keys = ids.keys()
    return set(zip((keys >> 40).tolist(), (keys & ((1 << 40) - 1)).tolist(), strict=True))


def test_every_place_with_a_client_order_id_is_recorded_whatever_its_fate_and_batch_size(stream):
    a, b = Engine(MARKETS), Engine(MARKETS)
    a.submit_rows(stream)
    for start in range(0, stream.shape[0], 7):
        b.submit_rows(stream[start:start + 7])
    expected = _used(stream)
    assert expected and _as_pairs(a.client_order_ids) == expected == _as_pairs(b.client_order_ids)
    acct, clid = next(iter(expected))
    assert a.client_order_ids.contains(acct, clid) and not a.client_order_ids.contains(acct, (1 << 40) - 1)
    assert len(a.client_order_ids) == len(expected)
    # a place the kernel rejects (an account with no collateral) consumes its id all the same
    ts = int(stream[-1, L.C_TS])
    ev = a.submit_rows(np.stack([a.encoder.row(Place(ts_ns=ts, account=3000, market="H100-PERP", side="buy",
                                                     size_lots=1, price="2.0000", client_order_id=12345))]))
    assert ev[0, L.E_KIND] == L.EV_REJECTED and a.client_order_ids.contains(3000, 12345)


def test_a_snapshot_keeps_them_and_replay_after_it_adds_the_rest(tmp_path, stream):
    live = JournaledEngine.open(tmp_path / "j.bin", snapshot_dir=tmp_path / "snaps", markets=MARKETS, fsync="never")
    live.submit_rows(stream[:1500], auto_liquidate=False)
    snap = live.snapshot()
    assert SNAPSHOT_KEY in S.read_snapshot_meta(snap).extra
    live.submit_rows(stream[1500:], auto_liquidate=False)
    live.close()
    rec = recover_detailed(tmp_path / "j.bin", snapshot_dir=tmp_path / "snaps", markets=MARKETS)
    assert rec.snapshot == snap and rec.replayed == 1500
    assert _as_pairs(rec.engine.client_order_ids) == _used(stream) == _as_pairs(live.engine.client_order_ids)
    assert rec.engine.client_order_ids_from_seq == 0
    assert Engine.from_snapshot(snap).client_order_ids.keys().tolist() == \
        UsedClientOrderIds.from_text(S.read_snapshot_meta(snap).extra[SNAPSHOT_KEY]).keys().tolist()


def test_a_snapshot_written_before_they_were_kept_says_from_which_seq_they_are_known(tmp_path, stream):
    eng = Engine(MARKETS)
    eng.submit_rows(stream[:1000])
    S.save_snapshot(eng.state, tmp_path / "old.snap", {"markets": msgspec.json.encode(MARKETS).decode()})
    old = Engine.from_snapshot(tmp_path / "old.snap")
    assert old.client_order_ids_from_seq == 1000 and len(old.client_order_ids) == 0
    old.submit_rows(stream[1000:])
    assert _as_pairs(old.client_order_ids) == _used(stream[1000:])  # not part of the state hash:
    whole = Engine(MARKETS)
    whole.submit_rows(stream)
    assert old.state_hash() == whole.state_hash()


def test_ids_added_over_many_batches_take_bounded_room_and_a_repeated_id_counts_once(monkeypatch):
    monkeypatch.setattr(client_ids, "MIN_COMPACT_KEYS", 100)  # compactions run here, every few batches
    rng = np.random.default_rng(5)
    ids = UsedClientOrderIds()
    expected: set[int] = set()
    for b in range(600):
        rows = np.zeros((50, L.N_CMD_COLS), np.int64)
        rows[:, L.C_KIND] = L.CK_PLACE
        rows[:, L.C_ACCOUNT] = rng.integers(16, 40, 50)
        rows[:, L.C_CLID] = rng.integers(1, 2_000, 50)  # repeats within and across batches
        rows[::7, L.C_KIND] = L.CK_CANCEL  # not a place: not recorded
        ids.add_rows(rows)
        sel = rows[:, L.C_KIND] == L.CK_PLACE
        expected |= set(((rows[sel, L.C_ACCOUNT] << 40) | rows[sel, L.C_CLID]).tolist())
        # compacted as they come: the buffer holds at most COMPACT_GROWTH x the distinct keys
        assert ids._n <= max(100, client_ids.COMPACT_GROWTH * len(expected))
    keys = ids.keys()
    assert keys.tolist() == sorted(expected) and len(ids) == len(expected)
    again = UsedClientOrderIds.from_text(ids.to_text())
    assert again.keys().tolist() == keys.tolist()


def test_a_place_reusing_an_id_recorded_or_earlier_in_the_same_rows_is_found_and_nothing_is_recorded():
    ids = UsedClientOrderIds(np.array([(7 << 40) | 1], np.int64))
    rows = np.zeros((6, L.N_CMD_COLS), np.int64)
    rows[:, L.C_KIND] = L.CK_PLACE
    rows[:, L.C_ACCOUNT] = [7, 7, 8, 8, 7, 9]
    rows[:, L.C_CLID] = [1, 2, 2, 2, 0, 0]  # 7/1 recorded; 8/2 twice; clid 0 is no id
    rows[5, L.C_KIND] = L.CK_CANCEL  # a cancel by client order id is never a reuse
    rows[5, L.C_CLID] = 1
    rows[5, L.C_ACCOUNT] = 7
    assert client_ids.reused_places(rows, ids).tolist() == [0, 3]
    assert ids.seen(np.array([(8 << 40) | 2, (8 << 40) | 2], np.int64)).tolist() == [False, True]
    assert len(ids) == 1 and not ids.contains(8, 2)
