"""The scoring loop end to end: real Postgres, the simulator over HTTP (its URL rules and the causal
NOT_TAGGED rule are in simulator/state.py). The loop runs its steps and dispatcher passes in this
process (``fleet``: tests/inprocess.py); only what needs a process boundary runs a real worker and
dispatcher (``scoring``): the callback as the Celery message a caller's queue receives (its headers
and task id as Celery sees them). Given / when / then."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from click.testing import CliRunner
from sqlalchemy import func, select, update
from sqlalchemy.orm import selectinload

from clients.scoring import ScoreAction
from config import get_settings
from models import (
    ApiAttempt,
    Asset,
    CallbackStatus,
    Job,
    JobState,
    RoundStatus,
    ScoredMedia,
    ScoringRound,
    ScoringState,
)
from models.db import get_engine, session_scope
from services.scoring.policy import decide, rescore_version
from services.scoring.tag_batches import TAGGING_REQUEST_PREFIX
from tests import factories
from tests.conftest import API_KEY
from tests.inprocess import Fleet
from tests.support import drain, send, sim_stats, tags_by_url, wait_for

pytestmark = pytest.mark.slow
CDN = "https://cdn.example.com/scoring"
FINAL = {s for s in ScoringState if not s.is_active}
TAG_DEPENDENT = {"Brand Name or Logo Early", "Human Early", "Audio Present"}  # simulator/scoring.py


@pytest.fixture
def scoring(system):
    """The subprocess tier with empty scoring tables (``system`` empties only the tagging ones)."""
    with get_engine().begin() as conn:
        conn.exec_driver_sql(
            "TRUNCATE scored_media, scoring_rounds, scoring_summaries, scoring_results, scored_media_tagging_jobs, "
            "api_attempts"
        )
    yield system


@pytest.fixture
def never_tagged(fleet: Fleet) -> Iterator[Fleet]:
    """The fleet's simulator answering NO_DATA_MEDIA_NOT_TAGGED whatever happens. The fleet fixture
    resets only SIM_CONFIG's keys, so this one is turned off again here."""
    config = f"{fleet.simulator.url}/_sim/config"
    requests.post(config, json={"never_tagged": True}, timeout=5).raise_for_status()
    try:
        yield fleet
    finally:
        requests.post(config, json={"never_tagged": False}, timeout=5).raise_for_status()


@pytest.fixture
def setting(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str, str], None]]:
    """Change one of the fleet's settings (an APERTURE_* variable) for this test; restored after it."""

    def change(name: str, value: str) -> None:
        monkeypatch.setenv(name, value)
        get_settings.cache_clear()

    yield change
    get_settings.cache_clear()


def media_by_request_id(request_id: str) -> ScoredMedia | None:
    with session_scope() as s:
        return s.execute(
            select(ScoredMedia)
            .where(ScoredMedia.request_id == request_id)
            .options(
                selectinload(ScoredMedia.rounds).selectinload(ScoringRound.results),
                selectinload(ScoredMedia.rounds).selectinload(ScoringRound.summaries),
                selectinload(ScoredMedia.tagging_jobs),
            )
        ).scalar_one_or_none()


def wait_for_media(fleet: Fleet, request_id: str, states=FINAL, timeout: float = 30) -> ScoredMedia:
    """Run the fleet until the media reaches one of ``states``; the row with its rounds, their
    results and summaries, and its tagging jobs."""

    def reached() -> ScoredMedia | None:
        media = media_by_request_id(request_id)
        return media if media is not None and media.state in states else None

    what = f"scored media {request_id} to reach {sorted(s.value for s in states)}"
    return fleet.run_until(reached, timeout, what=what)


def score(fleet: Fleet, url: str, **kwargs) -> str:
    """A caller's aperture.score_media for ``url``, run by the fleet; its request id."""
    request_id = kwargs.pop("request_id", f"score-{uuid.uuid4()}")
    fleet.score_media(id=kwargs.pop("id", f"m-{uuid.uuid4().hex[:8]}"), url=url, request_id=request_id, **kwargs)
    return request_id


