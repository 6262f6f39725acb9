"""Builds the Vidmob clients from Settings: the only place that reads the API key."""

from __future__ import annotations

import os
from collections.abc import Callable

import redis
import requests

from clients.circuit import CircuitBreaker
from clients.http import Attempt, VidmobHttp
from clients.tags import TagsClient, make_tags_client
from config import get_settings

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


_breaker: CircuitBreaker | None = None
_breaker_pid: int | None = None


def _circuit_breaker() -> CircuitBreaker | None:
    # One Redis connection pool per process, made after fork, on the broker's Redis.
    global _breaker, _breaker_pid
    settings = get_settings()
    if not settings.circuit_failure_threshold or not settings.broker_url:
        return None
    if _breaker is None or _breaker_pid != os.getpid():
        client = redis.Redis.from_url(settings.broker_url, socket_timeout=2, socket_connect_timeout=2)
        _breaker = CircuitBreaker(
            client, threshold=settings.circuit_failure_threshold, probe_interval_s=settings.circuit_probe_interval_s
        )
        _breaker_pid = os.getpid()
    return _breaker


def vidmob_http(on_attempt: OnAttempt | None = None) -> VidmobHttp:
    settings = get_settings()
    breaker = _circuit_breaker()
    if breaker is not None:
        record = on_attempt

        def on_attempt(attempt: Attempt) -> None:
            breaker.on_attempt(attempt)
            if record is not None:
                record(attempt)

    return VidmobHttp(
        settings.vidmob_api_base_url,
        settings.vidmob_api_key,
        connect_timeout=settings.http_connect_timeout_s,
        read_timeout=settings.http_read_timeout_s,
        session=_http_session(),
        on_attempt=on_attempt,
        before_request=breaker.before_request if breaker is not None else None,
        download_hosts=settings.download_hosts.split(","),
        max_response_bytes=settings.http_max_response_bytes,
        max_response_seconds=settings.http_max_response_s,
    )


def tags_client(dialect: str, on_attempt: OnAttempt | None = None) -> TagsClient:
    return make_tags_client(dialect, vidmob_http(on_attempt))  # type: ignore[arg-type]
