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
from services.durable import intake
from services.tagging.kind import KIND

USAGE = "aperture.create_job takes keyword arguments only (assets, client_tags, request_id, callback)"


def accept_job(
    session: Session,
    payload: dict[str, Any],
    *,
    task_id: str,
    dialect: str,
    settings: Settings,
    now: dt.datetime,
    positional_args: tuple[Any, ...] = (),
) -> intake.Accepted:
    """Store the request: as SUBMITTING when valid, as REJECTED with a reason when not.
    The same request_id again returns the existing job and creates nothing."""
    common = {"dialect": dialect, "deadline_at": now + dt.timedelta(seconds=settings.job_deadline_s)}
    return intake.accept(
        session,
        KIND,
        payload,
        contract=CreateJobRequest,
        usage=USAGE,
        fields=lambda request: (
            common | {"asset_count": len(request.assets), "client_tags": [t.model_dump() for t in request.client_tags]}
        ),
        rejected_fields=lambda _: common | {"asset_count": 0},
        on_created=_store_assets,
        task_id=task_id,
        settings=settings,
        now=now,
        positional_args=positional_args,
    )


def _store_assets(session: Session, job_id: uuid.UUID, request: CreateJobRequest) -> None:
    session.execute(
        insert(Asset),
        [{"job_id": job_id, "position": i, "url": a.url, "external_id": a.id} for i, a in enumerate(request.assets)],
    )