def pretag(fleet: Fleet, urls: list[str]) -> Job:
    """Tag through a normal create_job, as a caller would, and wait for it."""
    request_id = f"pretag-{uuid.uuid4()}"
    fleet.create_job(request_id=request_id, assets=[{"url": u} for u in urls])
    job = fleet.wait_for_job(request_id)
    assert job.state is JobState.COMPLETE, job.error
    return job


def results_of(round_: ScoringRound, tag_dependent: bool = False) -> set[str]:
    return {r.result for r in round_.results if not tag_dependent or r.name in TAG_DEPENDENT}


def scoring_tagging_jobs() -> list[Job]:
    with session_scope() as s:
        return list(
            s.execute(
                select(Job).where(Job.request_id.startswith(TAGGING_REQUEST_PREFIX)).order_by(Job.created_at)
            ).scalars()
        )


def messages_for(fleet: Fleet, media: ScoredMedia) -> list:
    """The messages the fleet holds, not run yet, that point at ``media``."""
    return [m for m in fleet.queued if m.kwargs.get("scoring_id") == str(media.id)]


# --- the loop ----------------------------------------------------------------------------


def test_an_untagged_media_is_tagged_then_rescored_by_the_chained_task(fleet, monkeypatch):
    # Given a media Vidmob has never tagged, and a caller waiting for its scores
    sim = fleet.simulator
    url = f"{CDN}/summer-beach-logo.mp4"
    callback = {"task": "caller.scored", "queue": "caller"}
    started = time.monotonic()
    # When the caller asks for it to be scored
    request_id = score(fleet, url, id="media-1", version="v1", channels=["tiktok", "facebook"], callback=callback)
    media = wait_for_media(fleet, request_id)
    loop_s = time.monotonic() - started
    # Then it is scored; the first round said NOT_TAGGED, the chained rescore did not
    assert media.state is ScoringState.SCORED, media.error
    first, last = media.rounds
    assert (first.number, first.version, first.reason, first.status) == (1, "v1", "initial", RoundStatus.COMPLETE)
    assert first.no_data_codes == ["NO_DATA_MEDIA_NOT_TAGGED"] and first.action == ScoreAction.TAG_THEN_RESCORE
    assert results_of(first, tag_dependent=True) == {"NO_DATA_MEDIA_NOT_TAGGED"}
    assert (last.number, last.version, last.reason, last.status) == (2, "v1-r1", "tagged", RoundStatus.COMPLETE)
    assert "NO_DATA_MEDIA_NOT_TAGGED" not in results_of(last)
    assert results_of(last) <= {"PASS", "FAIL", "NOT_APPLICABLE"} and last.no_data_codes == []
    assert media.rescore_count == 1 and media.tag_attempts == 1
    # And Postgres holds every round with its summary per channel and every guideline result
    for round_ in media.rounds:
        assert {s.channel for s in round_.summaries} == {"TIKTOK", "META"}
        assert len(round_.results) == 10  # 5 guidelines x 2 channels
    assert all(s.not_available_count == 3 for s in first.summaries)
    assert all(s.not_available_count == 0 and s.applicable_count >= 3 for s in last.summaries)
    # And the tagging was an ordinary tagging job, which stored the media's tags
    job_id = last.tagging_job_id
    assert [link.job_id for link in media.tagging_jobs] == [job_id]
    with session_scope() as s:
        job = s.get(Job, job_id)
        assert job.state is JobState.COMPLETE and job.asset_count == 1
        assert s.scalars(select(Asset.external_id).where(Asset.job_id == job_id)).all() == ["media-1"]
        posts = s.scalars(
            select(ApiAttempt.task_name).where(ApiAttempt.endpoint == "POST /v1/media").order_by(ApiAttempt.id)
        ).all()
    assert tags_by_url(job_id)[url]
    # The second submission came from the chained task
    assert posts == ["aperture.score_media", "aperture.rescore"]
    stats = sim_stats(sim)
    assert stats["media_submissions"] == 2 and stats["jobs_created"] == 1
    # And the caller's callback fired once, with the final round's scores, also after the fleet ran
    # on past the horizon after which an owed callback is re-sent (2 s here)
    fleet.run_until(lambda: media_by_request_id(request_id).callback_status is CallbackStatus.SENT, what="sent")
    horizon = time.monotonic() + float(fleet.env["APERTURE_LOST_MESSAGE_AFTER_S"]) + 0.5
    fleet.run_until(lambda: time.monotonic() > horizon, what="the lost-message horizon")
    fleet.run_passes(3)
    assert [(m.task, m.queue, m.task_id) for m in fleet.callbacks] == [
        ("caller.scored", "caller", f"aperture-score-callback-{media.id}")
    ]
    kwargs = fleet.callbacks[0].kwargs
    assert set(kwargs) == {"request_id", "media_id", "scoring_id", "status", "scores"}
    assert (kwargs["request_id"], kwargs["media_id"], kwargs["scoring_id"], kwargs["status"]) == (
        request_id,
        "media-1",
        str(media.id),
        "scored",
    )
    assert set(kwargs["scores"]["summary"]) == {"TIKTOK", "META"}
    assert {d["result"] for d in kwargs["scores"]["detail"]} == results_of(last)
    assert {"name", "rule", "channelIdentifier", "result", "weight"} == set(kwargs["scores"]["detail"][0])
    # And `aperture media show` tells the story (on a terminal wide enough not to fold it)
    from cli import media as media_cli
    from cli.main import main

    monkeypatch.setattr(media_cli.console, "width", 200)
    shown = CliRunner().invoke(main, ["media", "show", request_id])
    assert shown.exit_code == 0, shown.output
    for text in ("v1-r1", "tagged", "NO_DATA_MEDIA_NOT_TAGGED", "Tagging jobs", str(job_id)[:8], "scored"):
        assert text in shown.output
    print(f"score -> NOT_TAGGED -> tag -> rescore -> scored: {loop_s:.2f} s")


