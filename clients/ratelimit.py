"""One rate limit per Vidmob endpoint family, shared by every worker process on every node through Redis.

Celery's ``rate_limit`` is per worker instance (celery#5732): four pods at R each send 4R. Here every
request first takes a slot in its family's moving window (a Redis list of the last R slots' timestamps
per family, checked and appended by one Lua script, so at most R requests enter any 1-second window
fleet-wide, with a margin for the time a request takes to arrive: ``margin_s``). A request that finds
the window full waits for the oldest slot to expire; if the wait (summed over its tries) would pass
``max_wait_s``, it is not sent: it raises ``FleetRateLimitedError`` (retryable, recorded as
``not_sent``) and the caller's policy looks at the row again later, so a backlog waits in PostgreSQL, not
in a held worker.

Each slot names the caller (application) it was taken for, and a request waiting for a slot says so in
Redis while it waits: a free slot goes to the waiting caller with the fewest slots in the window for its
weight (``APERTURE_CALLERS``), so one application's thousands of requests do not take every slot from
another's few while the limit binds, and a caller alone still gets all of them.

Why a moving window is held ``margin_s`` longer than a second: Vidmob counts requests when they arrive,
not when we took their slot; in between lie a connection, a TLS handshake, a busy CPU. Two requests a
window apart at the limiter arrive less than a window apart whenever the first was slower on its way (a
few milliseconds will do): a window of exactly 1 s at the limiter is R + 1 in some second at the other
end. Held a margin longer, every 1-second window at the receiver holds at most R while the spread of
those delays stays under the margin, at the cost of that much rate: R / (1 + margin_s) when work waits.

A 429 whose Retry-After is usable pauses the family for the whole fleet (one Redis key that expires
on its own): every process waits, or defers, instead of each job finding the 429 for itself.

Families group the endpoints Vidmob likely counts together: both dialects' create calls are
``tags.create``. Window timestamps are each process's own clock: nodes must
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
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import redis

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


# One slot of a family's moving window, taken in one step (a Lua script, so that processes on every
# node see the same window). KEYS[1]: the window, a list of "timestamp|caller" entries, newest first, at
# most ``limit`` long (an entry without "|", written before callers were counted, is nobody's);
# KEYS[2]: the requests waiting for a slot, a sorted set of "caller|request" scored by when the entry
# lapses (a request that died while waiting stops counting by itself). ARGV: now, limit, the window's
# length (seconds, a float), the window key's time to live (whole seconds, as EXPIRE takes them), the
# caller, this request's id, how long a refused request counts as waiting, then (name, weight) pairs of
# the callers whose weight is not 1.
#
# With room in the window, a request takes a slot unless another caller has a request waiting and
# fewer slots in the window for its weight (counting the one it would take): that caller is further
# behind its share, and the slot is left for it (weighted fair shares among the callers that want slots
# now; a caller alone gets every slot). Returns {1, 0} when a slot was taken; {0, reset} when the window
# is full (reset: when its oldest slot frees); {-1, 0} when the slot is left for a caller further behind.
_ACQUIRE = b"""
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local caller = ARGV[5]
local member = caller .. '|' .. ARGV[6]
local hold = tonumber(ARGV[7])
local weights = {}
for i = 8, #ARGV, 2 do weights[ARGV[i]] = tonumber(ARGV[i + 1]) end
local function stamp(entry) return tonumber(string.match(entry, '^[^|]*')) end
local function owner(entry) return string.match(entry, '|(.*)$') or '' end
local function share(name, used) return ((used[name] or 0) + 1) / (weights[name] or 1) end
local function wait_here()
    redis.call('zadd', KEYS[2], now + hold, member)
    redis.call('expire', KEYS[2], ttl + math.ceil(hold))
end
local oldest = redis.call('lindex', KEYS[1], limit - 1)
if oldest and stamp(oldest) >= now - window then
    wait_here()
    return {0, tostring(stamp(oldest) + window)}
end
redis.call('zremrangebyscore', KEYS[2], '-inf', now)
local waiting = redis.call('zrange', KEYS[2], 0, -1)
if #waiting > 0 then
    local used = {}
    for _, entry in ipairs(redis.call('lrange', KEYS[1], 0, limit - 1)) do
        if stamp(entry) >= now - window then
            local name = owner(entry)
            used[name] = (used[name] or 0) + 1
        end
    end
    local mine = share(caller, used)
    for _, other in ipairs(waiting) do
        local name = string.match(other, '^(.*)|')
        if name ~= caller and share(name, used) < mine then
            wait_here()
            return {-1, '0'}
        end
    end
