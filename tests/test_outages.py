"""Nothing hammered: a failing Vidmob endpoint slows each job down instead of being polled at the
normal pace, and a paid create call whose outcome is unknown is retried only up to a cap, each
such job flagged as possibly duplicated.

A job's own retries and backoff run the same steps and dispatcher passes in this process (``fleet``:
tests/inprocess.py). The circuit breaker is shared through Redis by every worker process: the test of
it runs the real worker (two pool processes) and dispatcher (``system``)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator

import pytest
import requests
from sqlalchemy import func, select

from config import get_settings
from models import ApiAttempt, Job, JobState
from models.db import session_scope
from services import gateway
from tests.inprocess import Fleet
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


def status_calls(sim) -> int:
    """Every status check Vidmob was sent, answered or failed."""
    asked = sim_stats(sim)["requests"]
    return sum(asked.get(f"GET {path}", 0) for path in STATUS_PATHS)


def failed_checks(job_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[ApiAttempt]]:
    """Each job's status checks answered 503, oldest first."""
    with session_scope() as s:
        rows = s.scalars(
            select(ApiAttempt)
            .where(ApiAttempt.job_id.in_(job_ids), ApiAttempt.method == "GET", ApiAttempt.status_code == 503)
            .order_by(ApiAttempt.id)
        ).all()
    return {job_id: [a for a in rows if a.job_id == job_id] for job_id in job_ids}


