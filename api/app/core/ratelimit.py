"""A token bucket per client address (per worker process), for the authentication endpoints."""

from __future__ import annotations

import math
import time


class RateLimiter:
    def __init__(self, rate_per_second: float, burst: int, max_keys: int = 50_000) -> None:
        self.rate = rate_per_second
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}

    def retry_after(self, key: str) -> int:
        """0 when the request may go now (and takes a token), else whole seconds to wait."""
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1:
            if len(self._buckets) >= self.max_keys:
                self._buckets.clear()
            self._buckets[key] = (tokens - 1, now)
            return 0
        self._buckets[key] = (tokens, now)
        return max(1, math.ceil((1 - tokens) / self.rate))
