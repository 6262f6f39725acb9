"""One rate limit for the fleet (clients/ratelimit.py) and the cap on Vidmob jobs open at once
(services/tagging/capacity.py), on real Redis, real PostgreSQL, the simulator over real HTTP, and
separate processes where the behaviour spans processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import requests
from prometheus_client import generate_latest
from sqlalchemy import select

from clients.errors import FleetRateLimitedError, RateLimitedError
from clients.http import VidmobHttp
from clients.ratelimit import FAMILIES, OBSERVERS, FleetRateLimiter, family_of
from models import Job, JobState
from models.db import session_scope
from tests.conftest import API_KEY
from tests.support import wait_for

ROOT = Path(__file__).resolve().parent.parent
STATUS = "GET /v1/aperture/jobs/{job_id}/status"

# A process of the fleet: polls one simulator job n times through services.gateway (the wiring
# every worker uses), starting at a given wall-clock moment, and prints what it saw.
CALLER = """
import sys, time
from clients.errors import ApiError
from services.gateway import tags_client

job_id, calls, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
client = tags_client("guide")
time.sleep(max(0.0, start - time.time()))
began = time.time()
for _ in range(calls):
    try:
        client.get_status(job_id)
        print("sent", f"{began:.3f}", time.time() - began, flush=True)
    except ApiError as exc:
        print("refused", type(exc).__name__, time.time() - began, flush=True)
