"""Keys and logon: each refusal gets its code and leaves the engine's state hash unchanged."""

from __future__ import annotations

import os
import secrets
import stat
import time

import pytest

from gateway.client import Credentials, GatewayError
from gateway.errors import GatewayCode as G
from gateway.keys import sign_logon
from tests.gateway.conftest import MARKET, run, venue


def logon_params(c: Credentials, ts_ns: int | None = None, nonce: str | None = None, secret: str | None = None):
    ts = time.time_ns() if ts_ns is None else ts_ns
    nonce = nonce or secrets.token_hex(8)
    return {"key": c.key, "ts_ns": ts, "nonce": nonce,
            "signature": sign_logon(c.kind, secret or c.secret_hex, c.key, ts, nonce)}


async def raw_logon(url: str, params: dict) -> dict:
    """One logon frame on a fresh connection, exactly as given (a replay sends the same bytes again);
    the reply as a dict."""
    import asyncio
    import json

    from websockets.asyncio.client import connect

    async with connect(url) as ws:
        await ws.send(json.dumps({"id": 1, "method": "logon", "params": params}))
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if msg.get("id") == 1:
                return msg


async def refused(client, method, params, code):
    with pytest.raises(GatewayError) as exc:
        await client.request(method, params)
    assert exc.value.code == code, exc.value
    return exc.value


def test_key_file_is_owner_only_and_holds_no_ed25519_private_key(tmp_path):
    async def body():
        async with venue(tmp_path, deposits=False) as v:
            mode = stat.S_IMODE(os.stat(v.keys.path).st_mode)
            assert mode == 0o600
            text = v.keys.path.read_text()
            alice = v.creds["alice"]
            assert alice.secret_hex not in text  # the private key stays with the client
            assert v.creds["bob"].secret_hex in text  # hmac: the server must keep the secret...
            assert v.creds["bob"].secret_hex not in repr(v.keys.keys[v.creds["bob"].key])  # ...out of reprs

    run(body())


def test_bad_logons_and_forbidden_orders_change_nothing(tmp_path):
    async def body():
        async with venue(tmp_path) as v:
            async with v.client("alice") as alice:
                own = await alice.place(MARKET, "buy", 1, price="1.9000")
            h0 = v.gw.engine.state_hash()
            seq0 = v.gw.engine.seq
            alice_c, bob_c = v.creds["alice"], v.creds["bob"]
            place = {"market": MARKET, "side": "buy", "size_lots": 1, "price": "1.9500"}
            async with v.client(None) as anon:
                await refused(anon, "order.place", place, G.NOT_LOGGED_IN)
                await refused(anon, "logon", logon_params(alice_c, secret="11" * 32), G.BAD_SIGNATURE)
                await refused(anon, "logon", logon_params(bob_c, secret="22" * 32), G.BAD_SIGNATURE)
                await refused(anon, "logon", logon_params(alice_c, ts_ns=time.time_ns() - 60 * 10**9),
                              G.TIMESTAMP_OUTSIDE_WINDOW)
                await refused(anon, "logon", {**logon_params(alice_c), "key": "knope"}, G.UNKNOWN_KEY)
                replay = logon_params(bob_c)
                ok = await anon.request("logon", replay)
                assert ok["account"] == 21
            async with v.client(None) as other:
                await refused(other, "logon", replay, G.NONCE_REUSED)
            async with v.client("reader") as reader:
                await refused(reader, "order.place", place, G.PERMISSION_DENIED)
                await refused(reader, "order.cancel", {"order_id": own.order_id}, G.PERMISSION_DENIED)
                await refused(reader, "admin.deposit", {"account": 22, "amount_micro": 5}, G.PERMISSION_DENIED)
            async with v.client("bob") as bob:
                await refused(bob, "order.cancel", {"order_id": own.order_id}, G.NOT_YOUR_ORDER)
                await refused(bob, "order.amend", {"market": MARKET, "order_id": own.order_id, "size_lots": 1},
                              G.NOT_YOUR_ORDER)
                await refused(bob, "order.cancel", {"order_id": 999_999}, G.ORDER_NOT_OPEN)
                await refused(bob, "order.place", {**place, "price": "1.95001"}, G.PRICE_NOT_ON_TICK_GRID)
                await refused(bob, "order.place", {**place, "price": "99.0000"}, G.BAD_PRICE)
                await refused(bob, "order.place", {**place, "size_lots": 2_000_000}, G.SIZE_OUT_OF_RANGE)
                await refused(bob, "order.place", {**place, "market": "NOPE"}, G.UNKNOWN_MARKET)
                await refused(bob, "order.place", {**place, "colour": "red"}, G.BAD_PARAMS)
                await refused(bob, "order.place", {"market": MARKET, "side": "buy", "size_lots": 1}, G.BAD_PARAMS)
                await refused(bob, "order.cancel", {"order_id": 1, "client_order_id": 1}, G.BAD_ORDER_REFERENCE)
                await refused(bob, "logon", logon_params(bob_c), G.ALREADY_LOGGED_IN)
            # a revoked key can no longer log on, and its live session is ended
            async with v.client("alice") as alice:
                v.keys.revoke(alice_c.key)
                async with v.client(None) as anon:
                    await refused(anon, "logon", logon_params(alice_c), G.KEY_REVOKED)
                await alice_closed(alice)
            assert v.gw.engine.seq == seq0
            assert v.gw.engine.state_hash() == h0

    async def alice_closed(alice):
        import asyncio

        alice.reconnect = False
        await asyncio.wait_for(alice._reader, 5)
        assert alice.close_code == G.KEY_REVOKED

    run(body())


def test_a_logon_seen_before_a_restart_is_refused_after_it_and_a_fresh_one_logs_on(tmp_path):
    """`perp serve` keeps the nonces in its memory: a restart forgets them, so a logon signed before the
    process started is refused (4106) -- the frame a client sent to the old process cannot be replayed
    within the receive window after a quick restart. A fresh logon (the reference client signs one on
    every reconnect) goes through."""
    from gateway.client import GatewayClient
    from gateway.server import Gateway, ServerConfig
    from tests.gateway.conftest import VENUE_DEFAULTS, make_keys, pinned_feed

    keys, creds = make_keys(tmp_path / "keys.json")
    cfg = ServerConfig(**({"port": 0, "data_dir": str(tmp_path / "data"), "keys_path": str(keys.path)}
                          | VENUE_DEFAULTS))

    async def body():
        gw = Gateway(cfg, feed=pinned_feed())
        await gw.start()
        seen = logon_params(creds["alice"])  # the client's logon to the first process
        try:
            assert (await raw_logon(f"ws://127.0.0.1:{gw.port}", seen))["ok"]
        finally:
            await gw.stop()
        gw = Gateway(cfg, feed=pinned_feed())
        await gw.start()
        try:
            url = f"ws://127.0.0.1:{gw.port}"
            assert time.time_ns() - seen["ts_ns"] < 5 * 10**9  # still inside the receive window
            again = await raw_logon(url, seen)
            async with GatewayClient(url, creds["alice"]) as alice:
                fresh = alice.account
        finally:
            await gw.stop()
        return again, fresh

    again, fresh = run(body(), 60)
    assert not again["ok"] and again["error"]["code"] == G.NONCE_REUSED, again
    assert "before this server started" in again["error"]["msg"]
    assert fresh == 20
