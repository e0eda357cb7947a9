"""Protection: rate limits, frame size, connections per address, idle timeout, slow consumers.

Each refusal gets its code, other clients are unaffected and the engine is never slowed or changed
by what was refused."""

from __future__ import annotations

import asyncio
import json
import socket

import msgspec
import pytest

from gateway import protocol as P
from gateway.client import GatewayError, LocalBook
from gateway.errors import GatewayCode as G
from tests.gateway.conftest import MARKET, run, venue
from tests.gateway.test_market_data import engine_book

# every test twice: pushes through each connection's queue, and by the fan-out kernel (gateway.fanout)
pytestmark = pytest.mark.usefixtures("fanout_mode")


def test_order_flood_past_the_rate_limit_gets_4300_and_cancels_keep_their_room(tmp_path):
    async def body():
        async with venue(tmp_path, order_rate_per_s=1.0, order_burst=10, cancel_rate_per_s=1.0,
                         cancel_burst=40) as v, v.client("alice") as alice, v.client("bob") as bob:
            results = await asyncio.gather(*(alice.place(MARKET, "buy", 1, price="1.9500") for _ in range(30)),
                                           return_exceptions=True)
            acks = [r for r in results if not isinstance(r, Exception)]
            limited = [r for r in results if isinstance(r, GatewayError) and r.code == G.RATE_LIMITED]
            assert len(acks) == 10 and len(limited) == 20
            assert len(await alice.open_orders()) == 10
            for a in acks:  # cancels have their own, larger bucket
                await alice.cancel(order_id=a.order_id)
            assert (await bob.place(MARKET, "buy", 1, price="1.9500")).status == "resting"  # bob is unaffected

    run(body())


def test_oversized_frames_close_the_connection_and_nothing_else(tmp_path):
    async def body():
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        async with venue(tmp_path, max_frame_bytes=2048) as v, v.client("alice") as alice:
            h0 = v.gw.engine.state_hash()
            async with connect(v.url) as raw:
                await raw.send(json.dumps({"id": 1, "method": "ping", "params": {}, "pad": "x" * 4000}))
                with pytest.raises(ConnectionClosed) as exc:
                    while True:
                        await asyncio.wait_for(raw.recv(), 10)
                assert exc.value.rcvd.code == 1009  # RFC 6455 "message too big"
            assert v.gw.engine.state_hash() == h0
            assert await alice.ping() > 0

    run(body())


def test_connections_per_address_and_idle_timeout(tmp_path):
    async def body():
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed

        async with venue(tmp_path, deposits=False, max_conns_per_ip=3, idle_timeout_s=0.5) as v:
            async with connect(v.url) as a, connect(v.url) as b, connect(v.url) as subscriber:
                await subscriber.send(json.dumps({"id": 1, "method": "subscribe",
                                                  "params": {"channel": "book", "market": MARKET}}))
                async with connect(v.url) as c:
                    with pytest.raises(ConnectionClosed) as exc:
                        while True:
                            await asyncio.wait_for(c.recv(), 10)
                    assert exc.value.rcvd.code == G.TOO_MANY_CONNECTIONS
                for ws in (a, b):  # silent connections end on the idle timeout
                    with pytest.raises(ConnectionClosed) as exc:
                        while True:
                            await asyncio.wait_for(ws.recv(), 10)
                    assert exc.value.rcvd.code == G.IDLE_TIMEOUT
                # a silent subscriber is kept (the WebSocket keepalive watches it)
                await subscriber.send(json.dumps({"id": 2, "method": "ping"}))
                while True:
                    msg = json.loads(await asyncio.wait_for(subscriber.recv(), 10))
                    if msg.get("id") == 2:
                        assert msg["ok"]
                        break

    run(body())


