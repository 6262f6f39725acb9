"""Scoring tasks: score, submit a round, rescore, poll, batch media for tagging, send the
caller's callback. Each docstring says why running it twice is safe."""

from __future__ import annotations

from config import get_settings
from config import tasks as spec
from models.db import session_scope
from services import scoring
from services.durable.callbacks import deliver
from services.durable.messages import OwedCallback
from services.durable.schedule import utcnow
from services.scoring import batching, intake, steps
from tasks.base import accept_and_submit, aperture_task, parse_ids, run_step, send, send_after_commit


@aperture_task(spec.SCORE_MEDIA)
def score_media(self, *args, **payload) -> dict:
    """Accept a scoring request (public contract: README, docs/scoring.md), submit its first
    round to Vidmob's Scoring API, and schedule the first poll.

    Safe twice: the row is keyed by request_id (or this message's id), so a repeat finds it;
    the submission is claimed by compare-and-set on the row's token, and a repeated
    submission of the same media id + version is a 409 that counts as submitted.
    A bad payload is stored as rejected with its reason and never retried.
    """
    return accept_and_submit(self, intake.INTAKE, steps.SUBMIT, args, payload)


@aperture_task(spec.SUBMIT_SCORING)
def submit_scoring(self, scoring_id: str, token: str) -> None:
    """Submit a media's pending round again (after a transient error, or a lost message).

    Safe twice: only the holder of the row's current token may submit; a second submission
    of the same id + version is a 409, recorded as submitted.
    """
    run_step(self, steps.SUBMIT, scoring_id, token)


@aperture_task(spec.RESCORE)
def rescore(self, scoring_id: str, token: str) -> None:
    """Submit a rescore round (a new version of the media), chained after its tagging job
    completed or after a NO_DATA code that asks for a rescore.

    Safe twice: the same token check as aperture.submit_scoring.
    """
    run_step(self, steps.SUBMIT, scoring_id, token)


@aperture_task(spec.POLL_SCORING)
def poll_scoring(self, scoring_id: str, token: str) -> None:
    """Poll the status of a media's current round; when COMPLETE, fetch and store the scores
    and act on them (done, tag then rescore, rescore, or fetch again later).

    Safe twice: the token is swapped by compare-and-set before the calls; a duplicate or
    stale message finds no match and does nothing.
    """
    run_step(self, steps.POLL, scoring_id, token)


@aperture_task(spec.FLUSH_TAGGING)
def flush_tagging(self, scoring_id: str | None = None, token: str | None = None) -> None:
    """Create ONE tagging job for every media waiting for tags (up to 200) once the oldest
    has waited the batch window. The arguments only say who asked; the rows decide.

    Safe twice: waiting media are taken FOR UPDATE SKIP LOCKED and leave the waiting state in
    the same transaction that creates their job; a repeat finds none.
    """
    with session_scope() as session:
        outcome = batching.flush_tagging(session, settings=get_settings(), now=utcnow())
    send_after_commit(outcome)


@aperture_task(spec.SEND_SCORE_CALLBACK)
def send_score_callback(self, scoring_id: str) -> None:
    """Send the caller's callback owed for a scored media. Callbacks are delivered after the
    commit that owes them (and by the dispatcher); this task serves messages sent by earlier
    versions, which asked for the delivery in a message of its own.

    Safe twice: sent only while owed (pending), with the stable task id
    ``aperture-score-callback-<scoring_id>``, then marked sent.
    """
    ids = parse_ids(scoring_id=scoring_id)
    if ids:
        deliver(OwedCallback(scoring.KIND, ids[0]), send)


__all__ = ["flush_tagging", "poll_scoring", "rescore", "score_media", "send_score_callback", "submit_scoring"]
