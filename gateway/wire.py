"""The server's outgoing WebSocket frames, built once per message.

A server-to-client frame is never masked (RFC 6455 section 5.1), so a message's frame is the same
bytes for every connection: a push shared by a thousand subscribers is framed once and those
bytes are written to each socket. Frames are final, unfragmented text frames without extension
bits (the server negotiates no compression).
"""

from __future__ import annotations

import struct

_OP_TEXT_FIN = 0x81


def text_frame(payload: bytes) -> bytes:
    """The whole frame (header + payload) of one text message."""
    n = len(payload)
    if n < 126:
        return bytes((_OP_TEXT_FIN, n)) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", _OP_TEXT_FIN, 126, n) + payload
    return struct.pack("!BBQ", _OP_TEXT_FIN, 127, n) + payload


def frame_length(buf: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """(header bytes before any mask key, payload length) of the frame starting at `buf[pos]`
    (at least two bytes there), or None while its extended length has not all arrived."""
    ln = buf[pos + 1] & 0x7F
    if ln < 126:
        return 2, ln
    if ln == 126:
        return (4, int.from_bytes(buf[pos + 2:pos + 4], "big")) if len(buf) - pos >= 4 else None
    return (10, int.from_bytes(buf[pos + 2:pos + 10], "big")) if len(buf) - pos >= 10 else None
