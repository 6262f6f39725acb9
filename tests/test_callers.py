"""Many applications, one fleet: who sent each request, keys per caller, callbacks only where the
caller may send. Real PostgreSQL and the simulator over HTTP, in this process (``fleet``); what the
broker guarantees about the sender (RabbitMQ's user_id) is tests/test_callers_rabbitmq.py.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from config import get_settings
from models import CallbackStatus, Job, JobState, ScoredMedia, ScoredMediaTaggingJob
from models.db import session_scope
from tests.inprocess import Fleet
from tests.support import sim_stats

pytestmark = pytest.mark.slow
CDN = "https://cdn.example.com/callers"


@pytest.fixture
def callers(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    """The fleet with two configured callers: ``shop`` (an allowlist) and ``ads`` (none: its own names)."""
    configured = {
        "shop": {"callback_queues": ["shop-results"], "callback_task_prefixes": ["shop.hooks."]},
        "ads": {},
    }
    monkeypatch.setenv("APERTURE_CALLERS", json.dumps(configured))
    get_settings.cache_clear()
    yield fleet
    get_settings.cache_clear()


def rows(request_id: str) -> list[Job]:
    with session_scope() as s:
        return list(s.execute(select(Job).where(Job.request_id == request_id).order_by(Job.created_at)).scalars())


def ended(job: Job) -> Job | None:
    return None if job.state.is_active else job


def request(url: str, request_id: str, **extra: Any) -> dict[str, Any]:
    return {"assets": [{"url": url, "id": "a"}], "request_id": request_id, "batch": False, **extra}


def callbacks_on(fleet: Fleet, queue: str) -> list[dict[str, Any]]:
    return [m.kwargs for m in fleet.callbacks if m.queue == queue]


def test_a_caller_that_names_none_is_default_and_keeps_todays_callbacks(callers: Fleet) -> None:
    callers.create_job(**request(f"{CDN}/d.mp4", "plain", callback={"task": "legacy.done", "queue": "legacy"}))
    job = callers.wait_for_job("plain")
    callers.run_until(lambda: callbacks_on(callers, "legacy"), what="the default caller's callback")
    assert (job.caller, job.state) == ("default", JobState.COMPLETE)
    assert callbacks_on(callers, "legacy")[0]["status"] == "complete"


def test_the_same_request_again_is_a_replay(callers: Fleet) -> None:
    first = callers.create_job(**request(f"{CDN}/r.mp4", "order-1", caller="shop"))
    # The same request, its fields in another order and a default spelled out: the same fingerprint.
    again = callers.create_job(batch=False, fresh=False, request_id="order-1", caller="shop", assets=[
        {"id": "a", "url": f"{CDN}/r.mp4"}
    ])  # fmt: skip
    assert again == {**first, "created": False, "state": again["state"]}
    (job,) = rows("order-1")
    assert (job.replays, job.caller) == (1, "shop")
    assert job.last_replay_at is not None
    callers.wait_for_job("order-1")
    assert sim_stats(callers.simulator)["jobs_created"] == 1


def test_a_key_reused_for_a_different_request_is_refused_with_the_reason_and_a_callback(callers: Fleet) -> None:
    hook = {"task": "shop.hooks.tagged", "queue": "shop-results"}
    first = callers.create_job(**request(f"{CDN}/one.mp4", "order-1", caller="shop", callback=hook))
    other = callers.create_job(**request(f"{CDN}/two.mp4", "order-1", caller="shop", callback=hook))

    assert other["created"] and other["state"] == "rejected" and other["job_id"] != first["job_id"]
    original, refused = rows("order-1")
    assert str(original.id) == first["job_id"]
    assert refused.state is JobState.REJECTED
    assert refused.error == f'request_id "order-1" was already used for a different request: job {original.id}'
    assert refused.key_conflict_of == original.id
    callers.run_until(lambda: any(c["job_id"] == other["job_id"] for c in callbacks_on(callers, "shop-results")))
    told = next(c for c in callbacks_on(callers, "shop-results") if c["job_id"] == other["job_id"])
    assert (told["status"], told["request_id"]) == ("rejected", "order-1")
    # The first request is untouched, and goes on to its end.
    done = callers.run_until(lambda: ended(rows("order-1")[0]), what="the first request's end")
    assert (done.state, done.error) == (JobState.COMPLETE, None)
    # The refused request sent again (a redelivery) is a replay of its refusal: still two rows.
    callers.create_job(**request(f"{CDN}/two.mp4", "order-1", caller="shop", callback=hook))
    assert [r.replays for r in rows("order-1")] == [0, 1]


def test_two_callers_may_use_the_same_request_id(callers: Fleet) -> None:
    shop = callers.create_job(**request(f"{CDN}/shop.mp4", "order-1", caller="shop"))
    ads = callers.create_job(**request(f"{CDN}/ads.mp4", "order-1", caller="ads"))
    assert shop["created"] and ads["created"] and shop["job_id"] != ads["job_id"]

    def both_ended() -> list[Job] | None:
        found = rows("order-1")
        return found if all(not j.state.is_active for j in found) else None

    ended = callers.run_until(both_ended, what="both callers' jobs to end")
    assert {(j.caller, j.state, j.error) for j in ended} == {
        ("shop", JobState.COMPLETE, None),
        ("ads", JobState.COMPLETE, None),
    }
    assert sim_stats(callers.simulator)["jobs_created"] == 2


def test_scoring_keys_are_per_caller_too(callers: Fleet) -> None:
    media = {"id": "m-1", "url": f"{CDN}/m.mp4", "request_id": "score-1"}
    first = callers.score_media(**media, caller="shop")
    second = callers.score_media(**media, caller="ads")
    conflict = callers.score_media(**{**media, "id": "m-2"}, caller="shop")
    with session_scope() as s:
        found = {r.id: r for r in s.execute(select(ScoredMedia).where(ScoredMedia.request_id == "score-1")).scalars()}
    assert first["scoring_id"] != second["scoring_id"]
    refused = found[uuid.UUID(conflict["scoring_id"])]
    assert refused.state.value == "rejected"
    assert refused.error == (
        f'request_id "score-1" was already used for a different request: scored media {first["scoring_id"]}'
    )


def test_the_scoring_loops_tagging_jobs_belong_to_the_callers_of_their_media(callers: Fleet) -> None:
    # Given media of two callers, which Vidmob has never tagged, scored at once
    sent = {caller: f"loop-{caller}-{uuid.uuid4()}" for caller in ("shop", "ads")}
    for caller, request_id in sent.items():
        callers.score_media(id=f"loop-{caller}", url=f"{CDN}/loop-{caller}.mp4", request_id=request_id, caller=caller)

    # When the fleet has tagged and rescored both
    def scored() -> dict[str, ScoredMedia] | None:
        with session_scope() as s:
            media = s.execute(select(ScoredMedia).where(ScoredMedia.request_id.in_(sent.values()))).scalars().all()
            done = {m.caller: m for m in media if not m.state.is_active}
        return done if len(done) == 2 else None

    media = callers.run_until(scored, timeout=45, what="both media scored")
    # Then each was tagged by a job of its own caller (counted in that caller's usage and budget)
    with session_scope() as s:
        owners = dict(
            s.execute(
                select(ScoredMedia.caller, Job.caller)
                .join(ScoredMediaTaggingJob, ScoredMediaTaggingJob.scored_media_id == ScoredMedia.id)
                .join(Job, Job.id == ScoredMediaTaggingJob.job_id)
                .where(ScoredMedia.id.in_([m.id for m in media.values()]))
            ).all()
        )
    assert {m.state.value for m in media.values()} == {"scored"}
    assert owners == {"shop": "shop", "ads": "ads"}


@pytest.mark.parametrize(
    ("caller", "callback", "reason"),
    [
        (
            "shop",
            {"task": "shop.hooks.tagged", "queue": "billing"},
            "callback.queue: 'billing' is not a queue caller 'shop' may send callbacks to",
        ),
        (
            "shop",
            {"task": "billing.charge", "queue": "shop-results"},
            "callback.task: 'billing.charge' is not a task caller 'shop' may name (allowed: shop.hooks.*)",
        ),
        (
            "ads",
            {"task": "ads.tagged", "queue": "shop-results"},
            "callback.queue: 'shop-results' is not a queue caller 'ads' may send callbacks to",
        ),
        (
            "ads",
            {"task": "ads.tagged"},
            "callback.queue: 'the default queue' is not a queue caller 'ads' may send callbacks to",
        ),
    ],
)
def test_a_callback_the_caller_may_not_use_is_refused(
    callers: Fleet, caller: str, callback: dict[str, str], reason: str
) -> None:
    request_id = f"deputy-{uuid.uuid4()}"
    result = callers.create_job(**request(f"{CDN}/x.mp4", request_id, caller=caller, callback=callback))
    (job,) = rows(request_id)
    assert (result["state"], job.error, job.callback, job.callback_status) == (
        "rejected",
        reason,
        None,
        CallbackStatus.NONE,
    )
    callers.run_passes(2)
    assert callers.callbacks == []
    assert sim_stats(callers.simulator)["jobs_created"] == 0


def test_a_caller_without_an_allowlist_may_use_its_own_names(callers: Fleet) -> None:
    callers.create_job(**request(f"{CDN}/own.mp4", "own", caller="ads", callback={"task": "ads.t", "queue": "ads.in"}))
    assert callers.wait_for_job("own").state is JobState.COMPLETE
    callers.run_until(lambda: callbacks_on(callers, "ads.in"), what="the callback on the caller's own queue")


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("default", ("default", JobState.COMPLETE, None)),
        ("accept", ("stranger", JobState.COMPLETE, None)),
        ("reject", ("stranger", JobState.REJECTED, "caller: 'stranger' is not a configured caller (APERTURE_CALLERS)")),
    ],
)
def test_an_unknown_caller_gets_what_the_setting_says(
    callers: Fleet, monkeypatch: pytest.MonkeyPatch, setting: str, expected: tuple[Any, ...]
) -> None:
    monkeypatch.setenv("APERTURE_UNKNOWN_CALLER", setting)
    get_settings.cache_clear()
    callers.create_job(**request(f"{CDN}/u.mp4", "unknown", caller="stranger"))
    job = callers.wait_for_job("unknown")
    assert (job.caller, job.state, job.error) == expected


def test_a_caller_name_that_is_not_a_name_is_refused_and_stored(callers: Fleet) -> None:
    result = callers.create_job(**request(f"{CDN}/n.mp4", "badname", caller="a b/c"))
    (job,) = rows("badname")
    assert result["state"] == "rejected" and job.caller == "default"
    assert job.error is not None and job.error.startswith("caller: must be a name")


@pytest.fixture
def budgeted(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    """``thrifty`` may send 3 assets a day to Vidmob and is refused past it; ``patient`` waits instead."""
    configured = {"thrifty": {"assets_per_day": 3}, "patient": {"assets_per_day": 1, "over_budget": "wait"}}
    monkeypatch.setenv("APERTURE_CALLERS", json.dumps(configured))
    get_settings.cache_clear()
    yield fleet
    get_settings.cache_clear()


def assets(*names: str) -> list[dict[str, str]]:
    return [{"url": f"{CDN}/budget/{n}.mp4"} for n in names]


def test_past_its_budget_a_request_is_refused_with_the_reason_and_told(budgeted: Fleet) -> None:
    hook = {"task": "thrifty.done", "queue": "thrifty"}
    budgeted.create_job(assets=assets("a", "b"), request_id="day-1", caller="thrifty", batch=False, callback=hook)
    assert budgeted.wait_for_job("day-1").state is JobState.COMPLETE
    # The same two assets again are answered by reuse: no Vidmob call, nothing spent.
    budgeted.create_job(assets=assets("a", "b"), request_id="day-2", caller="thrifty", batch=False, callback=hook)
    assert budgeted.wait_for_job("day-2").state is JobState.COMPLETE
    budgeted.create_job(assets=assets("c", "d"), request_id="day-3", caller="thrifty", batch=False, callback=hook)
    over = budgeted.wait_for_job("day-3")
    assert over.state is JobState.REJECTED
    assert over.error == (
        "caller 'thrifty' is over its budget: 2 of 3 assets sent to Vidmob today (UTC), and this request needs 2 more"
    )
    budgeted.run_until(lambda: len(callbacks_on(budgeted, "thrifty")) == 3, what="three callbacks")
    assert [c["status"] for c in callbacks_on(budgeted, "thrifty")] == ["complete", "complete", "rejected"]
    assert sim_stats(budgeted.simulator)["jobs_created"] == 1


def test_a_caller_that_waits_past_its_budget_waits_for_the_next_day(budgeted: Fleet) -> None:
    budgeted.create_job(assets=assets("p1"), request_id="p-1", caller="patient", batch=False)
    assert budgeted.wait_for_job("p-1").state is JobState.COMPLETE
    budgeted.create_job(assets=assets("p2"), request_id="p-2", caller="patient", batch=False)
    (waiting,) = rows("p-2")
    tomorrow = (waiting.created_at.astimezone(dt.UTC) + dt.timedelta(days=1)).date()
    assert waiting.state is JobState.SUBMITTING and waiting.next_poll_at is not None
    assert waiting.next_poll_at.astimezone(dt.UTC).date() == tomorrow
    assert waiting.error is not None and waiting.error.endswith("waiting for the next day")


def test_log_lines_of_a_request_name_its_caller(callers: Fleet) -> None:
    from services import log_context

    log_context.clear()
    callers.create_job(**request(f"{CDN}/log.mp4", "logged", caller="shop"))
    assert log_context.bound()["caller"] == "shop"
    log_context.clear()
