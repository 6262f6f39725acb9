"""The tagging pipeline: requests in, tags in PostgreSQL, against real Postgres and the simulator over
HTTP. What needs a process boundary (another application sending by name, kill -9, the broker losing
messages, what the worker logs, the callback's Celery message) runs a real worker and dispatcher
(``system``); the rest runs the same steps and dispatcher passes in this process (``fleet``:
tests/inprocess.py). Given / when / then."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import requests
from sqlalchemy import func, select, update

from models import ApiAttempt, Asset, CallbackStatus, Job, JobState, Tag
from models.db import session_scope
from tests import factories
from tests.conftest import API_KEY
from tests.support import (
    attempts_for,
    drain,
    job_by_request_id,
    send,
    sim_fault,
    sim_stats,
    tags_by_url,
    wait_for,
    wait_for_job,
)

pytestmark = pytest.mark.slow
CDN = "https://cdn.example.com"


def test_an_application_that_knows_only_the_task_name_gets_tags_into_postgres(system, tmp_path):
    # Given another application, in its own process, importing nothing of this project
    urls = [f"{CDN}/lifestyle-beach-{i}.mp4" for i in range(3)]
    script = Path(__file__).with_name("external_sender.py")
    request_id = f"ext-{uuid.uuid4()}"
    # When it enqueues aperture.create_job by name (no queue named: Celery's default)
    out = subprocess.run(
        [sys.executable, str(script), system["env"]["APERTURE_BROKER_URL"], request_id, *urls],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    # Then the job completes and Postgres holds every asset with its tags
    job = wait_for_job(request_id)
    assert job.state is JobState.COMPLETE, job.error
    assert job.vidmob_job_id and job.asset_count == 3 and job.submitted_at and job.completed_at
    tags = tags_by_url(job.id)
    assert sorted(tags) == sorted(urls)
    for url_tags in tags.values():
        categories = {category for category, _ in url_tags}
        assert {"visual", "brand", "audio"} <= categories
        assert ("client", "lifestyle") in url_tags
    with session_scope() as s:
        ids = s.execute(select(Asset.external_id).where(Asset.job_id == job.id).order_by(Asset.position)).scalars()
        assert list(ids) == ["creative-0", "creative-1", "creative-2"]
    # And every API call it made is on record
    endpoints = [a.endpoint for a in attempts_for(job.id)]
    assert endpoints[0] == "POST /v1/aperture/jobs"
    assert endpoints.count("GET /v1/aperture/jobs/{job_id}/status") == job.poll_count >= 1


def test_the_same_request_id_twice_creates_one_vidmob_job(fleet):
    request_id = f"dup-{uuid.uuid4()}"
    payload = {"assets": [{"url": f"{CDN}/a.mp4"}, {"url": f"{CDN}/b.mp4"}], "request_id": request_id}
    first = fleet.create_job(**payload)
    second = fleet.create_job(**payload)
    # The second message found the first one's row: nothing new, the same job
    assert first["created"] and not second["created"] and second["job_id"] == first["job_id"]
    job = fleet.wait_for_job(request_id)
    assert job.state is JobState.COMPLETE
    assert sim_stats(fleet.simulator)["jobs_created"] == 1
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 1
        assert s.scalar(select(func.count()).select_from(Asset)) == 2


def test_a_poll_message_delivered_twice_is_recorded_once(fleet):
    # Given a job Vidmob has already finished, whose row waits for one poll with token T
    sim = fleet.simulator
    headers = {"Authorization": f"Bearer {API_KEY}"}
    url = f"{CDN}/twice.mp4"
    created = requests.post(f"{sim.url}/v1/aperture/jobs", json={"assets": [{"url": url}]}, headers=headers, timeout=5)
    vidmob_job_id = created.json()["result"]["job_id"]
    wait_for(
        lambda: (
            requests.get(f"{sim.url}/v1/aperture/jobs/{vidmob_job_id}/status", headers=headers, timeout=5).json()[
                "result"
            ]["status"]
            == "COMPLETE"
        ),
        what="simulator job",
    )
    now = dt.datetime.now(dt.UTC)
    request_id = f"twice-{uuid.uuid4()}"
    made = factories.job(
        request_id=request_id, vidmob_job_id=vidmob_job_id, due_at=now + dt.timedelta(hours=1), sent_at=now,
        urls=[url],
    )  # fmt: skip
    job_id, token = made.id, made.token
    polls_before = sim_stats(sim)["requests"].get("GET /v1/aperture/jobs/{job_id}/status", 0)
    # When the same poll message arrives twice at once (a redelivery, a re-sent look)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: fleet.send("aperture.poll_job", job_id=str(job_id), token=str(token)), range(2)))
    # Then one poll was recorded and the tags stored once. Polls are optimistic (a status GET is
    # safe twice: read the row, call, record with a compare-and-set), so two copies running at
    # once may both ask Vidmob; only the first records, and the second changes nothing.
    job = job_by_request_id(request_id)
    assert job.state is JobState.COMPLETE
    assert job.poll_count == 1
    asked = sim_stats(sim)["requests"]["GET /v1/aperture/jobs/{job_id}/status"] - polls_before
    assert 1 <= asked <= 2
    assert len(attempts_for(job_id)) == asked  # every call Vidmob saw is on record
    with session_scope() as s:
        stored = s.execute(select(func.count()).select_from(Tag).join(Asset).where(Asset.job_id == job_id)).scalar()
    assert stored == sum(len(t) for t in tags_by_url(job_id).values()) > 0  # no tag stored twice


def test_a_failed_vidmob_job_is_terminal_and_never_retried(fleet):
    request_id = f"fail-{uuid.uuid4()}"
    fleet.create_job(request_id=request_id, assets=[{"url": f"{CDN}/will-fail.mp4"}, {"url": f"{CDN}/ok.mp4"}])
    job = fleet.wait_for_job(request_id)
    assert job.state is JobState.FAILED
    assert "failed" in job.error.lower()
    polls = sim_stats(fleet.simulator)["requests"]["GET /v1/aperture/jobs/{job_id}/status"]
    # When the fleet runs on for longer than several poll intervals (0.3 s each)
    fleet.run_passes(10)
    # Then nothing looked at the job again: no look is due or queued, Vidmob was asked nothing more
    stats = sim_stats(fleet.simulator)
    assert stats["jobs_created"] == 1
    assert stats["requests"]["GET /v1/aperture/jobs/{job_id}/status"] == polls
    job = job_by_request_id(request_id)
    assert job.state is JobState.FAILED and job.next_poll_at is None and job.poll_token is None
    assert fleet.queued == []


def test_a_500_and_a_429_are_retried_and_retry_after_is_honored(fleet):
    sim = fleet.simulator
    sim_fault(sim, method="POST", path="/v1/aperture/jobs", status=500, times=1)
    sim_fault(sim, method="POST", path="/v1/aperture/jobs", status=429, times=1, retry_after=2)
    sim_fault(sim, method="GET", path="/v1/aperture/jobs/{job_id}/status", status=503, times=1)
    request_id = f"retry-{uuid.uuid4()}"
    fleet.create_job(request_id=request_id, assets=[{"url": f"{CDN}/r.mp4"}])
    job = fleet.wait_for_job(request_id)
    assert job.state is JobState.COMPLETE, job.error
    posts = [a for a in attempts_for(job.id) if a.method == "POST"]
    assert [(a.status_code, a.outcome) for a in posts] == [(500, "retryable"), (429, "retryable"), (200, "ok")]
    assert posts[1].retry_after_s == 2
    assert (posts[2].attempted_at - posts[1].attempted_at).total_seconds() >= 2
    gets = [a.status_code for a in attempts_for(job.id) if a.method == "GET"]
    assert gets[0] == 503 and gets[-1] == 200
    assert sim_stats(sim)["jobs_created"] == 1


@pytest.mark.parametrize(
    ("break_it", "expected"),
    [
        (lambda sim: sim_fault(sim, method="POST", path="/v1/aperture/jobs", status=400, times=1), "400"),
        (lambda sim: requests.post(f"{sim.url}/_sim/config", json={"api_key": "another-key"}, timeout=5), "401"),
    ],
    ids=["400", "401"],
)
def test_a_400_and_a_401_are_not_retried(fleet, break_it, expected):
    break_it(fleet.simulator)
    request_id = f"terminal-{uuid.uuid4()}"
    fleet.create_job(request_id=request_id, assets=[{"url": f"{CDN}/t.mp4"}])
    job = fleet.wait_for_job(request_id)
    # When the fleet runs on for longer than the retry backoff (0.2 s to 1 s here)
    fleet.run_passes(15)
    job = job_by_request_id(request_id)
    assert job.state is JobState.FAILED
    assert expected in job.error
    attempts = attempts_for(job.id)
    assert [(a.status_code, a.outcome) for a in attempts] == [(int(expected), "terminal")]


def test_a_lost_poll_message_is_recovered_by_the_sweeper(system):
    # Given a job whose status check is under way (its message held by the worker) while Vidmob is slow to answer
    sim = system["simulator"]
    status = {"guide": "/v1/aperture/jobs/{job_id}/status", "media": "/v1/media/aperture/{job_id}"}
    path = status[system["env"]["VIDMOB_TAGS_DIALECT"]]
    sim_fault(sim, method="GET", path=path, delay_s=4, times=1)
    request_id = f"lost-{uuid.uuid4()}"
    send(system["env"], "aperture.create_job", request_id=request_id, assets=[{"url": f"{CDN}/lost.mp4"}])
    wait_for(lambda: sim_stats(sim)["requests"].get(f"GET {path}", 0) >= 1, what="a status check under way")
    # When every worker dies at once (kill -9) and the broker loses every message
    system["worker"].kill9()
    redis.Redis.from_url(system["env"]["APERTURE_BROKER_URL"]).flushdb()
    system["worker"].restart()
    system["worker"].wait_for_log("ready.", timeout=60)
    # Then the dispatcher finds the poll that is due with no live message, and the job completes
    job = wait_for_job(request_id, timeout=60)
    assert job.state is JobState.COMPLETE, job.error
    assert tags_by_url(job.id)[f"{CDN}/lost.mp4"]
    assert "looks whose message was lost" in system["dispatcher"].log()


def test_the_callback_is_a_celery_message_of_the_callers_task_under_a_stable_id(system):
    queue = f"test.callbacks.{uuid.uuid4().hex[:6]}"
    request_id = f"cb-{uuid.uuid4()}"
    send(
        system["env"],
        "aperture.create_job",
        request_id=request_id,
        assets=[{"url": f"{CDN}/cb.mp4", "id": "x1"}],
        callback={"task": "caller.tagged", "queue": queue},
    )
    job = wait_for_job(request_id)
    wait_for(lambda: job_by_request_id(request_id).callback_status is CallbackStatus.SENT, what="callback sent")
    messages = wait_for(lambda: drain(system["env"]["APERTURE_BROKER_URL"], queue), what="the callback message")
    assert len(messages) == 1
    message = messages[0]
    assert message.headers["task"] == "caller.tagged"
    assert message.headers["id"] == f"aperture-callback-{job.id}"
    _, kwargs, _ = message.payload
    assert kwargs["request_id"] == request_id and kwargs["job_id"] == str(job.id) and kwargs["status"] == "complete"
    assert kwargs["annotations"][0]["url"] == f"{CDN}/cb.mp4" and kwargs["annotations"][0]["id"] == "x1"
    assert {"category", "label"} <= set(kwargs["annotations"][0]["tags"][0])


def test_the_callback_is_sent_once_with_the_annotations(fleet):
    request_id = f"cb-{uuid.uuid4()}"
    callback = {"task": "caller.tagged", "queue": "caller"}
    fleet.create_job(request_id=request_id, assets=[{"url": f"{CDN}/cb.mp4", "id": "x1"}], callback=callback)
    job = fleet.wait_for_job(request_id)
    fleet.run_until(lambda: job_by_request_id(request_id).callback_status is CallbackStatus.SENT, what="sent")
    # When the fleet runs on past the horizon after which an owed callback is re-sent (2 s here)
    horizon = time.monotonic() + float(fleet.env["APERTURE_LOST_MESSAGE_AFTER_S"]) + 0.5
    fleet.run_until(lambda: time.monotonic() > horizon, what="the lost-message horizon")
    fleet.run_passes(3)
    # Then the caller got one callback, with the annotations
    assert [(m.task, m.queue, m.task_id) for m in fleet.callbacks] == [
        ("caller.tagged", "caller", f"aperture-callback-{job.id}")
    ]
    kwargs = fleet.callbacks[0].kwargs
    assert kwargs["request_id"] == request_id and kwargs["job_id"] == str(job.id) and kwargs["status"] == "complete"
    assert kwargs["annotations"][0]["url"] == f"{CDN}/cb.mp4" and kwargs["annotations"][0]["id"] == "x1"
    assert {"category", "label"} <= set(kwargs["annotations"][0]["tags"][0])


def test_tags_are_upserts_storing_a_result_twice_adds_nothing(fleet):
    request_id = f"upsert-{uuid.uuid4()}"
    fleet.create_job(request_id=request_id, assets=[{"url": f"{CDN}/u.mp4"}])
    job = fleet.wait_for_job(request_id)
    from clients.tags import AssetAnnotation
    from clients.tags import Tag as ApiTag
    from services.tagging.annotations import store_annotations

    with session_scope() as s:
        before = s.scalar(select(func.count()).select_from(Tag))
        rows = s.execute(select(Tag.category, Tag.label)).all()
        again = (AssetAnnotation(url=f"{CDN}/u.mp4", id=None, tags=tuple(ApiTag(r.category, r.label) for r in rows)),)
        store_annotations(s, job.id, again, dt.datetime.now(dt.UTC))
        assert s.scalar(select(func.count()).select_from(Tag)) == before > 0


def test_a_poll_past_the_deadline_times_the_job_out(fleet):
    request_id = f"late-{uuid.uuid4()}"
    requests.post(f"{fleet.simulator.url}/_sim/config", json={"pending_s": 30}, timeout=5)
    fleet.create_job(request_id=request_id, assets=[{"url": f"{CDN}/slow.mp4"}])
    fleet.wait_for_job(request_id, states={JobState.POLLING})
    with session_scope() as s:
        s.execute(update(Job).where(Job.request_id == request_id).values(deadline_at=func.now()))
    job = fleet.wait_for_job(request_id)
    assert job.state is JobState.TIMED_OUT
    assert "deadline" in job.error


def test_the_api_key_never_shows_in_logs_rows_or_errors(system):
    # Given flows that exercise errors as well as success
    sim = system["simulator"]
    sim_fault(sim, method="POST", path="/v1/aperture/jobs", status=500, times=1)
    ok, bad = f"key-ok-{uuid.uuid4()}", f"key-bad-{uuid.uuid4()}"
    send(system["env"], "aperture.create_job", request_id=ok, assets=[{"url": f"{CDN}/k.mp4"}])
    wait_for_job(ok)
    requests.post(f"{sim.url}/_sim/config", json={"api_key": "rotated"}, timeout=5)
    send(system["env"], "aperture.create_job", request_id=bad, assets=[{"url": f"{CDN}/k2.mp4"}])
    wait_for_job(bad)
    # Then the key appears in no log line (worker at DEBUG, dispatcher) and no row
    assert API_KEY not in system["worker"].log()
    assert API_KEY not in system["dispatcher"].log()
    with session_scope() as s:
        for row in s.execute(select(ApiAttempt.error, ApiAttempt.endpoint)).all():
            assert API_KEY not in repr(row)
        for row in s.execute(select(Job.error, Job.payload, Job.request_id)).all():
            assert API_KEY not in repr(row)
