"""What a tagging job's callback says (contract: README "Callback")."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from models import Asset, Job, JobState


def callback_kwargs(session: Session, job: Job) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"request_id": job.request_id, "job_id": str(job.id), "status": job.state.value}
    if job.state is JobState.COMPLETE:
        assets = session.execute(
            select(Asset).where(Asset.job_id == job.id).order_by(Asset.position).options(selectinload(Asset.tags))
        ).scalars()
        kwargs["annotations"] = [
            {
                "url": asset.url,
                "id": asset.external_id,
                "tags": [{"category": t.category, "label": t.label} for t in asset.tags],
            }
            for asset in assets
        ]
    return kwargs