def test_the_scoring_callback_is_a_celery_message_of_the_callers_task_under_a_stable_id(scoring):
    # Given a caller waiting on its own queue for the scores of a media (one round: Vidmob cannot
    # download it, which is final)
    env = scoring["env"]
    queue = f"test.scored.{uuid.uuid4().hex[:6]}"
    request_id = f"score-cb-{uuid.uuid4()}"
    # When it asks for the media to be scored, by name
    send(
        env,
        "aperture.score_media",
        id="media-cb",
        url=f"{CDN}/sim-download-failure-cb.mp4",
        request_id=request_id,
        callback={"task": "caller.scored", "queue": queue},
    )

    # Then its queue receives one Celery message of its task, under the media's stable callback id
    def sent() -> ScoredMedia | None:
        media = media_by_request_id(request_id)
        return media if media is not None and media.callback_status is CallbackStatus.SENT else None

    media = wait_for(sent, what="the callback sent")
    messages = wait_for(lambda: drain(env["APERTURE_BROKER_URL"], queue), what="the callback message")
    assert len(messages) == 1
    assert messages[0].headers["task"] == "caller.scored"
    assert messages[0].headers["id"] == f"aperture-score-callback-{media.id}"
    _, kwargs, _ = messages[0].payload
    assert set(kwargs) == {"request_id", "media_id", "scoring_id", "status", "scores"}
    assert (kwargs["request_id"], kwargs["media_id"], kwargs["scoring_id"], kwargs["status"]) == (
        request_id,
        "media-cb",
        str(media.id),
        "scored",
    )


def test_ten_media_six_untagged_go_into_one_tagging_job_and_six_rescores_follow(fleet, setting):
    # Given ten media, four of which were tagged before through an ordinary create_job, and a batch window
    # wide enough that all six are flagged within it however slow the machine (at 1 s a slow run flushed twice)
    setting("APERTURE_TAG_BATCH_WINDOW_S", "5")
    sim = fleet.simulator
    urls = [f"{CDN}/batch-{i}.mp4" for i in range(10)]
    pretag(fleet, urls[:4])
    # When all ten are scored at once
    request_ids = {
        score(fleet, url, id=f"batch-{i}", request_id=f"batch-{i}-{uuid.uuid4()}"): i for i, url in enumerate(urls)
    }
    media = {i: wait_for_media(fleet, rid) for rid, i in request_ids.items()}
    # Then ONE tagging job carried the six untagged media, and each of them was rescored
    assert {m.state for m in media.values()} == {ScoringState.SCORED}
    jobs = scoring_tagging_jobs()
    assert len(jobs) == 1, [j.asset_count for j in jobs]
    assert jobs[0].state is JobState.COMPLETE and jobs[0].asset_count == 6
    assert sorted(tags_by_url(jobs[0].id)) == sorted(urls[4:])
    stats = sim_stats(sim)
    assert stats["jobs_created"] == 2  # the pre-tagging job and the one batch
    assert stats["media_submissions"] == 10 + 6
    for i, m in media.items():
        if i < 4:
            assert [r.reason for r in m.rounds] == ["initial"]
        else:
            assert [r.reason for r in m.rounds] == ["initial", "tagged"]
            assert m.rounds[1].tagging_job_id == jobs[0].id
            assert "NO_DATA_MEDIA_NOT_TAGGED" not in results_of(m.rounds[1])


