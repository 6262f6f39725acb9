"""The caller's callback: owed in the transaction that ends a job, sent after it.

Delivery is at-least-once with a stable task id (``aperture-callback-<job id>``): the
normal path sends it once and marks it sent; if a worker dies between the send and
the mark, the sweeper sends it again under the same id, so a caller can drop the
repeat by task id (or by job_id).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload

from models import Asset, CallbackStatus, Job, JobState


@dataclass(frozen=True)
class CallbackMessage:
    task: str
    queue: str | None
    task_id: str
    kwargs: dict[str, Any]


def callback_task_id(job_id: uuid.UUID) -> str:
    return f"aperture-callback-{job_id}"


def owed_callback(session: Session, job_id: uuid.UUID) -> CallbackMessage | None:
    job = session.execute(
        select(Job)
        .where(Job.id == job_id, Job.callback_status == CallbackStatus.PENDING)
        .options(selectinload(Job.assets).selectinload(Asset.tags))
    ).scalar_one_or_none()
    if job is None or job.callback is None:
        return None
    kwargs: dict[str, Any] = {"request_id": job.request_id, "job_id": str(job.id), "status": job.state.value}
    if job.state is JobState.COMPLETE:
        kwargs["annotations"] = [
            {
                "url": asset.url,
                "id": asset.external_id,
                "tags": [{"category": t.category, "label": t.label} for t in asset.tags],
            }
            for asset in job.assets
        ]
    return CallbackMessage(
        task=job.callback["task"], queue=job.callback.get("queue"), task_id=callback_task_id(job.id), kwargs=kwargs
    )


def mark_callback_sent(session: Session, job_id: uuid.UUID) -> bool:
    return (
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.callback_status == CallbackStatus.PENDING)
            .values(callback_status=CallbackStatus.SENT, callback_sent_at=func.now())
            .returning(Job.id)
        ).first()
        is not None
    )
