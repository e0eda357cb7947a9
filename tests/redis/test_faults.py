"""Faults of the scaled-out venue, with real processes and a real redis-server: the engine SIGKILLed
under load, Redis SIGKILLed and restarted (AOF, appendfsync always) mid-run, a gateway SIGKILLed."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time

import pytest

from gateway import redis_journal as RJ
from gateway.client import ConnectionLost, GatewayClient, GatewayError
from gateway.errors import GatewayCode as G
from perp.markets import load_markets, ticks_to_price
from tests.gateway.conftest import ALICE, BOB, run
from tests.gateway.conftest import make_keys
from tests.redis.conftest import MARKET, NS, pin_index, start_engine, start_gateway, start_venue, wait_engine_idle

SPEC = load_markets().market[0]
_clids = itertools.count(1)


class Load:
    """Traders placing resting post-only bids (never filled) with fresh client order ids, a few in
    flight each, and cancelling seven in eight of them -- all of them once an account has left
    `max_kept` open: an account may hold 200 open orders, and how many places a run gets through
    depends on how fast the venue and the machine are (a faster engine batch loop took one run to
    164 kept and another past the limit, 1013 refused); every ack and every refusal is recorded."""

    def __init__(self, clients: list[GatewayClient], in_flight: int = 4, max_kept: int = 120):
        self.clients = clients
        self.in_flight = in_flight
        self.max_kept = max_kept
        self.kept: dict[int, int] = {}  # account -> acked places left open on purpose
        self.acked: list[tuple[int, int, int]] = []  # places: (account, client order id, order id)
        self.cancelled: set[int] = set()  # acked cancels: order ids
        self.tried_cancel: set[int] = set()
        self.codes: list[int] = []
        self.stop = asyncio.Event()

    def must_be_open(self) -> set[tuple[int, int, int]]:
        return {a for a in self.acked if a[2] not in self.tried_cancel}

    async def _one(self, c: GatewayClient) -> None:
        while not self.stop.is_set():
            clid = next(_clids)
            try:
                ack = await c.place(MARKET, "buy", 1, price=ticks_to_price(SPEC, 19_800 - clid % 50), tif="post_only",
                                    client_order_id=clid)
                self.acked.append((c.account, clid, ack.order_id))
                if clid % 8 == 0 and self.kept.get(c.account, 0) < self.max_kept:
                    self.kept[c.account] = self.kept.get(c.account, 0) + 1
                else:
                    self.tried_cancel.add(ack.order_id)
                    await c.cancel(order_id=ack.order_id)
                    self.cancelled.add(ack.order_id)
            except GatewayError as exc:
                self.codes.append(exc.code)
                await asyncio.sleep(0.02)
            except (ConnectionLost, TimeoutError):
                await asyncio.sleep(0.05)

    def start(self) -> list[asyncio.Task]:
        return [asyncio.create_task(self._one(c)) for c in self.clients for _ in range(self.in_flight)]


def _http_status(port: int) -> tuple[int, str, str]:
    """/healthz (status, body) and /metrics of a gateway."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
            status, body = r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read().decode()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return status, body, r.read().decode()


def open_orders(engine) -> set[tuple[int, int, int]]:
    return {(a, clid, oid) for _m, _s, _p, oid, a, clid, _r, _f in engine.open_orders().tolist()}


async def _fund(url: str, creds) -> None:
    async with GatewayClient(url, creds["admin"]) as admin:
        for acct in (ALICE, BOB):
            await admin.deposit(acct, 1_000_000_000_000)


