"""The command stream as the journal: settings checked at start, snapshots recording the stream ids,
recovery = snapshot + stream replay, trimming only below the oldest kept snapshot."""

from __future__ import annotations

import asyncio

import pytest

from gateway import redis_journal as RJ
from gateway.engine_proc import EngineConfig, EngineProcess
from perp.commands import Deposit, Place, SetIndex
from perp.engine import Engine
from tests.gateway.conftest import run
from tests.redis.conftest import MARKET, RedisServer, crash_engine, free_port


def _commands(n: int) -> list:
    cmds = [SetIndex(ts_ns=0, market=MARKET, price="2.0000")]
    cmds += [Deposit(ts_ns=0, account=100 + a, amount_micro=10**12) for a in range(4)]
    for i in range(n):
        side = "buy" if i % 2 else "sell"
        ticks = 19_990 - i % 7 if side == "buy" else 20_010 + i % 7
        cmds.append(Place(ts_ns=0, account=100 + i % 4, market=MARKET, side=side, size_lots=1 + i % 5,
                          price=f"{ticks / 10_000:.4f}", client_order_id=i + 1))
    return cmds


def _append(r, keys: RJ.Keys, cmds: list, per_entry: int = 7) -> None:
    rows = Engine().encode(cmds)
    for k, start in enumerate(range(0, rows.shape[0], per_entry)):
        r.xadd(keys.cmd, {"g": "test", "b": k + 1, "r": RJ.rows_to_bytes(rows[start:start + per_entry])})


async def _until(eng: EngineProcess, seq: int) -> None:
    while eng.engine.seq < seq:
        await asyncio.sleep(0.02)


def test_durability_problems_name_what_each_weaker_setting_loses():
    safe = {"appendonly": "yes", "appendfsync": "always", "maxmemory": "0", "maxmemory-policy": "allkeys-lru"}
    assert RJ.durability_problems(safe) == []
    assert "RDB" in RJ.durability_problems(safe | {"appendonly": "no"})[0]
    assert "one second" in RJ.durability_problems(safe | {"appendfsync": "everysec"})[0]
    assert "evict" in RJ.durability_problems(safe | {"maxmemory": "100mb"})[0]


def test_an_engine_refuses_a_redis_with_appendfsync_everysec_unless_told_unsafe(tmp_path):
    srv = RedisServer(free_port(), tmp_path, extra=("--appendfsync", "everysec"))
    srv.start()
    try:
        with pytest.raises(RJ.UnsafeRedis, match="everysec"):
            EngineProcess(EngineConfig(redis_url=srv.url, namespace="u", index_feed=False))
        eng = EngineProcess(EngineConfig(redis_url=srv.url, namespace="u", index_feed=False, unsafe=True))
        assert eng.engine.seq == 0
        eng.r.close()
    finally:
        srv.kill()


def test_a_namespace_written_before_journal_schema_3_is_refused_with_the_reason(redis_server):
    """NS:meta records the journal schema; records under another schema, or under none (written before
    it was recorded: schema 2, which applied fund_deposit rows), are refused 5011, never replayed."""
    from perp.codes import ResultCode
    from perp.journal import SCHEMA_VERSION, JournalHeaderMismatch

    keys = RJ.Keys("schema")
    r = redis_server.client()
    cfg = EngineConfig(redis_url=redis_server.url, namespace="schema", index_feed=False, liquidation_interval_ms=0)

    async def first() -> None:
        eng = EngineProcess(cfg)
        await eng.start()
        _append(r, keys, _commands(10))
        await _until(eng, 10)
        await eng.stop()

    run(first(), 60)
    assert int(r.hget(keys.meta, "journal_schema")) == SCHEMA_VERSION
    assert RJ.recover(r, keys).engine.seq >= 10
    r.hdel(keys.meta, "journal_schema")  # as a namespace written before the schema was recorded
    with pytest.raises(JournalHeaderMismatch, match="schema 2.*fund_deposit") as info:
        RJ.recover(r, keys)
    assert info.value.code == ResultCode.JOURNAL_HEADER_MISMATCH
    r.hset(keys.meta, "journal_schema", SCHEMA_VERSION + 1)
    with pytest.raises(JournalHeaderMismatch, match=f"schema {SCHEMA_VERSION + 1}"):
        EngineProcess(cfg)