"""


@pytest.fixture
def fleet_redis(broker_url: str):
    client = redis.Redis.from_url(broker_url)

    def clear() -> None:
        for key in client.scan_iter("aperture:ratelimit:*"):
            client.delete(key)

    clear()
    yield client
    clear()


@pytest.fixture
def sim():
    from simulator import SimulatorConfig, start_simulator

    handle = start_simulator(config=SimulatorConfig(api_key=API_KEY, pending_s=0.2, processing_s=0.3))
    yield handle
    handle.stop()


def sim_job(sim) -> str:
    reply = requests.post(
        f"{sim.url}/v1/aperture/jobs",
        json={"assets": [{"url": "https://cdn.example.com/rl/a.mp4"}]},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=5,
    )
    reply.raise_for_status()
    return reply.json()["result"]["job_id"]


def sim_stats(sim) -> dict:
    return requests.get(f"{sim.url}/_sim/stats", timeout=5).json()


def fleet_env(broker_url: str, sim, **settings: str) -> dict[str, str]:
    return {
        **os.environ,
        "APERTURE_BROKER_URL": broker_url,
        "VIDMOB_API_BASE_URL": sim.url,
        "VIDMOB_API_KEY": API_KEY,
        # Long enough task limits that the configured wait is the one that applies.
        "APERTURE_TASK_SOFT_TIME_LIMIT_S": "60",
        "APERTURE_TASK_TIME_LIMIT_S": "70",
        **settings,
    }


def run_callers(env: dict[str, str], job_id: str, calls: int, processes: int = 2) -> list[list[str]]:
    start = time.time() + 1.5  # every process imported and connected before the first call
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CALLER, job_id, str(calls), str(start)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-3000:]
        outputs.append(out.splitlines())
    return outputs


def test_every_endpoint_the_clients_call_counts_against_a_named_family():
    # given the endpoint templates the two clients send (clients/tags.py, clients/scoring.py)
    from clients import scoring, tags

    templates = {
        f"POST {tags._GUIDE_CREATE}",
        f"GET {tags._GUIDE_STATUS}",
        f"POST {tags._MEDIA_CREATE}",
        f"GET {tags._MEDIA_STATUS}",
        f"GET {tags._MEDIA_DOWNLOAD}",
        f"POST {scoring._SUBMIT}",
        f"GET {scoring._STATUS}",
        f"GET {scoring._SCORES}",
    }
    # then each has a family, and both dialects' creates share one
    assert templates == set(FAMILIES)
    assert family_of("POST /v1/aperture/jobs") == family_of("POST /v1/media/aperture") == "tags.create"


@pytest.mark.slow
def test_two_processes_sharing_the_limit_never_exceed_it_in_any_second(broker_url, fleet_redis, sim):
    # given a limit of 5 requests/s and two processes that each want to poll 15 times at once
    job_id = sim_job(sim)
    env = fleet_env(broker_url, sim, APERTURE_RATE_LIMIT_PER_S="5", APERTURE_RATE_LIMIT_MAX_WAIT_S="20")

    # when they run side by side
    outputs = run_callers(env, job_id, calls=15)

    # then every call was sent, and Vidmob never saw more than 5 in any 1-second window
    assert [len([line for line in out if line.startswith("sent")]) for out in outputs] == [15, 15]
    seen = sim_stats(sim)["requests_per_second"]
    assert seen["max_1s_by_endpoint"][STATUS] <= 5
    # and the limit was binding: 30 calls at 5/s take about 6 s (unlimited they take milliseconds)
    last = max(float(line.split()[-1]) for out in outputs for line in out)
    assert last >= 4.5
    # and the seconds were used: at least 4 calls arrived in the busiest second
    assert seen["max_1s_by_endpoint"][STATUS] >= 4


@pytest.mark.slow
def test_without_the_fleet_limit_two_processes_exceed_it(broker_url, fleet_redis, sim):
    # given no limit: the same two processes (the baseline the limit is measured against)
    job_id = sim_job(sim)
    env = fleet_env(broker_url, sim, APERTURE_RATE_LIMIT_PER_S="0")

    run_callers(env, job_id, calls=15)

    # then Vidmob sees far more than 5 in one second
    assert sim_stats(sim)["requests_per_second"]["max_1s_by_endpoint"][STATUS] > 5


def _limiter_http(client: redis.Redis, sim, **limiter) -> tuple[VidmobHttp, FleetRateLimiter]:
    limiter_ = FleetRateLimiter(client, **({"per_second": 0, "max_wait_s": 10} | limiter))
    http = VidmobHttp(sim.url, API_KEY, before_request=limiter_.before_request, on_attempt=limiter_.on_attempt)
    return http, limiter_


def got_429(client: redis.Redis, sim, job_id: str, *, retry_after: float) -> None:
    """This process polls the job once and Vidmob answers 429 with ``retry_after``."""
    requests.post(
        f"{sim.url}/_sim/faults",
        json={"method": "GET", "path": "/v1/aperture/jobs/{job_id}/status", "status": 429, "retry_after": retry_after},
        timeout=5,
    ).raise_for_status()
    http, _ = _limiter_http(client, sim)
    with pytest.raises(RateLimitedError):
        http.request("GET", "/v1/aperture/jobs/{job_id}/status", path_params={"job_id": job_id})


@pytest.mark.slow
def test_a_429_with_retry_after_pauses_the_endpoint_for_another_process(broker_url, fleet_redis, sim):
    # given Vidmob answers one status call 429 with Retry-After: 6 (longer than another process takes to
    # start, even on a loaded machine, so the pause is still in force when it calls)
    job_id = sim_job(sim)

    # when this process gets that 429
    paused_from = time.time()
    got_429(fleet_redis, sim, job_id, retry_after=6)

    # then another process's status call waits until the pause is over before it is sent
    env = fleet_env(broker_url, sim, APERTURE_RATE_LIMIT_PER_S="0", APERTURE_RATE_LIMIT_MAX_WAIT_S="10")
    [out] = run_callers(env, job_id, calls=1, processes=1)
    word, began, waited = out[0].split()
    assert word == "sent", out
    assert float(waited) >= 0.3, out  # it did wait
    assert float(began) + float(waited) >= paused_from + 6 - 0.2, out  # and not before the pause ended
    assert sim_stats(sim)["requests"][STATUS] == 2  # the 429 and the one after the pause


@pytest.mark.slow
def test_a_pause_longer_than_a_worker_may_wait_is_not_sent_at_all(broker_url, fleet_redis, sim):
    # given the status endpoint is paused for the fleet for 10 s by a 429 (still in force once another
    # process has started, however loaded the machine)
    job_id = sim_job(sim)
    got_429(fleet_redis, sim, job_id, retry_after=10)

    # when another process may wait at most 1 s
    env = fleet_env(broker_url, sim, APERTURE_RATE_LIMIT_MAX_WAIT_S="1")
    [out] = run_callers(env, job_id, calls=1, processes=1)

    # then its call is refused at once, before it reaches Vidmob (its row would be looked at later)
    assert out[0].startswith("refused FleetRateLimitedError"), out
    assert float(out[0].split()[-1]) < 1.0
    assert sim_stats(sim)["requests"][STATUS] == 1


def test_the_limiter_waits_and_deferrals_are_in_the_metrics(fleet_redis, sim):
    # given a worker's metrics listening to the limiter, and a limit of 2/s that may wait 0.5 s
    from workers import metrics

    def sample(name: str) -> float:
        # the registry is this process's: other tests may have counted before this one
        return metrics._registry.get_sample_value(name, {"family": "tags.status"}) or 0.0

    waits, deferred = sample("aperture_ratelimit_wait_seconds_count"), sample("aperture_ratelimit_deferred_total")
    # (once: importing workers.signals, as other tests do, registers the same observer)
    added = metrics.observe_limiter_event not in OBSERVERS
    if added:
        OBSERVERS.append(metrics.observe_limiter_event)
    try:
        http, _ = _limiter_http(fleet_redis, sim, per_second=2, max_wait_s=0.5)
        job_id = sim_job(sim)
        # when 3 calls are made at once: 2 go, the third would wait about a second
        for _ in range(2):
            http.request("GET", "/v1/aperture/jobs/{job_id}/status", path_params={"job_id": job_id})
        with pytest.raises(FleetRateLimitedError) as refused:
            http.request("GET", "/v1/aperture/jobs/{job_id}/status", path_params={"job_id": job_id})
    finally:
        if added:
            OBSERVERS.remove(metrics.observe_limiter_event)

    # then the refusal says when a slot frees, and the metrics show two waits and one deferral
    assert 0.5 < refused.value.retry_after <= 1.1
    assert sample("aperture_ratelimit_wait_seconds_count") - waits == 2
    assert sample("aperture_ratelimit_deferred_total") - deferred == 1
    assert 'aperture_ratelimit_deferred_total{family="tags.status"}' in generate_latest(metrics._registry).decode()
    assert sim_stats(sim)["requests"][STATUS] == 2


def test_without_redis_the_limiter_stands_aside(sim):
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # given Redis does not answer (a port nobody listens on: refused at once), to a client that does not
    # retry (redis-py's default would back off for about 4 s on each call before it gives up)
    dead = redis.Redis(port=1, socket_connect_timeout=0.2, socket_timeout=0.2, retry=Retry(NoBackoff(), 0))
    http, _ = _limiter_http(dead, sim, per_second=1, max_wait_s=0)
    job_id = sim_job(sim)
    # when calls are made: they are sent (a broker outage does not stop Vidmob calls)
    for _ in range(3):
        http.request("GET", "/v1/aperture/jobs/{job_id}/status", path_params={"job_id": job_id})
    assert sim_stats(sim)["requests"][STATUS] == 3


# --- the cap on Vidmob jobs open at once -------------------------------------------------------


@pytest.fixture
def capped(fleet, monkeypatch):
    """The tagging steps run in this process with APERTURE_MAX_OPEN_JOBS=3, on the in-process tier's
    own database: no dispatcher sends a look meanwhile (a freed slot makes the next waiting
    submission due at once, which a dispatcher on the same database would race the test for)."""
    from config import get_settings

    for name, value in {
        "APERTURE_MAX_OPEN_JOBS": "3",
        "APERTURE_POLL_INITIAL_S": "60",
        "APERTURE_POLL_INTERVAL_S": "60",
        "APERTURE_RATE_LIMIT_PER_S": "0",
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield fleet.simulator
    monkeypatch.undo()
    get_settings.cache_clear()


def _accept(n: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
    from config import get_settings
    from services.durable import intake
    from services.durable.schedule import utcnow
    from services.tagging.intake import INTAKE

    rows = []
    with session_scope() as session:
        for i in range(n):
            payload = {"assets": [{"url": f"https://cdn.example.com/cap/{i}.mp4"}], "request_id": f"cap-{uuid.uuid4()}"}
            accepted = intake.accept(
                session, INTAKE, payload, task_id=str(uuid.uuid4()), settings=get_settings(), now=utcnow()
            )
            assert accepted.token is not None  # a row it just created holds its token
            rows.append((accepted.row_id, accepted.token))
    return rows


def _submit(row_id: uuid.UUID, token: uuid.UUID):
    from services.durable import steps
    from services.tagging.steps import SUBMIT

    return steps.run(SUBMIT, row_id, token, task_name="aperture.submit_job")


def _vidmob_status(simulator_url: str, vidmob_job_id: str | None) -> str:
    """What Vidmob says of a job, asked directly (the system's own poll is what the test runs next)."""
    from config import get_settings

    key = get_settings().vidmob_api_key.get_secret_value()
    reply = requests.get(
        f"{simulator_url}/v1/aperture/jobs/{vidmob_job_id}/status",
        headers={"Authorization": f"Bearer {key}"},
        timeout=5,
    )
    reply.raise_for_status()
    status: str = reply.json()["result"]["status"]
    return status


def _jobs() -> dict[uuid.UUID, Job]:
    with session_scope() as session:
        jobs = session.execute(select(Job)).scalars().all()
        session.expunge_all()
        return {job.id: job for job in jobs}


@pytest.mark.slow
def test_jobs_beyond_the_open_jobs_cap_wait_in_postgres_and_go_when_others_finish(capped):
    from services.durable import steps
    from services.tagging.steps import POLL

    simulator = capped
    # given 6 requests submitted at once by 6 workers, with a cap of 3 Vidmob jobs open at once
    rows = _accept(6)
    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(lambda row: _submit(*row), rows))

    # then exactly 3 Vidmob jobs were created, and the other 3 wait in PostgreSQL: still
    # submitting, parked (no message sent for them), with the reason, no attempt counted
    jobs = _jobs()
    polling = [j for j in jobs.values() if j.state == JobState.POLLING]
    waiting = [j for j in jobs.values() if j.state == JobState.SUBMITTING]
    assert len(polling) == 3 and len(waiting) == 3
    assert sim_stats(simulator)["jobs_created"] == 3
    for job in waiting:
        assert job.dispatched_at is None and job.next_poll_at is not None and job.submit_attempts == 0
        assert job.error == "waiting for a free slot: 3 Vidmob jobs open (APERTURE_MAX_OPEN_JOBS=3)"
    held = [o for o, (row_id, _) in zip(outcomes, rows, strict=True) if jobs[row_id].state == JobState.SUBMITTING]
    assert [o.messages for o in held] == [[], [], []]

    # when one of the open jobs finishes at Vidmob and its poll stores it
    done = polling[0]
    wait_for(lambda: _vidmob_status(simulator.url, done.vidmob_job_id) == "COMPLETE", what="Vidmob to finish the job")
    steps.run(POLL, done.id, done.poll_token, task_name="aperture.poll_job")
    assert _jobs()[done.id].state == JobState.COMPLETE

    # and the waiting ones are looked at again
    for job in waiting:
        _submit(job.id, job.poll_token)

    # then exactly one of them is submitted, in the freed slot; the others keep waiting
    jobs = _jobs()
    assert sorted(jobs[j.id].state.value for j in waiting) == ["polling", "submitting", "submitting"]
    assert sim_stats(simulator)["jobs_created"] == 4