def test_the_engine_sigkilled_under_load_loses_no_acknowledged_order_and_reaches_the_hash_of_a_clean_replay(
        redis_server, procs, tmp_path):
    url = redis_server.url
    creds, eng, ga, gb = start_venue(redis_server, procs, tmp_path, ("--snapshot-every", "0"),
                                     ("--ack-timeout-s", "60"))

    async def body():
        await _fund(ga.url, creds)
        async with GatewayClient(ga.url, creds["alice"]) as a, GatewayClient(gb.url, creds["bob"]) as b:
            load = Load([a, b])
            tasks = load.start()
            await asyncio.sleep(1.5)
            before = len(load.acked)
            eng.kill()  # SIGKILL under load
            await asyncio.sleep(1.0)
            stalled = len(load.acked)
            procs.append(start_engine(url, NS, "--snapshot-every", "0", log_dir=tmp_path))
            await asyncio.sleep(1.5)
            load.stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 90)
            return load, before, stalled

    load, before, stalled = run(body(), 240)
    assert before > 20 and len(load.acked) > stalled  # orders were acked before the kill and after the restart
    assert not load.codes, load.codes  # the gateways waited for the engine: nothing refused, nothing unknown
    st = wait_engine_idle(url, 1)
    clean = RJ.recover(redis_server.client(), RJ.Keys(NS), use_snapshot=False).engine
    assert clean.state_hash() == st["state_hash"]
    live = open_orders(clean)
    assert load.must_be_open() <= live  # every acknowledged order is there, with its id...
    assert not {oid for _a, _c, oid in live} & load.cancelled  # ...and every acknowledged cancel took effect


def test_redis_restarted_mid_run_fails_closed_with_the_documented_codes_and_trading_resumes_by_itself(
        redis_server, procs, tmp_path):
    url = redis_server.url
    creds, _eng, ga, gb = start_venue(redis_server, procs, tmp_path)

    async def body():
        await _fund(ga.url, creds)
        async with GatewayClient(ga.url, creds["alice"]) as a, GatewayClient(gb.url, creds["bob"]) as b, \
                GatewayClient(gb.url) as md:
            book = await md.subscribe_book(MARKET)
            load = Load([a, b])
            tasks = load.start()
            await asyncio.sleep(1.0)
            acked_before = len(load.acked)
            redis_server.kill()
            await asyncio.sleep(1.0)
            during = len(load.codes)
            # while Redis is down: a new order is refused "not placed"; nothing is acked
            for c in (a, b):
                try:
                    await c.place(MARKET, "buy", 1, price="1.9000", tif="post_only")
                    raise AssertionError("an order was acked while Redis was down")
                except GatewayError as exc:
                    assert exc.code == G.JOURNAL_UNAVAILABLE, exc
            acked_down = len(load.acked)
            assert md.connects == 1 and a.connects == 1 and b.connects == 1  # connections kept open
            status, health, metrics = await asyncio.to_thread(_http_status, ga.port)
            assert status == 503 and '"redis":false' in health and "perp_gateway_redis_up 0.0" in metrics
            redis_server.start()  # same port and dir: Redis reloads its AOF
            t_end = time.monotonic() + 30
            while len(load.acked) < acked_down + 20:  # trading resumes on both gateways, no process restarted
                assert time.monotonic() < t_end, f"no trading after Redis came back: {load.codes[-5:]}"
                await asyncio.sleep(0.1)
            load.stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
            assert book.synced  # the book subscriber was kept, and is still in sequence
            return load, acked_before, during, acked_down, md.connects

    load, acked_before, during, acked_down, md_connects = run(body(), 240)
    assert acked_before > 10 and during > 0
    assert set(load.codes) <= {G.JOURNAL_UNAVAILABLE, G.STATUS_UNKNOWN_REDIS, G.STATUS_UNKNOWN_ENGINE}, load.codes
    assert G.JOURNAL_UNAVAILABLE in load.codes
    assert md_connects == 1
    st = wait_engine_idle(url, 1)
    clean = RJ.recover(redis_server.client(), RJ.Keys(NS), use_snapshot=False).engine
    assert clean.state_hash() == st["state_hash"]
    live = open_orders(clean)
    assert load.must_be_open() <= live  # nothing acknowledged was lost across the Redis restart
    assert not {oid for _a, _c, oid in live} & load.cancelled


@contextlib.asynccontextmanager
async def _on_gateway(creds, home: str, other: str):
    """Alice on `home` (falling back to `other`), Bob and a watcher on `other`; Alice's and the
    watcher's books subscribed: (alice, bob, alice's book, the watcher's book)."""
    async with GatewayClient(home, creds["alice"], fallback_urls=(other,), max_backoff_s=0.2) as a, \
            GatewayClient(other, creds["bob"]) as b, GatewayClient(other) as watcher:
        yield a, b, await a.subscribe_book(MARKET), await watcher.subscribe_book(MARKET)


