"""Nothing hammered: a failing Vidmob endpoint slows each job down instead of being polled at the
normal pace, and a paid create call whose outcome is unknown is retried only up to a cap, each
such job flagged as possibly duplicated."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import pytest
import requests

from models import JobState
from tests.support import attempts_for, send, sim_fault, sim_stats, wait_for, wait_for_job

pytestmark = pytest.mark.slow
CDN = "https://cdn.example.com/outages"
CREATE_PATHS = ("/v1/aperture/jobs", "/v1/media/aperture")
STATUS_PATHS = ("/v1/aperture/jobs/{job_id}/status", "/v1/media/aperture/{job_id}")


def fault_all(sim, paths, **fault) -> None:
    for path in paths:
        sim_fault(sim, path=path, **fault)


def clear_faults(sim) -> None:
    requests.delete(f"{sim.url}/_sim/faults", timeout=5).raise_for_status()


def test_a_create_call_answered_504_completes_and_is_flagged_as_a_possible_duplicate(system, aperture):
    from config import get_settings
    from models.db import session_scope
    from services.tagging.reads import job_counts

    # given a gateway that answers 504 to the first create call (it may have forwarded it)
    fault_all(system["simulator"], CREATE_PATHS, method="POST", status=504, times=1)
    request_id = f"outage-504-{uuid.uuid4()}"
    send(system["env"], "aperture.create_job", request_id=request_id, assets=[{"url": f"{CDN}/a.mp4"}])
    # then the job is submitted again and completes, flagged: Vidmob may hold a second job for it
    job = wait_for_job(request_id)
    assert job.state is JobState.COMPLETE
    assert job.duplicate_risk
    # and an operator sees it among the jobs to look at, and in the metrics' count
    listed = aperture("jobs", "list", "--stuck", "--json", "--limit", "1000")
    assert request_id in {json.loads(line)["request_id"] for line in listed.output.splitlines()}
    with session_scope() as session:
        counts = job_counts(session, now=dt.datetime.now(dt.UTC), settings=get_settings())
    assert counts.duplicate_risk >= 1


def test_a_create_call_that_keeps_failing_after_being_sent_is_given_up_at_the_cap(system):
    # given a create endpoint that answers 502 to every call (each one might have created a job)
    fault_all(system["simulator"], CREATE_PATHS, method="POST", status=502, times=-1)
    request_id = f"outage-cap-{uuid.uuid4()}"
    try:
        send(system["env"], "aperture.create_job", request_id=request_id, assets=[{"url": f"{CDN}/b.mp4"}])
        job = wait_for_job(request_id, timeout=45)
    finally:
        clear_faults(system["simulator"])
    # then it is tried APERTURE_SUBMIT_MAX_RETRIES (5) times, not until its deadline, and fails saying why
    assert job.state is JobState.FAILED
    assert "gave up after 5 submissions whose outcome is unknown" in job.error and job.duplicate_risk
    posts = [a for a in attempts_for(job.id) if a.method == "POST"]
    assert len(posts) == 5 and {a.status_code for a in posts} == {502}


def test_during_a_status_outage_each_job_backs_off_and_then_completes(system):
    # given jobs in flight (polled every 0.3 s) and a status endpoint that fails for 6 s
    sim = system["simulator"]
    request_ids = [f"outage-poll-{i}-{uuid.uuid4()}" for i in range(3)]
    fault_all(sim, STATUS_PATHS, method="GET", status=503, times=-1)
    try:
        for i, request_id in enumerate(request_ids):
            # One URL each: a job submitted after another completed must not be answered by reuse.
            send(system["env"], "aperture.create_job", request_id=request_id, assets=[{"url": f"{CDN}/c-{i}.mp4"}])
        wait_for(lambda: sim_stats(sim)["faults_injected"] >= len(request_ids), what="the outage to be felt")
        time.sleep(6)
    finally:
        clear_faults(sim)
    jobs = [wait_for_job(r) for r in request_ids]

    # then every job completes once the endpoint answers again
    assert {j.state for j in jobs} == {JobState.COMPLETE}
    # and during the outage each one made a handful of status checks, not one per 0.3 s poll
    # (backoff 0.2 s doubling to the 1 s cap: about 9 in 6 s, against 20 at the poll interval)
    for job in jobs:
        failed = [a for a in attempts_for(job.id) if a.method == "GET" and a.status_code == 503]
        assert 2 <= len(failed) <= 11, len(failed)


def test_a_circuit_opens_for_the_whole_fleet_and_the_outage_costs_a_bounded_number_of_calls(system):
    # given 12 jobs in flight and a status endpoint that fails for 6 s
    sim = system["simulator"]
    request_ids = [f"outage-circuit-{i}-{uuid.uuid4()}" for i in range(12)]
    for i, request_id in enumerate(request_ids):
        # One URL each: a job submitted after another completed must not be answered by reuse.
        send(system["env"], "aperture.create_job", request_id=request_id, assets=[{"url": f"{CDN}/d-{i}.mp4"}])
    wait_for(lambda: sim_stats(sim)["status_polls"] >= len(request_ids), what="every job polled once")
    fault_all(sim, STATUS_PATHS, method="GET", status=503, times=-1)
    before = sim_stats(sim)["status_polls"]
    try:
        time.sleep(6)
        during = sim_stats(sim)["status_polls"] - before
    finally:
        clear_faults(sim)
    jobs = [wait_for_job(r, timeout=60) for r in request_ids]

    # then every job completes once the endpoint answers again
    assert {j.state for j in jobs} == {JobState.COMPLETE}
    # and the fleet stopped calling it after 20 failures in a row, but for one probe a second:
    # about 20 + 6 calls, where the jobs backing off on their own would have made about 100
    assert during <= 40, during
    refused = [a for j in jobs for a in attempts_for(j.id) if a.outcome == "not_sent"]
    assert refused and all("failing for the whole fleet" in a.error for a in refused)
