"""Storing a completed job's tags: upserts, so storing the same result twice adds nothing."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

from sqlalchemy import ColumnElement, String, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from clients.tags import AssetAnnotation
from models import Asset, Job, Tag, members_of_pack
from services.durable.storable import clipped
from services.tagging.claims import PACK_ASSET_ID_PREFIX

log = logging.getLogger(__name__)


def _varchar_length(column: ColumnElement[Any]) -> int:
    """The length of a VARCHAR column (``String(n)`` in models/)."""
    sql_type = column.type
    assert isinstance(sql_type, String) and sql_type.length is not None
    return sql_type.length


CATEGORY_MAX = _varchar_length(Tag.__table__.c.category)
LABEL_MAX = _varchar_length(Tag.__table__.c.label)
# No creative carries thousands of distinct tags: more is a broken answer, not a library to keep.
MAX_TAGS_PER_ASSET = 2_000


def store_annotations(
    session: Session, job_id: uuid.UUID, annotations: tuple[AssetAnnotation, ...], now: dt.datetime
) -> int:
    """Upsert every tag of every asset; storing the same result twice adds nothing.

    What Vidmob sent is checked before it is stored: a category or label longer than its column
    is cut to it (and NUL or unpaired surrogates replaced), an asset's tags beyond
    ``MAX_TAGS_PER_ASSET`` are dropped with a warning, and the rows go in batches (SQLAlchemy's
    insertmanyvalues), so no answer can exceed PostgreSQL's 65,535 parameters per statement."""
    # A job's own assets; a pack's are its members' (services/tagging/packing.py), each URL sent once
    # under the name of its first asset row.
    members = select(Job.id).where(*members_of_pack(job_id))
    assets = session.execute(
        select(Asset.id, Asset.job_id, Asset.url, Asset.external_id).where(
            or_(Asset.job_id == job_id, Asset.job_id.in_(members)),
            Asset.reused_from_asset_id.is_(None),  # answered by reuse: never written on by Vidmob's answer
        )
    ).all()
    by_url: dict[str, list[int]] = {}
    by_external_id: dict[str, list[int]] = {}
    for a in assets:
        by_url.setdefault(a.url, []).append(a.id)
        if a.external_id:
            by_external_id.setdefault(a.external_id, []).append(a.id)
    for a in assets:
        if a.job_id != job_id:  # a member's
            by_external_id.setdefault(f"{PACK_ASSET_ID_PREFIX}{a.id}", by_url[a.url])
    rows: dict[tuple[int, str, str], dict[str, Any]] = {}
    tagged: set[int] = set()
    for annotation in annotations:
        targets = by_url.get(annotation.url) or by_external_id.get(annotation.id or "", [])
        if not targets:
            log.warning("job %s: annotation for an asset we did not submit (%s)", job_id, clipped(annotation.url, 200))
            continue
        tags = {(clipped(t.category, CATEGORY_MAX), clipped(t.label, LABEL_MAX)) for t in annotation.tags}
        if len(tags) > MAX_TAGS_PER_ASSET:
            log.warning("job %s: %d tags for one asset, %d kept", job_id, len(tags), MAX_TAGS_PER_ASSET)
            tags = set(sorted(tags)[:MAX_TAGS_PER_ASSET])
        for asset_id in targets:
            tagged.add(asset_id)
            for category, label in tags:
                rows[(asset_id, category, label)] = {"asset_id": asset_id, "category": category, "label": label}
    if rows:
        session.execute(
            pg_insert(Tag).on_conflict_do_nothing(index_elements=[Tag.asset_id, Tag.category, Tag.label]),
            list(rows.values()),
        )
    if tagged:
        session.execute(update(Asset).where(Asset.id.in_(tagged)).values(tagged_at=func.coalesce(Asset.tagged_at, now)))
    return len(rows)