async def _trades_on(a, other: str, book_a, book_w) -> None:
    """Alice's client moved to `other` (its second connection), trades there, and her book resyncs
    to the watcher's."""
    t_end = time.monotonic() + 20
    while a.connects < 2:  # the first connection's close may not have been read yet
        assert time.monotonic() < t_end
        await asyncio.sleep(0.05)
    await a.wait_connected(20)
    assert a.url == other and a.connects == 2
    ack = await a.place(MARKET, "buy", 2, price=ticks_to_price(SPEC, 19_940))  # trading on the other one
    while not (book_a.synced and book_a.seq == book_w.seq and book_a.seq >= ack.seq):
        assert time.monotonic() < t_end, (book_a.seq, book_w.seq, ack.seq)
        await asyncio.sleep(0.05)
    assert book_a.levels() == book_w.levels()


def test_a_gateway_killed_mid_stream_its_clients_reconnect_to_the_other_and_resync(redis_server, procs, tmp_path):
    url = redis_server.url
    creds, _eng, ga, gb = start_venue(redis_server, procs, tmp_path)

    async def body():
        await _fund(gb.url, creds)
        async with _on_gateway(creds, ga.url, gb.url) as (a, b, book_a, book_w):
            for i in range(5):
                await b.place(MARKET, "sell", 2 + i, price=ticks_to_price(SPEC, 20_020 + i))
            await a.place(MARKET, "buy", 3, price=ticks_to_price(SPEC, 19_950))
            ga.kill()  # mid-stream: bob keeps trading on the other gateway
            for i in range(5):
                await b.place(MARKET, "buy", 1 + i, price=ticks_to_price(SPEC, 19_960 + i))
            await _trades_on(a, gb.url, book_a, book_w)
            assert len(await a.open_orders()) == 2  # the order placed through the killed gateway is there
            # the killed gateway restarted: it resumes from snapshot + stream, with the same sequence
            ga2 = start_gateway(redis_server.url, tmp_path / "keys.json", tmp_path / "a2")
            procs.append(ga2)
            async with GatewayClient(ga2.url) as late:
                book_l = await late.subscribe_book(MARKET)
                assert book_l.seq == book_w.seq and book_l.levels() == book_w.levels()
                ack = await b.place(MARKET, "sell", 1, price=ticks_to_price(SPEC, 20_030))
                t_end = time.monotonic() + 10
                while not (book_l.seq >= ack.seq and book_w.seq >= ack.seq):
                    assert time.monotonic() < t_end
                    await asyncio.sleep(0.05)
                assert book_l.seq == book_w.seq and book_l.levels() == book_w.levels() and book_l.resyncs == 0

    run(body(), 120)


def test_an_append_redis_refuses_is_answered_not_placed_and_the_next_order_goes_through(redis_server, procs,
                                                                                       tmp_path):
    """Redis out of memory (maxmemory reached, noeviction) refuses the gateway's XADD with an error
    reply: the orders of that group commit were certainly not appended, so they are refused 4307
    "not placed" (not "status unknown"), and trading continues once Redis takes writes again."""
    url = redis_server.url
    creds, _eng, ga, _gb = start_venue(redis_server, procs, tmp_path)
    r = redis_server.client()

    async def body():
        await _fund(ga.url, creds)
        async with GatewayClient(ga.url, creds["alice"]) as a:
            first = await a.place(MARKET, "buy", 1, price="1.9000", tif="post_only", client_order_id=7001)
            r.config_set("maxmemory", 1)
            try:
                try:
                    await a.place(MARKET, "buy", 1, price="1.9100", tif="post_only", client_order_id=7002)
                    raise AssertionError("an order was acked while Redis refused writes")
                except GatewayError as exc:
                    refused = exc
            finally:
                r.config_set("maxmemory", 0)
            # the refused order's client order id is free again: the same id is placed now
            again = await a.place(MARKET, "buy", 1, price="1.9100", tif="post_only", client_order_id=7002)
            return first, refused, again

    first, refused, again = run(body(), 120)
    assert refused.code == G.JOURNAL_UNAVAILABLE and "refused the append" in refused.msg and "OOM" in refused.msg
    st = wait_engine_idle(url, 1)
    clean = RJ.recover(r, RJ.Keys(NS), use_snapshot=False).engine
    assert clean.state_hash() == st["state_hash"]
    assert {(clid, oid) for _a, clid, oid in open_orders(clean)} == {(7001, first.order_id), (7002, again.order_id)}
    r.close()


