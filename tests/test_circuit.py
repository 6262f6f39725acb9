"""The fleet-wide circuit breaker on a real Redis: opens after N failures in a row, lets one probe
through per interval, closes on the first answer that is not a failure, and stands aside when Redis
itself is away."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from clients import CircuitOpenError
from clients.circuit import CircuitBreaker
from clients.http import Attempt, AttemptOutcome

ENDPOINT = "GET /v1/aperture/jobs/{job_id}/status"


def attempt(status: int | None, outcome: AttemptOutcome = "retryable") -> Attempt:
    return Attempt(method="GET", endpoint=ENDPOINT, status_code=status, latency_ms=1.0, outcome=outcome)


@pytest.fixture
def breaker(broker_url):
    client = redis.Redis.from_url(broker_url)
    prefix = f"test:circuit:{uuid.uuid4().hex}:"
    yield CircuitBreaker(client, threshold=3, probe_interval_s=0.5, prefix=prefix)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)


def test_the_circuit_opens_after_failures_in_a_row_and_lets_one_probe_through(breaker):
    # given two failures: still closed
    for _ in range(2):
        breaker.on_attempt(attempt(503))
    breaker.before_request(ENDPOINT)
    # when a third failure comes (a timeout: no status)
    breaker.on_attempt(attempt(None))
    # then one call is the probe, the next ones are refused until the interval has passed
    breaker.before_request(ENDPOINT)
    with pytest.raises(CircuitOpenError) as refused:
        breaker.before_request(ENDPOINT)
    assert refused.value.retryable
    time.sleep(0.6)
    breaker.before_request(ENDPOINT)  # the next interval's probe
    # and the first answer that is not a failure closes it for everyone
    breaker.on_attempt(attempt(200, "ok"))
    for _ in range(5):
        breaker.before_request(ENDPOINT)


def test_a_success_resets_the_count_and_a_404_is_not_a_failure(breaker):
    breaker.on_attempt(attempt(503))
    breaker.on_attempt(attempt(503))
    breaker.on_attempt(attempt(404, "terminal"))
    breaker.on_attempt(attempt(503))
    breaker.on_attempt(attempt(503))
    for _ in range(3):
        breaker.before_request(ENDPOINT)  # never three in a row: still closed


def test_without_redis_the_breaker_stands_aside():
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # Refused at once (nobody listens on port 1), to a client that does not retry: redis-py's default
    # would back off for about 4 s on each call before it gives up.
    dead = redis.Redis(port=1, socket_connect_timeout=0.2, socket_timeout=0.2, retry=Retry(NoBackoff(), 0))
    gone = CircuitBreaker(dead, threshold=1, probe_interval_s=1)
    gone.on_attempt(attempt(503))
    gone.before_request(ENDPOINT)  # no shared state: calls go through
