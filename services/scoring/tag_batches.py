"""Tag batches: media waiting for tags go into ordinary tagging jobs; and what happens when one ends.

Media flagged ``NO_DATA_MEDIA_NOT_TAGGED`` wait ``APERTURE_TAG_BATCH_WINDOW_S`` so that media
flagged together go into ONE tagging job, a tag batch (up to ``APERTURE_TAG_BATCH_MAX``). That job
is a normal tagging job: the whole engine (submit, poll, dispatcher) carries it, and its media wait
on it (``lifecycle.wait_on_where``). When it ends, the tagging kind's end hook calls
``on_tagging_job_ended`` (connected by services/domains.wire()) in the same transaction: the media it
carried are rescored, or sent back to be tagged again. (Not to be confused with tagging's own
batching, services/tagging/packing.py: requests that share one Vidmob job.)
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from config import Settings, get_settings, tasks
from models import Job, JobState, ScoredMedia, ScoredMediaTaggingJob, ScoringState
from services import tagging
from services.durable import intake, lifecycle
from services.durable.messages import Message, Outcome
from services.scoring.kind import KIND
from services.scoring.lifecycle import insert_rounds, next_round_values
from services.tagging.intake import INTAKE as TAGGING_INTAKE

log = logging.getLogger(__name__)

TAGGING_REQUEST_PREFIX = "aperture-scoring-tags:"


def flush_tagging(session: Session, *, settings: Settings, now: dt.datetime) -> Outcome:
    """Put every media waiting for tags into tagging jobs, once the oldest has waited the
    batch window: normally ONE job for all of them (up to ``tag_batch_max``), one per caller
    when several callers' media wait.

    A media tagged before (its job failed) goes alone, so one bad asset cannot fail its
    neighbours twice; so does a media whose id is already in the batch with another URL
    (creative ids must be unique within a job). Rows are taken FOR UPDATE SKIP LOCKED, so
    concurrent flushes never batch a media twice.
    """
    rows = session.execute(
        select(
            ScoredMedia.id,
            ScoredMedia.caller,
            ScoredMedia.media_id,
            ScoredMedia.url,
            ScoredMedia.tag_attempts,
            ScoredMedia.flagged_at,
        )
        .where(ScoredMedia.state == ScoringState.AWAITING_TAGS)
        .order_by(ScoredMedia.flagged_at, ScoredMedia.id)
        .limit(settings.tag_batch_max)
        .with_for_update(skip_locked=True)
    ).all()
    if not rows or rows[0].flagged_at + dt.timedelta(seconds=settings.tag_batch_window_s) > now:
        return Outcome()  # nothing waiting, or the oldest still has time: its own message comes later

    # One batch per caller: the tagging job is the caller's, counted in its usage, its budget and its
    # share of the open-jobs cap, as a tagging request of its own would be.
    batches: dict[str, list[Any]] = {}
    alone: list[list[Any]] = []
    urls_by_media_id: dict[tuple[str, str], str] = {}
    for row in rows:
        key = (row.caller, row.media_id)
        if row.tag_attempts > 0 or urls_by_media_id.get(key, row.url) != row.url:
            alone.append([row])
        else:
            urls_by_media_id[key] = row.url
            batches.setdefault(row.caller, []).append(row)

    outcome = Outcome()
    for group in [*batches.values(), *alone]:
        outcome.extend(_tag_group(session, group, settings=settings, now=now))
    if len(rows) == settings.tag_batch_max:  # more may be waiting: flush again at once
        outcome.messages.append(Message(tasks.FLUSH_TAGGING.name, {}))
    return outcome


def _tag_group(session: Session, group: list[Any], *, settings: Settings, now: dt.datetime) -> Outcome:
    assets = list(dict.fromkeys((row.media_id, row.url) for row in group))
    payload = {
        "assets": [{"url": url, "id": media_id} for media_id, url in assets],
        "request_id": f"{TAGGING_REQUEST_PREFIX}{uuid.uuid4()}",
        "caller": group[0].caller,
        # Vidmob said the media is not tagged: it must tag them, whatever tags PostgreSQL holds.
        "fresh": True,
        # Already one job for every media waiting, and Vidmob must know each one by its media id,
        # which a pack would rename (services/tagging/packing.py).
        "batch": False,
    }
    # An ordinary tagging job: the engine submits and polls it like any other.
    accepted = intake.accept(session, TAGGING_INTAKE, payload, task_id="flush", settings=settings, now=now)
    ids = [row.id for row in group]
    waiting = (ScoredMedia.id.in_(ids), ScoredMedia.state == ScoringState.AWAITING_TAGS)
    if accepted.state is not JobState.SUBMITTING or accepted.token is None:
        error = f"tagging request refused: {accepted.error}"
        return lifecycle.end_where(session, KIND, *waiting, state=ScoringState.NEEDS_ATTENTION, now=now, error=error)
    lifecycle.wait_on_where(
        session, KIND, *waiting, to_state=ScoringState.TAGGING,
        values={"tagging_job_id": accepted.row_id, "tag_attempts": ScoredMedia.tag_attempts + 1},
    )  # fmt: skip
    session.execute(insert(ScoredMediaTaggingJob), [{"scored_media_id": i, "job_id": accepted.row_id} for i in ids])
    log.info("tagging job %s carries %d scored media", accepted.row_id, len(ids))
    return Outcome(
        messages=[lifecycle.look_message(tagging.KIND, tasks.SUBMIT_JOB.name, accepted.row_id, accepted.token, 0.0)]
    )


def on_tagging_job_ended(
    session: Session, job_id: uuid.UUID, state: JobState, now: dt.datetime, settings: Settings | None = None
) -> Outcome:
    """The tagging kind's end hook, in the transaction that ends the job. The media it carried
    are rescored (COMPLETE: a new round each, and an ``aperture.rescore`` message each) or sent
    back to be tagged again (FAILED, TIMED_OUT), up to ``max_tag_attempts``."""
    settings = settings or get_settings()
    waiting = (ScoredMedia.tagging_job_id == job_id, ScoredMedia.state == ScoringState.TAGGING)
    if state is JobState.COMPLETE:
        # A new round each, submitted at once by the chained aperture.rescore (a message each).
        rescored = lifecycle.wake_where(
            session, KIND, *waiting, to_state=ScoringState.SUBMITTING, delay_s=0.0, settings=settings, now=now,
            values=next_round_values(settings, now), task=tasks.RESCORE.name,
        )  # fmt: skip
        if not rescored.moved:
            return Outcome()
        rows = session.execute(
            select(ScoredMedia.id, ScoredMedia.round_count, ScoredMedia.rescore_count, ScoredMedia.version).where(
                ScoredMedia.id.in_(rescored.moved)
            )
        ).all()
        insert_rounds(session, rows, reason="tagged", tagging_job_id=job_id)
        log.info("tagging job %s complete: rescoring %d media", job_id, len(rescored.moved))
        return rescored

    job_error = session.execute(select(Job.error).where(Job.id == job_id)).scalar_one_or_none()
    given_up = f"tagging failed {settings.max_tag_attempts} times (APERTURE_MAX_TAG_ATTEMPTS); last: {job_error}"
    outcome = lifecycle.end_where(
        session, KIND, *waiting, ScoredMedia.tag_attempts >= settings.max_tag_attempts,
        state=ScoringState.NEEDS_ATTENTION, now=now, error=given_up,
    )  # fmt: skip
    retag = lifecycle.wake_where(
        session, KIND, *waiting, to_state=ScoringState.AWAITING_TAGS, delay_s=settings.tag_batch_window_s,
        settings=settings, now=now,
        values={
            "flagged_at": now,
            "tagging_job_id": None,
            "error": f"tagging job {job_id} ended {state.value}: {job_error}",
        },
    )  # fmt: skip
    # One flush takes every media waiting: a message for the first is enough (the others' looks are
    # sent by the dispatcher if it is lost).
    outcome.messages.extend(retag.messages[:1])
    return outcome
