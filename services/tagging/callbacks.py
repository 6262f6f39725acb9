"""What a tagging job's callback says (contract: README "Callback")."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from models import Asset, Job, JobState


def callback_kwargs(session: Session, job: Job) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"request_id": job.request_id, "job_id": str(job.id), "status": job.state.value}
    if job.state is JobState.COMPLETE:
        assets = session.execute(
            select(Asset)
            .where(Asset.job_id == job.id)
            .order_by(Asset.position)
            .options(selectinload(Asset.tags), selectinload(Asset.reused_from))
        ).scalars()
        kwargs["annotations"] = [
            {
                "url": asset.url,
                "id": asset.external_id,
                "tags": [{"category": t.category, "label": t.label} for t in asset.tags],
                # Added for reuse (services/tagging/reuse.py): new keys inside each item, never new
                # keyword arguments, which a caller's task that takes no **kwargs would refuse.
                **provenance(asset),
            }
            for asset in assets
        ]
    return kwargs


def provenance(asset: Asset) -> dict[str, Any]:
    """Whether the asset's tags were reused, when they were made (ISO 8601; None: Vidmob returned
    nothing for it), and, when reused, the job whose Vidmob tagging made them."""
    reused = asset.reused_from_asset_id is not None
    return {
        "reused": reused,
        "tagged_at": asset.tagged_at.astimezone(dt.UTC).isoformat() if asset.tagged_at else None,
        "reused_from_job_id": str(asset.reused_from.job_id) if asset.reused_from is not None else None,
    }
