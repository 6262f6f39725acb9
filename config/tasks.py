"""Every task's name and queue, declared once.

Other applications send these names; the routes (config/celery.py), the task decorator
(tasks/base.py), the JSON Schemas (services/schema.py) and the worker signals all read
them from here, so a name is written in exactly one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class QueueName(StrEnum):
    # Public entry points (create_job, score_media) and their submissions: short HTTP calls.
    SUBMIT = "aperture.submit"
    # Stored submissions sent to Vidmob when due (a slot under APERTURE_MAX_OPEN_JOBS freed for them,
    # a retry's time come, a tag batch of the scoring loop): apart from aperture.submit so that a
    # burst of new requests never holds back a submission whose slot is already free, which would
    # leave the slot empty while work waits. Served by the submit workers.
    ADMIT = "aperture.admit"
    # Polls of Vidmob jobs, sent by the dispatcher when due: kept apart so a burst of new
    # submissions never starves polls of jobs already paid for, and so each scales on its own.
    POLL = "aperture.poll"
    # Callbacks and other housekeeping: tiny, must never wait behind thousands of polls.
    MAINTENANCE = "aperture.maintenance"
    # Celery's default queue: a caller that names no queue when it sends `aperture.create_job`
    # lands here, so submit workers consume it too rather than letting such messages rot.
    DEFAULT = "celery"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    queue: QueueName
    public: bool = False  # part of the contract other applications call


# Public: names and keyword arguments change only with a migration path (README "Public contract").
CREATE_JOB = TaskSpec("aperture.create_job", QueueName.SUBMIT, public=True)
SCORE_MEDIA = TaskSpec("aperture.score_media", QueueName.SUBMIT, public=True)

# Internal: sent only by this system. Names stay stable anyway: messages in flight during a
# deploy must still find their task.
SUBMIT_JOB = TaskSpec("aperture.submit_job", QueueName.ADMIT)
POLL_JOB = TaskSpec("aperture.poll_job", QueueName.POLL)
SUBMIT_SCORING = TaskSpec("aperture.submit_scoring", QueueName.SUBMIT)
RESCORE = TaskSpec("aperture.rescore", QueueName.SUBMIT)
POLL_SCORING = TaskSpec("aperture.poll_scoring", QueueName.POLL)
FLUSH_TAGGING = TaskSpec("aperture.flush_tagging", QueueName.SUBMIT)
# One dispatcher pass on demand (the dispatcher process runs them continuously).
SWEEP = TaskSpec("aperture.sweep", QueueName.MAINTENANCE)

ALL_TASKS: tuple[TaskSpec, ...] = (
    CREATE_JOB,
    SCORE_MEDIA,
    SUBMIT_JOB,
    POLL_JOB,
    SUBMIT_SCORING,
    RESCORE,
    POLL_SCORING,
    FLUSH_TAGGING,
    SWEEP,
)
PUBLIC_TASKS = tuple(t for t in ALL_TASKS if t.public)
TASK_ROUTES: dict[str, dict[str, str]] = {t.name: {"queue": t.queue.value} for t in ALL_TASKS}


def caller_queue(caller: str) -> str:
    """A configured caller's own intake queue: the public tasks sent there are taken in as those sent
    to ``aperture.submit`` are, by the same workers, which take from each of the queues they serve in
    turn (kombu's round-robin cycle on Redis; RabbitMQ delivers to a channel's consumers in turn). An
    application that sends a burst of thousands to its own queue then holds back only its own
    requests: another's wait for at most one message per queue, not behind the burst. The queue is
    not an identity: who sent a request is decided as before (services/callers.py)."""
    return f"{QueueName.SUBMIT.value}.{caller}"


def queue_names(callers: Iterable[str] = ()) -> list[str]:
    """Every queue of the system: those of ``QueueName``, then each caller's intake queue."""
    return [q.value for q in QueueName] + [caller_queue(c) for c in callers]


def queue_of(task_name: str) -> str | None:
    route = TASK_ROUTES.get(task_name)
    return route["queue"] if route else None
