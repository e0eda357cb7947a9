"""A push shared by many subscribers, written to their sockets by one numba call.

A push is framed once (gateway.wire) and the same bytes go to every subscriber: one `send` system
call per socket whatever writes it. Written through each connection's queue and transport, a
subscriber also costs the gateway a queue append, a flush entry, a join and a call into the event
loop's transport, for each of 1,000 subscribers every `book_interval_ms`. `send_to_all` makes the
calls for a whole pass in one kernel (the GIL released): `perp bench fanout` measured 10.0 -> 8.5 us
and 12.2 -> 9.7 us of the loop thread per subscriber per push (1.6-2.5 us saved); what is left is
the system call itself (5-6.6 us of the sender's CPU per loopback send, measured standalone) and the
per-subscriber eligibility check in Python.

Invariant (the caller's rule, `Gateway._broadcast`): a socket goes to the kernel only when nothing
of its connection is waiting anywhere -- its gateway queue empty, its transport's write buffer
empty, not paused by flow control, open and not closing -- so the push's bytes are the next on the
wire; the call is synchronous on the loop thread, so nothing else writes those sockets meanwhile
and no descriptor can be closed under it. What a full socket did not take (MSG_DONTWAIT: part or
none) is written through its transport right after, before anything else of that connection.
"""

from __future__ import annotations

import os

import numpy as np
from numba import njit, types

# ssize_t send(int fd, const void *buf, size_t len, int flags): resolved by name (libc is in every
# CPython process), so the kernel is cacheable (a ctypes pointer would be a dynamic global).
_send = types.ExternalFunction("send", types.intp(types.int32, types.voidptr, types.uintp, types.int32))
_MSG_DONTWAIT = 0x40  # Linux
_MSG_NOSIGNAL = 0x4000  # a reset peer gives EPIPE (-1), not SIGPIPE


@njit(nogil=True, cache=True)
def send_to_all(fds: np.ndarray, frame: np.ndarray, sent_bytes: np.ndarray) -> int:
    """`send` the whole of `frame` once to each descriptor, never blocking; `sent_bytes[i]` is what
    the socket took (the frame's length when whole, less when full, -1 on an error such as EAGAIN
    or EPIPE). Returns how many took the whole frame."""
    n = frame.size
    whole = 0
    for i in range(fds.size):
        r = _send(fds[i], frame.ctypes.data, n, _MSG_DONTWAIT | _MSG_NOSIGNAL)
        sent_bytes[i] = r
        if r == n:
            whole += 1
    return whole


def warm() -> None:
    """Load (or compile) the kernel before the port opens (perp.warm does the engine's)."""
    r, w = os.pipe()
    try:
        send_to_all(np.array([w], dtype=np.int32), np.zeros(1, dtype=np.uint8), np.zeros(1, dtype=np.int64))
    finally:
        os.close(r)
        os.close(w)
