"""Per-principal rate limits (OWASP API4) with the `limits` library.

The counters live in memory by default, or in Redis when `SAGAWORKS_RATE_LIMIT_STORAGE_URL`
names one, so that several API processes enforce one limit together.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse_many, storage
from limits.strategies import MovingWindowRateLimiter

from api.errors import RateLimited
from api.principals import Principal
from common.settings import Settings


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        self._items: list[RateLimitItem] = parse_many(settings.rate_limit)
        self._storage = storage.storage_from_string(settings.rate_limit_storage_url)
        self._limiter = MovingWindowRateLimiter(self._storage)

    def check(self, principal: Principal) -> None:
        """Count one request against the principal; raise `RateLimited` past a limit."""
        for item in self._items:
            if not self._limiter.hit(item, principal.scope):
                stats = self._limiter.get_window_stats(item, principal.scope)
                wait = max(1, math.ceil(stats.reset_time - time.time()))
                raise RateLimited(
                    f"rate limit of {item} exceeded for this principal; retry in {wait}s", wait
                )
