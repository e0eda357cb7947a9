"""The fan-out kernel (gateway.fanout): one `send` of the whole frame per socket, what a full
socket took reported exactly, a reset peer an error and never a SIGPIPE. The gateway's rule around
it (idle sockets only, the rest of a partial write first) runs end to end in
tests/gateway/test_market_data.py and test_protection.py: each test once with every push through
the connections' queues and once with every push to an idle socket by the kernel (`fanout_mode`)."""

from __future__ import annotations

import socket

import numpy as np

from gateway.fanout import send_to_all


def _frame(n: int) -> np.ndarray:
    return np.frombuffer(bytes(range(256)) * (n // 256) + bytes(range(n % 256)), dtype=np.uint8)


def test_each_socket_gets_the_whole_frame_once():
    pairs = [socket.socketpair() for _ in range(50)]
    try:
        frame = _frame(300)
        fds = np.array([a.fileno() for a, _ in pairs], dtype=np.int32)
        sent = np.zeros(len(pairs), dtype=np.int64)
        assert send_to_all(fds, frame, sent) == len(pairs)
        assert (sent == 300).all()
        for _, b in pairs:
            assert b.recv(1000) == frame.tobytes()
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_a_full_socket_reports_what_it_took_and_the_others_still_get_theirs():
    full_a, full_b = socket.socketpair()
    ok_a, ok_b = socket.socketpair()
    try:
        full_a.setblocking(False)
        while True:  # fill the socket to the brim
            try:
                full_a.send(b"x" * 4096)
            except BlockingIOError:
                break
        frame = _frame(100_000)
        fds = np.array([full_a.fileno(), ok_a.fileno()], dtype=np.int32)
        sent = np.zeros(2, dtype=np.int64)
        assert send_to_all(fds, frame, sent) == 1  # never blocks on the full one
        assert sent[0] < len(frame)  # -1 (EAGAIN) or the part it took: the caller writes the rest
        assert sent[1] == len(frame)
        got = b""
        while len(got) < len(frame):
            got += ok_b.recv(1 << 20)
        assert got == frame.tobytes()
    finally:
        for s in (full_a, full_b, ok_a, ok_b):
            s.close()


def test_a_reset_peer_is_an_error_not_a_signal():
    srv = socket.create_server(("127.0.0.1", 0))
    cli = socket.create_connection(srv.getsockname())
    peer, _ = srv.accept()
    cli.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    cli.close()  # RST
    try:
        frame = _frame(64)
        sent = np.zeros(1, dtype=np.int64)
        fds = np.array([peer.fileno()], dtype=np.int32)
        results = []
        for _ in range(3):  # the first send may be taken before the reset is seen
            send_to_all(fds, frame, sent)
            results.append(int(sent[0]))
        assert results[-1] == -1  # EPIPE / ECONNRESET, and the process is still here (MSG_NOSIGNAL)
    finally:
        peer.close()
        srv.close()