class StalledSocket:
    """A WebSocket client over a plain blocking socket that reads nothing until asked: a tiny
    kernel receive buffer, no background reader (the handshake and frames are done by hand)."""

    def __init__(self, url: str):
        import base64
        import os

        host, port = url.removeprefix("ws://").split(":")
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(10)
        self.sock.connect((host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.buf = b""

    def send(self, text: str) -> None:
        import os
        import struct

        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        hdr = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
                               if n < 65536 else bytes([0x80 | 127]) + struct.pack(">Q", n))
        self.sock.sendall(hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next frame from the server (unmasked, unfragmented)."""
        import struct

        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._read(8))[0]
        return b0 & 0x0F, self._read(n)


SLOW = {"send_queue_frames": 64, "so_sndbuf_bytes": 4096, "write_limit_bytes": 4096, "fsync": "never",
        "group_commit_us": 0}


def test_a_slow_book_consumer_is_conflated_and_catches_up_to_the_same_book(tmp_path):
    async def body():
        async with venue(tmp_path, **SLOW) as v, v.client("alice") as alice, v.client(None) as fast:
            fast_book = await fast.subscribe_book(MARKET)
            loop = asyncio.get_running_loop()  # blocking socket calls run off the server's loop
            slow = await loop.run_in_executor(None, StalledSocket, v.url)
            await loop.run_in_executor(None, slow.send, json.dumps(
                {"id": 1, "method": "subscribe", "params": {"channel": "book", "market": MARKET}}))
            # hundreds of book changes while the slow client reads nothing
            for i in range(300):
                await alice.batch([{"op": "place", "market": MARKET, "side": "buy", "size_lots": 1 + i % 7,
                                    "price": f"1.{9000 + i % 150:04d}"}])
                if i % 50 == 49:
                    await alice.cancel_all(MARKET)
            reg = v.gw.metrics.registry
            assert reg.get_sample_value("perp_gateway_book_conflations_total") >= 1
            if v.gw.cfg.fanout_kernel_min:  # the kernel wrote to the slow socket until it was full
                assert reg.get_sample_value("perp_gateway_fanout_kernel_rests_total") >= 1
            assert all(len(c.out) <= SLOW["send_queue_frames"] for c in v.gw.conns.values())
            # the fast client never noticed
            assert fast_book.resyncs == 0
            # the slow one starts reading: deltas, then a fresh snapshot, then the live stream
            want_seq = v.gw.book_seq[0]
            book = LocalBook(MARKET)
            gaps = 0
            while book.seq != want_seq:
                _, payload = await loop.run_in_executor(None, slow.recv)
                msg = msgspec.json.decode(payload, type=P.Incoming)
                if msg.channel == "book":
                    if not book.apply(msg.type, msg.seq, msg.prev_seq, msgspec.json.decode(msg.data,
                                                                                           type=P.BookData)):
                        gaps += 1
            assert gaps == 0  # conflation drops deltas but never leaves a gap: the snapshot resets the stream
            assert book.levels() == engine_book(v.gw) == fast_book.levels()
            slow.sock.close()

    run(body())


def test_a_client_that_never_reads_its_replies_is_disconnected_with_4301(tmp_path):
    async def body():
        async with venue(tmp_path, **SLOW, conn_rate_per_s=1e6, conn_burst=10**6) as v, \
                v.client("alice") as alice:
            loop = asyncio.get_running_loop()  # blocking socket calls run off the server's loop
            slow = await loop.run_in_executor(None, StalledSocket, v.url)
            seq0 = v.gw.engine.seq
            frame = json.dumps({"id": 1, "method": "query.markets", "params": {}})  # a large reply
            for _ in range(400):
                await loop.run_in_executor(None, slow.send, frame)
            deadline = loop.time() + 15
            while v.gw.conns and any(c.close_code != G.SLOW_CONSUMER for c in v.gw.conns.values()
                                     if c.key is None):
                await asyncio.sleep(0.02)
                assert loop.time() < deadline, "the slow consumer was not cut"
            assert await alice.ping() > 0  # others are unaffected
            assert v.gw.engine.seq == seq0
            slow.sock.close()

    run(body())


def test_metrics_and_healthz(tmp_path):
    async def body():
        import urllib.request

        async with venue(tmp_path) as v, v.client("alice") as alice:
            await alice.place(MARKET, "buy", 1, price="1.9500")
            with pytest.raises(GatewayError):
                await alice.place(MARKET, "buy", 1, price="1.95001")
            loop = asyncio.get_running_loop()
            port = v.gw.port

            def get(path):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                    return r.status, r.read().decode()

            status, health = await loop.run_in_executor(None, get, "/healthz")
            assert status == 200 and json.loads(health)["ok"] is True
            status, text = await loop.run_in_executor(None, get, "/metrics")
            assert status == 200
            assert "perp_gateway_acks_total" in text and "perp_gateway_ack_latency_seconds_bucket" in text
            assert 'perp_gateway_rejects_total{code="4201"} 1.0' in text
            assert "account" not in text  # no per-account labels

    run(body())
