"""Tagging tasks: accept and submit, poll. Each docstring says why running it twice is safe."""

from __future__ import annotations

import logging
import uuid

from celery import shared_task
from sqlalchemy.exc import OperationalError

from services import steps
from tasks._enqueue import send_after_commit

log = logging.getLogger(__name__)

# Only what may succeed on the next try: a database that restarted or failed over.
TRANSIENT = (OperationalError,)
RETRY = {
    "autoretry_for": TRANSIENT,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 8,
}


@shared_task(name="aperture.create_job", bind=True, **RETRY)
def create_job(self, *args, **payload) -> dict:
    """Accept a tagging request (public contract: docs/architecture.md), submit it to
    Vidmob, and schedule its first poll.

    Safe twice: the row is keyed by request_id (or this message's id), so a repeat
    finds it; the submission is claimed with a compare-and-set lease.
    A bad payload is stored as rejected with its reason and never retried.
    """
    result = steps.accept_and_submit(payload, task_id=self.request.id, task_name=self.name, positional_args=args)
    send_after_commit(result)
    accepted = result.accepted
    assert accepted is not None
    if accepted.error:
        log.warning("job %s rejected: %s", accepted.job_id, accepted.error)
    state = result.outcome.state if result.outcome and result.outcome.state else accepted.state
    return {"job_id": str(accepted.job_id), "state": state.value, "created": accepted.created}


@shared_task(name="aperture.submit_job", bind=True, **RETRY)
def submit_job(self, job_id: str, token: str) -> None:
    """(Re)submit a job whose earlier attempt failed transiently or was lost.

    Safe twice: only the holder of the job's current token (or anyone after the
    previous holder's lease ran out) may submit.
    """
    ids = _ids(job_id, token)
    if ids:
        send_after_commit(steps.submit(*ids, task_name=self.name))


@shared_task(name="aperture.poll_job", bind=True, **RETRY)
def poll_job(self, job_id: str, token: str) -> None:
    """Poll Vidmob for a job: reschedule, store the annotations, or end it.

    Safe twice: the token is swapped by compare-and-set before the call; a duplicate
    or stale message finds no match and does nothing.
    """
    ids = _ids(job_id, token)
    if ids:
        send_after_commit(steps.poll(*ids, task_name=self.name))


def _ids(job_id: object, token: object) -> tuple[uuid.UUID, uuid.UUID] | None:
    try:
        return uuid.UUID(str(job_id)), uuid.UUID(str(token))
    except ValueError:
        # Internal messages are ours; a malformed one is a bug or a forgery: log, drop.
        log.error("ignoring malformed message: job_id=%r token=%r", job_id, token)
        return None


__all__ = ["create_job", "poll_job", "submit_job"]
