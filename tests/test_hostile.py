"""Hostile and careless callers: whatever another application sends, it ends as a stored row (rejected
with its reason) and every worker stays alive; one caller's bad callback never stops the others'."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import redis
from sqlalchemy import insert

from models import CallbackStatus, Job, JobState
from models.db import session_scope
from tests.support import drain, job_by_request_id, send, wait_for, wait_for_job

pytestmark = pytest.mark.slow
CDN = "https://cdn.example.com/hostile"


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def assert_worker_alive_and_serving(system) -> None:
    assert system["worker"].proc.poll() is None, system["worker"].log()[-3000:]
    request_id = f"hostile-after-{uuid.uuid4()}"
    send(system["env"], "aperture.create_job", request_id=request_id, assets=[{"url": f"{CDN}/ok.mp4"}])
    assert wait_for_job(request_id).state is JobState.COMPLETE


def test_a_message_nested_hundreds_of_levels_deep_is_stored_as_rejected_and_kills_no_worker(system):
    # given a caller whose payload nests 600 levels deep (the worker used to die pickling it)
    request_id = f"hostile-deep-{uuid.uuid4()}"
    queue = f"test.hostile.{uuid.uuid4().hex[:6]}"
    send(
        system["env"],
        "aperture.create_job",
        request_id=request_id,
        assets=[{"url": f"{CDN}/a.mp4"}],
        notes=nested(600),
        callback={"task": "caller.tagged", "queue": queue},
    )

    # then it is stored as rejected, saying why, and the caller is told
    job = wait_for_job(request_id)
    assert job.state is JobState.REJECTED and "nested more than 32 levels" in job.error
    wait_for(lambda: job_by_request_id(request_id).callback_status is CallbackStatus.SENT, what="rejection callback")
    assert [m.payload[1]["status"] for m in drain(system["env"]["APERTURE_BROKER_URL"], queue)] == ["rejected"]
    # and the worker is alive and serving the next request
    assert_worker_alive_and_serving(system)


def test_a_message_over_the_size_limit_is_stored_as_rejected(system):
    request_id = f"hostile-big-{uuid.uuid4()}"
    send(
        system["env"],
        "aperture.create_job",
        request_id=request_id,
        assets=[{"url": f"{CDN}/a.mp4"}],
        blob="x" * 5_000_000,
    )
    job = wait_for_job(request_id)
    assert job.state is JobState.REJECTED and "bytes refused" in job.error
    assert len(str(job.payload)) < 10_000  # the 5 MB are not copied into the row
    assert_worker_alive_and_serving(system)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"assets": [{"url": f"{CDN}/nul\x00.mp4"}]}, "assets.0.url: Value error, must not contain control characters"),
        ({"assets": [{"url": f"{CDN}/a.mp4"}], "bad\x00key": 1}, "unknown field"),
        ({"assets": [{"url": f"{CDN}/a.mp4"}], "client_tags": [{"label": "x\ud800"}]}, "client_tags.0.label"),
        ({"assets": [{"url": f"{CDN}/a.mp4", "id": "line\nbreak"}]}, "assets.0.id: Value error"),
        (
            {"assets": [{"url": f"{CDN}/a.mp4"}], "callback": {"task": "caller.done", "queue": "unacked"}},
            "callback.queue: Value error, must be the caller's own queue",
        ),
        ({"assets": [{"url": f"{CDN}/a.mp4"}], "callback": {"task": "aperture.sweep"}}, "callback.task"),
        ({"assets": [{"url": f"{CDN}/a.mp4"}], "callback": {"task": "x; DROP"}}, "callback.task"),
        ({"assets": [{"url": f"{CDN}/a.mp4"}], "weight": float("inf")}, "unknown field"),
    ],
    ids=["nul-in-url", "nul-in-field-name", "lone-surrogate", "control-char-in-id", "reserved-queue",
         "internal-task", "not-a-task-name", "infinity-json-cannot-hold"],
)  # fmt: skip
def test_text_postgresql_cannot_store_or_a_callback_aimed_at_us_is_rejected_not_lost(system, payload, reason):
    request_id = f"hostile-text-{uuid.uuid4()}"
    send(system["env"], "aperture.create_job", request_id=request_id, **payload)
    job = wait_for_job(request_id)
    assert job.state is JobState.REJECTED and reason in job.error, job.error
    # an invalid callback is never sent anywhere
    assert job.callback_status is CallbackStatus.NONE


def test_a_stored_callback_aimed_at_the_broker_is_never_sent_and_does_not_stop_the_others(system):
    # given a row ended long ago whose callback names a key kombu uses itself (stored before the
    # contract refused such names), and a row whose callback was lost after it ended
    queue = f"test.after.{uuid.uuid4().hex[:6]}"
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)

    def ended_job(label: str, callback: dict, ended_at: dt.datetime) -> dict:
        return {
            "request_id": f"hostile-{label}-{uuid.uuid4()}",
            "state": JobState.FAILED,
            "payload": {},
            "callback": callback,
            "callback_status": CallbackStatus.PENDING,
            "dialect": "guide",
            "asset_count": 1,
            "deadline_at": long_ago,
            "ended_at": ended_at,
        }

    with session_scope() as s:
        bad, good = s.execute(
            insert(Job).returning(Job.id, sort_by_parameter_order=True),
            [
                ended_job("legacy", {"task": "caller.done", "queue": "unacked"}, long_ago),
                ended_job("lost", {"task": "caller.done", "queue": queue}, long_ago + dt.timedelta(seconds=1)),
            ],
        ).scalars()

    # then the dispatcher delivers the good one, and refuses the bad one every time it comes round
    wait_for(lambda: job_by_request_id_of(good).callback_status is CallbackStatus.SENT, timeout=15, what="good one")
    assert [m.headers["id"] for m in drain(system["env"]["APERTURE_BROKER_URL"], queue)] == [
        f"aperture-callback-{good}"
    ]
    assert job_by_request_id_of(bad).callback_status is CallbackStatus.PENDING
    assert f"refusing to send the callback of job {bad}: queue: Value error" in system["dispatcher"].log()
    # and nothing was ever pushed onto kombu's own `unacked` key (a list there stops every worker)
    assert redis.Redis.from_url(system["env"]["APERTURE_BROKER_URL"]).type("unacked") in (b"hash", b"none")
    assert_worker_alive_and_serving(system)


def job_by_request_id_of(job_id) -> Job:
    with session_scope() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job
