"""Protection: token buckets, and the clock the server stamps commands with.

`TokenBucket` refills continuously at `rate_per_s` up to `burst`; `take(now_ns, n)` spends n tokens
or refuses (nothing is queued). Times are monotonic nanoseconds supplied by the caller, so the
buckets are deterministic under test.

`WallClock` is the venue's only wall-clock reader: `now_ns()` is UTC nanoseconds, never decreasing
(a step back of the system clock holds the stamp until the clock catches up), starting no earlier
than the engine's last timestamp after a recovery.
"""

from __future__ import annotations

import time


class TokenBucket:
    __slots__ = ("burst", "last_ns", "rate_per_ns", "tokens")

    def __init__(self, rate_per_s: float, burst: float, now_ns: int):
        self.rate_per_ns = rate_per_s / 1e9  # a float at the edge: tokens are not money
        self.burst = float(burst)
        self.tokens = float(burst)
        self.last_ns = now_ns

    def take(self, now_ns: int, n: int = 1) -> bool:
        if now_ns > self.last_ns:
            self.tokens = min(self.burst, self.tokens + (now_ns - self.last_ns) * self.rate_per_ns)
            self.last_ns = now_ns
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


class WallClock:
    def __init__(self, floor_ns: int = 0, source=time.time_ns):
        self._last = floor_ns
        self._source = source

    def now_ns(self) -> int:
        t = self._source()
        self._last = max(self._last, t)
        return self._last
