"""gateway.resp, the order path's Redis connection, against a real redis-server: replies in order,
the same entries as redis-py reads and writes, transactions all or nothing, and a lost or late
connection that fails its callers as "Redis unreachable" and reconnects by itself."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import redis.exceptions as rex

from gateway import redis_journal as RJ
from gateway.resp import PartialTransactionError, RespConnection, _error, pack

from .conftest import RedisServer, free_port


def run(coro):
    return asyncio.run(coro)


def test_entries_written_by_resp_read_the_same_through_redis_py_and_back(redis_server):
    async def go():
        c = RespConnection(redis_server.url)
        fields = {"g": "gw-1", "b": 7, "r": bytes(range(256)) * 3}
        eid = await c.xadd("s", fields)
        await c.xadd("s", {"only": np.int64(42)}, maxlen=10)
        got = await c.xread_one("s", "0-0", 10, 100)
        await c.aclose()
        return eid, got

    eid, got = run(go())
    r = redis_server.client()
    want = r.xread({"s": "0-0"}, count=10)[0][1]
    r.close()
    assert got == [(e, f) for e, f in want]
    assert got[0] == (eid, {b"g": b"gw-1", b"b": b"7", b"r": bytes(range(256)) * 3})
    assert got[1][1] == {b"only": b"42"}


def test_a_blocking_read_with_nothing_new_returns_no_entries_after_its_block_time(redis_server):
    async def go():
        c = RespConnection(redis_server.url, timeout_s=1.0)
        t0 = asyncio.get_running_loop().time()
        got = await c.xread_one("empty", "0-0", 10, 300)
        waited = asyncio.get_running_loop().time() - t0
        await c.aclose()
        return got, waited

    got, waited = run(go())
    assert got == []
    assert waited >= 0.25


def test_concurrent_calls_are_answered_in_the_order_they_were_written(redis_server):
    async def go():
        c = RespConnection(redis_server.url)
        replies = await asyncio.gather(*(c.call("INCR", "n") for _ in range(500)))
        await c.aclose()
        return replies

    assert run(go()) == list(range(1, 501))


def test_a_cancelled_call_keeps_its_place_and_the_next_call_gets_its_own_reply(redis_server):
    async def go():
        c = RespConnection(redis_server.url)
        slow = asyncio.ensure_future(c.call("BLPOP", "list", 1, block_s=1))
        await asyncio.sleep(0.05)
        slow.cancel()
        pong = await c.call("PING")  # written after the BLPOP: answered after it, with its own reply
        n = await c.call("INCR", "n")
        await c.aclose()
        return pong, n

    assert run(go()) == (b"PONG", 1)


def test_a_transaction_applies_every_command_and_returns_each_reply(redis_server):
    async def go():
        c = RespConnection(redis_server.url)
        replies = await c.transaction([("XADD", "a", "*", "k", "v"), ("XADD", "b", "MAXLEN", "~", 5, "*", "k", "w"),
                                       ("INCR", "n")])
        await c.aclose()
        return replies

    replies = run(go())
    r = redis_server.client()
    assert [r.xlen("a"), r.xlen("b"), r.get("n")] == [1, 1, b"1"]
    assert replies[0] == r.xrange("a")[0][0] and replies[2] == 1
    r.close()


def test_a_transaction_refused_at_queueing_applies_nothing_and_the_connection_stays_in_step(redis_server):
    async def go():
        c = RespConnection(redis_server.url)
        with pytest.raises(rex.ResponseError) as refused:
            await c.transaction([("XADD", "a", "*", "k", "v"), ("NO-SUCH-COMMAND", "x")])
        assert not isinstance(refused.value, PartialTransactionError)
        after = await c.call("PING")
        await c.aclose()
        return after

    assert run(go()) == b"PONG"
    r = redis_server.client()
    assert r.exists("a") == 0
    r.close()


def test_a_transaction_exec_refuses_whole_raises_its_error_not_partial_and_applies_nothing(redis_server):
    """OOM at EXEC (maxmemory below what Redis holds): the reply is one error, not an array, and
    nothing ran -- the engine may retry it; the partial class is kept for errors inside EXEC's array."""
    r = redis_server.client()
    r.set("ballast", b"x" * 1_000_000)
    r.config_set("maxmemory", 1_000_000)  # below used_memory: every write refused OOM

    async def go():
        c = RespConnection(redis_server.url)
        try:
            with pytest.raises(rex.ResponseError, match="OOM") as refused:
                await c.transaction([("XADD", "a", "*", "k", "v"), ("INCR", "n")])
        finally:
            r.config_set("maxmemory", 0)
        pong = await c.call("PING")
        await c.aclose()
        return refused.value, pong

    refused, pong = run(go())
    assert not isinstance(refused, PartialTransactionError) and pong == b"PONG"
    assert r.exists("a", "n") == 0
    r.close()


