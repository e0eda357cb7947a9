"""One background job at a time, off the event loop: the periodic snapshot's hashing, encoding and
store (perp serve's file, the Redis engine's keys) while the engine goes on sequencing.

Invariant: at most one job is in flight (`busy`); `settled()` returns once it has finished or
failed, so an owner that stops (and writes its exit snapshot) never races it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class BackgroundJob:
    def __init__(self) -> None:
        self._fut: asyncio.Future | None = None

    @property
    def busy(self) -> bool:
        return self._fut is not None

    def start(self, fn: Callable[[], Any], done: Callable[[BaseException | None, Any], None]) -> None:
        """Run `fn` in a thread of the loop's default executor (not an owner's fsync worker: what
        waits on that must not wait on this); then `done(error, result)` on the loop."""
        if self._fut is not None:
            raise RuntimeError("a background job is already running")
        fut = asyncio.get_running_loop().run_in_executor(None, fn)
        self._fut = fut

        def finished(f: asyncio.Future) -> None:
            self._fut = None
            if f.cancelled():
                done(asyncio.CancelledError(), None)
            else:
                done(f.exception(), None if f.exception() is not None else f.result())
        fut.add_done_callback(finished)

    async def settled(self) -> None:
        """Until the job in flight (if any) has finished or failed."""
        if self._fut is not None:
            await asyncio.gather(self._fut, return_exceptions=True)
