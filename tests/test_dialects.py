"""The core flow in the "media" tagging dialect (VIDMOB_TAGS_DIALECT=media): the same
services and tasks, only the client differs (clients/tags.py). Nothing here needs a process
boundary: it runs in this process (``fleet``: tests/inprocess.py) with its settings switched to
the media dialect for each test and back after it.

Mapping checked here (docs/scoring.md, "Dialects"): client tags, a list of
{label, description}, become an object {label: description or label} of at most 10 pairs
(a repeated label: the last one wins); more than 10 distinct labels fail the job at submit,
as a terminal error, before any call to Vidmob.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import requests
from sqlalchemy import select

from config import get_settings
from models import ApiAttempt, Asset, Job, JobState, ScoringState
from models.db import session_scope
from tests.inprocess import Fleet
from tests.support import job_by_request_id, sim_stats, tags_by_url
from tests.test_scoring import media_by_request_id, wait_for_media

pytestmark = pytest.mark.slow
CDN = "https://cdn.example.com/dialects"
LIFESTYLE = {"label": "lifestyle", "description": "Assets featuring real-life settings or activities"}


@pytest.fixture
def media_fleet(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fleet]:
    """The fleet with VIDMOB_TAGS_DIALECT=media (restored after the test)."""
    monkeypatch.setenv("VIDMOB_TAGS_DIALECT", "media")
    get_settings.cache_clear()
    assert get_settings().vidmob_tags_dialect == "media"
    yield fleet
    get_settings.cache_clear()


def test_create_job_completes_with_client_tags_in_the_media_dialect(media_fleet):
    fleet, sim = media_fleet, media_fleet.simulator
    urls = [f"{CDN}/lifestyle-beach-{i}.mp4" for i in range(3)]
    request_id = f"media-{uuid.uuid4()}"
    # When a caller sends create_job, client tags as the public contract has them
    fleet.create_job(
        request_id=request_id,
        assets=[{"url": urls[0], "id": "creative-0"}, {"url": urls[1]}, {"url": urls[2], "id": "creative-2"}],
        client_tags=[LIFESTYLE, {"label": "beach"}],
    )
    # Then the job completes through the media dialect, and Postgres holds the tags
    job = fleet.wait_for_job(request_id)
    assert job.state is JobState.COMPLETE, job.error
    assert job.dialect == "media"
    tags = tags_by_url(job.id)
    assert sorted(tags) == sorted(urls)
    for url_tags in tags.values():
        assert {"visual", "brand", "audio"} <= {category for category, _ in url_tags}
        assert ("client", "lifestyle") in url_tags and ("client", "beach") in url_tags
    with session_scope() as s:
        ids = s.scalars(select(Asset.external_id).where(Asset.job_id == job.id).order_by(Asset.position)).all()
        endpoints = s.scalars(select(ApiAttempt.endpoint).where(ApiAttempt.job_id == job.id)).all()
    assert ids == ["creative-0", None, "creative-2"]
    assert endpoints[0] == "POST /v1/media/aperture" and "GET /v1/media/aperture/{job_id}" in endpoints
    # And Vidmob saw the media dialect: creatives with ids, client tags as {label: description or label}
    stats = sim_stats(sim)
    assert stats["requests"]["POST /v1/media/aperture"] == 1
    assert "POST /v1/aperture/jobs" not in stats["requests"]
    assert stats["jobs_created_by_dialect"] == {"guide": 0, "media": 1}
    record = requests.get(f"{sim.url}/_sim/jobs/{job.vidmob_job_id}", timeout=5).json()
    assert record["client_tags"] == {"lifestyle": LIFESTYLE["description"], "beach": "beach"}
    assert record["creative_ids"] == ["creative-0", "asset-1", "creative-2"]


def test_a_failing_asset_ends_the_job_failed_and_it_is_never_polled_again(media_fleet):
    fleet, sim = media_fleet, media_fleet.simulator
    request_id = f"media-fail-{uuid.uuid4()}"
    fleet.create_job(request_id=request_id, assets=[{"url": f"{CDN}/will-fail.mp4"}])
    job = fleet.wait_for_job(request_id)
    assert job.state is JobState.FAILED and "failed" in job.error.lower()
    polls = sim_stats(sim)["status_polls_by_dialect"]["media"]
    # When the fleet runs on for longer than several poll intervals (0.3 s each)
    fleet.run_passes(10)
    # Then Vidmob was asked nothing more about it, and no look is due or queued
    assert sim_stats(sim)["status_polls_by_dialect"]["media"] == polls
    job = job_by_request_id(request_id)
    assert job.state is JobState.FAILED and job.next_poll_at is None and job.poll_token is None
    assert fleet.queued == []


def test_more_than_ten_client_tags_fail_at_submit_and_a_repeated_label_counts_once(media_fleet):
    fleet, sim = media_fleet, media_fleet.simulator
    eleven = [{"label": f"tag{i}"} for i in range(11)]
    too_many, repeated = f"media-11-{uuid.uuid4()}", f"media-10-{uuid.uuid4()}"
    fleet.create_job(request_id=too_many, assets=[{"url": f"{CDN}/a.mp4"}], client_tags=eleven)
    # ten distinct labels, one of them given twice: the last description wins
    ten = [*eleven[:10], {"label": "tag0", "description": "the zeroth"}]
    fleet.create_job(request_id=repeated, assets=[{"url": f"{CDN}/b.mp4"}], client_tags=ten)
    failed = fleet.wait_for_job(too_many)
    assert failed.state is JobState.FAILED and "at most 10 client tags" in failed.error
    assert failed.vidmob_job_id is None
    done = fleet.wait_for_job(repeated)
    assert done.state is JobState.COMPLETE, done.error
    record = requests.get(f"{sim.url}/_sim/jobs/{done.vidmob_job_id}", timeout=5).json()
    assert len(record["client_tags"]) == 10 and record["client_tags"]["tag0"] == "the zeroth"
    assert sim_stats(sim)["jobs_created"] == 1  # the refused one never reached Vidmob


def test_the_scoring_loop_does_not_care_which_dialect_tags(media_fleet):
    fleet = media_fleet
    request_id = f"media-score-{uuid.uuid4()}"
    fleet.score_media(request_id=request_id, id="media-score", url=f"{CDN}/score-me.mp4")
    media = wait_for_media(fleet, request_id)
    assert media.state is ScoringState.SCORED, media.error
    assert [r.reason for r in media.rounds] == ["initial", "tagged"]
    media = media_by_request_id(request_id)
    with session_scope() as s:
        (job,) = s.scalars(select(Job).where(Job.id == media.rounds[1].tagging_job_id)).all()
        assert job.dialect == "media" and job.state is JobState.COMPLETE
