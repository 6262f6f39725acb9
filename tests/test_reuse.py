"""Reuse: an asset tagged within APERTURE_REUSE_TTL_S, with the same client tags, is answered from
PostgreSQL with no Vidmob call. Real Postgres, the simulator over HTTP. Given / when / then.

Reuse is decided in the submit step: the same steps and dispatcher passes run in this process
(``fleet``: tests/inprocess.py), callbacks read from what the caller's queue would receive. The
worker's metrics (counted in its pool processes, served by its main process) need the real worker
and dispatcher (``system``)."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from typing import Any

import pytest
import requests
from sqlalchemy import select, text, update

from models import Asset, CallbackStatus, Job, JobState
from models.db import session_scope
from tests.inprocess import Fleet
from tests.support import job_by_request_id, send, sim_stats, tags_by_url, wait_for_job

pytestmark = pytest.mark.slow
CDN = "https://cdn.example.com/reuse"
LIFESTYLE = {"label": "lifestyle", "description": "Real-life settings"}
BEACH = {"label": "beach", "description": None}


def create(fleet: Fleet, urls: list[str], *, client_tags=(), queue: str | None = None, **extra) -> Job:
    """Run aperture.create_job as a caller would send it and wait for its end (and callback)."""
    request_id = f"reuse-{uuid.uuid4()}"
    kwargs: dict[str, Any] = {
        "request_id": request_id,
        "assets": [{"url": u, "id": f"id-{i}"} for i, u in enumerate(urls)],
    }
    kwargs |= {"client_tags": list(client_tags), **extra}
    if queue:
        kwargs["callback"] = {"task": "caller.tagged", "queue": queue}
    fleet.create_job(**kwargs)
    job = fleet.wait_for_job(request_id)

    def callback_sent() -> bool:
        row = job_by_request_id(request_id)
        assert row is not None  # the job waited for above
        return row.callback_status is CallbackStatus.SENT

    if queue:
        fleet.run_until(callback_sent, what="callback sent")
    return job


def created(on: Fleet | dict) -> int:
    simulator = on.simulator if isinstance(on, Fleet) else on["simulator"]
    return sim_stats(simulator)["jobs_created"]


def callback_kwargs(fleet: Fleet, queue: str) -> dict:
    """What the caller's queue received: one callback."""
    [message] = [m for m in fleet.callbacks if m.queue == queue]
    return message.kwargs


def reused_metric(system) -> tuple[float, float]:
    body = requests.get(f"http://127.0.0.1:{system['worker'].metrics_port}/metrics", timeout=5).text

    def value(name: str) -> float:
        found = re.search(rf"^{name} (\S+)$", body, re.M)
        return float(found.group(1)) if found else 0.0

    return value("aperture_reused_jobs_total"), value("aperture_reused_assets_total")