def test_the_rescore_bound_holds_when_vidmob_keeps_saying_not_tagged(never_tagged, setting):
    # Given a Vidmob that answers NO_DATA_MEDIA_NOT_TAGGED whatever happens
    fleet = never_tagged
    # (flagged media wait 0.2 s to be batched, not 1 s: the window, tested with ten media above,
    # would only delay each of the three rounds here)
    setting("APERTURE_TAG_BATCH_WINDOW_S", "0.2")
    # When a media is scored
    request_id = score(fleet, f"{CDN}/stubborn.mp4", version="3")
    media = wait_for_media(fleet, request_id, timeout=45)
    # Then after exactly APERTURE_MAX_RESCORES (3) rescores it waits for a person
    assert media.state is ScoringState.NEEDS_ATTENTION
    assert media.rescore_count == 3 and "after 3 rescores" in media.error
    assert [r.version for r in media.rounds] == ["3", "3-r1", "3-r2", "3-r3"]
    assert all(r.no_data_codes == ["NO_DATA_MEDIA_NOT_TAGGED"] for r in media.rounds)
    assert len(media.tagging_jobs) == 3 == media.tag_attempts
    # And nothing more happens while the fleet runs on well past the tag batch window
    fleet.run_passes(10)
    assert sim_stats(fleet.simulator)["media_submissions"] == 4
    assert len(scoring_tagging_jobs()) == 3
    after = media_by_request_id(request_id)
    assert after.state is ScoringState.NEEDS_ATTENTION and after.rescore_count == 3 and len(after.rounds) == 4
    assert messages_for(fleet, after) == []


@pytest.mark.parametrize(
    ("marker", "reasons", "tagging_jobs", "check"),
    [
        ("sim-new-criteria", ["initial", "NO_DATA_NEW_CRITERIA"], 0, None),
        ("sim-missing-required-tags", ["initial", "NO_DATA_MISSING_REQUIRED_TAGS"], 0, None),
        ("sim-error-retrieving-tags", ["initial", "NO_DATA_ERROR_RETRIEVING_TAGS"], 0, None),
        ("sim-tagging-failure", ["initial", "tagged"], 1, "retag"),
        ("sim-scoring-backlog", ["initial"], 0, "refetched"),
        ("sim-download-failure", ["initial"], 0, "not_fixable"),
    ],
)
def test_each_no_data_code_is_handled_as_specified(fleet, marker, reasons, tagging_jobs, check):
    # Given a media already tagged (so NOT_TAGGED stays out of the way) whose URL triggers one code
    url = f"{CDN}/{marker}.mp4"
    pretag(fleet, [url])
    # When it is scored
    media = wait_for_media(fleet, score(fleet, url))
    # Then the code's remedy ran, and nothing else
    assert media.state is ScoringState.SCORED, media.error
    assert [r.reason for r in media.rounds] == reasons
    assert len(media.tagging_jobs) == tagging_jobs == len(scoring_tagging_jobs())
    last = media.rounds[-1]
    if check == "not_fixable":
        assert results_of(last) == {"NO_DATA_MEDIA_DOWNLOAD_FAILURE"}
        assert last.action == ScoreAction.NOT_FIXABLE and "not fixable" in media.error
    else:
        assert results_of(last, tag_dependent=True) <= {"PASS", "FAIL"}
    if check == "refetched":
        assert last.fetch_count == 2 and media.rescore_count == 0
    if check == "retag":
        assert media.rounds[0].no_data_codes == ["NO_DATA_MEDIA_TAGGING_FAILURE"]
        assert media.rounds[0].action == ScoreAction.RETAG_THEN_RESCORE


