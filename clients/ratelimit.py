"""One rate limit per Vidmob endpoint family, shared by every worker process on every node through Redis.

Celery's ``rate_limit`` is per worker instance (celery#5732): four pods at R each send 4R. Here every
request first takes a slot in its family's moving window (the ``limits`` package: a Redis list of
timestamps per family, checked and appended by one Lua script, so at most R requests enter any
1-second window fleet-wide, with a margin for the time a request takes to arrive: ``_WiderWindow``).
A request that finds the window full waits for the oldest slot to expire; if the wait (summed over
its tries) would pass ``max_wait_s``, it is not sent: it raises ``FleetRateLimitedError`` (retryable,
recorded as ``not_sent``) and the caller's policy looks at the row again later, so a backlog waits in
PostgreSQL, not in a held worker.

A 429 whose Retry-After is usable pauses the family for the whole fleet (one Redis key that expires
on its own): every process waits, or defers, instead of each job finding the 429 for itself.

Families group the endpoints Vidmob likely counts together: both dialects' create calls are
``tags.create``. Window timestamps are each process's own clock (as ``limits`` does): nodes must
keep NTP time; a skew of s seconds lets a window admit up to R more requests per s of skew.

If Redis does not answer, the limiter stands aside (fails open) like the circuit breaker: a
broker outage must not stop calls that PostgreSQL already decided to make.

Plugs into ``VidmobHttp`` as ``before_request`` and ``on_attempt``, after the circuit breaker
(services/gateway.py), so a call the breaker refuses never takes a slot.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import redis
from limits import RateLimitItemPerSecond
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from clients.errors import FleetRateLimitedError

if TYPE_CHECKING:
    from clients.http import Attempt

log = logging.getLogger(__name__)

# The endpoint templates (clients/tags.py, clients/scoring.py) by family; tests/test_ratelimit.py
# checks that every endpoint a client calls has one.
FAMILIES: dict[str, str] = {
    "POST /v1/aperture/jobs": "tags.create",
    "POST /v1/media/aperture": "tags.create",
    "GET /v1/aperture/jobs/{job_id}/status": "tags.status",
    "GET /v1/media/aperture/{job_id}": "tags.status",
    "GET {download_url_json}": "downloads",
    "POST /v1/media": "scoring.submit",
    "GET /v1/media/{media_id}/status": "scoring.status",
    "GET /v1/scoring/media/{media_id}/scores": "scoring.status",
}


def family_of(endpoint: str) -> str:
    """The family an endpoint (``METHOD /path/template``) counts against; an unknown one is its own."""
    return FAMILIES.get(endpoint, endpoint)


@dataclass(frozen=True)
class LimiterEvent:
    """What the limiter did, for metrics: ``waited`` (a request was admitted after ``seconds``
    of waiting, 0 included), ``deferred`` (not sent: the wait ahead was ``seconds``), ``paused``
    (a 429 paused the family for ``seconds``)."""

    kind: Literal["waited", "deferred", "paused"]
    family: str
    seconds: float


# Called with every LimiterEvent (the worker registers its metrics here: workers/signals.py).
OBSERVERS: list[Callable[[LimiterEvent], None]] = []


def _notify(event: LimiterEvent) -> None:
    for observe in OBSERVERS:
        try:
            observe(event)
        except Exception:  # an observer must never fail a call
            log.warning("rate limiter observer failed", exc_info=True)


# ``limits``' acquire_moving_window.lua, with the window's length (seconds, a float: the item's
# expiry plus the margin) apart from the key's time to live (whole seconds, as EXPIRE takes them).
# Bytes, as ``limits`` registers its own scripts.
_ACQUIRE = b"""
local timestamp = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local entry = redis.call('lindex', KEYS[1], limit - 1)
if entry and tonumber(entry) >= timestamp - window then
    return false