def test_the_same_assets_and_client_tags_again_are_answered_from_postgres_with_no_vidmob_call(fleet, aperture):
    # Given two assets tagged by Vidmob with two client tags (the simulator finds them in the URL)
    urls = [f"{CDN}/lifestyle-beach-{uuid.uuid4().hex[:8]}-{i}.mp4" for i in range(2)]
    first = create(fleet, urls, client_tags=[LIFESTYLE, BEACH])
    assert first.state is JobState.COMPLETE and first.vidmob_job_id
    assert created(fleet) == 1
    with session_scope() as s:
        first_tagged = dict(s.execute(select(Asset.url, Asset.tagged_at).where(Asset.job_id == first.id)).all())

    # When another caller asks for the same URLs with the same client tags, in another order
    queue = f"test.reuse.{uuid.uuid4().hex[:6]}"
    second = create(fleet, list(reversed(urls)), client_tags=[BEACH, LIFESTYLE], queue=queue)

    # Then it completes with no Vidmob call, its assets carrying the first job's tags
    assert second.state is JobState.COMPLETE, second.error
    assert created(fleet) == 1
    assert second.vidmob_job_id is None and second.submit_attempts == 0 and second.poll_count == 0
    assert tags_by_url(second.id) == tags_by_url(first.id)
    assert ("client", "lifestyle") in tags_by_url(second.id)[urls[0]]
    # And its callback says, per asset, that the tags were reused and when Vidmob made them
    kwargs = callback_kwargs(fleet, queue)
    assert kwargs["status"] == "complete" and kwargs["job_id"] == str(second.id)
    assert [a["url"] for a in kwargs["annotations"]] == list(reversed(urls))
    for annotation in kwargs["annotations"]:
        assert annotation["reused"] is True
        assert annotation["reused_from_job_id"] == str(first.id)
        assert dt.datetime.fromisoformat(annotation["tagged_at"]) == first_tagged[annotation["url"]]
        assert {(t["category"], t["label"]) for t in annotation["tags"]} == tags_by_url(first.id)[annotation["url"]]
    # And an operator sees it in `aperture jobs show` (the metrics count it: the test below)
    shown = aperture("jobs", "show", second.request_id)
    assert f"reused from job {first.id} (tagged" in shown.output, shown.output
    detail = json.loads(aperture("jobs", "show", second.request_id, "--json").output)
    assert [r["job_id"] for r in detail["reused_from"]] == [str(first.id)]
    assert all(a["reused"] for a in detail["assets"])
    # And the library's maintained counts are what a rebuild from the rows gives
    with session_scope() as s:
        counts = "SELECT collection, category, label, assets, requested FROM library_tag_counts ORDER BY 1, 2, 3"
        kept = s.execute(text(counts)).all()
        assert s.execute(text("SELECT valid FROM library_counts_state")).scalar_one() is True
        s.execute(text("SELECT library_rebuild_counts()"))
        assert s.execute(text(counts)).all() == kept


def test_the_workers_metrics_count_the_jobs_and_assets_answered_by_reuse(system):
    # Given two assets tagged by Vidmob, by the real worker
    urls = [f"{CDN}/lifestyle-{uuid.uuid4().hex[:8]}-{i}.mp4" for i in range(2)]
    assets = [{"url": u} for u in urls]
    first = f"reuse-metric-{uuid.uuid4()}"
    send(system["env"], "aperture.create_job", request_id=first, assets=assets, client_tags=[LIFESTYLE])
    assert wait_for_job(first).state is JobState.COMPLETE
    metric_before = reused_metric(system)
    # When another caller asks for the same URLs with the same client tags
    second = f"reuse-metric-{uuid.uuid4()}"
    send(system["env"], "aperture.create_job", request_id=second, assets=assets, client_tags=[LIFESTYLE])
    job = wait_for_job(second)
    # Then it was answered by reuse, and the worker's metrics count one job and two assets
    assert job.state is JobState.COMPLETE and job.vidmob_job_id is None
    assert created(system) == 1
    jobs, reused = reused_metric(system)
    assert (jobs - metric_before[0], reused - metric_before[1]) == (1, 2)


def test_a_first_tagging_says_it_was_not_reused(fleet):
    queue = f"test.reuse.{uuid.uuid4().hex[:6]}"
    job = create(fleet, [f"{CDN}/{uuid.uuid4().hex[:8]}.mp4"], queue=queue)
    [annotation] = callback_kwargs(fleet, queue)["annotations"]
    assert annotation["reused"] is False and annotation["reused_from_job_id"] is None
    with session_scope() as s:
        tagged_at = s.execute(select(Asset.tagged_at).where(Asset.job_id == job.id)).scalar_one()
    assert dt.datetime.fromisoformat(annotation["tagged_at"]) == tagged_at


@pytest.mark.parametrize(
    "second",
    [
        pytest.param({"client_tags": [LIFESTYLE]}, id="fewer client tags"),
        pytest.param({"client_tags": [LIFESTYLE, {"label": "beach", "description": "Sand"}]}, id="other description"),
        pytest.param({"client_tags": [LIFESTYLE, BEACH], "fresh": True}, id="fresh"),
    ],
)
def test_other_client_tags_or_fresh_go_to_vidmob(fleet, second):
    # Given an asset tagged with two client tags
    url = f"{CDN}/{uuid.uuid4().hex[:8]}.mp4"
    create(fleet, [url], client_tags=[LIFESTYLE, BEACH])
    # When it is asked for again with other client tags, or with fresh: true
    job = create(fleet, [url], **second)
    # Then Vidmob tags it again
    assert job.state is JobState.COMPLETE and job.vidmob_job_id
    assert created(fleet) == 2
    with session_scope() as s:
        assert s.execute(select(Asset.reused_from_asset_id).where(Asset.job_id == job.id)).scalar_one() is None


