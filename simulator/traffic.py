"""Requests per second as the simulator sees them, and its optional rate limit.

What a client's fleet-wide rate limit promises is measured here, at the receiving end: the most
requests that arrived in any 1-second window (a true moving window over arrival times, per
endpoint and in all, since the last reset) and per-second buckets of the last ``keep_s``
seconds. Only API requests (``/v1/*``) are counted, never the control endpoints.

The rate limit (``rate_limit_per_s``, 0 = off) admits at most that many requests per endpoint
(``METHOD template``) in any 1-second window, like the gateway of a real API, and answers the
rest 429 with ``Retry-After``: the seconds until the oldest admitted request leaves the window
(fractional, to keep tests fast; a real gateway rounds up to whole seconds).

Not thread-safe on its own: ``SimState`` calls it under its lock.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from typing import Any

ALL = "*"


class Traffic:
    def __init__(self, keep_s: int = 60) -> None:
        self.keep_s = keep_s
        self._last_second: dict[str, deque[float]] = {}
        self._max_1s: Counter[str] = Counter()
        self._buckets: deque[tuple[int, Counter[str]]] = deque()
        self._admitted: dict[str, deque[float]] = {}
        self.limited = 0

    def arrived(self, key: str, now: float) -> None:
        """Count one request to ``key`` (``METHOD template``) arriving at ``now``."""
        for name in (key, ALL):
            window = self._last_second.setdefault(name, deque())
            while window and window[0] <= now - 1.0:
                window.popleft()
            window.append(now)
            if len(window) > self._max_1s[name]:
                self._max_1s[name] = len(window)
        second = math.floor(now)
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append((second, Counter()))
            while self._buckets and self._buckets[0][0] <= second - self.keep_s:
                self._buckets.popleft()
        counts = self._buckets[-1][1]
        counts[key] += 1
        counts[ALL] += 1

    def admit(self, key: str, now: float, per_second: float) -> float | None:
        """None when the request may go ahead, else the seconds until it could (its Retry-After)."""
        if per_second <= 0:
            return None
        window = self._admitted.setdefault(key, deque())
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= per_second:
            self.limited += 1
            return max(0.001, window[0] + 1.0 - now)
        window.append(now)
        return None

    def stats(self, now: float) -> dict[str, Any]:
        second = math.floor(now)
        return {
            "max_1s": self._max_1s[ALL],
            "max_1s_by_endpoint": {k: v for k, v in sorted(self._max_1s.items()) if k != ALL},
            "rate_limited": self.limited,
            # Oldest first; seconds with no request are left out.
            "per_second": [
                {"t": t, "total": counts[ALL], "by_endpoint": {k: v for k, v in sorted(counts.items()) if k != ALL}}
                for t, counts in self._buckets
                if t > second - self.keep_s
            ],
        }
