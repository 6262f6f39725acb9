"""Tagging tasks: accept and submit, poll. Each docstring says why running it twice is safe."""

from __future__ import annotations

import logging

from config import tasks as spec
from services.tagging import steps
from tasks.base import aperture_task, parse_ids, send_after_commit

log = logging.getLogger(__name__)


@aperture_task(spec.CREATE_JOB)
def create_job(self, *args, **payload) -> dict:
    """Accept a tagging request (public contract: README), submit it to Vidmob, and
    schedule its first poll.

    Safe twice: the row is keyed by request_id (or this message's id), so a repeat
    finds it; the submission is claimed with a compare-and-set lease.
    A bad payload is stored as rejected with its reason and never retried.
    """
    accepted, outcome = steps.accept_and_submit(
        payload, task_id=self.request.id, task_name=self.name, positional_args=args
    )
    send_after_commit(outcome)
    if accepted.error:
        log.warning("job %s rejected: %s", accepted.row_id, accepted.error)
    state = outcome.state or accepted.state
    return {"job_id": str(accepted.row_id), "state": state.value, "created": accepted.created}


@aperture_task(spec.SUBMIT_JOB)
def submit_job(self, job_id: str, token: str) -> None:
    """(Re)submit a job whose earlier attempt failed transiently or was lost.

    Safe twice: only the holder of the job's current token (or anyone after the
    previous holder's lease ran out) may submit.
    """
    ids = parse_ids(job_id=job_id, token=token)
    if ids:
        send_after_commit(steps.submit(*ids, task_name=self.name))


@aperture_task(spec.POLL_JOB)
def poll_job(self, job_id: str, token: str) -> None:
    """Poll Vidmob for a job: reschedule, store the annotations, or end it.

    Safe twice: the token is swapped by compare-and-set before the call; a duplicate
    or stale message finds no match and does nothing.
    """
    ids = parse_ids(job_id=job_id, token=token)
    if ids:
        send_after_commit(steps.poll(*ids, task_name=self.name))


__all__ = ["create_job", "poll_job", "submit_job"]