end
redis.call('lpush', KEYS[1], timestamp)
redis.call('ltrim', KEYS[1], 0, limit - 1)
redis.call('expire', KEYS[1], ttl)
return true
"""


class _WiderWindow(RedisStorage):
    """``limits``' Redis storage for a moving window ``margin_s`` longer than the item's.

    Vidmob counts requests when they arrive, not when we took their slot; in between lie a
    connection, a TLS handshake, a busy CPU. Two requests a window apart at the limiter arrive
    less than a window apart whenever the first was slower on its way (a few milliseconds will
    do): a window of exactly 1 s at the limiter is R + 1 in some second at the other end. A slot
    here is held ``margin_s`` longer than a second, so every 1-second window at the receiver holds
    at most R while the spread of those delays stays under the margin, at the cost of that much
    rate: R / (1 + margin_s) when work is waiting. Keys and entries are ``limits``' own; the window
    start it reports is moved by the margin, so that a waiter wakes when the slot is free."""

    def __init__(self, *args: Any, margin_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._margin_s = margin_s
        self._acquire = self.get_connection().register_script(_ACQUIRE)

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount != 1:  # not used here: every request takes one slot
            raise ValueError("one slot at a time")
        window = expiry + self._margin_s
        ttl = int(window) + 1
        return bool(self._acquire([self.prefixed_key(key)], [time.time(), limit, window, ttl]))

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        # ``limits`` types expiry as whole seconds; its script takes any number, such as expiry plus the margin.
        window = expiry + self._margin_s
        start, count = super().get_moving_window(key, limit, window)  # type: ignore[arg-type]  # float, not int
        return (start + self._margin_s, count) if count else (start, count)


class FleetRateLimiter:
    """``per_second`` requests per family per second for the whole fleet (0: no limit, the 429
    pause still applies); a request waits at most ``max_wait_s`` in all for its slot."""

    # Waiters that wake for the same freed slot are spread by up to this much, so they do not
    # all hit Redis in the same millisecond.
    WAKE_SPREAD_S = 0.005

    def __init__(
        self,
        client: redis.Redis,
        *,
        per_second: int,
        max_wait_s: float,
        prefix: str = "aperture:ratelimit",
        margin_s: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._redis = client
        self._item = RateLimitItemPerSecond(per_second, 1) if per_second > 0 else None
        self._limiter = MovingWindowRateLimiter(
            _WiderWindow("redis://", connection_pool=client.connection_pool, key_prefix=prefix, margin_s=margin_s)
        )
        self._max_wait_s = max(0.0, max_wait_s)
        self._prefix = prefix
        self._sleep = sleep

    def _pause_key(self, family: str) -> str:
        return f"{self._prefix}:pause:{family}"

    def paused_for(self, family: str) -> float:
        """Seconds the family stays paused for the fleet (0: not paused)."""
        left_ms = self._redis.pttl(self._pause_key(family))
        return max(0.0, left_ms / 1000.0) if left_ms and left_ms > 0 else 0.0

    def before_request(self, endpoint: str) -> None:
        """Take a slot for ``endpoint``'s family, waiting for one if need be; raise
        ``FleetRateLimitedError`` instead when the wait would pass ``max_wait_s``."""
        family = family_of(endpoint)
        started = time.monotonic()
        while True:
            try:
                wait = self.paused_for(family)
                if wait <= 0.0:
                    if self._item is None or self._limiter.hit(self._item, family):
                        _notify(LimiterEvent("waited", family, time.monotonic() - started))
                        return
                    reset_at = self._limiter.get_window_stats(self._item, family).reset_time
                    # A slot freed between the two calls: try again at once (almost).
                    wait = max(0.001, reset_at - time.time())
            except redis.RedisError:
                log.debug("rate limiter: Redis did not answer; letting %s through", endpoint, exc_info=True)
                return
            wait += random.uniform(0.0, self.WAKE_SPREAD_S)
            waited = time.monotonic() - started
            if waited + wait > self._max_wait_s:
                _notify(LimiterEvent("deferred", family, wait))
                raise FleetRateLimitedError(
                    f"{family} is at the fleet's rate limit; a slot is {wait:.2f} s away after {waited:.2f} s "
                    f"of waiting (APERTURE_RATE_LIMIT_MAX_WAIT_S={self._max_wait_s:g})",
                    endpoint=endpoint,
                    retry_after=wait,
                )
            self._sleep(wait)

    def on_attempt(self, attempt: Attempt) -> None:
        """A 429 with a usable Retry-After pauses its family for the whole fleet that long
        (a longer pause already set is kept)."""
        if attempt.status_code != 429 or not attempt.retry_after or attempt.retry_after <= 0:
            return
        family = family_of(attempt.endpoint)
        pause_ms = max(1, int(attempt.retry_after * 1000))
        try:
            if self._redis.pttl(self._pause_key(family)) < pause_ms:
                self._redis.set(self._pause_key(family), "1", px=pause_ms)
        except redis.RedisError:
            log.debug("rate limiter: Redis did not answer; 429 pause not shared", exc_info=True)
            return
        log.warning("%s paused for the whole fleet for %.3g s (429, Retry-After)", family, attempt.retry_after)
        _notify(LimiterEvent("paused", family, attempt.retry_after))
