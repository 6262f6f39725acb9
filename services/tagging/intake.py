"""Accepting ``aperture.create_job``: the job row and its assets, or a rejected row with a reason."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from config import Settings
from models import Asset
from services.contract import CreateJobRequest
from services.durable.intake import Intake
from services.tagging.kind import KIND


def _job(request: CreateJobRequest, settings: Settings, now: dt.datetime) -> dict[str, Any]:
    return _common(settings, now) | {
        "asset_count": len(request.assets),
        "client_tags": [t.model_dump() for t in request.client_tags],
        "collection": request.collection,
        "fresh": request.fresh,
        "batch": request.batch,
        "priority": request.priority,
    }


def _common(settings: Settings, now: dt.datetime) -> dict[str, Any]:
    # The dialect that submits it is the one its polls must speak.
    return {"dialect": settings.vidmob_tags_dialect, "deadline_at": now + dt.timedelta(seconds=settings.job_deadline_s)}


def _assets(session: Session, job_id: uuid.UUID, request: CreateJobRequest) -> None:
    session.execute(
        insert(Asset),
        [{"job_id": job_id, "position": i, "url": a.url, "external_id": a.id} for i, a in enumerate(request.assets)],
    )


def _rejected(_: dict[str, Any], settings: Settings, now: dt.datetime) -> dict[str, Any]:
    return _common(settings, now) | {"asset_count": 0}


INTAKE = Intake(
    kind=KIND,
    contract=CreateJobRequest,
    usage="aperture.create_job takes keyword arguments only"
    " (assets, client_tags, request_id, caller, priority, collection, callback, fresh, batch)",
    fields=_job,
    rejected_fields=_rejected,
    on_created=_assets,
)
