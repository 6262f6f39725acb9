"""The public contract: pinned task names and queues, and bad payloads rejected with reasons, never
retried. Validation is the task's own body (services/durable/intake.py), run in this process
(``fleet``); what only a worker sees (positional arguments in the Celery message) runs on one."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from models import Job, JobState
from models.db import session_scope
from tests.support import job_by_request_id, sim_stats, wait_for

GOOD_ASSET = {"url": "https://cdn.example.com/ok.mp4"}


def test_task_names_and_queues_are_pinned(app_env):
    from workers import app

    public = {"aperture.create_job", "aperture.score_media"}
    internal = {"aperture.submit_job", "aperture.poll_job", "aperture.sweep"}
    registered = {name for name in app.tasks if name.startswith("aperture.")}
    assert {"aperture.create_job"} | internal <= registered
    scoring_internal = {
        "aperture.rescore",
        "aperture.poll_scoring",
        "aperture.submit_scoring",
        "aperture.flush_tagging",
    }
    assert registered == public | internal | scoring_internal
    routes = app.conf.task_routes
    assert routes["aperture.create_job"]["queue"] == "aperture.submit"
    assert routes["aperture.poll_job"]["queue"] == "aperture.poll"
    assert routes["aperture.submit_job"]["queue"] == "aperture.admit"
    assert routes["aperture.sweep"]["queue"] == "aperture.maintenance"
    assert app.conf.task_default_queue == "celery"  # callers that name no queue are still served


def test_celery_is_configured_for_durability(app_env):
    from workers import app

    conf = app.conf
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    assert conf.task_ignore_result
    assert conf.task_soft_time_limit < conf.task_time_limit
    vt = conf.broker_transport_options["visibility_timeout"]
    assert vt == conf.result_backend_transport_options["visibility_timeout"]
    from config import get_settings
    from tasks.base import RETRY_TRANSIENT

    s = get_settings()
    assert vt > max(s.max_countdown_s, RETRY_TRANSIENT["retry_backoff_max"]) + s.task_time_limit_s
    assert conf.broker_transport_options["unacked_restore_throttle"] == 1
    assert conf.worker_eta_task_limit == s.worker_eta_task_limit


def test_a_visibility_timeout_shorter_than_the_longest_wait_is_refused():
    from pydantic import ValidationError

    from config.settings import Settings

    with pytest.raises(ValidationError, match="VISIBILITY_TIMEOUT"):
        Settings(visibility_timeout_s=600, max_countdown_s=900)


BAD_PAYLOADS = {
    "no assets": ({"assets": []}, "assets: List should have at least 1 item"),
    "201 assets": ({"assets": [GOOD_ASSET] * 201}, "assets: List should have at most 200 items"),
    "a non-URL": ({"assets": [{"url": "not a url"}]}, "assets.0.url"),
    "ftp URL": ({"assets": [{"url": "ftp://cdn.example.com/a.mp4"}]}, "http(s) URL"),
    "missing label": (
        {"assets": [GOOD_ASSET], "client_tags": [{"description": "x"}]},
        "client_tags.0.label: Field required",
    ),
    "assets not a list": ({"assets": "https://cdn.example.com/a.mp4"}, "assets: Input should be a valid list"),
    "url not a string": ({"assets": [{"url": 42}]}, "assets.0.url: Input should be a valid string"),
    "unknown field": ({"assets": [GOOD_ASSET], "urgency": "high"}, "urgency: unknown field"),
    "unknown priority": (
        {"assets": [GOOD_ASSET], "priority": "high"},
        "priority: Input should be 'interactive' or 'bulk'",
    ),
    "unknown asset field": ({"assets": [{"url": GOOD_ASSET["url"], "size": 3}]}, "assets.0.size: unknown field"),
    "missing assets": ({"client_tags": []}, "assets: Field required"),
}


def test_bad_payloads_are_rejected_with_readable_reasons_and_nothing_is_sent(fleet):
    ids = {}
    for name, (payload, _) in BAD_PAYLOADS.items():
        ids[name] = f"bad-{uuid.uuid4()}"
        assert fleet.create_job(request_id=ids[name], **payload)["state"] == "rejected", name
    for name, (_, reason) in BAD_PAYLOADS.items():
        job = job_by_request_id(ids[name])
        assert job.state is JobState.REJECTED, name
        assert reason in job.error, (name, job.error)
        assert job.ended_at is not None
    # and a good request after them still does real work; Vidmob saw that one only
    ok = f"ok-{uuid.uuid4()}"
    fleet.create_job(request_id=ok, assets=[GOOD_ASSET])
    assert fleet.wait_for_job(ok).state is JobState.COMPLETE
    assert sim_stats(fleet.simulator)["jobs_created"] == 1


def test_a_rejected_payload_is_stored_once_and_not_retried(fleet):
    # Given a request that breaks the contract, with a callback, sent twice (a caller's retry)
    request_id = f"bad-{uuid.uuid4()}"
    callback = {"task": "caller.tagged", "queue": "caller"}
    first = fleet.create_job(request_id=request_id, assets=[], callback=callback)
    second = fleet.create_job(request_id=request_id, assets=[], callback=callback)
    # Then the task returned normally both times (so Celery, which retries only what raises a
    # transient database error, never retries it), the second finding the first one's row
    assert (first["state"], first["created"]) == ("rejected", True)
    assert (second["state"], second["created"], second["job_id"]) == ("rejected", False, first["job_id"])
    # and when the fleet runs on, nothing is tried again: no message for it, no Vidmob call, and
    # the caller heard once why
    fleet.run_passes(5)
    assert fleet.queued == [] and fleet.ran["aperture.create_job"] == 2
    assert sim_stats(fleet.simulator)["jobs_created"] == 0
    assert [(m.task, m.kwargs["status"]) for m in fleet.callbacks] == [("caller.tagged", "rejected")]
    with session_scope() as s:
        rows = s.execute(select(Job.state, Job.error).where(Job.request_id == request_id)).all()
    assert [(state, "assets: List should have at least 1 item" in error) for state, error in rows] == [
        (JobState.REJECTED, True)
    ]


@pytest.mark.slow
def test_positional_arguments_and_a_bad_request_id_are_rejected_not_dropped(system):
    from celery import Celery

    app = Celery(broker=system["env"]["APERTURE_BROKER_URL"])
    task_id = app.send_task("aperture.create_job", args=[[GOOD_ASSET]]).id
    bad_id_task = app.send_task("aperture.create_job", kwargs={"assets": [GOOD_ASSET], "request_id": 12}).id
    app.close()
    job = wait_for(lambda: job_by_request_id(f"celery-task:{task_id}"), what="positional job")
    assert job.state is JobState.REJECTED and "keyword arguments only" in job.error
    other = wait_for(lambda: job_by_request_id(f"celery-task:{bad_id_task}"), what="bad request_id job")
    assert other.state is JobState.REJECTED and "request_id: Input should be a valid string" in other.error


def test_the_prefetch_is_one_on_redis_and_four_on_rabbitmq_sixteen_for_the_polls_unless_set(app_env):
    # On Redis a prefetched message taken by a worker that is then killed waits out the visibility timeout;
    # RabbitMQ hands it back at once, and one message at a time leaves a process waiting on every ack.
    from config import Settings
    from config.celery import celery_config

    redis_url, amqp_url = "redis://127.0.0.1:6379/0", "amqp://guest:guest@127.0.0.1:5672//"
    on_redis = Settings(broker_url=redis_url)
    on_rabbitmq = Settings(broker_url=amqp_url, redis_url=redis_url)
    assert celery_config(on_redis, redis_url)["worker_prefetch_multiplier"] == 1
    assert celery_config(on_rabbitmq, amqp_url)["worker_prefetch_multiplier"] == 4
    chosen = Settings(broker_url=amqp_url, redis_url=redis_url, worker_prefetch_multiplier=2)
    assert celery_config(chosen, amqp_url)["worker_prefetch_multiplier"] == 2
    # A worker that serves the polls takes more (workers/consumer.py applies it once -Q is known).
    assert on_rabbitmq.prefetch_multiplier_for(["aperture.poll"]) == 16
    assert on_rabbitmq.prefetch_multiplier_for(["aperture.submit", "aperture.admit"]) == 4
    assert on_redis.prefetch_multiplier_for(["aperture.poll"]) == 1
    assert chosen.prefetch_multiplier_for(["aperture.poll"]) == 2
