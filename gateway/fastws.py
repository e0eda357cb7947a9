"""The inbound fast path: whole data frames go straight from the socket to the gateway.

`websockets` parses each incoming frame with a generator over a stream reader, then hands the
message to an assembler (a queue) that the connection's handler task reads with `recv()`: about
ten microseconds of Python per frame before the gateway sees it. `FastServerConnection` parses
the common case itself, in `data_received`, and calls `on_message(payload)` synchronously, in
arrival order: a final, unfragmented, masked text or binary frame without extension bits, no
longer than the connection's `max_size` (unmasked by the library's C `apply_mask`).

Everything else is the library's, unchanged:
- control frames (ping, pong, close) are handed to the protocol object whole, at a frame
  boundary, so its state machine answers pings, acknowledges pongs and runs the close handshake;
- the first frame that is not the common case (a fragment, a reserved bit, an unmasked frame, an
  oversized one, ...) switches the connection to the library's parser for good, from that byte on:
  its checks and close codes apply (1009 for a frame over `max_size`), and nothing is reordered;
- data frames that arrive after the handshake but before the handler has called
  `start_messages` are kept in order and delivered first.

Text frames arrive as UTF-8 bytes, not validated as text here: the JSON decoder refuses invalid
UTF-8 (code 4000).
"""

from __future__ import annotations

from collections.abc import Callable

from websockets.asyncio.server import ServerConnection
from websockets.protocol import State

from gateway.wire import frame_length

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - the C extension is built for every supported platform
    from websockets.utils import apply_mask

_OPEN = State.OPEN
_FIN_TEXT, _FIN_BINARY = 0x81, 0x82


class FastServerConnection(ServerConnection):
    _on_message: Callable[[bytes], None] | None = None
    _stash: list[bytes] | None = None  # data frames before start_messages
    _slow = False  # the library parses everything from here on
    _tail = b""  # an incomplete frame

    def start_messages(self, on_message: Callable[[bytes], None]) -> None:
        """Deliver every data frame to `on_message` from now on (the stashed ones first)."""
        self._on_message = on_message
        stash, self._stash = self._stash, None
        for payload in stash or ():
            on_message(payload)

    def data_received(self, data: bytes) -> None:
        if self._slow or self.protocol.state is not _OPEN:
            if self._tail:
                data, self._tail = self._tail + data, b""
            super().data_received(data)
            return
        buf = self._tail + data if self._tail else data
        self._tail = b""
        n = len(buf)
        pos = 0
        limit = self.protocol.max_message_size
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            size = frame_length(buf, pos)
            if size is None:
                break
            hl, ln = size[0] + 4, size[1]  # + the mask key
            common = (b0 == _FIN_TEXT or b0 == _FIN_BINARY) and b1 & 0x80 and (limit is None or ln <= limit)
            if not common:
                if b0 & 0x80 and 0x88 <= b0 <= 0x8A and b1 & 0x80 and ln <= 125:  # a whole control frame
                    if n - pos < hl + ln:
                        break
                    super().data_received(buf[pos:pos + hl + ln])
                    pos += hl + ln
                    if self.protocol.state is not _OPEN:  # a close frame: the rest is the library's
                        self._slow = True
                        if pos < n:
                            super().data_received(buf[pos:])
                        return
                    continue
                self._slow = True  # anything else: the library's parser from this frame on
                super().data_received(buf[pos:])
                return
            end = pos + hl + ln
            if n < end:
                break
            payload = apply_mask(buf[pos + hl:end], buf[pos + hl - 4:pos + hl])
            pos = end
            if self._on_message is not None:
                self._on_message(payload)
            else:
                if self._stash is None:
                    self._stash = []
                self._stash.append(payload)
        if pos < n:
            self._tail = buf[pos:]
