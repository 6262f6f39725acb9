"""Worker process hooks: database pool after fork, metrics, log context.

``connect()`` (called once by the app factory, workers/application.create_app) connects them to
Celery's signals and the services' observers to this process's metrics.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
from collections.abc import Sequence
from typing import Any

from celery import Task
from celery.signals import (
    celeryd_after_setup,
    task_postrun,
    task_prerun,
    task_success,
    worker_before_create_process,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)

from clients import ratelimit
from config import get_settings
from config.tasks import CREATE_JOB, FLUSH_TAGGING, POLL_JOB, QueueName, caller_queue
from models.db import get_engine
from services import log_context
from services.durable import attempts
from services.tagging import packing, reuse
from workers import metrics

# When each running task began, by task id: completion metrics count a job only for the
# task that completed it (services/queries.completion_since).
_started: dict[str, dt.datetime] = {}


def _serve_metrics(**_: object) -> None:
    # The main process, before the pool forks: children inherit the metrics directory.
    settings = get_settings()
    if settings.metrics_port:
        metrics.prepare_multiprocess_dir()
        metrics.serve(settings.metrics_port, settings.metrics_bind)


def _metrics_cleanup(**_: object) -> None:
    metrics.cleanup()


def _fresh_pool_after_fork(**_: object) -> None:
    # Never use a connection pool across fork (SQLAlchemy pooling docs): drop the
    # inherited one without closing the parent's sockets, and start a new one.
    get_engine()
    log_context.clear()


def _pool_process_exited(pid: int | None = None, **_: object) -> None:
    metrics.process_exited(pid or os.getpid())


def _task_started(
    task_id: str | None = None,
    task: Task[..., Any] | None = None,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    **_: object,
) -> None:
    log_context.clear()
    kwargs = kwargs or {}
    job_id = kwargs.get("job_id") or (args[0] if task is not None and task.name == POLL_JOB.name and args else None)
    # What the message says; the steps bind the row's own request_id once they have read it.
    # A flush is about every media waiting, whichever one's message asked for it.
    scoring_id = None if task is not None and task.name == FLUSH_TAGGING.name else kwargs.get("scoring_id")
    log_context.bind(
        **{
            name: value
            for name, value in (
                ("job_id", job_id),
                ("scoring_id", scoring_id),
                ("request_id", kwargs.get("request_id")),
            )
            if isinstance(value, str)
        }
    )
    if task_id and task is not None and task.name == POLL_JOB.name:
        _started[task_id] = dt.datetime.now(dt.UTC)


def _task_succeeded(sender: Task[..., Any] | None = None, result: Any = None, **_: object) -> None:
    name = getattr(sender, "name", None)
    if name == CREATE_JOB.name:
        metrics.observe_create_job_result(result)
    elif name == POLL_JOB.name:
        assert sender is not None  # it has the poll task's name
        request = sender.request
        started = _started.get(request.id) if request.id else None  # _task_started keeps tasks with an id
        job_id = (request.kwargs or {}).get("job_id") or (request.args[0] if request.args else None)
        if started is not None and job_id:
            metrics.observe_completion(job_id, started)


def _task_ended(task_id: str | None = None, **_: object) -> None:
    if task_id:
        _started.pop(task_id, None)
    log_context.clear()


def _freeze_before_fork(**_: object) -> None:
    """Before the prefork pool forks a process: every object the parent holds moves to the collector's
    permanent generation. A full collection in a pool process otherwise writes to the header of every object
    it inherited, and copy on write then copies the parent's heap into it page by page: measured, about
    22 MB per process at once, some minutes into a run (the worker's PSS 1.13 times idle with 100,000 jobs
    in flight on RabbitMQ, nothing more held). Frozen objects are never collected, which they would not be
    anyway: they are the modules, the app and its configuration."""
    gc.freeze()


def _serve_caller_queues(sender: str, instance: Any, **_: Any) -> None:
    """A worker that serves ``aperture.submit`` serves each configured caller's intake queue too
    (config/tasks.caller_queue), whatever ``-Q`` named: the deployed command lines stay as they are when
    an application is added to APERTURE_CALLERS."""
    queues = instance.app.amqp.queues
    if QueueName.SUBMIT.value not in queues.consume_from:
        return
    for caller in get_settings().callers:
        queues.select_add(queues[caller_queue(caller)])


def _observe(observers: list[Any], observer: Any) -> None:
    if observer not in observers:
        observers.append(observer)


def connect() -> None:
    """Connect the hooks above to Celery's signals, and the services' observers to this process's
    metrics. Idempotent: each is connected once however often this runs."""
    _observe(attempts.ATTEMPT_OBSERVERS, metrics.observe_api_attempt)
    _observe(ratelimit.OBSERVERS, metrics.observe_limiter_event)
    _observe(reuse.OBSERVERS, metrics.observe_reuse)
    _observe(packing.JOIN_OBSERVERS, metrics.observe_packing)
    # weak=False: the receivers are module functions, kept anyway; dispatch_uid makes a repeat a no-op.
    for signal, receiver in (
        (celeryd_after_setup, _serve_caller_queues),
        (worker_init, _serve_metrics),
        (worker_before_create_process, _freeze_before_fork),
        (worker_shutdown, _metrics_cleanup),
        (worker_process_init, _fresh_pool_after_fork),
        (worker_process_shutdown, _pool_process_exited),
        (task_prerun, _task_started),
        (task_success, _task_succeeded),
        (task_postrun, _task_ended),
    ):
        signal.connect(receiver, weak=False, dispatch_uid=f"aperture-{receiver.__name__}")
