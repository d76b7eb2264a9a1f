"""Caps on live streams per principal, so one caller cannot pin every connection.

Counted per API process: behind a load balancer each process enforces the cap on its own
share, and the stream's bounded lifetime spreads reconnects across processes.
"""

from __future__ import annotations

from collections import Counter


class StreamSlots:
    def __init__(self, per_principal: int) -> None:
        self._per_principal = per_principal
        self._open: Counter[str] = Counter()

    def acquire(self, scope: str) -> bool:
        if self._open[scope] >= self._per_principal:
            return False
        self._open[scope] += 1
        return True

    def release(self, scope: str) -> None:
        self._open[scope] -= 1
        if self._open[scope] <= 0:
            del self._open[scope]
