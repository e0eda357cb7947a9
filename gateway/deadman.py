"""Dead-man's switches (`cancel_after`) that survive a restart.

The engine never sees a switch: it is a gateway timer whose only effect is a journaled
`cancel_all` when it fires. What must survive a crash is the arm itself, so the switches live in
one small file beside the journal, `DATA/cancel_after.json`: `{"<account>": deadline_ts_ns, ...}`
on the server's wall clock (UTC ns). Invariants:

- the file is replaced atomically (temp file, fsync, rename, directory fsync): a crash leaves the
  old arms or the new ones, whole;
- a `cancel_after` reply is sent only once the file holding it is durable (`persist()`), as an
  order's ack waits for the journal's fsync: an armed switch the client was told about is on disk;
- changes made while a write is in flight are gathered into the next write (one fsync for many
  refreshes);
- a switch is removed from the file only after its `cancel_all` went through the sequencer
  (journaled), so a crash between the two fires it again on restart (cancelling twice is harmless).

On start the server re-arms every switch in the file: one whose deadline passed while the server
was down fires at once, before any client can connect.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec

from perp.journal import fsync_dir

_decoder = msgspec.json.Decoder(dict[str, int])


class DeadmanStore:
    def __init__(self, path: str | Path, fsync: bool = True):
        self.path = Path(path)
        self.fsync = fsync
        self.deadlines: dict[int, int] = {}  # account -> deadline_ts_ns, as the next write will hold it
        if self.path.exists():
            self.deadlines = {int(a): int(t) for a, t in _decoder.decode(self.path.read_bytes()).items()}
        self._waiters: list[asyncio.Future] = []
        self._writing: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deadman")

    def arm(self, account: int, deadline_ts_ns: int) -> None:
        self.deadlines[account] = deadline_ts_ns

    def disarm(self, account: int) -> None:
        self.deadlines.pop(account, None)

    def persist(self) -> asyncio.Future:
        """A future done once the current arms are durable (or failed with the write's error)."""
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        if self._writing is None or self._writing.done():
            self._writing = asyncio.ensure_future(self._write_loop())
        return fut

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiters:
            waiters, self._waiters = self._waiters, []
            body = msgspec.json.encode({str(a): t for a, t in sorted(self.deadlines.items())})
            try:
                await loop.run_in_executor(self._executor, self._write, body)
            except Exception as exc:  # noqa: BLE001 - handed to every waiter
                for w in waiters:
                    if not w.done():
                        w.set_exception(exc)
                continue
            for w in waiters:
                if not w.done():
                    w.set_result(None)

    def _write(self, body: bytes) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(body)
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        if self.fsync:
            fsync_dir(self.path.parent)

    async def close(self) -> None:
        if self._writing is not None:
            await asyncio.gather(self._writing, return_exceptions=True)
        self._executor.shutdown(wait=True)
