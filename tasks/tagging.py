"""Tagging tasks: accept and submit, poll. Each docstring says why running it twice is safe."""

from __future__ import annotations

from config import tasks as spec
from services.tagging import intake, steps
from tasks.base import accept_and_submit, aperture_task, run_step


@aperture_task(spec.CREATE_JOB)
def create_job(self, *args, **payload) -> dict:
    """Accept a tagging request (public contract: README), submit it to Vidmob, and
    schedule its first poll.

    Safe twice: the row is keyed by request_id (or this message's id), so a repeat
    finds it; the submission is claimed with a compare-and-set lease.
    A bad payload is stored as rejected with its reason and never retried.
    """
    return accept_and_submit(self, intake.INTAKE, steps.SUBMIT, args, payload)


@aperture_task(spec.SUBMIT_JOB)
def submit_job(self, job_id: str, token: str) -> None:
    """(Re)submit a job whose earlier attempt failed transiently or was lost.

    Safe twice: only the holder of the job's current token (or anyone after the
    previous holder's lease ran out) may submit.
    """
    run_step(self, steps.SUBMIT, job_id, token)


@aperture_task(spec.POLL_JOB)
def poll_job(self, job_id: str, token: str) -> None:
    """Poll Vidmob for a job: reschedule, store the annotations, or end it.

    Safe twice: the token is swapped by compare-and-set before the call; a duplicate
    or stale message finds no match and does nothing.
    """
    run_step(self, steps.POLL, job_id, token)


__all__ = ["create_job", "poll_job", "submit_job"]