def _venue_with_acl_user(redis_server, procs, tmp_path, side: str, *gateway_args: str):
    """One engine and one gateway, `side` ("engine" or "gateway") on its own Redis ACL user `side`
    (all permissions; a test takes one away with ACL SETUSER), the other on the default user.
    Returns (creds, engine, gateway, a redis-py client)."""
    r = redis_server.client()
    r.execute_command("ACL", "SETUSER", side, "on", ">pw", "~*", "&*", "+@all")
    own = f"redis://{side}:pw@127.0.0.1:{redis_server.port}/0"
    keys, creds = make_keys(tmp_path / "keys.json")
    eng = start_engine(own if side == "engine" else redis_server.url, NS, log_dir=tmp_path)
    procs.append(eng)
    pin_index(redis_server.url)
    gw = start_gateway(own if side == "gateway" else redis_server.url, keys.path, tmp_path / "a", NS, *gateway_args)
    procs.append(gw)
    return creds, eng, gw, r


def _log_events(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.startswith("{")]


def test_an_engine_whose_record_redis_refuses_pauses_holds_the_ack_and_resumes_when_redis_takes_it(
        redis_server, procs, tmp_path):
    """The engine's Redis user loses XADD (an operator's ACL change; OOM, MISCONF and READONLY
    answer the same way): its MULTI/EXEC is refused before it runs, so nothing of the record is
    written. Before, that error reply ended the engine (engine_failed, exit); now it holds the batch
    -- the order is neither acked nor refused -- retries, and the order is acked once Redis takes
    the record, with one redis_refused and one redis_accepted in its log and the stream replaying
    to the engine's hash."""
    creds, eng, gw, r = _venue_with_acl_user(redis_server, procs, tmp_path, "engine", "--ack-timeout-s", "60")

    async def body():
        await _fund(gw.url, creds)
        async with GatewayClient(gw.url, creds["alice"]) as a:
            first = await a.place(MARKET, "buy", 1, price="1.9000", tif="post_only", client_order_id=8001)
            r.execute_command("ACL", "SETUSER", "engine", "-xadd")
            try:
                held = asyncio.create_task(a.place(MARKET, "buy", 1, price="1.9100", tif="post_only",
                                                   client_order_id=8002))
                await asyncio.sleep(1.5)
                assert not held.done(), held  # neither acked nor refused while the record is refused
                assert eng.popen.poll() is None  # the engine is still running
            finally:
                r.execute_command("ACL", "SETUSER", "engine", "+xadd")
            second = await asyncio.wait_for(held, 30)
            third = await a.place(MARKET, "buy", 1, price="1.9200", tif="post_only", client_order_id=8003)
            return first, second, third

    first, second, third = run(body(), 120)
    st = wait_engine_idle(redis_server.url, 1)
    clean = RJ.recover(r, RJ.Keys(NS), use_snapshot=False).engine
    assert clean.state_hash() == st["state_hash"]
    assert {(clid, oid) for _a, clid, oid in open_orders(clean)} == {
        (8001, first.order_id), (8002, second.order_id), (8003, third.order_id)}
    events = _log_events(eng.log_path)
    refused = [e for e in events if e["event"] == "redis_refused"]
    assert [(e["op"], e["error"].split()[0]) for e in refused] == [("record", "NOPERM")]
    assert [e["op"] for e in events if e["event"] == "redis_accepted"] == ["record"]
    assert not [e for e in events if e["event"] == "engine_failed"]
    r.close()