@pytest.mark.parametrize(
    ("marker", "state", "round_status"),
    [
        ("sim-unsupported", ScoringState.UNSUPPORTED, RoundStatus.UNSUPPORTED),
        ("sim-scoring-failed", ScoringState.FAILED, RoundStatus.FAILED),
        ("sim-scoring-error", ScoringState.SCORED, RoundStatus.COMPLETE),
    ],
)
def test_unsupported_and_failed_are_final_and_error_is_polled_again(fleet, marker, state, round_status):
    sim = fleet.simulator
    url = f"{CDN}/{marker}.mp4"
    pretag(fleet, [url])
    request_id = score(fleet, url)
    media = wait_for_media(fleet, request_id)
    assert media.state is state
    (only,) = media.rounds
    assert only.status is round_status
    if marker == "sim-scoring-error":
        assert only.error_polls == 1 and only.poll_count >= 2
    else:
        polls = sim_stats(sim)["scoring_status_polls"]
        # When the fleet runs on for two poll intervals (0.3 s each)
        fleet.run_passes(6)
        # Then the media is final: never polled again, nothing due or queued for it
        assert sim_stats(sim)["scoring_status_polls"] == polls
        after = media_by_request_id(request_id)
        assert after.state is state and after.next_poll_at is None and len(after.rounds) == 1
        assert messages_for(fleet, after) == []


def test_a_409_for_the_same_id_and_version_counts_as_submitted(fleet):
    # Given Vidmob already holds this media id + version (as after a crash right after our POST)
    sim = fleet.simulator
    url = f"{CDN}/already-there.mp4"
    pretag(fleet, [url])
    body = {"id": "dup-1", "url": url, "version": "7"}
    headers = {"Authorization": f"Bearer {API_KEY}"}
    requests.post(f"{sim.url}/v1/media", json=body, headers=headers, timeout=5).raise_for_status()
    # When it is scored with the same id and version
    media = wait_for_media(fleet, score(fleet, url, id="dup-1", version="7"))
    # Then the 409 was taken as "submitted" and the media was polled and scored by its id
    assert media.state is ScoringState.SCORED, media.error
    (only,) = media.rounds
    assert only.conflict and only.vidmob_unique_id is None and only.status is RoundStatus.COMPLETE
    assert sim_stats(sim)["responses"]["409"] == 1


def test_bad_payloads_are_rejected_with_reasons_and_a_repeat_scores_once(fleet):
    sim = fleet.simulator
    bad = {
        "no url": ({"id": "x"}, "url: Field required"),
        "bad channel": ({"id": "x", "url": f"{CDN}/a.mp4", "channels": ["MYSPACE"]}, "channels.0"),
        "unknown field": ({"id": "x", "url": f"{CDN}/a.mp4", "priority": 1}, "priority: unknown field"),
        "workspace as text": ({"id": "x", "url": f"{CDN}/a.mp4", "workspace_id": "12"}, "workspace_id"),
    }
    ids = {}
    for name, (payload, _) in bad.items():
        ids[name] = f"bad-{uuid.uuid4()}"
        fleet.send("aperture.score_media", request_id=ids[name], **payload)
    for name, (_, reason) in bad.items():
        media = wait_for_media(fleet, ids[name])
        assert media.state is ScoringState.REJECTED and reason in media.error, (name, media.error)
    # The same request twice: one row, one submission
    request_id = f"twice-{uuid.uuid4()}"
    payload = {"id": "twice", "url": f"{CDN}/sim-download-failure-twice.mp4", "request_id": request_id}
    first, second = fleet.score_media(**payload), fleet.score_media(**payload)
    # The second message found the first one's row: nothing new, the same media
    assert first["created"] and not second["created"] and second["scoring_id"] == first["scoring_id"]
    assert wait_for_media(fleet, request_id).state is ScoringState.SCORED
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(ScoredMedia).where(ScoredMedia.request_id == request_id)) == 1
    assert sim_stats(sim)["media_submissions"] == 1


