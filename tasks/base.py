"""The one task decorator, and sending what a step decided once its transaction committed.

``aperture_task(spec)`` declares a task's name and queue (from config/tasks.py, the one place
names live) together with its retry policy: only what may succeed on the next try (a
database that restarted or failed over), with backoff, jitter and a cap.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from celery import current_app, shared_task
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from config.settings import TRANSIENT_RETRY_MAX_S, is_rabbitmq_url
from config.tasks import TaskSpec
from services.durable import steps
from services.durable.callbacks import deliver
from services.durable.intake import Intake
from services.durable.messages import Message, Outcome
from services.durable.steps import Step

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

# A database that restarted, failed over or is unreachable; a pool that could not hand out a
# connection in time.
TRANSIENT = (OperationalError, PoolTimeoutError)
RETRY_TRANSIENT: dict[str, Any] = {
    "autoretry_for": TRANSIENT,
    "retry_backoff": 2,
    "retry_backoff_max": TRANSIENT_RETRY_MAX_S,
    "retry_jitter": True,
    # An internal message only points at a row: past this, the dispatcher takes over from the row.
    "max_retries": 8,
}
# A public request exists nowhere but in its message until it is stored: it is retried for as
# long as PostgreSQL is away (every minute at most), never acked unstored. Retries are countdown
# messages, at most APERTURE_WORKER_ETA_TASK_LIMIT per worker; past that a worker stops fetching
# and the rest wait in Redis, where they were.
RETRY_UNTIL_STORED: dict[str, Any] = RETRY_TRANSIENT | {"max_retries": None}


def aperture_task(spec: TaskSpec, **options: Any) -> Callable[[F], Any]:
    """Register ``fn`` as ``spec.name`` (bound: ``self`` is the task). Its queue is routed by
    ``task_routes``, built from the same spec (Celery 6 drops the per-task ``queue``)."""

    def register(fn: F) -> Any:
        retry = RETRY_UNTIL_STORED if spec.public else RETRY_TRANSIENT
        return shared_task(name=spec.name, bind=True, **(retry | options))(fn)

    return register


def send(message: Message, producer: Any = None) -> None:
    options: dict[str, Any] = {"producer": producer} if producer is not None else {}
    if message.task_id:
        options["task_id"] = message.task_id
    if message.queue:
        options["queue"] = message.queue
    if message.countdown:
        options["countdown"] = message.countdown
        if current_app.conf.task_default_queue_type == "quorum":
            options["countdown"] = whole_seconds(message.countdown)
    current_app.send_task(message.task, kwargs=message.kwargs, **options)


def whole_seconds(countdown: float) -> int:
    """A countdown for RabbitMQ's delay queues, which count whole seconds: the nearest one, so a look
    runs at most half a second before or after it is due. Given the fraction, Celery would truncate the
    delay yet stamp the exact time in the message, and the worker would hold every look that arrived
    early until then, in a prefetch slot a quorum queue never gives back (its prefetch is per consumer
    and does not grow for a held message); rounded up, every look was up to a second late, half a
    second on average."""
    return math.floor(countdown + 0.5)


def send_after_commit(outcome: Outcome, sender: Callable[[Message], None] = send) -> None:
    """The messages first (they point at committed rows), then every callback still owed, each
    through ``sender`` (the broker; the tests' in-process tier keeps them in a list instead).

    Each send stands alone: one that fails (a broker error, a caller's callback the broker
    refuses) is logged and left to the dispatcher, which re-sends whatever a row still says is
    due or owed; it never stops the sends after it."""
    for message in outcome.messages:
        _isolated(sender, message, what=f"message {message.task}")
    for owed in outcome.callbacks:
        _isolated(deliver, owed, sender, what=f"callback of {owed.kind.name} {owed.row_id}")


def _isolated(fn: Callable[..., Any], *args: Any, what: str) -> None:
    try:
        fn(*args)
    except Exception:  # anything the broker raises: the row keeps it due or owed for the dispatcher
        log.exception("could not send the %s; the dispatcher will retry it", what)


def accept_and_submit(
    task: Any, spec: Intake[Any], submit: Step[Any, Any], args: tuple[Any, ...], payload: dict[str, Any]
) -> dict[str, Any]:
    """The body of a public task: store the request (or its rejection), submit it, send what
    that owes. Returns the row's id (``job_id`` or ``scoring_id``), its state, and whether
    this message created it."""
    accepted, outcome = steps.accept_then_submit(
        spec,
        submit,
        payload,
        task_id=task.request.id,
        task_name=task.name,
        positional_args=args,
        broker_user=broker_user(task),
    )
    send_after_commit(outcome)
    if accepted.error:
        log.warning("%s %s rejected: %s", spec.kind.name, accepted.row_id, accepted.error)
    state = outcome.state or accepted.state
    return {spec.kind.id_kwarg: str(accepted.row_id), "state": state.value, "created": accepted.created}


def broker_user(task: Any) -> str | None:
    """The AMQP ``user_id`` of the message, on RabbitMQ only: RabbitMQ refuses a message whose
    ``user_id`` is not the user of the connection that published it, so there it names the sender.
    Redis checks nothing (a property there is whatever the sender wrote): None."""
    if not is_rabbitmq_url(task.app.conf.broker_url):
        return None
    user = (getattr(task.request, "properties", None) or {}).get("user_id")
    return user if isinstance(user, str) and user else None


def run_step(task: Any, step: Step[Any, Any], row_id: object, token: object) -> None:
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
