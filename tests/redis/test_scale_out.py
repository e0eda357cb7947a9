"""Two gateway processes and one engine process over a real redis-server: the same book sequence and
fills on both; a seeded session through both gateways reaches the state hash of `perp serve`."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import subprocess
import sys
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import redis_journal as RJ
from gateway.client import GatewayClient, GatewayError
from gateway.limits import WallClock
from perp.commands import SetIndex
from perp.markets import load_markets, ticks_to_price
from tests.gateway.conftest import ALICE, BOB, make_keys, run
from tests.redis.conftest import MARKET, NS, env, start_venue, wait_engine_idle

SPEC = load_markets().market[0]


class Watcher:
    """A raw WebSocket subscriber that records every push of the book and trades channels."""

    def __init__(self, url: str):
        self.url = url
        self.pushes: list[dict] = []

    async def __aenter__(self) -> Watcher:
        from websockets.asyncio.client import connect

        self.ws = await connect(self.url)
        for ch in ("book", "trades"):
            await self.ws.send(json.dumps({"id": 1, "method": "subscribe", "params": {"channel": ch, "market": MARKET}}))
        self.task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        async for frame in self.ws:
            msg = json.loads(frame)
            if msg.get("channel") in ("book", "trades"):
                self.pushes.append(msg)

    async def __aexit__(self, *exc) -> None:
        self.task.cancel()
        await self.ws.close()

    def stream(self, after_seq: int) -> list[tuple]:
        return [(m["channel"], m["type"], m["seq"], m["prev_seq"], json.dumps(m["data"], sort_keys=True))
                for m in self.pushes if m["type"] != "snapshot" and m["seq"] > after_seq]


def engine_book(engine) -> tuple[dict[str, int], dict[str, int]]:
    levels: list[dict[str, int]] = [{}, {}]
    for m, side, price, _o, _a, _c, rem, _f in engine.open_orders().tolist():
        if m == 0:
            p = ticks_to_price(SPEC, price)
            levels[side][p] = levels[side].get(p, 0) + rem
    return levels[0], levels[1]


def test_book_deltas_merge_where_the_engine_closes_them_the_same_on_both_gateways_and_rebuild_its_book(
        redis_server, procs, tmp_path):
    """`perp engine --book-interval-ms`: a burst of book changes goes out as a few merged deltas --
    identical on both gateways, since the records say where each delta ends -- and the last change
    of the burst still goes out (the engine's empty record closes the delta when nothing follows)."""
    creds, _eng, ga, gb = start_venue(redis_server, procs, tmp_path, ("--book-interval-ms", "200"))

    async def body():
        async with GatewayClient(ga.url, creds["admin"]) as admin:
            await admin.deposit(ALICE, 1_000_000_000_000)
        async with Watcher(ga.url) as wa, Watcher(gb.url) as wb, GatewayClient(ga.url, creds["alice"]) as alice, \
                GatewayClient(gb.url) as md:
            book = await md.subscribe_book(MARKET)
            await asyncio.sleep(0.5)
            start = max([m["seq"] for w in (wa, wb) for m in w.pushes if m["type"] == "snapshot"] or [0])
            acks = [await alice.place(MARKET, "sell", 1 + i, price=ticks_to_price(SPEC, 20_010 + i)) for i in range(12)]
            t_end = time.monotonic() + 10
            while book.seq < acks[-1].seq:  # no record follows the last place: the closing record publishes it
                assert time.monotonic() < t_end, (book.seq, acks[-1].seq)
                await asyncio.sleep(0.02)
            want = {ticks_to_price(SPEC, 20_010 + i): 1 + i for i in range(12)}
            assert book.levels() == ([], sorted(want.items()))
            await asyncio.sleep(0.3)
            sa, sb = wa.stream(start), wb.stream(start)
            deltas = [x for x in sa if x[0] == "book"]
            assert sa == sb and 1 <= len(deltas) < 12  # merged, and the same deltas on both gateways
            assert [d[3] for d in deltas[1:]] == [d[2] for d in deltas[:-1]]  # each prev_seq is the one before
            assert deltas[-1][2] == acks[-1].seq

    run(body(), 120)


def test_a_logon_frame_logs_on_once_on_the_venue_and_is_refused_when_replayed_to_another_gateway(
        redis_server, procs, tmp_path):
    """Each gateway claims a logon's (key, nonce) in Redis (SET NX, twice the receive window) before it
    logs the connection on: the same signed frame sent to the other gateway within the window -- or to
    the same one again -- is refused 4106, as one process refuses it; a fresh logon goes through."""
    from tests.gateway.test_auth import logon_params, raw_logon

    creds, _eng, ga, gb = start_venue(redis_server, procs, tmp_path)

    async def body():
        seen = logon_params(creds["alice"])  # the genuine client's logon, through gateway a
        first = await raw_logon(ga.url, seen)
        on_b, on_a = await raw_logon(gb.url, seen), await raw_logon(ga.url, seen)
        fresh = await raw_logon(gb.url, logon_params(creds["alice"]))
        return first, on_b, on_a, fresh

    first, on_b, on_a, fresh = run(body(), 60)
    assert first["ok"] and fresh["ok"], (first, fresh)
    assert not on_b["ok"] and on_b["error"]["code"] == 4106, on_b
    assert not on_a["ok"] and on_a["error"]["code"] == 4106, on_a
    r = redis_server.client()
    kept = list(r.scan_iter(f"{NS}:nonce:*"))  # the two logons that went through, each for twice the 5 s window
    assert len(kept) == 2 and all(0 < r.pttl(k) <= 10_000 for k in kept), kept
    r.close()


def test_clients_on_two_gateways_see_the_same_book_sequence_and_fills(redis_server, procs, tmp_path):
    url = redis_server.url
    creds, _eng, ga, gb = start_venue(redis_server, procs, tmp_path)

    async def body():
        async with GatewayClient(ga.url, creds["admin"]) as admin:
            for acct in (ALICE, BOB):
                await admin.deposit(acct, 1_000_000_000_000)
        async with Watcher(ga.url) as wa, Watcher(gb.url) as wb, \
                GatewayClient(ga.url, creds["alice"]) as alice, GatewayClient(gb.url, creds["bob"]) as bob:
            await alice.subscribe("user")
            await bob.subscribe("user")
            await asyncio.sleep(0.3)
            start = max([m["seq"] for w in (wa, wb) for m in w.pushes if m["type"] == "snapshot"] or [0])
            asks = [await alice.place(MARKET, "sell", 5, price=ticks_to_price(SPEC, 20_010 + i), client_order_id=100 + i)
                    for i in range(5)]
            bids = [await bob.place(MARKET, "buy", 4, price=ticks_to_price(SPEC, 19_990 - i)) for i in range(3)]
            take = await bob.place(MARKET, "buy", 12, price=ticks_to_price(SPEC, 20_012), tif="ioc")
            assert take.status == "filled" and take.filled_lots == 12  # 5 + 5 + 2 of alice's asks
            await alice.amend(MARKET, client_order_id=104, size_lots=2)
            await bob.cancel(order_id=bids[0].order_id)
            sold = await alice.place(MARKET, "sell", 3, order_type="market")
            assert sold.filled_lots == 3
            last = sold.seq
            for w in (wa, wb):  # both gateways have fanned out up to the last ack
                t_end = time.monotonic() + 10
                while not any(m["seq"] >= last for m in w.pushes if m["type"] != "snapshot"):
                    assert time.monotonic() < t_end, "no push reached seq of the last ack"
                    await asyncio.sleep(0.05)
            sa, sb = wa.stream(start), wb.stream(start)
            assert sa == sb and len([s for s in sa if s[0] == "trades"]) >= 2 and any(s[0] == "book" for s in sa)
            assert [s[2] for s in sa if s[0] == "book"] == sorted({s[2] for s in sa if s[0] == "book"})
            fills: dict[str, list] = {"alice": [], "bob": []}
            t_end = time.monotonic() + 10  # the user channel's pushes follow the acks: wait for both users'
            while True:
                for who, c in (("alice", alice), ("bob", bob)):  # pending_pushes hands each push once
                    evs = [e for p in c.pending_pushes("user") if p.type == "update" for e in p.data]
                    fills[who] = sorted(fills[who] + [(e.seq, e.price, e.size_lots) for e in evs
                                                      if type(e).__name__ == "Fill"])
                if sum(f[2] for f in fills["alice"]) >= 15 and sum(f[2] for f in fills["bob"]) >= 15:
                    break
                assert time.monotonic() < t_end, fills
                await asyncio.sleep(0.05)
            assert fills["alice"] == fills["bob"] and sum(f[2] for f in fills["bob"]) == 15
            assert asks[0].order_id != asks[1].order_id
        return last

    last = run(body(), 120)
    st = wait_engine_idle(url, last)
    r = redis_server.client()
    rec = RJ.recover(r, RJ.Keys(NS))
    assert rec.engine.state_hash() == st["state_hash"]
    # the engine's per-market event stream rebuilds the same book without any gateway
    eb = RJ.EventBook()
    for _, rows in RJ.market_events(r, RJ.Keys(NS), MARKET):
        eb.apply(rows)
    bids, asks = engine_book(rec.engine)
    assert {ticks_to_price(SPEC, t): n for t, n in eb.levels[0].items()} == bids
    assert {ticks_to_price(SPEC, t): n for t, n in eb.levels[1].items()} == asks and asks
    out = subprocess.run([sys.executable, "-m", "gateway.watch", "--redis", url, "--namespace", NS, "--seconds", "1"],
                         capture_output=True, text=True, timeout=120, env=env()).stdout
    best_ask = min(asks, key=float)
    assert f"ask {asks[best_ask]:>5} @ {best_ask}" in out, out
    # SIGTERM is a clean stop, told apart from a failure (exit 3) by its exit status
    assert [ga.terminate(), gb.terminate(), _eng.terminate()] == [0, 0, 0]


# ---- the same session through both gateways and through `perp serve` ---------------------------
_SESSIONS = itertools.count()


def _ops(seed: int, n: int) -> list[tuple]:
    """A seeded session of n ops; the first two always trade (bob rests 5 lots at the index, alice
    takes them with an IOC), so every seed has a fill (seed 2065077 had none otherwise)."""
    rng = random.Random(seed)
    ops = [("place", "bob", "sell", 5, ticks_to_price(SPEC, 20_000), "gtc", 1000),
           ("place", "alice", "buy", 5, ticks_to_price(SPEC, 20_000), "ioc", 1001)]
    for i in range(len(ops), n):
        who = rng.choice(("alice", "bob"))
        r = rng.random()
        side = rng.choice(("buy", "sell"))
        if r < 0.6:
            off = rng.randint(-10, 30)
            ticks = 20_000 - off if side == "buy" else 20_000 + off
            ops.append(("place", who, side, rng.randint(1, 20), ticks_to_price(SPEC, ticks),
                        rng.choice(("gtc", "gtc", "ioc", "post_only")), 1000 + i))
        elif r < 0.8:
            ops.append(("cancel", who, rng.randint(0, i)))
        elif r < 0.9:
            ops.append(("amend", who, rng.randint(0, i), rng.randint(1, 10)))
        else:
            ops.append(("market", who, side, rng.randint(1, 15)))
    return ops


async def _drive(clients: dict[str, GatewayClient], ops: list[tuple]) -> list:
    """Each op awaited before the next (one order of commands); returns every outcome."""
    placed: dict[int, tuple[str, int]] = {}  # op index -> (who, client order id)
    out = []
    for i, op in enumerate(ops):
        c = clients[op[1]]
        try:
            if op[0] == "place":
                ack = await c.place(MARKET, op[2], op[3], price=op[4], tif=op[5], client_order_id=op[6])
                placed[i] = (op[1], op[6])
                out.append(("ok", ack.status, ack.filled_lots, ack.remaining_lots))
            elif op[0] == "market":
                ack = await c.place(MARKET, op[2], op[3], order_type="market")
                out.append(("ok", ack.status, ack.filled_lots))
            else:
                target = placed.get(op[2])
                if target is None or target[0] != op[1]:
                    out.append(("skip",))
                    continue
                if op[0] == "cancel":
                    ack = await c.cancel(client_order_id=target[1])
                    out.append(("ok", ack.cancelled_lots))
                else:
                    ack = await c.amend(MARKET, client_order_id=target[1], size_lots=op[3])
                    out.append(("ok", ack.remaining_lots))
        except GatewayError as exc:
            out.append(("err", exc.code, exc.engine_code))
    return out


async def _through_redis(url: str, ns: str, keys_path, tmp, creds, ops, t0: int):
    from gateway.engine_proc import EngineConfig, EngineProcess
    from gateway.front import RedisGateway
    from gateway.server import ServerConfig

    eng = EngineProcess(EngineConfig(redis_url=url, namespace=ns, index_feed=False, liquidation_interval_ms=0),
                        clock=WallClock(source=lambda: t0))
    await eng.start()
    gws = [RedisGateway(ServerConfig(port=0, data_dir=str(tmp / f"g{i}"), keys_path=str(keys_path),
                                     group_commit_us=200), redis_url=url, namespace=ns) for i in range(2)]
    for g in gws:
        await g.start()
    try:
        await gws[0].submit_system([SetIndex(ts_ns=0, market=MARKET, price="2.0000")])
        async with GatewayClient(f"ws://127.0.0.1:{gws[1].port}", creds["admin"]) as admin:
            for acct in (ALICE, BOB):
                await admin.deposit(acct, 1_000_000_000_000)
        async with GatewayClient(f"ws://127.0.0.1:{gws[0].port}", creds["alice"]) as a, \
                GatewayClient(f"ws://127.0.0.1:{gws[1].port}", creds["bob"]) as b:
            out = await _drive({"alice": a, "bob": b}, ops)
        seq = eng.engine.seq
        for g in gws:  # every replica has followed the engine to the end
            while g.engine.seq < seq:
                await asyncio.sleep(0.02)
        return out, eng.engine.state_hash(), [g.engine.state_hash() for g in gws]
    finally:
        for g in gws:
            await g.stop()
        await eng.stop()


async def _through_serve(tmp, keys_path, creds, ops, t0: int):
    from gateway.server import Gateway, ServerConfig

    gw = Gateway(ServerConfig(port=0, data_dir=str(tmp / "serve"), keys_path=str(keys_path), group_commit_us=200,
                              liquidation_interval_ms=0, index_feed=False), clock=WallClock(source=lambda: t0))
    await gw.start()
    try:
        await gw.submit_system([SetIndex(ts_ns=0, market=MARKET, price="2.0000")])
        url = f"ws://127.0.0.1:{gw.port}"
        async with GatewayClient(url, creds["admin"]) as admin:
            for acct in (ALICE, BOB):
                await admin.deposit(acct, 1_000_000_000_000)
        async with GatewayClient(url, creds["alice"]) as a, GatewayClient(url, creds["bob"]) as b:
            out = await _drive({"alice": a, "bob": b}, ops)
        return out, gw.engine.state_hash()
    finally:
        await gw.stop()


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1))
def test_a_seeded_session_through_both_gateways_reaches_the_state_hash_of_perp_serve(redis_server, tmp_path_factory,
                                                                                     seed):
    tmp = tmp_path_factory.mktemp("session")
    keys, creds = make_keys(tmp / "keys.json")
    ops = _ops(seed, 40)
    t0 = time.time_ns()  # one pinned clock reading for both venues (logons are checked against it)
    ns = f"s{seed}-{next(_SESSIONS)}"  # hypothesis replays a seed against the same redis-server: a fresh stream
    got_redis, engine_hash, replica_hashes = run(_through_redis(redis_server.url, ns, keys.path, tmp, creds,
                                                                ops, t0), 120)
    got_serve, serve_hash = run(_through_serve(tmp, keys.path, creds, ops, t0), 120)
    assert got_redis == got_serve
    assert sum(o[0] == "ok" for o in got_serve) >= 10 and any(o[0] == "ok" and o[2] > 0 for o in got_serve if
                                                              len(o) > 2)  # orders placed, some filled
    assert engine_hash == serve_hash
    assert replica_hashes == [serve_hash, serve_hash]
