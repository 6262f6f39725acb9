"""The way out to Vidmob: clients built from Settings, behind the fleet's circuit breaker and rate limit.

The only place that reads the API key."""

from __future__ import annotations

import os
from collections.abc import Callable

import redis
import requests
from redis.backoff import NoBackoff
from redis.retry import Retry

from clients.circuit import CircuitBreaker
from clients.http import Attempt, VidmobHttp
from clients.ratelimit import FleetRateLimiter
from clients.tags import TagsClient, make_tags_client
from config import get_settings
from config.settings import DEFAULT_CALLER

OnAttempt = Callable[[Attempt], None]

_session: requests.Session | None = None
_session_pid: int | None = None


def _http_session() -> requests.Session:
    # One keep-alive pool per process; never shared across fork.
    global _session, _session_pid
    if _session is None or _session_pid != os.getpid():
        _session = requests.Session()
        _session_pid = os.getpid()
    return _session


_gates: tuple[CircuitBreaker | None, FleetRateLimiter | None] = (None, None)
_gates_pid: int | None = None


def _fleet_gates() -> tuple[CircuitBreaker | None, FleetRateLimiter | None]:
    """The circuit breaker and the rate limiter, on one Redis connection pool per process (made
    after fork) on the fleet's Redis (``APERTURE_REDIS_URL``, or the broker's when that is Redis); each is
    None when its settings turn it off."""
    global _gates, _gates_pid
    settings = get_settings()
    redis_url = settings.fleet_redis_url
    if not redis_url:
        return None, None
    if _gates_pid != os.getpid():
        # One try per command: the gates stand aside when Redis does not answer (a call is never held up
        # by redis-py's default retries, about 4 s of backoff per refused command during an outage).
        client = redis.Redis.from_url(
            redis_url, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)
        )
        breaker = None
        if settings.circuit_failure_threshold:
            breaker = CircuitBreaker(
                client, threshold=settings.circuit_failure_threshold, probe_interval_s=settings.circuit_probe_interval_s
            )
        # A worker never waits for a slot past half its soft time limit, whatever the setting says.
        max_wait = min(settings.rate_limit_max_wait_s, settings.task_soft_time_limit_s / 2)
        limiter = FleetRateLimiter(
            client,
            per_second=settings.rate_limit_per_s,
            max_wait_s=max_wait,
            margin_s=settings.rate_limit_margin_s,
            weights={name: caller.weight for name, caller in settings.callers.items()},
        )
        _gates, _gates_pid = (breaker, limiter), os.getpid()
    return _gates


def reset() -> None:
    """Forget this process's fleet gates (after the settings changed: the tests' in-process tier)."""
    global _gates, _gates_pid
    _gates, _gates_pid = (None, None), None


def vidmob_http(on_attempt: OnAttempt | None = None, *, caller: str = DEFAULT_CALLER) -> VidmobHttp:
    """The client with the fleet's gates: the circuit breaker first (a refused call takes no rate
    slot), then the rate limit, whose slots go to callers in fair shares (``caller``: whose request
    the calls are for); both see every attempt (failures, 429s) before ``on_attempt``."""
    settings = get_settings()
    breaker, limiter = _fleet_gates()
    gates = [gate for gate in (breaker, limiter) if gate is not None]
    record = on_attempt

    def observed(attempt: Attempt) -> None:
        for gate in gates:
            gate.on_attempt(attempt)
        if record is not None:
            record(attempt)

    def before_request(endpoint: str) -> None:
        if breaker is not None:
            breaker.before_request(endpoint)
        if limiter is not None:
            limiter.before_request(endpoint, caller)

    return VidmobHttp(
        settings.vidmob_api_base_url,
        settings.vidmob_api_key,
        connect_timeout=settings.http_connect_timeout_s,
        read_timeout=settings.http_read_timeout_s,
        session=_http_session(),
        on_attempt=observed if gates else on_attempt,
        before_request=before_request if gates else None,
        download_hosts=settings.download_hosts.split(","),
        max_response_bytes=settings.http_max_response_bytes,
        max_response_seconds=settings.http_max_response_s,
    )


def tags_client(dialect: str, on_attempt: OnAttempt | None = None, *, caller: str = DEFAULT_CALLER) -> TagsClient:
    # A job's dialect column is a plain string; make_tags_client refuses one it does not know.
    return make_tags_client(dialect, vidmob_http(on_attempt, caller=caller))  # type: ignore[arg-type]  # str, not the Literal
