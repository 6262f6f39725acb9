"""The one task decorator, and sending what a step decided once its transaction committed.

``aperture_task(spec)`` declares a task's name and queue (from config/tasks.py, the one place
names live) together with its retry policy: only what may succeed on the next try (a
database that restarted or failed over), with backoff, jitter and a cap.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from celery import current_app, shared_task
from sqlalchemy.exc import OperationalError

import services.domains  # noqa: F401  (wires the kinds' end hooks in every process that runs tasks)
from config.tasks import TaskSpec
from services.durable import steps
from services.durable.callbacks import deliver
from services.durable.intake import Intake
from services.durable.messages import Message, Outcome
from services.durable.steps import Step

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

TRANSIENT = (OperationalError,)
RETRY_TRANSIENT: dict[str, Any] = {
    "autoretry_for": TRANSIENT,
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 8,
}


def aperture_task(spec: TaskSpec, **options: Any) -> Callable[[F], Any]:
    """Register ``fn`` as ``spec.name`` (bound: ``self`` is the task). Its queue is routed by
    ``task_routes``, built from the same spec (Celery 6 drops the per-task ``queue``)."""

    def register(fn: F) -> Any:
        return shared_task(name=spec.name, bind=True, **(RETRY_TRANSIENT | options))(fn)

    return register


def send(message: Message) -> None:
    options: dict[str, Any] = {}
    if message.task_id:
        options["task_id"] = message.task_id
    if message.queue:
        options["queue"] = message.queue
    if message.countdown:
        options["countdown"] = message.countdown
    current_app.send_task(message.task, kwargs=message.kwargs, **options)


def send_after_commit(outcome: Outcome) -> None:
    """The messages first (they point at committed rows), then every callback still owed."""
    for message in outcome.messages:
        send(message)
    for owed in outcome.callbacks:
        deliver(owed, send)


def accept_and_submit(task: Any, spec: Intake, submit: Step[Any], args: tuple[Any, ...], payload: dict) -> dict:
    """The body of a public task: store the request (or its rejection), submit it, send what
    that owes. Returns the row's id (``job_id`` or ``scoring_id``), its state, and whether
    this message created it."""
    accepted, outcome = steps.accept_then_submit(
        spec, submit, payload, task_id=task.request.id, task_name=task.name, positional_args=args
    )
    send_after_commit(outcome)
    if accepted.error:
        log.warning("%s %s rejected: %s", spec.kind.name, accepted.row_id, accepted.error)
    state = outcome.state or accepted.state
    return {spec.kind.id_kwarg: str(accepted.row_id), "state": state.value, "created": accepted.created}


def run_step(task: Any, step: Step[Any], row_id: object, token: object) -> None:
    """The body of an internal task: one step for the row the message names, if it holds
    the row's token (the claim decides), then send what it owes."""
    ids = parse_ids(**{step.kind.id_kwarg: row_id, "token": token})
    if ids:
        send_after_commit(steps.run(step, *ids, task_name=task.name))


def parse_ids(**named: object) -> tuple[uuid.UUID, ...] | None:
    """Internal messages carry UUIDs; a malformed one is a bug or a forgery: log it, drop it."""
    try:
        return tuple(uuid.UUID(str(value)) for value in named.values())
    except ValueError:
        log.error("ignoring malformed message: %s", ", ".join(f"{k}={v!r}" for k, v in named.items()))
        return None
