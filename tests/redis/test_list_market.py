"""`list_market` on a running scaled-out venue: the engine lists the market and goes on; every
gateway serves it from the record that listed it on -- one started after the listing (its book chain
from the engine's chains) and one running through it (its views grown after that record), which
agree on the new market's book sequence -- while the old market trades on; the engine restarted from
the stream recovers the same state and carries on in both markets."""

from __future__ import annotations

import asyncio
import time

import msgspec
from gateway import redis_journal as RJ
from gateway.client import GatewayClient
from perp.commands import SetIndex
from perp.engine import Engine
from tests.gateway.conftest import ALICE, BOB, run
from tests.redis.conftest import MARKET, NS, start_engine, start_gateway, start_venue, wait_engine_idle
from tests.test_admin_list_market import A100, A100_SPEC


def _pin_a100(url: str, price: str = "1.2000") -> None:
    """A fresh set_index of the listed market appended to NS:cmd (what an operator tool does)."""
    enc = Engine()
    enc.add_market(A100_SPEC)
    row = enc.encode([SetIndex(ts_ns=0, market=A100, price=price)])
    r = RJ.connect_sync(url)
    r.xadd(RJ.Keys(NS).cmd, {"g": "test", "b": 2, "r": RJ.rows_to_bytes(row)})
    r.close()


def test_a_market_listed_mid_stream_trades_on_a_gateway_started_after_it_and_survives_an_engine_restart(
        redis_server, procs, tmp_path):
    creds, eng, ga, _gb = start_venue(redis_server, procs, tmp_path)

    async def list_it() -> None:
        async with GatewayClient(ga.url, creds["admin"]) as admin:
            for acct in (ALICE, BOB):
                await admin.deposit(acct, 1_000_000_000_000)
            ack = await admin.request("admin.submit", {"command": {
                "type": "list_market", "spec": msgspec.to_builtins(A100_SPEC), "reason": "launch A100"}})
            assert ack["command"] == "list_market"

    run(list_it(), 120)
    _pin_a100(redis_server.url)
    gc = start_gateway(redis_server.url, tmp_path / "keys.json", tmp_path / "c")  # knows A100 from its start
    procs.append(gc)

    async def trade(url_new: str, url_old: str) -> int:
        price = "1.2000"
        async with GatewayClient(url_new, creds["alice"]) as alice, GatewayClient(url_new, creds["bob"]) as bob, \
                GatewayClient(url_new) as md, GatewayClient(url_old, creds["alice"]) as alice_old, \
                GatewayClient(url_old, creds["bob"]) as bob_old:
            book = await md.subscribe_book(A100)
            await bob.place(A100, "sell", 5, price=price)
            await bob.place(A100, "sell", 3, price="1.2300")
            fill = await alice.place(A100, "buy", 5, price=price)
            assert fill.status == "filled"
            t_end = time.monotonic() + 10
            while book.seq < fill.seq:  # the new market's deltas, chained from its listing
                assert time.monotonic() < t_end, (book.seq, fill.seq)
                await asyncio.sleep(0.02)
            assert book.synced and book.levels() == ([], [("1.2300", 3)])
            # the gateway that ran through the listing serves the new market too, on the same chain
            async with GatewayClient(url_old) as md_old:
                book_old = await md_old.subscribe_book(A100)
                while book_old.seq < book.seq:  # this gateway may be a record behind the other
                    assert time.monotonic() < t_end, (book_old.seq, book.seq)
                    await asyncio.sleep(0.02)
                assert (book_old.seq, book_old.levels()) == (book.seq, book.levels())
                part = await alice_old.place(A100, "buy", 1, price="1.2300")
                assert part.status == "filled"
                while book.seq < part.seq or book_old.seq < part.seq:
                    assert time.monotonic() < t_end + 10, (book.seq, book_old.seq, part.seq)
                    await asyncio.sleep(0.02)
                assert book.synced and book_old.synced and book.levels() == book_old.levels() == ([], [("1.2300", 2)])
            # and its old market trades on
            await bob_old.place(MARKET, "sell", 2, price="2.0000")
            done = await alice_old.place(MARKET, "buy", 2, price="2.0000")
            assert done.status == "filled"
            await bob.cancel_all()
            return done.seq

    def check(seq_at_least: int, rounds: int) -> None:
        """The engine idle past `seq_at_least`; a recovery from the stream reaches its hash and positions."""
        st = wait_engine_idle(redis_server.url, seq_at_least)
        r = redis_server.client()
        rec = RJ.recover(r, RJ.Keys(NS))
        r.close()
        assert rec.engine.state_hash() == st["state_hash"]
        assert rec.engine.position_lots(ALICE, rec.engine.market_index(A100)) == 6 * rounds
        assert rec.engine.position_lots(ALICE, 0) == 2 * rounds

    check(run(trade(gc.url, ga.url), 120), 1)
    eng.kill()  # the engine restarted from the stream: the listed market in its chains too
    procs.append(start_engine(redis_server.url, NS, log_dir=tmp_path / "eng2"))
    check(run(trade(gc.url, ga.url), 120), 2)
