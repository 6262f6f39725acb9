"""The simulator measures requests per second and can rate-limit like a real gateway
(simulator/traffic.py), over real HTTP."""

from __future__ import annotations

import time

import pytest
import requests

from simulator import SimulatorConfig, start_simulator
from simulator.traffic import Traffic

KEY = "sim-traffic-key"
STATUS = "GET /v1/aperture/jobs/{job_id}/status"


@pytest.fixture
def sim():
    handle = start_simulator(config=SimulatorConfig(api_key=KEY))
    yield handle
    handle.stop()


def poll(sim, session: requests.Session, job_id: str) -> requests.Response:
    return session.get(
        f"{sim.url}/v1/aperture/jobs/{job_id}/status", headers={"Authorization": f"Bearer {KEY}"}, timeout=5
    )


def new_job(sim, session: requests.Session) -> str:
    reply = session.post(
        f"{sim.url}/v1/aperture/jobs",
        json={"assets": [{"url": "https://cdn.example.com/t.mp4"}]},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=5,
    )
    return reply.json()["result"]["job_id"]


def test_the_rate_limit_answers_429_with_retry_after_past_the_limit(sim):
    # given a limit of 3 requests per endpoint per second, set live
    session = requests.Session()
    assert requests.post(f"{sim.url}/_sim/config", json={"rate_limit_per_s": 3}, timeout=5).json()["rate_limit_per_s"]
    job_id = new_job(sim, session)

    # when 5 status polls arrive at once
    replies = [poll(sim, session, job_id) for _ in range(5)]

    # then 3 are answered, the other 2 get 429 with the seconds until a slot frees
    assert [r.status_code for r in replies] == [200, 200, 200, 429, 429]
    assert replies[3].json()["statusCode"] == 429
    assert 0 < float(replies[3].headers["Retry-After"]) <= 1.0
    # and once that time has passed, a poll goes through again
    time.sleep(float(replies[4].headers["Retry-After"]) + 0.05)
    assert poll(sim, session, job_id).status_code == 200
    assert requests.get(f"{sim.url}/_sim/stats", timeout=5).json()["requests_per_second"]["rate_limited"] == 2


def test_stats_show_the_busiest_second_and_per_second_counts(sim):
    # given 6 polls in a burst, then 2 more a second and a half later
    session = requests.Session()
    job_id = new_job(sim, session)
    for _ in range(6):
        poll(sim, session, job_id)
    time.sleep(1.5)
    for _ in range(2):
        poll(sim, session, job_id)

    stats = requests.get(f"{sim.url}/_sim/stats", timeout=5).json()["requests_per_second"]

    # then the busiest 1-second window held the burst and the create call (7), the status
    # endpoint alone 6, and the per-second buckets add up to every API request (control calls excluded)
    assert stats["max_1s"] == 7
    assert stats["max_1s_by_endpoint"][STATUS] == 6
    assert sum(bucket["total"] for bucket in stats["per_second"]) == 9
    assert sum(bucket["by_endpoint"].get(STATUS, 0) for bucket in stats["per_second"]) == 8


def test_a_moving_window_counts_a_burst_split_across_two_clock_seconds():
    # given 4 requests at x.8 and 4 at (x+1).2: no clock second holds more than 4
    traffic = Traffic()
    for t in (100.8, 100.81, 100.82, 100.83, 101.2, 101.21, 101.22, 101.23):
        traffic.arrived("GET /x", t)
    stats = traffic.stats(101.3)
    assert [b["total"] for b in stats["per_second"]] == [4, 4]
    # then the moving window still sees the 8 that arrived within 0.43 s
    assert stats["max_1s"] == 8


def test_the_config_refuses_a_negative_rate_limit(sim):
    reply = requests.post(f"{sim.url}/_sim/config", json={"rate_limit_per_s": -1}, timeout=5)
    assert reply.status_code == 400
    assert "rate_limit_per_s must be a non-negative number" in reply.text


def test_the_command_line_sets_the_rate_limit(monkeypatch):
    # given `python -m simulator --rate-limit-per-s 20`, stopped before it binds a port
    import simulator.__main__ as entry

    seen = {}
    monkeypatch.setattr(entry, "serve", lambda host, port, config, on_ready=None: seen.setdefault("config", config))
    entry.main(["--rate-limit-per-s", "20"])
    # then the simulator it would serve limits at 20 per second
    assert seen["config"].rate_limit_per_s == 20.0