@pytest.fixture
def no_circuit_breaker(fleet: Fleet) -> Iterator[Fleet]:
    """The fleet with the circuit breaker off: what one job does on its own during an outage."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("APERTURE_CIRCUIT_FAILURE_THRESHOLD", "0")
        get_settings.cache_clear()
        gateway.reset()
        yield fleet
    get_settings.cache_clear()
    gateway.reset()


def test_a_create_call_answered_504_completes_and_is_flagged_as_a_possible_duplicate(fleet, aperture):
    from services.tagging.reads import job_counts

    # given a gateway that answers 504 to the first create call (it may have forwarded it)
    fault_all(fleet.simulator, CREATE_PATHS, method="POST", status=504, times=1)
    request_id = f"outage-504-{uuid.uuid4()}"
    fleet.create_job(request_id=request_id, assets=[{"url": f"{CDN}/a.mp4"}])
    # then the job is submitted again and completes, flagged: Vidmob may hold a second job for it
    job = fleet.wait_for_job(request_id)
    assert job.state is JobState.COMPLETE
    assert job.duplicate_risk
    # and an operator sees it among the jobs to look at, and in the metrics' count
    listed = aperture("jobs", "list", "--stuck", "--json", "--limit", "1000")
    assert request_id in {json.loads(line)["request_id"] for line in listed.output.splitlines()}
    with session_scope() as session:
        counts = job_counts(session, now=dt.datetime.now(dt.UTC), settings=get_settings())
    assert counts.duplicate_risk >= 1


def test_a_create_call_that_keeps_failing_after_being_sent_is_given_up_at_the_cap(fleet):
    # given a create endpoint that answers 502 to every call (each one might have created a job)
    fault_all(fleet.simulator, CREATE_PATHS, method="POST", status=502, times=-1)
    request_id = f"outage-cap-{uuid.uuid4()}"
    try:
        fleet.create_job(request_id=request_id, assets=[{"url": f"{CDN}/b.mp4"}])
        job = fleet.wait_for_job(request_id, timeout=45)
    finally:
        clear_faults(fleet.simulator)
    # then it is tried APERTURE_SUBMIT_MAX_RETRIES (5) times, not until its deadline, and fails saying why
    assert job.state is JobState.FAILED
    assert "gave up after 5 submissions whose outcome is unknown" in job.error and job.duplicate_risk
    posts = [a for a in attempts_for(job.id) if a.method == "POST"]
    assert len(posts) == 5 and {a.status_code for a in posts} == {502}


def test_during_a_status_outage_each_job_backs_off_and_then_completes(no_circuit_breaker):
    fleet = no_circuit_breaker
    # given jobs in flight (polled every 0.3 s) and a status endpoint that fails
    sim = fleet.simulator
    request_ids = [f"outage-poll-{i}-{uuid.uuid4()}" for i in range(3)]
    fault_all(sim, STATUS_PATHS, method="GET", status=503, times=-1)
    try:
        for i, request_id in enumerate(request_ids):
            # One URL each: a job submitted after another completed must not be answered by reuse.
            fleet.create_job(request_id=request_id, assets=[{"url": f"{CDN}/c-{i}.mp4"}])
        job_ids = [fleet.wait_for_job(r, states={JobState.POLLING}).id for r in request_ids]
        # when the outage lasts until each job has failed 6 status checks in a row (its backoff, 0.2 s
        # doubling, at its 1 s cap by then)
        fleet.run_until(
            lambda: all(len(f) >= 6 for f in failed_checks(job_ids).values()), what="6 failed checks per job"
        )
        # then each job's next check is due at least half the cap after its last failed one (the
        # backoff's jitter), not one poll interval (0.3 s) later
        backoff_floor_s = get_settings().retry_backoff_max_s / 2
        assert backoff_floor_s > get_settings().poll_max_interval_s
        failed = failed_checks(job_ids)
        with session_scope() as s:
            next_looks = dict(s.execute(select(Job.id, Job.next_poll_at).where(Job.id.in_(job_ids))).all())
        for job_id in job_ids:
            waits_s = (next_looks[job_id] - failed[job_id][-1].attempted_at).total_seconds()
            assert waits_s >= backoff_floor_s, waits_s
    finally:
        clear_faults(sim)
    jobs = [fleet.wait_for_job(r) for r in request_ids]

    # and every job completes once the endpoint answers again
    assert {j.state for j in jobs} == {JobState.COMPLETE}
    # and during the outage each one made a handful of status checks, not one per 0.3 s poll
    for job in jobs:
        failed = [a for a in attempts_for(job.id) if a.method == "GET" and a.status_code == 503]
        assert 2 <= len(failed) <= 11, len(failed)


def test_a_circuit_opens_for_the_whole_fleet_and_the_outage_costs_a_bounded_number_of_calls(system):
    # given a status endpoint that fails, and 12 jobs submitted meanwhile (each of them polls it: none
    # can be done before the outage)
    sim = system["simulator"]
    request_ids = [f"outage-circuit-{i}-{uuid.uuid4()}" for i in range(12)]
    fault_all(sim, STATUS_PATHS, method="GET", status=503, times=-1)
    before = status_calls(sim)
    try:
        for i, request_id in enumerate(request_ids):
            # One URL each: a job submitted after another completed must not be answered by reuse.
            send(system["env"], "aperture.create_job", request_id=request_id, assets=[{"url": f"{CDN}/d-{i}.mp4"}])
        job_ids = [wait_for_job(r, states={JobState.POLLING}).id for r in request_ids]

        def refused_per_job() -> dict[uuid.UUID, int]:
            with session_scope() as s:
                rows = s.execute(
                    select(ApiAttempt.job_id, func.count())
                    .where(ApiAttempt.job_id.in_(job_ids), ApiAttempt.outcome == "not_sent")
                    .group_by(ApiAttempt.job_id)
                ).all()
            return {job_id: count for job_id, count in rows if job_id is not None}

        # when the outage lasts until every job has been refused twice: the circuit is open for all
        # of them, whichever worker process runs each (two probe intervals of 1 s at least)
        wait_for(
            lambda: all(refused_per_job().get(j, 0) >= 2 for j in job_ids),
            what="every job refused twice by the open circuit",
        )
        during = status_calls(sim) - before
    finally:
        clear_faults(sim)
    jobs = [wait_for_job(r, timeout=60) for r in request_ids]

    # then every job completes once the endpoint answers again
    assert {j.state for j in jobs} == {JobState.COMPLETE}
    # and the fleet stopped calling it after 20 failures in a row, but for one probe a second:
    # about 20 + a few calls, where the jobs backing off on their own would have made one each per
    # backoff (about a dozen a second)
    assert during <= 40, during
    refused = [a for j in jobs for a in attempts_for(j.id) if a.outcome == "not_sent"]
    assert refused and all("failing for the whole fleet" in a.error for a in refused)
