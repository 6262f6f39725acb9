"""Reuse (issue 9, part 3): an asset tagged within APERTURE_REUSE_TTL_S, with the same client tags,
is answered from PostgreSQL with no Vidmob call. End to end: real worker and dispatcher, real
Postgres and Redis, the simulator over HTTP. Given / when / then."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid

import pytest
import requests
from sqlalchemy import select, text, update

from models import Asset, CallbackStatus, Job, JobState
from models.db import session_scope
from tests.support import drain, job_by_request_id, send, sim_stats, tags_by_url, wait_for, wait_for_job

pytestmark = pytest.mark.slow
CDN = "https://cdn.example.com/reuse"
LIFESTYLE = {"label": "lifestyle", "description": "Real-life settings"}
BEACH = {"label": "beach", "description": None}


def create(system, urls: list[str], *, client_tags=(), queue: str | None = None, **extra) -> Job:
    """Send aperture.create_job as a caller would and wait for its end."""
    request_id = f"reuse-{uuid.uuid4()}"
    kwargs = {"request_id": request_id, "assets": [{"url": u, "id": f"id-{i}"} for i, u in enumerate(urls)]}
    kwargs |= {"client_tags": list(client_tags), **extra}
    if queue:
        kwargs["callback"] = {"task": "caller.tagged", "queue": queue}
    send(system["env"], "aperture.create_job", **kwargs)
    job = wait_for_job(request_id)
    if queue:
        wait_for(lambda: job_by_request_id(request_id).callback_status is CallbackStatus.SENT, what="callback sent")
    return job


def created(system) -> int:
    return sim_stats(system["simulator"])["jobs_created"]


def callback_kwargs(system, queue: str) -> dict:
    [message] = drain(system["env"]["APERTURE_BROKER_URL"], queue)
    return message.payload[1]


def reused_metric(system) -> tuple[float, float]:
    body = requests.get(f"http://127.0.0.1:{system['worker'].metrics_port}/metrics", timeout=5).text

    def value(name: str) -> float:
        found = re.search(rf"^{name} (\S+)$", body, re.M)
        return float(found.group(1)) if found else 0.0

    return value("aperture_reused_jobs_total"), value("aperture_reused_assets_total")


def test_the_same_assets_and_client_tags_again_are_answered_from_postgres_with_no_vidmob_call(system, aperture):
    # Given two assets tagged by Vidmob with two client tags (the simulator finds them in the URL)
    urls = [f"{CDN}/lifestyle-beach-{uuid.uuid4().hex[:8]}-{i}.mp4" for i in range(2)]
    first = create(system, urls, client_tags=[LIFESTYLE, BEACH])
    assert first.state is JobState.COMPLETE and first.vidmob_job_id
    assert created(system) == 1
    with session_scope() as s:
        first_tagged = dict(s.execute(select(Asset.url, Asset.tagged_at).where(Asset.job_id == first.id)).all())
    metric_before = reused_metric(system)

    # When another caller asks for the same URLs with the same client tags, in another order
    queue = f"test.reuse.{uuid.uuid4().hex[:6]}"
    second = create(system, list(reversed(urls)), client_tags=[BEACH, LIFESTYLE], queue=queue)

    # Then it completes with no Vidmob call, its assets carrying the first job's tags
    assert second.state is JobState.COMPLETE, second.error
    assert created(system) == 1
    assert second.vidmob_job_id is None and second.submit_attempts == 0 and second.poll_count == 0
    assert tags_by_url(second.id) == tags_by_url(first.id)
    assert ("client", "lifestyle") in tags_by_url(second.id)[urls[0]]
    # And its callback says, per asset, that the tags were reused and when Vidmob made them
    kwargs = callback_kwargs(system, queue)
    assert kwargs["status"] == "complete" and kwargs["job_id"] == str(second.id)
    assert [a["url"] for a in kwargs["annotations"]] == list(reversed(urls))
    for annotation in kwargs["annotations"]:
        assert annotation["reused"] is True
        assert annotation["reused_from_job_id"] == str(first.id)
        assert dt.datetime.fromisoformat(annotation["tagged_at"]) == first_tagged[annotation["url"]]
        assert {(t["category"], t["label"]) for t in annotation["tags"]} == tags_by_url(first.id)[annotation["url"]]
    # And an operator sees it in `aperture jobs show`, the metrics count it
    shown = aperture("jobs", "show", second.request_id)
    assert f"reused from job {first.id} (tagged" in shown.output, shown.output
    detail = json.loads(aperture("jobs", "show", second.request_id, "--json").output)
    assert [r["job_id"] for r in detail["reused_from"]] == [str(first.id)]
    assert all(a["reused"] for a in detail["assets"])
    jobs, assets = reused_metric(system)
    assert (jobs - metric_before[0], assets - metric_before[1]) == (1, 2)
    # And the library's maintained counts are what a rebuild from the rows gives
    with session_scope() as s:
        counts = "SELECT collection, category, label, assets, requested FROM library_tag_counts ORDER BY 1, 2, 3"
        kept = s.execute(text(counts)).all()
        assert s.execute(text("SELECT valid FROM library_counts_state")).scalar_one() is True
        s.execute(text("SELECT library_rebuild_counts()"))
        assert s.execute(text(counts)).all() == kept


def test_a_first_tagging_says_it_was_not_reused(system):
    queue = f"test.reuse.{uuid.uuid4().hex[:6]}"
    job = create(system, [f"{CDN}/{uuid.uuid4().hex[:8]}.mp4"], queue=queue)
    [annotation] = callback_kwargs(system, queue)["annotations"]
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
def test_other_client_tags_or_fresh_go_to_vidmob(system, second):
    # Given an asset tagged with two client tags
    url = f"{CDN}/{uuid.uuid4().hex[:8]}.mp4"
    create(system, [url], client_tags=[LIFESTYLE, BEACH])
    # When it is asked for again with other client tags, or with fresh: true
    job = create(system, [url], **second)
    # Then Vidmob tags it again
    assert job.state is JobState.COMPLETE and job.vidmob_job_id
    assert created(system) == 2
    with session_scope() as s:
        assert s.execute(select(Asset.reused_from_asset_id).where(Asset.job_id == job.id)).scalar_one() is None


def test_tags_older_than_the_ttl_are_not_reused(system):
    # Given an asset whose tags were made 8 days ago (the TTL is 7 days by default)
    url = f"{CDN}/{uuid.uuid4().hex[:8]}.mp4"
    first = create(system, [url])
    with session_scope() as s:
        s.execute(
            update(Asset).where(Asset.job_id == first.id).values(tagged_at=Asset.tagged_at - dt.timedelta(days=8))
        )
    # When the same asset is asked for again
    job = create(system, [url])
    # Then Vidmob tags it again
    assert job.state is JobState.COMPLETE and job.vidmob_job_id
    assert created(system) == 2


def test_a_request_with_one_unknown_asset_sends_only_that_one_to_vidmob(system):
    # Given one asset tagged before
    known, unknown = (f"{CDN}/lifestyle-{uuid.uuid4().hex[:8]}-{i}.mp4" for i in range(2))
    first = create(system, [known], client_tags=[LIFESTYLE])
    # When a request carries it and an asset never seen
    queue = f"test.reuse.{uuid.uuid4().hex[:6]}"
    job = create(system, [known, unknown], client_tags=[LIFESTYLE], queue=queue)
    # Then one Vidmob job tags the unknown one only, and the known one's tags are reused
    assert job.state is JobState.COMPLETE and job.vidmob_job_id and job.asset_count == 2
    assert created(system) == 2
    record = requests.get(f"{system['simulator'].url}/_sim/jobs/{job.vidmob_job_id}", timeout=5).json()
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
    annotations = callback_kwargs(system, queue)["annotations"]
    assert [(a["url"], a["reused"]) for a in annotations] == [(known, True), (unknown, False)]
    assert annotations[0]["reused_from_job_id"] == str(first.id)


def test_reused_tags_are_reused_again_counted_from_vidmobs_tagging(system):
    # Given an asset tagged by Vidmob, then answered once by reuse
    url = f"{CDN}/{uuid.uuid4().hex[:8]}.mp4"
    first = create(system, [url])
    create(system, [url])
    # When it is asked for a third time, then after its Vidmob tagging is older than the TTL
    third = create(system, [url])
    with session_scope() as s:
        origin = s.execute(select(Asset.id, Asset.tagged_at).where(Asset.job_id == first.id)).one()
        copy = s.execute(select(Asset).where(Asset.job_id == third.id)).scalar_one()
        # Then the third copies the original, with the original's time
        assert (copy.reused_from_asset_id, copy.tagged_at) == (origin.id, origin.tagged_at)
        s.execute(update(Asset).where(Asset.url == url).values(tagged_at=Asset.tagged_at - dt.timedelta(days=8)))
    assert created(system) == 1
    # And a copy never extends the TTL: once the original is too old, Vidmob tags it again
    fourth = create(system, [url])
    assert fourth.vidmob_job_id and created(system) == 2


def test_fresh_must_be_a_boolean(system):
    request_id = f"reuse-bad-{uuid.uuid4()}"
    send(system["env"], "aperture.create_job", request_id=request_id, assets=[{"url": f"{CDN}/x.mp4"}], fresh="yes")
    job = wait_for_job(request_id)
    assert job.state is JobState.REJECTED and "fresh: Input should be a valid boolean" in job.error
