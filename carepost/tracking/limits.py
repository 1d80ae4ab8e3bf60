"""A per-client rate limit for the public routes that need no sign-in (the open pixel,
click redirects, the view-in-browser page).

Those routes answer anyone holding a token; the limit stops one client address from
hammering them (token guessing, scraping, a broken mail client in a loop). It is a
token bucket per client address, in memory of the process: ``rate_per_minute`` on
average, bursts up to the same number. Several web processes each count on their own
(the effective limit is that many times higher), which is enough against one noisy
client and needs no shared store. At most ``max_clients`` buckets are kept; the
least recently seen are forgotten first, so a flood of addresses cannot grow memory.

The sign-in throttle (accounts.service) is a different thing: failed attempts per
account, kept in the database, because it must hold across processes and restarts.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable


class ClientRateLimiter:
    """``allow(client)``: whether this client may make one more request now."""

    def __init__(
        self,
        rate_per_minute: int,
        *,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate_per_minute / 60.0
        self.capacity = float(rate_per_minute)
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        if self.capacity <= 0:
            return True  # 0 turns the limit off
        now = self.clock()
        with self._lock:
            tokens, seen = self._buckets.pop(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - seen) * self.rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            return allowed

    def retry_after(self) -> int:
        """Seconds until one more request is allowed for a client that has none left."""
        return max(1, int(1 / self.rate) if self.rate else 60)
