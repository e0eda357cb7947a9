"""The inbound fast path: a whole data frame goes straight from the WebSocket parser to the gateway.

`websockets` hands each incoming message to an assembler (a queue, with flow control) that the
connection's handler task reads with `recv()`: a queue put, a task switch and a get per frame.
`FastServerConnection` calls the handler's `on_message(data)` instead, synchronously, from the
protocol's `data_received`, for every final (unfragmented) text or binary frame, in arrival order.
Everything else keeps the library's path: control frames (ping, pong, close) and fragmented
messages. The first fragment switches the connection to the assembler for good, so messages are
never reordered. The size limit (`max_size`) and the protocol checks are the parser's, before any
event is produced. Text frames arrive as UTF-8 bytes, not validated as text here: the JSON decoder
refuses invalid UTF-8 (code 4000).
"""

from __future__ import annotations

from collections.abc import Callable

from websockets.asyncio.server import ServerConnection
from websockets.frames import Frame, Opcode

_DATA = (Opcode.TEXT, Opcode.BINARY)


class FastServerConnection(ServerConnection):
    on_message: Callable[[bytes], None] | None = None  # set by the handler once it is ready
    _fragmented = False

    def process_event(self, event) -> None:
        cb = self.on_message
        if cb is not None and type(event) is Frame and event.opcode in _DATA and not self._fragmented:
            if event.fin:
                cb(event.data)
                return
            self._fragmented = True  # from now on, the assembler (order is kept)
        super().process_event(event)
