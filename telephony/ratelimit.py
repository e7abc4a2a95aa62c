"""A per-client sliding-window rate limit, pure bookkeeping with an injectable clock."""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from collections.abc import Callable


def client_key(host: str) -> str:
    """The key a client is limited under: its IPv4 address, or its IPv6 /64 network."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or "unknown"
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class RateLimiter:
    """At most ``limit`` events per ``window_secs`` per key.

    ``hit(key)`` records an attempt and returns 0.0 when it is allowed, else the seconds until
    the next one would be (a refused attempt is not counted). Memory is bounded by the keys
    seen in the last window.
    """

    def __init__(
        self, limit: int, window_secs: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.window = window_secs
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str) -> float:
        now = self._clock()
        self._prune(now)
        hits = self._hits.setdefault(key, deque())
        if len(hits) >= self.limit:
            return max(0.001, hits[0] + self.window - now)
        hits.append(now)
        return 0.0

    def _prune(self, now: float) -> None:
        cutoff = now - self.window
        for key in list(self._hits):
            hits = self._hits[key]
            while hits and hits[0] <= cutoff:
                hits.popleft()
            if not hits:
                del self._hits[key]
