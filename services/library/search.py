"""Finding assets in the library by their tags; exporting them; a URL's history.

Every function takes a Session and only SELECTs (the caller owns the transaction).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import BigInteger, Select, any_, bindparam, func, select, true
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.orm import Session

from models import Asset, Job, Tag
from services.library.records import AssetQuery, LibraryAsset, Tagging, TagRef
from services.library.views import in_scope, library_assets, tag_is, tag_is_any, tags_table

la = library_assets

_ASSET_COLUMNS = (
    la.c.asset_id,
    la.c.url,
    la.c.external_id,
    la.c.job_id,
    la.c.request_id,
    la.c.collection,
    la.c.tagged_at,
)


def _matching(query: AssetQuery, *columns: Any) -> Select[Any]:
    """``columns`` of library_assets rows that ``query`` selects."""
    stmt = select(*columns).where(*in_scope(la, query.scope))
    # Semi-joins on the tag index (label, category, asset_id): each criterion is the asset ids
    # carrying it, in id order, which the planner merges with the others.
    for match in query.all_of:
        stmt = stmt.where(la.c.asset_id.in_(select(tags_table.c.asset_id).where(tag_is(tags_table, match))))
    if query.any_of:
        stmt = stmt.where(la.c.asset_id.in_(select(tags_table.c.asset_id).where(tag_is_any(tags_table, query.any_of))))
    if query.none_of:
        stmt = stmt.where(
            ~select(tags_table.c.asset_id)
            .where(tags_table.c.asset_id == la.c.asset_id, tag_is_any(tags_table, query.none_of))
            .exists()
        )
    return stmt


def search_assets(
    session: Session, query: AssetQuery, *, limit: int = 50, before_asset_id: int | None = None
) -> list[LibraryAsset]:
    """One page of the assets ``query`` selects, most recently submitted first (by asset id,
    descending), with their tags. The next page: ``before_asset_id=page[-1].asset_id``.

    Cost: proportional to the rows read until the page is full; for tags rarer together than
    apart, up to the postings of the rarer tag (docs/benchmarks.md)."""
    stmt = _matching(query, *_ASSET_COLUMNS)
    if before_asset_id is not None:
        stmt = stmt.where(la.c.asset_id < before_asset_id)
    rows = session.execute(stmt.order_by(la.c.asset_id.desc()).limit(limit)).all()
    tags = tags_of(session, [r.asset_id for r in rows])
    return [_asset(r, tags.get(r.asset_id, ())) for r in rows]


def count_assets(session: Session, query: AssetQuery) -> int:
    """How many assets ``query`` selects. Exact, so it reads every match: prefer
    ``tag_frequency`` (services/library/counts.py) for a single tag over a collection or the
    whole library, which reads maintained counts."""
    n: int = session.execute(_matching(query, func.count())).scalar_one()
    return n


def tags_of(session: Session, asset_ids: Iterable[int]) -> dict[int, tuple[TagRef, ...]]:
    """The tags of these asset rows, sorted by category, label."""
    ids = list(asset_ids)
    if not ids:
        return {}
    rows = session.execute(
        select(Tag.asset_id, Tag.category, Tag.label)
        # One array parameter, not one per id: one statement (and one cached plan) for any page size.
        .where(Tag.asset_id == any_(bindparam("asset_ids", ids, type_=ARRAY(BigInteger))))
        .order_by(Tag.asset_id, Tag.category, Tag.label)
    ).all()
    return {
        asset_id: tuple(TagRef(r.category, r.label) for r in group)
        for asset_id, group in itertools.groupby(rows, key=lambda r: r.asset_id)
    }


def stream_assets(
    session: Session, query: AssetQuery | None = None, *, batch_size: int = 1000
) -> Iterator[LibraryAsset]:
    """Every asset ``query`` selects (default: the whole library) with its tags, in URL order,
    in constant memory: rows come through a server-side cursor ``batch_size`` at a time and one
    asset is assembled at a time. For ``aperture tags export``.

    The caller's transaction stays open while it iterates: a consumer that stops for longer than
    the server's ``idle_in_transaction_session_timeout`` loses the cursor."""
    query = query or AssetQuery()
    # One row per asset, its tags aggregated in the database (in category, label order): a tenth
    # of the rows to fetch and assemble than one per tag.
    order = (tags_table.c.category, tags_table.c.label)
    tags = (
        select(
            func.array_agg(aggregate_order_by(tags_table.c.category, *order)).label("categories"),
            func.array_agg(aggregate_order_by(tags_table.c.label, *order)).label("labels"),
        )
        .where(tags_table.c.asset_id == la.c.asset_id)
        .lateral("asset_tags")
    )
    stmt = (
        _matching(query, *_ASSET_COLUMNS, tags.c.categories, tags.c.labels)
        .join_from(la, tags, true())
        .order_by(la.c.url)
        .execution_options(yield_per=batch_size)
    )
    result = session.execute(stmt)
    try:
        for row in result:
            yield _asset(row, tuple(map(TagRef, row.categories or (), row.labels or ())))
    finally:
        result.close()


def asset_history(session: Session, url: str) -> list[Tagging]:
    """Every tagging of ``url``, newest first; the first is the one the library counts."""
    rows = session.execute(
        select(
            Asset.id.label("asset_id"),
            Asset.job_id,
            Job.request_id,
            Job.collection,
            Asset.external_id,
            Asset.tagged_at,
        )
        .join(Job, Job.id == Asset.job_id)
        .where(Asset.url == url, Asset.tagged_at.is_not(None))
        .order_by(Asset.tagged_at.desc(), Asset.id.desc())
    ).all()
    tags = tags_of(session, [r.asset_id for r in rows])
    return [
        Tagging(
            asset_id=r.asset_id,
            job_id=r.job_id,
            request_id=r.request_id,
            collection=r.collection,
            external_id=r.external_id,
            tagged_at=r.tagged_at,
            is_latest=i == 0,
            tags=tags.get(r.asset_id, ()),
        )
        for i, r in enumerate(rows)
    ]


def _asset(row: Any, tags: tuple[TagRef, ...]) -> LibraryAsset:
    return LibraryAsset(
        asset_id=row.asset_id,
        url=row.url,
        external_id=row.external_id,
        job_id=row.job_id,
        request_id=row.request_id,
        collection=row.collection,
        tagged_at=row.tagged_at,
        tags=tags,
    )