def test_a_gateway_whose_reads_redis_refuses_fails_closed_keeps_its_connections_and_resumes_by_itself(
        redis_server, procs, tmp_path):
    """The gateway's Redis user loses XREAD (an ACL change): it can no longer see the engine's records,
    so it cannot ack. Before, the error reply ended its reader task and left a gateway that took
    orders and never answered them; now it fails closed as when Redis is down -- new orders 4307 "not
    placed", /healthz 503, connections kept -- and trades again by itself once reads are given back."""
    creds, _eng, gw, r = _venue_with_acl_user(redis_server, procs, tmp_path, "gateway")

    async def body():
        await _fund(gw.url, creds)
        async with GatewayClient(gw.url, creds["alice"]) as a:
            first = await a.place(MARKET, "buy", 1, price="1.9000", tif="post_only", client_order_id=9001)
            r.execute_command("ACL", "SETUSER", "gateway", "-xread")
            try:
                t_end = time.monotonic() + 10
                while True:  # within a read's block time (0.25 s) the gateway sees the refusal
                    try:
                        await a.place(MARKET, "buy", 1, price="1.9100", tif="post_only", client_order_id=9002)
                    except GatewayError as exc:
                        if exc.code == G.JOURNAL_UNAVAILABLE:
                            break
                    assert time.monotonic() < t_end, "the gateway never failed closed"
                    await asyncio.sleep(0.1)
                status, health, _metrics = await asyncio.to_thread(_http_status, gw.port)
                assert status == 503 and '"redis":false' in health
                assert gw.popen.poll() is None and a.connects == 1  # up, the connection kept
            finally:
                r.execute_command("ACL", "SETUSER", "gateway", "+xread")
            t_end = time.monotonic() + 10
            while True:  # trading resumes, no process restarted
                try:
                    again = await a.place(MARKET, "buy", 1, price="1.9200", tif="post_only", client_order_id=9003)
                    break
                except GatewayError as exc:
                    assert exc.code == G.JOURNAL_UNAVAILABLE and time.monotonic() < t_end, exc
                    await asyncio.sleep(0.1)
            return first, again, a.connects

    first, again, connects = run(body(), 120)
    assert connects == 1
    st = wait_engine_idle(redis_server.url, 1)
    clean = RJ.recover(r, RJ.Keys(NS), use_snapshot=False).engine
    assert clean.state_hash() == st["state_hash"]
    live = {(clid, oid) for _a, clid, oid in open_orders(clean)}
    assert {(9001, first.order_id), (9003, again.order_id)} <= live  # 9002 placed or not: it was "status unknown"
    events = _log_events(gw.log_path)
    assert [e["op"] for e in events if e["event"] == "redis_refused"] == ["read"]
    assert [e["op"] for e in events if e["event"] == "redis_accepted"] == ["read"]
    r.close()


def test_a_gateway_paused_past_the_trimmed_stream_closes_its_connections_and_exits_then_restarts_from_a_snapshot(
        redis_server, procs, tmp_path):
    """A gateway frozen (SIGSTOP: a long stall, a paused VM) while the engine snapshots and trims the
    streams below its place can no longer follow NS:seq. It does not stay up serving a book that no
    longer moves: it answers what it had in flight, closes its connections -- its clients move to the
    other gateway and resync -- and exits with code 3, and started again it recovers from the newest
    snapshot and serves the same book as the other."""
    import signal

    creds, _eng, ga, gb = start_venue(redis_server, procs, tmp_path, ("--snapshot-every", "20"))
    r = redis_server.client()

    async def body():
        await _fund(ga.url, creds)
        async with _on_gateway(creds, gb.url, ga.url) as (a, b, book_a, book_w):
            gb.popen.send_signal(signal.SIGSTOP)
            try:
                first_kept = r.xrange(RJ.Keys(NS).seq, count=1)[0][0]
                for i in range(150):  # one record each: past several snapshots and their trims
                    await b.place(MARKET, "sell", 1, price=ticks_to_price(SPEC, 20_100 + i % 40), tif="post_only")
                assert r.xrange(RJ.Keys(NS).seq, count=1)[0][0] != first_kept  # trimmed below gb's place
            finally:
                gb.popen.send_signal(signal.SIGCONT)
            assert gb.popen.wait(30) == 3
            await _trades_on(a, ga.url, book_a, book_w)  # its connection was closed: it moved
            t_end = time.monotonic() + 20
            gb2 = start_gateway(redis_server.url, tmp_path / "keys.json", tmp_path / "b2")
            procs.append(gb2)
            async with GatewayClient(gb2.url) as late:
                book_l = await late.subscribe_book(MARKET)
                while book_l.seq < book_w.seq:
                    assert time.monotonic() < t_end + 10, (book_l.seq, book_w.seq)
                    await asyncio.sleep(0.05)
                assert book_l.seq == book_w.seq and book_l.levels() == book_w.levels()

    try:
        run(body(), 180)
    finally:
        r.close()
    assert "replica_failed" in open(gb.log_path).read()


