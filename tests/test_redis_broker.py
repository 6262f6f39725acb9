"""Redis as the broker where it is weakest: a Redis restart under a worker that holds an unacknowledged
message (a task running under acks_late) leaves the worker running and serving (workers/consumer.py; without
it, kombu 5.7 and Celery 5.7 end the worker with an AttributeError). Run as `bench/bench_redis_held.py
restart` runs it: a private redis-server, a worker with the project's Celery configuration."""

from __future__ import annotations

from tests.test_bench_smoke import run_bench


def test_a_worker_holding_a_message_keeps_running_and_serving_when_redis_restarts():
    out = run_bench("bench/bench_redis_held.py", "restart", "--restarts", "2", timeout=240)
    assert "restart 1: worker running, served a task sent after it: True" in out, out
    assert "| 2 | yes | 2 of 2 |" in out, out
