"""A client order id is consumed once over the whole scaled-out venue: the same (account, id) sent
through two gateways before either has seen the other's command reaches the engine twice, and the
engine (the sequencer) sequences the first and refuses the other, which its gateway answers 4204 --
also after an engine restart, from the recovered set. Refused commands never reach a kernel: the
engine, every replica and a clean replay of NS:seq hash the same.

In-process engine and gateways on the test's event loop, a real redis-server, real clients over
loopback. A gateway that "has not seen" a command is one whose NS:seq follower is held (`_lagging`):
what a gateway one ack latency behind, or a client failing over to another gateway, looks like."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from gateway import redis_journal as RJ
from gateway.client import GatewayClient, GatewayError
from gateway.engine_proc import EngineConfig, EngineProcess
from gateway.errors import GatewayCode as G
from gateway.front import RedisGateway
from gateway.server import ServerConfig
from perp import layout as L
from perp import state as S
from perp.client_ids import SNAPSHOT_KEY, reused_places
from perp.commands import Deposit, Place, SetIndex
from perp.engine import Engine
from perp.sequencer import engine_config_hash
from tests.gateway.conftest import ALICE, BOB, make_keys, run
from tests.redis.conftest import MARKET, crash_engine


def _cfg(url: str, ns: str, **kw) -> EngineConfig:
    return EngineConfig(redis_url=url, namespace=ns, index_feed=False, liquidation_interval_ms=0, **kw)


def _append_setup(url: str, ns: str) -> None:
    """The index pinned and ALICE, BOB funded, as one NS:cmd entry (an operator tool's)."""
    rows = Engine().encode([SetIndex(ts_ns=0, market=MARKET, price="2.0000"),
                            Deposit(ts_ns=0, account=ALICE, amount_micro=10**12),
                            Deposit(ts_ns=0, account=BOB, amount_micro=10**12)])
    r = RJ.connect_sync(url)
    r.xadd(RJ.Keys(ns).cmd, {"g": "test", "b": 1, "r": RJ.rows_to_bytes(rows)})
    r.close()


@dataclass
class Venue:
    eng: EngineProcess  # a test that restarts the engine puts the new one here
    gws: list[RedisGateway]


@contextlib.asynccontextmanager
async def _venue(url: str, ns: str, tmp: Path, keys_path: Path, start_engine: bool = True):
    """An engine (started, or only registered: it reads nothing of NS:cmd until the test starts it),
    the setup entry, two gateways; all stopped on leaving."""
    eng = EngineProcess(_cfg(url, ns))
    if start_engine:
        await eng.start()
    _append_setup(url, ns)
    v = Venue(eng, [RedisGateway(ServerConfig(port=0, data_dir=str(tmp / f"g{i}"), keys_path=str(keys_path),
                                              group_commit_us=200), redis_url=url, namespace=ns, ack_timeout_s=60.0)
                    for i in range(2)])
    try:
        for g in v.gws:
            await g.start()
        yield v
    finally:
        for g in v.gws:
            await g.stop()
        await v.eng.stop()


def _ws(gw: RedisGateway) -> str:
    return f"ws://127.0.0.1:{gw.port}"


@contextlib.asynccontextmanager
async def _lagging(gw: RedisGateway):
    """The gateway's NS:seq follower held for the block: its replica (and so its own client order id
    check) stays where it was; on leaving, it follows again from its last record."""
    gw._reader.cancel()
    await asyncio.gather(gw._reader, return_exceptions=True)
    try:
        yield
    finally:
        gw._reader = asyncio.create_task(gw._follow(), name="follow-seq")


async def _until(cond, timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():
            await asyncio.sleep(0.02)


def _refusals(url: str, ns: str) -> list[tuple]:
    r = RJ.connect_sync(url)
    try:
        return [x for _, rec in RJ.records(r, RJ.Keys(ns)) for x in rec.refused]
    finally:
        r.close()


def _cmd_entries(url: str, ns: str) -> int:
    r = RJ.connect_sync(url)
    try:
        return r.xlen(RJ.Keys(ns).cmd)
    finally:
        r.close()


async def _all_equal_to_a_clean_replay(url: str, ns: str, eng: EngineProcess, gws: list[RedisGateway],
                                       use_snapshot: bool = False) -> str:
    """The engine's state hash, once every replica has followed it; asserted equal to each replica's
    and to a replay of NS:seq from its first record (no snapshot) -- or, once a snapshot has trimmed
    the stream below it, from that snapshot."""
    await _until(lambda: all(g.engine.seq == eng.engine.seq for g in gws))
    r = RJ.connect_sync(url)
    try:
        clean = RJ.recover(r, RJ.Keys(ns), use_snapshot=use_snapshot).engine.state_hash()
    finally:
        r.close()
    h = eng.engine.state_hash()
    assert [g.engine.state_hash() for g in gws] == [h, h] and clean == h
    return h


def _alice_orders(eng: EngineProcess, clid: int) -> list[tuple[int, int]]:
    """(order id, remaining lots) of ALICE's live orders with this client order id."""
    return [(oid, rem) for _m, _s, _p, oid, acct, c, rem, _f in eng.engine.open_orders().tolist()
            if acct == ALICE and c == clid]


def test_one_client_order_id_through_two_gateways_is_sequenced_once_and_the_other_is_refused_4204(
        redis_server, tmp_path):
    url, ns = redis_server.url, "twice"
    keys, creds = make_keys(tmp_path / "keys.json")

    async def body() -> None:
        async with _venue(url, ns, tmp_path, keys.path, start_engine=False) as v:  # both places wait in NS:cmd
            eng, gws = v.eng, v.gws
            async with GatewayClient(_ws(gws[0]), creds["alice"]) as via_a, \
                    GatewayClient(_ws(gws[1]), creds["alice"]) as via_b:
                tries = [asyncio.create_task(c.place(MARKET, "buy", 3, price="1.9900", client_order_id=7))
                         for c in (via_a, via_b)]
                await _until(lambda: _cmd_entries(url, ns) == 3)  # the setup and one entry per gateway
                await eng.start()
                out = await asyncio.gather(*tries, return_exceptions=True)
                acked = [o for o in out if not isinstance(o, BaseException)]
                refused = [o for o in out if isinstance(o, GatewayError)]
                assert len(acked) == 1 and acked[0].status == "resting" and acked[0].client_order_id == 7
                assert [e.code for e in refused] == [G.DUPLICATE_CLIENT_ORDER_ID]
                assert "client_order_id 7 was already used" in str(refused[0])
                assert _alice_orders(eng, 7) == [(acked[0].order_id, 3)]
                loser = gws[[i for i, o in enumerate(out) if isinstance(o, GatewayError)][0]]
                assert [(g, i, code) for g, _b, i, code in _refusals(url, ns)] == [(loser.gid, 0, 4204)]
                assert not loser._pending_clids  # freed: the id is used, not pending
                with pytest.raises(GatewayError) as again:  # its replica now knows: refused before sending
                    await (via_a if loser is gws[0] else via_b).place(MARKET, "buy", 1, price="1.9800",
                                                                      client_order_id=7)
                assert again.value.code == G.DUPLICATE_CLIENT_ORDER_ID
            await _all_equal_to_a_clean_replay(url, ns, eng, gws)

    run(body(), 120)


@pytest.mark.parametrize("restart", ["from_snapshot", "from_stream"])
def test_after_an_engine_restart_a_used_client_order_id_is_still_refused_and_the_rest_of_the_batch_acked(
        redis_server, tmp_path, restart):
    url, ns = redis_server.url, f"restart-{restart}"
    keys, creds = make_keys(tmp_path / "keys.json")

    async def body() -> None:
        async with _venue(url, ns, tmp_path, keys.path) as v:
            eng, gws = v.eng, v.gws
            async with GatewayClient(_ws(gws[0]), creds["alice"]) as via_a, \
                    GatewayClient(_ws(gws[1]), creds["alice"]) as via_b:
                await _until(lambda: gws[1].engine.seq >= 3)
                async with _lagging(gws[1]):
                    first = await via_a.place(MARKET, "buy", 3, price="1.9900", client_order_id=7)
                    assert first.status == "resting"
                    if restart == "from_snapshot":
                        await eng.stop()
                    else:
                        await crash_engine(eng)
                    eng2 = v.eng = EngineProcess(_cfg(url, ns))
                    assert eng2.engine.client_order_ids.contains(ALICE, 7)
                    await eng2.start()
                    retry = asyncio.create_task(via_b.batch([
                        {"op": "place", "market": MARKET, "side": "buy", "size_lots": 3, "order_type": "limit",
                         "price": "1.9900", "client_order_id": 7},
                        {"op": "place", "market": MARKET, "side": "buy", "size_lots": 2, "order_type": "limit",
                         "price": "1.9800", "client_order_id": 8}]))
                    await _until(lambda: bool(_refusals(url, ns)))  # the engine has cut that batch
                    assert not retry.done()  # the lagging gateway has not read the record yet
                items = await asyncio.wait_for(retry, 30)
                assert not items[0].ok and items[0].error.code == G.DUPLICATE_CLIENT_ORDER_ID
                assert items[1].ok and items[1].result["client_order_id"] == 8
                assert items[1].result["status"] == "resting"
                assert [(g, i) for g, _b, i, _c in _refusals(url, ns)] == [(gws[1].gid, 0)]
                assert _alice_orders(eng2, 7) == [(first.order_id, 3)] and len(_alice_orders(eng2, 8)) == 1
            await _all_equal_to_a_clean_replay(url, ns, eng2, gws, use_snapshot=restart == "from_snapshot")

    run(body(), 120)


def test_an_ioc_that_filled_at_once_retried_through_the_other_gateway_is_refused_4204_and_fills_once(
        redis_server, tmp_path):
    url, ns = redis_server.url, "ioc"
    keys, creds = make_keys(tmp_path / "keys.json")

    async def body() -> None:
        async with _venue(url, ns, tmp_path, keys.path) as v:
            eng, gws = v.eng, v.gws
            async with GatewayClient(_ws(gws[0]), creds["bob"]) as bob, \
                    GatewayClient(_ws(gws[0]), creds["alice"]) as via_a, \
                    GatewayClient(_ws(gws[1]), creds["alice"]) as via_b:
                ask = await bob.place(MARKET, "sell", 10, price="2.0000")
                await _until(lambda: gws[1].engine.seq >= eng.engine.seq)
                async with _lagging(gws[1]):
                    took = await via_a.place(MARKET, "buy", 3, price="2.0000", tif="ioc", client_order_id=9)
                    assert took.status == "filled" and took.filled_lots == 3
                    retry = asyncio.create_task(via_b.place(MARKET, "buy", 3, price="2.0000", tif="ioc",
                                                            client_order_id=9))
                    await _until(lambda: bool(_refusals(url, ns)))
                with pytest.raises(GatewayError) as refused:
                    await asyncio.wait_for(retry, 30)
                assert refused.value.code == G.DUPLICATE_CLIENT_ORDER_ID
            await _all_equal_to_a_clean_replay(url, ns, eng, gws)
            m = eng.engine.market_index(MARKET)
            assert eng.engine.position_lots(ALICE, m) == 3 and eng.engine.position_lots(BOB, m) == -3
            assert [rem for _m, _s, _p, oid, *_, rem, _f in eng.engine.open_orders().tolist()
                    if oid == ask.order_id] == [7]
            r = redis_server.client()
            fills = [ev for _, rows in RJ.market_events(r, RJ.Keys(ns), MARKET) for ev in rows.tolist()
                     if ev[L.E_KIND] == L.EV_FILL]
            assert len(fills) == 2  # one trade: its taker's fill and its maker's

    run(body(), 120)


def test_an_engine_recovered_from_a_snapshot_without_client_order_ids_reads_them_from_the_stream(
        redis_server, tmp_path):
    """A Redis snapshot written before the engine kept them (no SNAPSHOT_KEY in its metadata):
    recovery adds the ids of the records up to it that NS:seq still holds, so the restarted engine
    refuses them too (and a gateway's replica needs no file journal to read them from)."""
    url, ns = redis_server.url, "oldsnap"
    keys = RJ.Keys(ns)
    r = redis_server.client()
    place = Place(ts_ns=0, account=ALICE, market=MARKET, side="buy", size_lots=2, price="1.9900",
                  client_order_id=7)

    async def first() -> int:
        eng = EngineProcess(_cfg(url, ns, snapshot_on_exit=False))
        await eng.start()
        _append_setup(url, ns)
        r.xadd(keys.cmd, {"g": "test", "b": 2, "r": RJ.rows_to_bytes(Engine().encode([place]))})
        await _until(lambda: eng.engine.seq >= 4)
        meta = eng.engine.snapshot_meta() | {"config_hash": engine_config_hash(eng.engine), "seq_id": eng.seq_id,
                                             "cmd_id": eng.cmd_id, "chains": msgspec.json.encode(eng.chains).decode()}
        del meta[SNAPSHOT_KEY]
        S.save_snapshot(eng.engine.state, tmp_path / "old.snap", meta)
        r.set(keys.snap(eng.engine.seq), (tmp_path / "old.snap").read_bytes())
        r.zadd(keys.snaps, {keys.snap(eng.engine.seq): eng.engine.seq})
        await crash_engine(eng)
        return eng.engine.seq

    seq = run(first(), 60)
    rec = RJ.recover(r, keys)
    assert rec.snapshot_seq == seq and rec.replayed_records == 0
    assert rec.engine.client_order_ids_from_seq == 0 and rec.engine.client_order_ids.contains(ALICE, 7)
    assert reused_places(Engine().encode([place]), rec.engine.client_order_ids).tolist() == [0]


def test_a_batch_whose_places_were_all_refused_is_recorded_without_rows_and_replay_continues_past_it(redis_server):
    """The engine cuts a batch of one entry holding only a reused id: its record has no rows, names the
    refusal and shares its first sequence number with the next record; replicas and recovery take both."""
    url, ns = redis_server.url, "empty"
    keys = RJ.Keys(ns)
    r = redis_server.client()

    def place(clid: int) -> bytes:
        return RJ.rows_to_bytes(Engine().encode([Place(ts_ns=0, account=ALICE, market=MARKET, side="buy",
                                                       size_lots=1, price="1.9900", client_order_id=clid)]))

    async def body() -> str:
        eng = EngineProcess(_cfg(url, ns, snapshot_on_exit=False))  # the whole stream stays
        await eng.start()
        _append_setup(url, ns)
        await _until(lambda: eng.engine.seq >= 3)
        for b, clid in ((2, 5), (3, 5), (4, 6)):
            eid = r.xadd(keys.cmd, {"g": "test", "b": b, "r": place(clid)}).decode()
            await _until(lambda: eng.cmd_id == eid)  # one engine batch per entry
        h = eng.engine.state_hash()
        await eng.stop()
        return h

    h = run(body(), 60)
    recs = [rec for _, rec in RJ.records(r, keys)]
    s = recs[-3].seq0
    assert [(rec.seq0, rec.rows.shape[0], rec.src, rec.refused) for rec in recs[-3:]] == [
        (s, 1, [("test", 2, 1)], []), (s + 1, 0, [("test", 3, 0)], [("test", 3, 0, 4204)]),
        (s + 1, 1, [("test", 4, 1)], [])]
    assert RJ.recover(r, keys, use_snapshot=False).engine.state_hash() == h