def test_a_gateway_whose_reader_ends_by_a_bug_fails_as_a_lost_replica_does_instead_of_taking_orders(redis_server,
                                                                                                   tmp_path):
    """The net under the reader's own handling: an exception nobody expected (a bug; here its read
    of NS:seq raises TypeError) ends the task that turns the engine's records into acks. The
    gateway then fails as one that lost the stream: what it has in flight is answered 4901, new
    commands 4305, `failed` is set (`perp gateway` exits 3) -- never a gateway that takes orders it
    can no longer answer, with /healthz 200."""
    from gateway.engine_proc import EngineConfig, EngineProcess
    from gateway.front import RedisGateway
    from gateway.server import ServerConfig

    keys, creds = make_keys(tmp_path / "keys.json")
    url = redis_server.url

    async def body():
        eng = EngineProcess(EngineConfig(redis_url=url, namespace=NS, index_feed=False, liquidation_interval_ms=0))
        await eng.start()
        pin_index(url)
        gw = RedisGateway(ServerConfig(port=0, data_dir=str(tmp_path / "g"), keys_path=str(keys.path),
                                       group_commit_us=200), redis_url=url, namespace=NS, ack_timeout_s=60.0)
        await gw.start()
        try:
            ws = f"ws://127.0.0.1:{gw.port}"
            await _fund(ws, creds)
            async with GatewayClient(ws, creds["alice"], reconnect=False) as alice:
                await alice.place(MARKET, "buy", 1, price=ticks_to_price(SPEC, 19_900), client_order_id=1)
                bug, reading = asyncio.Event(), asyncio.Event()

                async def buggy_read(*args, **kwargs):
                    reading.set()
                    await bug.wait()
                    raise TypeError("injected: a bug in the reader")

                gw._r.xread_one = buggy_read
                await asyncio.wait_for(reading.wait(), 10)  # the read in progress returned; this is the next
                in_flight = asyncio.create_task(
                    alice.place(MARKET, "buy", 1, price=ticks_to_price(SPEC, 19_901), client_order_id=2))
                await asyncio.sleep(0.5)  # appended and sequenced; its record is never read
                assert not in_flight.done() and not gw.failed.is_set()
                bug.set()
                with pytest.raises(GatewayError) as exc:
                    await asyncio.wait_for(in_flight, 10)
                assert exc.value.code == G.STATUS_UNKNOWN_ENGINE
                assert gw.failed.is_set() and gw.broken
                with pytest.raises(GatewayError) as exc:
                    await alice.place(MARKET, "buy", 1, price=ticks_to_price(SPEC, 19_902), client_order_id=3)
                assert exc.value.code == G.SHUTTING_DOWN
                status, _, _ = await asyncio.get_running_loop().run_in_executor(None, _http_status, gw.port)
                assert status == 503
        finally:
            await gw.stop()
            await eng.stop()

    run(body(), 120)


def test_a_logon_redis_cannot_check_is_refused_not_accepted_unchecked_and_goes_through_once_redis_is_back(
        redis_server, procs, tmp_path):
    """A gateway claims every logon's nonce in Redis: with Redis down the claim cannot be made, so the
    logon is refused 4307 rather than accepted without the replay check; once Redis is back a fresh logon goes through, no process restarted."""
    from tests.gateway.test_auth import logon_params, raw_logon

    keys, creds = make_keys(tmp_path / "keys.json")
    procs.append(start_engine(redis_server.url, NS, log_dir=tmp_path))
    pin_index(redis_server.url)
    gw = start_gateway(redis_server.url, keys.path, tmp_path / "a", NS)
    procs.append(gw)

    async def body():
        assert (await raw_logon(gw.url, logon_params(creds["alice"])))["ok"]
        redis_server.kill()
        down = await raw_logon(gw.url, logon_params(creds["alice"]))
        redis_server.start()  # same port and dir
        t_end = time.monotonic() + 30
        while not (back := await raw_logon(gw.url, logon_params(creds["alice"])))["ok"]:
            assert back["error"]["code"] == G.JOURNAL_UNAVAILABLE and time.monotonic() < t_end, back
            await asyncio.sleep(0.2)
        return down

    down = run(body(), 120)
    assert not down["ok"] and down["error"]["code"] == G.JOURNAL_UNAVAILABLE, down
    assert "logon not checked" in down["error"]["msg"]
