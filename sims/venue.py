"""Where a scenario's commands go: the engine in this process, or the whole venue over loopback.

Both venues run the **same sequencer** (`perp.sequencer.JournaledEngine`): every command is its own
journaled batch, stamped with the time the runner gives it, and after a batch that moved a mark or
an index the sequencer appends its own liquidation sweep -- exactly what `perp serve` does.

- `EngineVenue` (the default): a `JournaledEngine` on a journal in a temporary directory (fsync off:
  nothing here has to survive a crash), one `submit_rows` per command.
- `GatewayVenue` (`perp sim run --via gateway`): the embedded gateway (`gateway.server.Gateway`, the
  body of `perp serve`) started on 127.0.0.1 with an ephemeral port and a temp data directory (its
  `markets.toml` is the scenario's spec), in an asyncio loop on a background thread. Every agent
  account logs on with its own HMAC key through `gateway.client.GatewayClient` and trades over the
  WebSocket (`order.place`, `order.cancel_all`, ...); deposits go through an admin key
  (`admin.deposit`). What protocol v1 has no method for enters the gateway's own sequencer queue
  (`Gateway.submit_system`, the path of its timers): the oracle's `set_index`, the sweep ticks, the
  insurance fund's deposit and floor, and the traders' `set_leverage` (noted in docs/sims.md).
  The gateway's clock is the runner's: `WallClock(source=...)` reads the simulated time the runner
  set for the command it is about to send (the server stamps each group commit with one reading),
  so a six-hour scenario takes seconds, not six hours. The agents' views come through the client
  too: the ticker channel (mark, index, best bid/ask) and `query.account` (positions).

**Why the two give the same state hash.** The runner sends one command at a time, in the agents'
acting order, and waits for its ack (or refusal) before the next: each group commit then holds one
command, stamped with the same time as in-process, so the journal of the gateway holds the same
rows in the same order as the in-process journal, and the same sequencer appends the same sweeps.
A command the gateway refuses before sequencing (4000-4899: off-grid price, size out of range, ...)
never reaches the engine and takes no sequence number, while in-process the engine rejects it with
one; such refusals are counted (`gateway_refusals`) and make the hashes differ -- the test scenario
has none. The gateway mode is slower (a WebSocket round trip per command and per view).

Events: `EngineVenue` keeps the events `submit_rows` returns; `GatewayVenue` replays its journal
through a fresh engine after the run (the journal is the record) and checks that the replay reaches
the venue's state hash.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from perp import events as E
from perp.commands import Amend, Cancel, CancelAll, Command, Deposit, Place
from perp.engine import Engine
from perp.markets import MarketsConfig, MarketSpec, price_to_ticks
from perp.sequencer import JournaledEngine

DROP = (E.BookLevel, E.Accepted, E.Cancelled, E.Amended)  # counted, not kept


@dataclass
class View:
    """What the agents see at the start of a step."""

    index_ticks: int
    mark_ticks: int
    best_bid: int | None
    best_ask: int | None
    positions: dict[int, int]  # account -> lots in the scenario's market


@dataclass
class Collected:
    events: list = field(default_factory=list)
    dropped_counts: dict[str, int] = field(default_factory=dict)

    def add(self, evs) -> None:
        for ev in evs:
            if isinstance(ev, DROP):
                k = type(ev).__name__
                self.dropped_counts[k] = self.dropped_counts.get(k, 0) + 1
            else:
                self.events.append(ev)


class EngineVenue:
    """The sequencer and engine in this process."""

    via = "engine"

    def __init__(self, spec: MarketSpec):
        self._dir = Path(tempfile.mkdtemp(prefix="perp-sim-"))
        self.jeng = JournaledEngine.open(self._dir / "journal.bin", markets=MarketsConfig(market=[spec]),
                                         fsync="never")
        self.engine: Engine = self.jeng.engine
        self.collected = Collected()
        self.gateway_refusals: dict[str, int] = {}

    def submit(self, cmds: list[Command]) -> None:
        eng = self.engine
        for cmd in cmds:
            self.collected.add(eng.decode(self.jeng.submit_rows(eng.encode([cmd]))))

    def view(self, accounts: list[int]) -> View:
        eng = self.engine
        bid, ask = eng.best_bid_ask(0)
        pos = eng.state.position_lots
        return View(eng.index_ticks(0), eng.mark_ticks(0), bid, ask,
                    {a: int(pos[a, 0]) for a in accounts if a < pos.shape[0]})

    def abort(self) -> None:
        self.finish()

    def finish(self) -> Collected:
        self.jeng.close()
        shutil.rmtree(self._dir, ignore_errors=True)
        return self.collected


def markets_toml(spec: MarketSpec) -> str:
    """The spec as a markets.toml document (`perp.markets.load_markets` reads it back equal)."""
    import json

    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        return json.dumps(v)  # a TOML basic string

    raw = msgspec.to_builtins(spec)
    tiers = raw.pop("tier", [])
    lines = ["[[market]]"] + [f"{k} = {value(v)}" for k, v in raw.items() if v is not None]
    for t in tiers:
        lines += ["", "[[market.tier]]"] + [f"{k} = {value(v)}" for k, v in t.items() if v is not None]
    return "\n".join(lines) + "\n"


ADMIN_KEY_ACCOUNT = 1  # the runner's admin key (deposits only); a reserved account never trades


class GatewayVenue:
    """The embedded gateway on loopback, driven through the reference client (see the module doc)."""

    via = "gateway"

    def __init__(self, spec: MarketSpec, accounts: list[int], timeout_s: float = 900.0):  # a cold kernel compile
        self.spec = spec
        self.accounts = accounts
        self.timeout_s = timeout_s
        self.now_ns = 0
        self.gateway_refusals: dict[str, int] = {}
        self.sent: dict[str, int] = {"client": 0, "system": 0}  # commands over the WebSocket / the timers' queue
        self._dir = Path(tempfile.mkdtemp(prefix="perp-sim-gw-"))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sim-gateway", daemon=True)
        self._thread.start()
        try:
            self._run(self._start())
        except BaseException:
            self._shutdown()
            raise

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self.timeout_s)

    async def _start(self) -> None:
        from gateway.client import Credentials, GatewayClient
        from gateway.keys import KeyStore
        from gateway.limits import WallClock
        from gateway.server import Gateway, ServerConfig

        data = self._dir / "venue"
        data.mkdir()
        (self._dir / "markets.toml").write_text(markets_toml(self.spec))
        store = KeyStore(data / "keys.json")
        creds: dict[int, Credentials] = {}
        for a in [ADMIN_KEY_ACCOUNT] + self.accounts:
            k, secret = store.create(a, ("admin",) if a == ADMIN_KEY_ACCOUNT else ("read", "trade"), "hmac",
                                     label=f"sim-{a}")
            creds[a] = Credentials("hmac", k.key, secret)
        many = 10.0 ** 9  # no rate limit gets in the way of a scripted run
        config = ServerConfig(host="127.0.0.1", port=0, data_dir=str(data),
                              markets_path=str(self._dir / "markets.toml"), fsync="never", group_commit_us=0,
                              liquidation_interval_ms=0, index_feed=False, snapshot_on_exit=False,
                              order_rate_per_s=many, order_burst=int(many), cancel_rate_per_s=many,
                              cancel_burst=int(many), conn_rate_per_s=many, conn_burst=int(many),
                              max_conns_per_ip=len(creds) + 8,
                              # the clients sign logons with the real clock, the server runs simulated time
                              recv_window_ms=200 * 365 * 86_400_000)
        self.gw = Gateway(config, clock=WallClock(0, source=lambda: self.now_ns))
        self.engine: Engine = self.gw.engine
        await self.gw.start()
        url = f"ws://127.0.0.1:{self.gw.port}"
        self.clients: dict[int, GatewayClient] = {}
        for a, c in creds.items():
            cl = GatewayClient(url, c, reconnect=False, heartbeat_s=None, request_timeout_s=self.timeout_s)
            await cl.connect()
            self.clients[a] = cl
        self.observer = GatewayClient(url, None, reconnect=False, heartbeat_s=None,
                                      request_timeout_s=self.timeout_s)
        await self.observer.connect()
        await self.observer.subscribe("ticker", self.spec.symbol)
        self._ticker = None

    # ---- commands --------------------------------------------------------------------------
    def submit(self, cmds: list[Command]) -> None:
        for cmd in cmds:
            self.now_ns = cmd.ts_ns  # the server stamps this command's group commit with it
            self._run(self._one(cmd))

    async def _one(self, cmd: Command) -> None:
        from gateway.client import GatewayError

        try:
            if isinstance(cmd, Place):
                await self.clients[cmd.account].place(
                    cmd.market, cmd.side, cmd.size_lots, price=cmd.price, order_type=cmd.order_type, tif=cmd.tif,
                    client_order_id=cmd.client_order_id, reduce_only=cmd.reduce_only, stp=cmd.stp)
            elif isinstance(cmd, CancelAll):
                await self.clients[cmd.account].cancel_all(cmd.market)
            elif isinstance(cmd, Cancel):
                await self.clients[cmd.account].cancel(cmd.order_id, cmd.client_order_id)
            elif isinstance(cmd, Amend):
                await self.clients[cmd.account].amend(
                    cmd.market, cmd.order_id, cmd.client_order_id,
                    price=None if cmd.price is msgspec.UNSET else cmd.price,
                    size_lots=None if cmd.size_lots is msgspec.UNSET else cmd.size_lots)
            elif isinstance(cmd, Deposit):
                await self.clients[ADMIN_KEY_ACCOUNT].deposit(cmd.account, cmd.amount_micro)
            else:  # no protocol method: the gateway's own sequencer queue (its timers' path)
                self.sent["system"] += 1
                try:
                    await self.gw.submit_system([cmd])
                except RuntimeError as exc:  # sequenced and refused by the engine (as in-process), unless:
                    if "status unknown" in str(exc):
                        raise
                return
            self.sent["client"] += 1
        except GatewayError as exc:
            if exc.code != 4400:  # 4400: sequenced and rejected by the engine, as in-process
                key = f"{type(cmd).__name__}:{exc.code}"
                self.gateway_refusals[key] = self.gateway_refusals.get(key, 0) + 1

    # ---- views -----------------------------------------------------------------------------
    def view(self, accounts: list[int]) -> View:
        return self._run(self._view(accounts))

    async def _view(self, accounts: list[int]) -> View:
        await self.observer.ping()  # every ticker push sent before this reply has been read
        for push in self.observer.pending_pushes("ticker"):
            self._ticker = push.data
        t = self._ticker
        ticks = lambda s: 0 if s is None else price_to_ticks(self.spec, s)  # noqa: E731
        infos = await asyncio.gather(*(self.clients[a].account_info() for a in accounts))
        positions = {}
        for a, info in zip(accounts, infos, strict=True):
            lots = [p["lots"] for p in info["account"]["positions"] if p["market"] == self.spec.symbol]
            positions[a] = int(lots[0]) if lots else 0
        bid, ask = ticks(t.best_bid), ticks(t.best_ask)
        return View(ticks(t.index), ticks(t.mark), bid or None, ask or None, positions)

    # ---- the end ---------------------------------------------------------------------------
    async def _stop(self) -> None:
        for cl in list(self.clients.values()) + [self.observer]:
            await cl.close()
        await self.gw.stop()

    def _shutdown(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def abort(self) -> None:
        try:
            self._run(self._stop())
        except Exception:  # noqa: BLE001 - already failing: stop what can be stopped
            pass
        self._shutdown()

    def finish(self) -> Collected:
        """Stop the venue; the run's events from a replay of its journal (checked to reach the
        venue's state hash)."""
        from perp.journal import JournalReader

        try:
            self._run(self._stop())
            replayed = Engine(self.engine.markets)
            out = Collected()
            with JournalReader(self.gw.journal_path) as reader:
                for _, rows in reader.records():
                    replayed.encoder.payloads.update(reader.payloads)  # admin commands' side records
                    out.add(replayed.decode(replayed.submit_rows(rows)))
            if replayed.state_hash() != self.engine.state_hash():
                raise RuntimeError("the gateway's journal does not replay to the venue's state hash")
            return out
        finally:
            self._shutdown()


def open_venue(via: str, spec: MarketSpec, accounts: list[int]):
    if via == "engine":
        return EngineVenue(spec)
    if via == "gateway":
        return GatewayVenue(spec, accounts)
    raise ValueError(f"via must be 'engine' or 'gateway', not {via!r}")