def test_a_command_failing_inside_exec_raises_partial_and_the_others_took_effect(redis_server):
    async def go():
        c = RespConnection(redis_server.url)
        await c.call("SET", "str", "x")
        with pytest.raises(PartialTransactionError, match="WRONGTYPE"):
            await c.transaction([("XADD", "a", "*", "k", "v"), ("XADD", "str", "*", "k", "v")])
        pong = await c.call("PING")
        await c.aclose()
        return pong

    assert run(go()) == b"PONG"
    r = redis_server.client()
    assert r.xlen("a") == 1  # Redis does not roll back: a retry would write it twice
    r.close()


def test_an_error_reply_raises_and_the_next_call_gets_its_own_reply(redis_server):
    async def go():
        c = RespConnection(redis_server.url)
        await c.call("SET", "str", "x")
        with pytest.raises(rex.ResponseError, match="WRONGTYPE"):
            await c.xadd("str", {"k": "v"})
        pong = await c.call("PING")
        await c.aclose()
        return pong

    assert run(go()) == b"PONG"


def test_a_reply_later_than_its_timeout_drops_the_connection_so_it_is_never_taken_for_the_next(redis_server):
    async def go():
        c = RespConnection(redis_server.url, timeout_s=0.3)
        with pytest.raises(rex.TimeoutError):
            await c.call("BLPOP", "list", 2)  # Redis answers in 2 s: far past the 0.3 s timeout
        helper = RespConnection(redis_server.url)
        await helper.call("RPUSH", "list", "late")  # a dropped connection's BLPOP takes nothing
        pong = await c.call("PING")  # a new connection: its own reply
        length = await helper.call("LLEN", "list")
        for x in (c, helper):
            await x.aclose()
        return pong, length

    pong, length = run(go())
    assert pong == b"PONG"
    assert length == 1


def test_redis_killed_fails_the_waiting_read_as_unreachable_and_the_connection_recovers_on_restart(redis_server):
    async def go():
        c = RespConnection(redis_server.url, connect_timeout_s=0.5)
        await c.xadd("s", {"k": "before"})
        waiting = asyncio.ensure_future(c.xread_one("s", "$", 10, 5000))
        await asyncio.sleep(0.2)
        redis_server.kill()
        with pytest.raises(RJ.redis_down_errors()):
            await waiting
        with pytest.raises(RJ.redis_down_errors()):  # while down: refused at once, as unreachable
            await c.call("PING")
        redis_server.start()  # AOF on: the entry is still there
        got = await c.xread_one("s", "0-0", 10, 100)
        await c.aclose()
        return got

    got = run(go())
    assert [f for _, f in got] == [{b"k": b"before"}]


def test_a_url_with_password_and_database_authenticates_and_selects(tmp_path):
    srv = RedisServer(free_port(), tmp_path / "redis-auth")
    srv.dir.mkdir()
    try:
        url = f"redis://:s3cret@127.0.0.1:{srv.port}/3"

        async def go():
            bad = RespConnection(f"redis://:wrong@127.0.0.1:{srv.port}/3")
            with pytest.raises(rex.AuthenticationError):
                await bad.call("PING")
            await bad.aclose()
            c = RespConnection(url)
            await c.xadd("s", {"k": "v"})
            await c.aclose()

        _start_with_password(srv, "s3cret")
        run(go())
        import redis

        r = redis.Redis.from_url(url)
        assert r.xlen("s") == 1
        assert redis.Redis.from_url(f"redis://:s3cret@127.0.0.1:{srv.port}/0").exists("s") == 0
        r.close()
    finally:
        srv.kill()


def _start_with_password(srv: RedisServer, password: str) -> None:
    import subprocess
    import time

    import redis

    srv.proc = subprocess.Popen(
        ["redis-server", "--port", str(srv.port), "--bind", "127.0.0.1", "--dir", str(srv.dir), "--save", "",
         "--requirepass", password, "--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    r = redis.Redis(port=srv.port, password=password)
    t_end = time.monotonic() + 20
    while True:
        try:
            if r.ping():
                break
        except rex.RedisError:
            if time.monotonic() > t_end:
                raise
            time.sleep(0.05)
    r.close()


def test_redis_loading_its_aof_reads_as_unreachable():
    err = _error(rex.ResponseError("LOADING Redis is loading the dataset in memory"))
    assert isinstance(err, rex.BusyLoadingError)
    assert isinstance(err, RJ.redis_down_errors())
    plain = rex.ResponseError("ERR something else")
    assert _error(plain) is plain


def test_arguments_are_encoded_as_redis_py_encodes_them_and_a_bool_is_refused():
    assert pack("XADD", b"k", 7, np.int64(-3), 1.5) == (b"*5\r\n$4\r\nXADD\r\n$1\r\nk\r\n$1\r\n7\r\n$2\r\n-3\r\n"
                                                        b"$3\r\n1.5\r\n")
    with pytest.raises(TypeError, match="bool"):
        pack("SET", "k", True)
