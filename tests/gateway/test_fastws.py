"""The inbound fast path (gateway.fastws) keeps WebSocket semantics: whole frames, fragmented
messages, frames split across TCP segments and control frames are all answered, in order."""

from __future__ import annotations

import asyncio
import json
import os

import msgspec

from gateway import protocol as P
from tests.gateway.conftest import run, venue
from tests.gateway.test_protection import StalledSocket


def frame(payload: bytes, opcode: int = 0x1, fin: bool = True) -> bytes:
    """A masked client frame (payload < 126 bytes)."""
    mask = os.urandom(4)
    return (bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + mask
            + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def ping(rid: int) -> bytes:
    return json.dumps({"id": rid, "method": "ping"}).encode()


def replies(sock: StalledSocket, n: int) -> list[tuple[int, object]]:
    """The next n frames that are not pushes: (opcode, reply id or payload)."""
    out = []
    while len(out) < n:
        op, payload = sock.recv()
        if op == 0x1:
            msg = msgspec.json.decode(payload, type=P.Incoming)
            if msg.channel is None:
                out.append((op, msg.id))
        else:
            out.append((op, payload))
    return out


def test_whole_fragmented_and_split_frames_are_answered_in_order(tmp_path):
    async def body():
        async with venue(tmp_path, deposits=False) as v:
            loop = asyncio.get_running_loop()
            sock = await loop.run_in_executor(None, StalledSocket, v.url)
            third = ping(3)
            data = (frame(ping(1))
                    + frame(third[:5], 0x1, fin=False) + frame(third[5:], 0x0)  # a fragmented message
                    + frame(ping(4)))  # after a fragment: the library's parser, still in order
            await loop.run_in_executor(None, sock.sock.sendall, frame(ping(0)))
            half = len(data) // 2 + 3  # a frame cut across two TCP writes
            await loop.run_in_executor(None, sock.sock.sendall, data[:half])
            await asyncio.sleep(0.05)
            await loop.run_in_executor(None, sock.sock.sendall, data[half:])
            got = await loop.run_in_executor(None, replies, sock, 4)
            assert got == [(0x1, 0), (0x1, 1), (0x1, 3), (0x1, 4)]
            sock.sock.close()

    run(body())


def test_a_ping_frame_between_requests_gets_its_pong(tmp_path):
    async def body():
        async with venue(tmp_path, deposits=False) as v:
            loop = asyncio.get_running_loop()
            sock = await loop.run_in_executor(None, StalledSocket, v.url)
            await loop.run_in_executor(None, sock.sock.sendall,
                                       frame(ping(1)) + frame(b"are you there", 0x9) + frame(ping(2)))
            got = await loop.run_in_executor(None, replies, sock, 3)
            # the pong is the library's, written at once; replies leave at the end of the loop turn
            assert [g for g in got if g[0] == 0x1] == [(0x1, 1), (0x1, 2)] and (0xA, b"are you there") in got
            sock.sock.close()

    run(body())


def test_the_reply_queued_before_a_close_is_sent_before_the_close_frame(tmp_path):
    from tests.gateway.test_auth import logon_params

    async def body():
        async with venue(tmp_path, deposits=False, max_logon_failures=2) as v:
            loop = asyncio.get_running_loop()
            sock = await loop.run_in_executor(None, StalledSocket, v.url)
            bad = logon_params(v.creds["alice"], secret="11" * 32)
            for rid in (1, 2):
                await loop.run_in_executor(None, sock.send, json.dumps({"id": rid, "method": "logon", "params": bad}))
            got = []
            while True:
                op, payload = await loop.run_in_executor(None, sock.recv)
                if op == 0x8:
                    got.append(("close", int.from_bytes(payload[:2], "big")))
                    break
                msg = msgspec.json.decode(payload, type=P.Incoming)
                if msg.channel is None:
                    got.append((msg.id, msg.error.code))
            assert got == [(1, 4104), (2, 4104), ("close", 4109)]  # the second refusal, then the close
            sock.sock.close()

    run(body())