def test_the_open_jobs_count_and_cap_are_in_the_metrics(capped):
    from workers.metrics import JobsCollector

    # given 4 requests and a cap of 3
    for row in _accept(4):
        _submit(*row)
    # when the metrics are scraped
    families = {m.name: m for m in JobsCollector().collect()}
    # then they show 3 jobs open of a cap of 3
    assert families["aperture_jobs_open"].samples[0].value == 3
    assert families["aperture_jobs_open_cap"].samples[0].value == 3


def test_a_slot_is_held_its_second_plus_the_margin(fleet_redis):
    # given a limit of 3 requests/s with a margin of 0.3 s, and its 3 slots taken now
    limiter = FleetRateLimiter(fleet_redis, per_second=3, max_wait_s=0, margin_s=0.3)
    taken = time.time()
    for _ in range(3):
        limiter.before_request("GET /v1/aperture/jobs/{job_id}/status")
    # when a second has passed: the slots are still held, and the wait ahead is the margin's
    time.sleep(max(0.0, taken + 1.05 - time.time()))
    with pytest.raises(FleetRateLimitedError) as refused:
        limiter.before_request("GET /v1/aperture/jobs/{job_id}/status")
    assert 0.1 < refused.value.retry_after <= 0.3
    # then once the margin has passed too, a slot is free
    time.sleep(max(0.0, taken + 1.35 - time.time()))
    limiter.before_request("GET /v1/aperture/jobs/{job_id}/status")


