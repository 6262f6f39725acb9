"""Scoring tasks: score, submit a round, rescore, poll, put media waiting for tags into a tagging
job. Each docstring says why running it twice is safe."""

from __future__ import annotations

from config import get_settings
from config import tasks as spec
from models.db import session_scope
from services.durable.schedule import utcnow
from services.scoring import intake, steps, tag_batches
from tasks.base import accept_and_submit, aperture_task, run_step, send_after_commit


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
    """Submit a media's first round again (after a transient error, or a lost message). Later
    rounds are rescores: the engine sends ``aperture.rescore`` for them (services/scoring/kind.py).

    Safe twice: only the holder of the row's current token may submit; a second submission
    of the same id + version is a 409, recorded as submitted.
    """
    run_step(self, steps.SUBMIT, scoring_id, token)


@aperture_task(spec.RESCORE)
def rescore(self, scoring_id: str, token: str) -> None:
    """Submit a rescore round (a new version of the media), chained after its tagging job
    completed or after a NO_DATA code that asks for a rescore, and again after a transient error
    or a lost message. The same step as ``aperture.submit_scoring``, under its own name so that
    Flower and the task metrics count the loop's rescores apart from first submissions.

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
        outcome = tag_batches.flush_tagging(session, settings=get_settings(), now=utcnow())
    send_after_commit(outcome)


__all__ = ["flush_tagging", "poll_scoring", "rescore", "score_media", "submit_scoring"]
