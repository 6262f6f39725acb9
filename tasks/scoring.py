"""Scoring tasks: score, submit a round, rescore, poll, batch media for tagging, send the
caller's callback. Each docstring says why running it twice is safe."""

from __future__ import annotations

import logging
import uuid

from celery import current_app, shared_task

from services import scoring_steps
from services.scoring_steps import ScoringStepResult
from services.steps import StepResult
from tasks._enqueue import send_after_commit
from tasks.tagging import RETRY

log = logging.getLogger(__name__)


@shared_task(name="aperture.score_media", bind=True, **RETRY)
def score_media(self, *args, **payload) -> dict:
    """Accept a scoring request (public contract: docs/architecture.md, docs/scoring.md),
    submit its first round to Vidmob's Scoring API, and schedule the first poll.

    Safe twice: the row is keyed by request_id (or this message's id), so a repeat finds it;
    the submission is claimed by compare-and-set on the row's token, and a repeated
    submission of the same media id + version is a 409 that counts as submitted.
    A bad payload is stored as rejected with its reason and never retried.
    """
    result = scoring_steps.accept_and_submit(
        payload, task_id=self.request.id, task_name=self.name, positional_args=args
    )
    _send(result)
    accepted = result.accepted
    assert accepted is not None
    if accepted.error:
        log.warning("scoring request %s rejected: %s", accepted.scoring_id, accepted.error)
    state = result.outcome.state if result.outcome and result.outcome.state else accepted.state
    return {"scoring_id": str(accepted.scoring_id), "state": state.value, "created": accepted.created}


@shared_task(name="aperture.submit_scoring", bind=True, **RETRY)
def submit_scoring(self, scoring_id: str, token: str) -> None:
    """Submit a media's pending round again (after a transient error, or a lost message).

    Safe twice: only the holder of the row's current token may submit; a second submission
    of the same id + version is a 409, recorded as submitted.
    """
    ids = _ids(scoring_id, token)
    if ids:
        _send(scoring_steps.submit(*ids, task_name=self.name))


@shared_task(name="aperture.rescore", bind=True, **RETRY)
def rescore(self, scoring_id: str, token: str) -> None:
    """Submit a rescore round (a new version of the media), chained after its tagging job
    completed or after a NO_DATA code that asks for a rescore.

    Safe twice: the same token check as aperture.submit_scoring.
    """
    ids = _ids(scoring_id, token)
    if ids:
        _send(scoring_steps.submit(*ids, task_name=self.name))


@shared_task(name="aperture.poll_scoring", bind=True, **RETRY)
def poll_scoring(self, scoring_id: str, token: str) -> None:
    """Poll the status of a media's current round; when COMPLETE, fetch and store the scores
    and act on them (done, tag then rescore, rescore, or fetch again later).

    Safe twice: the token is swapped by compare-and-set before the calls; a duplicate or
    stale message finds no match and does nothing.
    """
    ids = _ids(scoring_id, token)
    if ids:
        _send(scoring_steps.poll(*ids, task_name=self.name))


@shared_task(name="aperture.flush_tagging", bind=True, **RETRY)
def flush_tagging(self, scoring_id: str | None = None, token: str | None = None) -> None:
    """Create ONE tagging job for every media waiting for tags (up to 200) once the oldest
    has waited the batch window. The arguments only say who asked; the rows decide.

    Safe twice: waiting media are taken FOR UPDATE SKIP LOCKED and leave the waiting state in
    the same transaction that creates their job; a repeat finds none.
    """
    _send(scoring_steps.flush_tagging())


@shared_task(name="aperture.send_score_callback", bind=True, **RETRY)
def send_score_callback(self, scoring_id: str) -> None:
    """Send the caller's callback owed for a scored media.

    Safe twice: sent only while owed (pending), with the stable task id
    ``aperture-score-callback-<scoring_id>``, then marked sent.
    """
    try:
        send_callback(uuid.UUID(str(scoring_id)))
    except ValueError:
        log.error("ignoring malformed message: scoring_id=%r", scoring_id)


def send_callback(scoring_id: uuid.UUID) -> None:
    message = scoring_steps.owed_callback(scoring_id)
    if message is None:
        return
    options = {"task_id": message.task_id}
    if message.queue:
        options["queue"] = message.queue
    current_app.send_task(message.task, kwargs=message.kwargs, **options)
    scoring_steps.mark_callback_sent(scoring_id)
    log.info("callback %s sent for scored media %s (%s)", message.task, scoring_id, message.kwargs["status"])


def _send(result: ScoringStepResult) -> None:
    send_after_commit(StepResult(dispatches=result.dispatches))
    for scoring_id in result.callbacks:
        send_callback(scoring_id)


def _ids(scoring_id: object, token: object) -> tuple[uuid.UUID, uuid.UUID] | None:
    try:
        return uuid.UUID(str(scoring_id)), uuid.UUID(str(token))
    except ValueError:
        log.error("ignoring malformed message: scoring_id=%r token=%r", scoring_id, token)
        return None


__all__ = ["flush_tagging", "poll_scoring", "rescore", "score_media", "send_score_callback", "submit_scoring"]