end
redis.call('zrem', KEYS[2], member)
redis.call('lpush', KEYS[1], string.format('%.6f', now) .. '|' .. caller)
redis.call('ltrim', KEYS[1], 0, limit - 1)
redis.call('expire', KEYS[1], ttl)
return {1, '0'}
"""


class FleetRateLimiter:
    """``per_second`` requests per family per second for the whole fleet (0: no limit, the 429
    pause still applies); a request waits at most ``max_wait_s`` in all for its slot. While the limit
    binds, the slots go to the callers that want them in proportion to ``weights`` (1 by default)."""

    # Waiters that wake for the same freed slot are spread by up to this much, so they do not
    # all hit Redis in the same millisecond.
    WAKE_SPREAD_S = 0.005
    # A request that left a free slot to a caller further behind its share tries again this soon
    # (that caller takes the slot meanwhile, or its waiting request has lapsed).
    YIELD_S = 0.01

    def __init__(
        self,
        client: redis.Redis,
        *,
        per_second: int,
        max_wait_s: float,
        prefix: str = "aperture:ratelimit",
        margin_s: float = 0.05,
        weights: dict[str, float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._redis = client
        self._per_second = per_second
        # A slot is held a second plus the margin (see _ACQUIRE's callers: the window's length).
        self._window_s = 1.0 + margin_s
        self._acquire = client.register_script(_ACQUIRE)
        self._weights = [str(v) for name, w in (weights or {}).items() if w != 1.0 for v in (name, w)]
        self._max_wait_s = max(0.0, max_wait_s)
        self._prefix = prefix
        self._sleep = sleep

    def _window_key(self, family: str) -> str:
        # The key the ``limits`` package's moving window used, so that workers of both versions share one
        # window during a deploy (its plain-timestamp entries count as nobody's).
        return f"{self._prefix}:LIMITER/{family}/{self._per_second}/1/second"

    def _take(self, family: str, caller: str, request: str) -> tuple[int, float]:
        """One try at a slot: (1, 0) taken, (0, when the oldest slot frees), (-1, 0) left to another caller."""
        # A refused request counts as waiting a window and a half: past its next wake.
        args: list[str | float] = [time.time(), self._per_second, self._window_s, int(self._window_s) + 1]
        args += [caller, request, 1.5 * self._window_s, *self._weights]
        taken, reset = self._acquire(keys=[self._window_key(family), f"{self._prefix}:waiting:{family}"], args=args)
        return int(taken), float(reset)

    def _pause_key(self, family: str) -> str:
        return f"{self._prefix}:pause:{family}"

    def paused_for(self, family: str) -> float:
        """Seconds the family stays paused for the fleet (0: not paused)."""
        left_ms = self._redis.pttl(self._pause_key(family))
        return max(0.0, left_ms / 1000.0) if left_ms and left_ms > 0 else 0.0

    def before_request(self, endpoint: str, caller: str = "default") -> None:
        """Take a slot for ``endpoint``'s family on behalf of ``caller``, waiting for one if need be;
        raise ``FleetRateLimitedError`` instead when the wait would pass ``max_wait_s``."""
        family = family_of(endpoint)
        started = time.monotonic()
        request = uuid.uuid4().hex
        while True:
            try:
                wait = self.paused_for(family)
                if wait <= 0.0:
                    if not self._per_second:
                        _notify(LimiterEvent("waited", family, time.monotonic() - started))
                        return
                    taken, reset_at = self._take(family, caller, request)
                    if taken == 1:
                        _notify(LimiterEvent("waited", family, time.monotonic() - started))
                        return
                    # Full: until the oldest slot frees (at once, almost, if it just did). Left to
                    # another caller: a moment.
                    wait = max(0.001, reset_at - time.time()) if taken == 0 else self.YIELD_S
            except redis.RedisError:
                log.debug("rate limiter: Redis did not answer; letting %s through", endpoint, exc_info=True)
                return
            wait += random.uniform(0.0, self.WAKE_SPREAD_S)
            waited = time.monotonic() - started
            if waited + wait > self._max_wait_s:
                self._stop_waiting(family, caller, request)
                _notify(LimiterEvent("deferred", family, wait))
                raise FleetRateLimitedError(
                    f"{family} is at the fleet's rate limit; a slot is {wait:.2f} s away after {waited:.2f} s "
                    f"of waiting (APERTURE_RATE_LIMIT_MAX_WAIT_S={self._max_wait_s:g})",
                    endpoint=endpoint,
                    retry_after=wait,
                )
            self._sleep(wait)

    def _stop_waiting(self, family: str, caller: str, request: str) -> None:
        """A request that gives up no longer holds a slot back for its caller."""
        try:
            self._redis.zrem(f"{self._prefix}:waiting:{family}", f"{caller}|{request}")
        except redis.RedisError:
            log.debug("rate limiter: Redis did not answer; the waiting entry lapses by itself", exc_info=True)

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
