"""Storing a completed job's tags: upserts, so storing the same result twice adds nothing."""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from clients.tags import AssetAnnotation
from models import Asset, Tag

log = logging.getLogger(__name__)


def store_annotations(
    session: Session, job_id: uuid.UUID, annotations: tuple[AssetAnnotation, ...], now: dt.datetime
) -> int:
    """Upsert every tag of every asset; storing the same result twice adds nothing."""
    assets = session.execute(select(Asset.id, Asset.url, Asset.external_id).where(Asset.job_id == job_id)).all()
    by_url: dict[str, list[int]] = {}
    by_external_id: dict[str, list[int]] = {}
    for a in assets:
        by_url.setdefault(a.url, []).append(a.id)
        if a.external_id:
            by_external_id.setdefault(a.external_id, []).append(a.id)
    rows = []
    tagged: set[int] = set()
    for annotation in annotations:
        targets = by_url.get(annotation.url) or by_external_id.get(annotation.id or "", [])
        if not targets:
            log.warning("job %s: annotation for an asset we did not submit (%s)", job_id, annotation.url)
            continue
        for asset_id in targets:
            tagged.add(asset_id)
            rows.extend({"asset_id": asset_id, "category": t.category, "label": t.label} for t in annotation.tags)
    if rows:
        session.execute(
            pg_insert(Tag).values(rows).on_conflict_do_nothing(index_elements=[Tag.asset_id, Tag.category, Tag.label])
        )
    if tagged:
        session.execute(update(Asset).where(Asset.id.in_(tagged)).values(tagged_at=func.coalesce(Asset.tagged_at, now)))
    return len(rows)
