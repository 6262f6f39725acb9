"""A tagging job, as the durable engine sees it."""

from __future__ import annotations

from config import tasks
from models import ACTIVE_JOB_STATES, Job, JobState
from services.durable.kind import DurableKind
from services.tagging.callbacks import callback_kwargs

KIND: DurableKind[Job, JobState] = DurableKind(
    name="job",
    model=Job,
    states=JobState,
    id_kwarg="job_id",
    look_tasks={JobState.SUBMITTING: tasks.SUBMIT_JOB.name, JobState.POLLING: tasks.POLL_JOB.name},
    active_states=ACTIVE_JOB_STATES,
    callback_prefix="aperture-callback",
    callback_kwargs=callback_kwargs,
    attempt_owner="job_id",
)