def test_tags_older_than_the_ttl_are_not_reused(fleet):
    # Given an asset whose tags were made 8 days ago (the TTL is 7 days by default)
    url = f"{CDN}/{uuid.uuid4().hex[:8]}.mp4"
    first = create(fleet, [url])
    with session_scope() as s:
        s.execute(
            update(Asset).where(Asset.job_id == first.id).values(tagged_at=Asset.tagged_at - dt.timedelta(days=8))
        )
    # When the same asset is asked for again
    job = create(fleet, [url])
    # Then Vidmob tags it again
    assert job.state is JobState.COMPLETE and job.vidmob_job_id
    assert created(fleet) == 2


def test_a_request_with_one_unknown_asset_sends_only_that_one_to_vidmob(fleet):
    # Given one asset tagged before
    known, unknown = (f"{CDN}/lifestyle-{uuid.uuid4().hex[:8]}-{i}.mp4" for i in range(2))
    first = create(fleet, [known], client_tags=[LIFESTYLE])
    # When a request carries it and an asset never seen
    queue = f"test.reuse.{uuid.uuid4().hex[:6]}"
    job = create(fleet, [known, unknown], client_tags=[LIFESTYLE], queue=queue)
    # Then one Vidmob job tags the unknown one only, and the known one's tags are reused
    assert job.state is JobState.COMPLETE and job.vidmob_job_id and job.asset_count == 2
    assert created(fleet) == 2
    record = requests.get(f"{fleet.simulator.url}/_sim/jobs/{job.vidmob_job_id}", timeout=5).json()
    assert record["urls"] == [unknown]
    with session_scope() as s:
        [source] = s.execute(select(Asset.id).where(Asset.job_id == first.id)).scalars().all()
        reused = s.execute(
            select(Asset.reused_from_asset_id).where(Asset.job_id == job.id).order_by(Asset.position)
        ).scalars()
        assert list(reused) == [source, None]
    tags = tags_by_url(job.id)
    assert tags[known] == tags_by_url(first.id)[known] and ("client", "lifestyle") in tags[unknown]
    # And its callback says, per asset, which tags were reused
    annotations = callback_kwargs(fleet, queue)["annotations"]
    assert [(a["url"], a["reused"]) for a in annotations] == [(known, True), (unknown, False)]
    assert annotations[0]["reused_from_job_id"] == str(first.id)


def test_reused_tags_are_reused_again_counted_from_vidmobs_tagging(fleet):
    # Given an asset tagged by Vidmob, then answered once by reuse
    url = f"{CDN}/{uuid.uuid4().hex[:8]}.mp4"
    first = create(fleet, [url])
    create(fleet, [url])
    # When it is asked for a third time, then after its Vidmob tagging is older than the TTL
    third = create(fleet, [url])
    with session_scope() as s:
        origin = s.execute(select(Asset.id, Asset.tagged_at).where(Asset.job_id == first.id)).one()
        copy = s.execute(select(Asset).where(Asset.job_id == third.id)).scalar_one()
        # Then the third copies the original, with the original's time
        assert (copy.reused_from_asset_id, copy.tagged_at) == (origin.id, origin.tagged_at)
        s.execute(update(Asset).where(Asset.url == url).values(tagged_at=Asset.tagged_at - dt.timedelta(days=8)))
    assert created(fleet) == 1
    # And a copy never extends the TTL: once the original is too old, Vidmob tags it again
    fourth = create(fleet, [url])
    assert fourth.vidmob_job_id and created(fleet) == 2


def test_fresh_must_be_a_boolean(fleet):
    request_id = f"reuse-bad-{uuid.uuid4()}"
    fleet.create_job(request_id=request_id, assets=[{"url": f"{CDN}/x.mp4"}], fresh="yes")
    job = fleet.wait_for_job(request_id)
    assert job.state is JobState.REJECTED and "fresh: Input should be a valid boolean" in job.error
