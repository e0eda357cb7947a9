"""Funding payments and liquidations reach the user channel (and the public channels, without
account ids)."""

from __future__ import annotations


from gateway.limits import WallClock
from perp.commands import Liquidate, SetIndex
from tests.gateway.conftest import ALICE, BOB, MARKET, MINUTE_NS, ManualTime, run, venue




async def pushes_until(client, channel, pred, timeout_s=10.0):
    got = []
    while True:
        p = await client.next_push(channel, timeout_s=timeout_s)
        got.append(p)
        if pred(p):
            return got


def test_hourly_funding_is_paid_per_position_on_the_user_channel(tmp_path):
    clock = ManualTime()

    async def body():
        async with venue(tmp_path, clock=WallClock(0, clock)) as v, v.client("alice") as alice, \
                v.client("bob") as bob, v.client(None) as watcher:
            for c in (alice, bob):
                await c.subscribe("user")
                await c.next_push("user")
            await watcher.subscribe("funding", MARKET)
            clock.start_of_next_hour()  # logged on: now one funding hour ahead, whatever the time of day
            # a book above the $2.0000 index: the premium is positive, longs pay shorts
            await bob.place(MARKET, "sell", 100, price="2.0100")
            await alice.place(MARKET, "buy", 100, price="2.0100")  # alice long 100, bob short 100
            await alice.place(MARKET, "buy", 600, price="2.0090")
            await bob.place(MARKET, "sell", 600, price="2.0110")
            for _ in range(61):  # an hour of minutes: premium samples, then the funding hour
                clock.now += MINUTE_NS
                await v.gw.submit_system([Liquidate(ts_ns=0)])
            k = 100  # micro-USD per tick-lot: $0.0001 x 1 GPU-hour
            for client, acct, lots in ((alice, ALICE, 100), (bob, BOB, -100)):
                got = await pushes_until(client, "user", lambda p: any(
                    type(e).__name__ == "FundingPayment" for e in p.data))
                pay = next(e for p in got for e in p.data if type(e).__name__ == "FundingPayment")
                assert (pay.account, pay.lots, pay.market) == (acct, lots, MARKET)
                assert pay.rate_ppb != 0
                assert pay.amount_micro == (-lots * pay.index_ticks * k * pay.rate_ppb) // 10**9
                view = v.gw.engine.account(acct)
                assert view.positions[0].funding_micro == pay.amount_micro
            assert pay.amount_micro > 0  # bob, short, received
            got = await pushes_until(watcher, "funding", lambda p: p.data[0].seq == pay.seq)
            pub = got[-1]  # (the jump to the next hour paid an empty hour first, at rate 0)
            assert pub.data[0].rate_ppb == pay.rate_ppb and not hasattr(pub.data[0], "account")
            assert v.gw.engine.money_conserved()

    run(body())


def test_a_liquidation_reaches_the_user_channel_and_the_public_one_without_accounts(tmp_path):
    async def body():
        async with venue(tmp_path, deposits=False) as v, v.client("admin") as admin, v.client("alice") as alice, \
                v.client("bob") as bob, v.client(None) as watcher:
            await admin.deposit(ALICE, 1_000_000_000)  # $1,000
            await admin.deposit(BOB, 1_000_000_000_000)
            await alice.subscribe("user")
            await alice.next_push("user")
            await watcher.subscribe("liquidations", MARKET)
            await bob.place(MARKET, "sell", 2000, price="2.0000")
            ack = await alice.place(MARKET, "buy", 2000, order_type="market")  # $4,000 at 5x on $1,000
            assert ack.filled_lots == 2000
            await bob.place(MARKET, "buy", 5000, price="1.9000")  # a bid to liquidate into
            await v.gw.submit_system([SetIndex(ts_ns=0, market=MARKET, price="1.6000")])  # -20%: below the liquidation price 1.6677
            got = await pushes_until(alice, "user", lambda p: any(
                type(e).__name__ == "LiquidationStep" and e.phase == "done" for e in p.data))
            phases = [e.phase for p in got for e in p.data if type(e).__name__ == "LiquidationStep"]
            assert phases[0] == "started" and "order" in phases and phases[-1] == "done"
            assert v.gw.engine.position_lots(ALICE, 0) > -1 and v.gw.engine.position_lots(ALICE, 0) < 2000
            pub = await watcher.next_push("liquidations")
            assert pub.data and all(not hasattr(x, "account") for x in pub.data)
            assert v.gw.engine.money_conserved()

    run(body())