def _shares(fleet_redis, *, weights: dict[str, float], threads: dict[str, int], seconds: float = 4.0) -> dict[str, int]:
    """Slots taken by each caller's threads (``threads``: how many each runs, each taking slots one
    after the other as fast as it is given them) at 10 a second, counted from the first second to
    ``seconds`` (not the slots that threads still waiting at the end take after it)."""
    limiter = FleetRateLimiter(fleet_redis, per_second=10, max_wait_s=30, margin_s=0.0, weights=weights)
    began = time.monotonic()
    taken: dict[str, int] = dict.fromkeys(threads, 0)

    def run(caller: str) -> None:
        while time.monotonic() - began < seconds:
            limiter.before_request(STATUS, caller)
            if 1.0 < time.monotonic() - began < seconds:
                taken[caller] += 1

    with ThreadPoolExecutor(max_workers=sum(threads.values())) as pool:
        for future in [pool.submit(run, c) for c, n in threads.items() for _ in range(n)]:
            future.result()
    return taken


def test_while_the_limit_binds_callers_share_its_slots_whatever_their_number_of_requests(fleet_redis):
    # given one caller with twelve requests waiting at any time and another with two
    taken = _shares(fleet_redis, weights={}, threads={"bulk": 12, "few": 2})
    # then each gets about half of the slots (in first-come order "few" got 3% of them, measured the same way)
    share = taken["few"] / (taken["few"] + taken["bulk"])
    assert 0.4 <= share <= 0.6, taken
    # and every slot of the window was used: 10 a second over the three seconds counted
    assert sum(taken.values()) >= 27, taken


def test_the_limits_slots_go_in_proportion_to_the_callers_weights(fleet_redis):
    # given two callers each with three requests waiting, one of weight 3
    taken = _shares(fleet_redis, weights={"gold": 3.0}, threads={"gold": 3, "plain": 3})
    # then the weighted one gets about three slots in four
    share = taken["gold"] / (taken["gold"] + taken["plain"])
    assert 0.65 <= share <= 0.85, taken
