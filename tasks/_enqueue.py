"""Sending what a step decided, after its transaction committed."""

from __future__ import annotations

import logging

from celery import current_app

from services import steps
from services.steps import StepResult

log = logging.getLogger(__name__)


def send_after_commit(result: StepResult) -> None:
    for dispatch in result.dispatches:
        current_app.send_task(dispatch.task, kwargs=dispatch.kwargs(), countdown=dispatch.countdown or None)
    for job_id in result.callbacks:
        send_callback(job_id)


def send_callback(job_id) -> None:
    message = steps.owed_callback(job_id)
    if message is None:
        return
    options = {"task_id": message.task_id}
    if message.queue:
        options["queue"] = message.queue
    current_app.send_task(message.task, kwargs=message.kwargs, **options)
    steps.mark_callback_sent(job_id)
    log.info("callback %s sent for job %s (%s)", message.task, job_id, message.kwargs["status"])
