"""A circuit breaker per Vidmob endpoint, shared by every worker process on every node through Redis.

While an endpoint keeps failing (5xx, no answer), every job backing off on its own schedule still
adds up to a steady stream of calls from the fleet. Once ``threshold`` failures in a row have been
seen fleet-wide, the circuit opens: the whole fleet then sends at most one probe per
``probe_interval_s`` to that endpoint, and every other call is refused before it is sent
(``CircuitOpenError``, retryable, recorded as ``not_sent``). The first answer that is not a failure
closes it. State is three small Redis keys per endpoint; if Redis itself does not answer, the
breaker stands aside (fails open) rather than stopping every call.

Plugs into ``VidmobHttp`` as ``before_request`` and (with the attempt log) ``on_attempt``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import redis

from clients.errors import CircuitOpenError

if TYPE_CHECKING:
    from clients.http import Attempt

log = logging.getLogger(__name__)


class CircuitBreaker:
    def __init__(
        self, client: redis.Redis, *, threshold: int, probe_interval_s: float, prefix: str = "aperture:circuit:"
    ) -> None:
        self._redis = client
        self._threshold = threshold
        self._probe_ms = max(1, int(probe_interval_s * 1000))
        self._prefix = prefix

    def _key(self, endpoint: str, what: str) -> str:
        return f"{self._prefix}{endpoint}:{what}"

    def before_request(self, endpoint: str) -> None:
        """Let the call through, unless the circuit is open and this is not the interval's probe."""
        try:
            if not self._redis.exists(self._key(endpoint, "open")):
                return
            if self._redis.set(self._key(endpoint, "probe"), "1", nx=True, px=self._probe_ms):
                return  # this call is the fleet's probe for this interval
        except redis.RedisError:
            return  # no shared state: behave as if closed
        raise CircuitOpenError(
            f"{endpoint} is failing for the whole fleet; one probe every {self._probe_ms / 1000:g} s",
            endpoint=endpoint,
        )

    def on_attempt(self, attempt: Attempt) -> None:
        if attempt.outcome == "not_sent":
            return
        failed = attempt.status_code is None or attempt.status_code >= 500
        try:
            if not failed:
                self._redis.delete(self._key(attempt.endpoint, "failures"), self._key(attempt.endpoint, "open"))
                return
            failures_key = self._key(attempt.endpoint, "failures")
            with self._redis.pipeline() as pipe:
                pipe.incr(failures_key)
                pipe.pexpire(failures_key, self._probe_ms * 10)
                failures = pipe.execute()[0]
            if failures >= self._threshold:
                # Open (or keep open): expires on its own if nothing probes, e.g. no jobs left.
                was_open = self._redis.set(self._key(attempt.endpoint, "open"), "1", px=self._probe_ms * 10, get=True)
                if was_open is None:
                    log.warning("circuit open for %s after %d failures in a row", attempt.endpoint, failures)
        except redis.RedisError:
            log.debug("circuit breaker: Redis did not answer", exc_info=True)