def test_a_parked_scoring_poll_is_sent_by_the_sweeper(fleet):
    # Given a media whose next poll, due now, is parked in Postgres (a long wait: no message exists)
    sim = fleet.simulator
    url = f"{CDN}/sim-download-failure-parked.mp4"
    headers = {"Authorization": f"Bearer {API_KEY}"}
    created = requests.post(f"{sim.url}/v1/media", json={"id": "parked", "url": url}, headers=headers, timeout=5)
    unique_id = created.json()["result"]["uniqueId"]
    due = factories.now() - dt.timedelta(seconds=1)
    made = factories.scored_media(url=url, media_id="parked", unique_id=unique_id, due_at=due)
    assert fleet.queued == []
    # Then the dispatcher sends the poll, and the media is scored
    media = wait_for_media(fleet, made.request_id, timeout=15)
    assert media.state is ScoringState.SCORED and media.rounds[0].status is RoundStatus.COMPLETE
    assert fleet.passes >= 1 and fleet.ran["aperture.poll_scoring"] >= 1


# --- pure rules ----------------------------------------------------------------------------


def test_the_decision_precedence_and_the_rescore_version():
    A = ScoreAction
    assert decide([A.SCORED, A.NOT_FIXABLE]) is A.NOT_FIXABLE
    assert decide([A.RESCORE, A.TAG_THEN_RESCORE, A.NOT_FIXABLE]) is A.TAG_THEN_RESCORE
    assert decide([A.WAIT_AND_REFETCH, A.TAG_THEN_RESCORE]) is A.WAIT_AND_REFETCH
    assert decide([A.RETAG_THEN_RESCORE, A.RESCORE]) is A.RETAG_THEN_RESCORE
    assert decide([A.SCORED]) is A.SCORED
    assert rescore_version(None, 1) == "1-r1" and rescore_version("v2", 3) == "v2-r3"


def test_scoring_task_names_and_queues_are_pinned(app_env):
    from workers import app

    routes = app.conf.task_routes
    expected = {
        "aperture.score_media": "aperture.submit",
        "aperture.submit_scoring": "aperture.submit",
        "aperture.rescore": "aperture.submit",
        "aperture.flush_tagging": "aperture.submit",
        "aperture.poll_scoring": "aperture.poll",
    }
    for name, queue in expected.items():
        assert name in app.tasks, name
        assert routes[name]["queue"] == queue, name


def test_two_copies_of_a_status_look_both_ask_vidmob_but_only_the_first_records(fleet):
    # Given a media being scored, its next look parked far ahead (so only the copies below run it)
    request_id = score(fleet, f"{CDN}/copies.mp4")
    wait_for_media(fleet, request_id, states={ScoringState.POLLING})

    def park() -> tuple | None:
        with session_scope() as s:
            return s.execute(
                update(ScoredMedia)
                .where(
                    ScoredMedia.request_id == request_id,
                    ScoredMedia.state == ScoringState.POLLING,
                    ScoredMedia.dispatched_at.is_(None),  # no message of its token in flight
                )
                .values(next_poll_at=func.now() + dt.timedelta(hours=1))
                .returning(ScoredMedia.id, ScoredMedia.poll_token, ScoredMedia.round_count)
            ).first()

    media_id, token, round_number = fleet.run_until(park, what="the media parked between two looks")
    with session_scope() as s:
        polls_before = s.execute(
            select(ScoringRound.poll_count).where(
                ScoringRound.scored_media_id == media_id, ScoringRound.number == round_number
            )
        ).scalar_one()

    # When two copies of its look run at once (a redelivery, a re-sent look)
    from services.durable.steps import run
    from services.scoring.steps import POLL

    with ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(lambda _: run(POLL, media_id, token, task_name="test.copy"), range(2)))

    # Then both asked Vidmob (a status read is safe twice), and exactly one recorded the answer
    assert sorted(o.stale for o in outcomes) == [False, True]
    with session_scope() as s:
        polls_after = s.execute(
            select(ScoringRound.poll_count).where(
                ScoringRound.scored_media_id == media_id, ScoringRound.number == round_number
            )
        ).scalar_one()
        calls = s.execute(
            select(func.count())
            .select_from(ApiAttempt)
            .where(ApiAttempt.scored_media_id == media_id, ApiAttempt.task_name == "test.copy")
        ).scalar_one()
    assert polls_after == polls_before + 1
    assert calls >= 2