def test_recovery_is_the_newest_snapshot_plus_the_stream_after_it_and_trimming_keeps_it_replayable(redis_server):
    keys = RJ.Keys("snap")
    r = redis_server.client()
    cfg = EngineConfig(redis_url=redis_server.url, namespace="snap", index_feed=False, liquidation_interval_ms=0,
                       snapshot_every=40, keep_snapshots=2)
    cmds = _commands(200)

    async def first() -> tuple[str, int, dict]:
        eng = EngineProcess(cfg)
        await eng.start()
        for start in range(0, 150, 30):  # five batches or more: a snapshot after each 40 commands
            _append(r, keys, cmds[start:start + 30])
            await _until(eng, start + 30)
            await eng.snapshot_settled()  # stored in a thread while the engine goes on
        h = eng.engine.state_hash()
        await crash_engine(eng)  # no snapshot on exit
        return h, eng.engine.seq, eng.chains

    h1, seq1, chains1 = run(first(), 60)
    snaps = r.zrevrange(keys.snaps, 0, -1)
    assert len(snaps) == 2  # the newest two are kept
    oldest = RJ.engine_from_snapshot_bytes(r.get(snaps[-1]))[1]
    first_left = r.xrange(keys.seq, count=1)[0][0].decode()
    assert not RJ.id_after(oldest["seq_id"], first_left)  # nothing at or above the oldest snapshot was trimmed
    assert RJ.SeqRecord.parse(r.xrange(keys.seq, count=1)[0][1]).seq0 > 1  # ... and what lies below it was
    rec = RJ.recover(r, keys)
    assert rec.snapshot_seq > 0 and rec.replayed_records > 0
    assert rec.engine.state_hash() == h1 and rec.engine.seq == seq1
    assert rec.chains == chains1 and chains1["book"][0] > 1  # the book/trades prev_seq chains survive too

    async def second() -> str:  # a restarted engine continues from snapshot + stream and takes new commands
        eng = EngineProcess(cfg)
        assert eng.engine.state_hash() == h1
        await eng.start()
        _append(r, keys, cmds[150:])
        await _until(eng, len(cmds))
        await eng.stop()
        return eng.engine.state_hash()

    h2 = run(second(), 60)
    after = RJ.recover(r, keys)  # from the snapshot taken on SIGTERM
    assert after.engine.state_hash() == h2 and after.replayed_records == 0
    assert len(after.engine.open_orders()) > 0


def test_an_order_the_engine_has_not_processed_is_status_unknown_then_the_user_channel_tells(redis_server, tmp_path):
    """The engine stops with an order appended: the gateway answers 4901 after its ack timeout; the
    restarted engine processes the order, the user channel shows it, and a retry with the same
    client order id is refused 4204 (nothing is done twice)."""
    from gateway.client import GatewayClient, GatewayError
    from gateway.errors import GatewayCode as G
    from gateway.front import RedisGateway
    from gateway.server import ServerConfig
    from tests.gateway.conftest import ALICE, make_keys

    keys, creds = make_keys(tmp_path / "keys.json")
    cfg = EngineConfig(redis_url=redis_server.url, namespace="late", index_feed=False, liquidation_interval_ms=0)

    async def body() -> None:
        eng = EngineProcess(cfg)
        await eng.start()
        gw = RedisGateway(ServerConfig(port=0, data_dir=str(tmp_path / "g"), keys_path=str(keys.path),
                                       group_commit_us=200), redis_url=redis_server.url, namespace="late",
                          ack_timeout_s=1.0)
        await gw.start()
        url = f"ws://127.0.0.1:{gw.port}"
        await gw.submit_system([SetIndex(ts_ns=0, market=MARKET, price="2.0000")])
        async with GatewayClient(url, creds["admin"]) as admin:
            await admin.deposit(ALICE, 10**12)
        await crash_engine(eng)
        async with GatewayClient(url, creds["alice"]) as alice:
            await alice.subscribe("user")
            alice.pending_pushes("user")
            try:
                await alice.place(MARKET, "buy", 3, price="1.9900", client_order_id=7)
                raise AssertionError("acknowledged with no engine running")
            except GatewayError as exc:
                assert exc.code == G.STATUS_UNKNOWN_ENGINE
            eng2 = EngineProcess(cfg)  # recovers, then reads the order still waiting in NS:cmd
            await eng2.start()
            push = await alice.next_push("user", 20)
            assert [(type(e).__name__, e.client_order_id) for e in push.data][:1] == [("Accepted", 7)]
            assert [o.client_order_id for o in await alice.open_orders()] == [7]
            try:
                await alice.place(MARKET, "buy", 3, price="1.9900", client_order_id=7)
                raise AssertionError("a retry with a used client order id was accepted")
            except GatewayError as exc:
                assert exc.code == G.DUPLICATE_CLIENT_ORDER_ID
        await gw.stop()
        await eng2.stop()

    run(body(), 90)


def test_the_streams_are_not_trimmed_until_the_kept_number_of_snapshots_exists(redis_server):
    """With `keep` 2, the first snapshot trims nothing (a gateway a few records behind it still finds
    them: it cannot load a snapshot while it runs); the second trims below the first."""
    keys = RJ.Keys("trim")
    r = redis_server.client()
    ids = [r.xadd(keys.seq, {"n": i}).decode() for i in range(5)]
    cmd_ids = [r.xadd(keys.cmd, {"n": i}).decode() for i in range(5)]
    RJ.store_snapshot(r, keys, 3, b"first", ids[2], cmd_ids[2], 2)
    assert r.xlen(keys.seq) == 5 and r.xlen(keys.cmd) == 5
    RJ.store_snapshot(r, keys, 5, b"second", ids[4], cmd_ids[4], 2)
    assert [e.decode() for e, _ in r.xrange(keys.seq)] == ids[2:]  # below the older of the two kept
    assert [e.decode() for e, _ in r.xrange(keys.cmd)] == cmd_ids[2:]
    r.close()
