"""The library's tag inventory: frequencies, co-occurrence, subsets compared, client tag coverage.

The whole library and a single collection are answered from the counts migration 0004 keeps
exact in the transaction that stores tags (``library_tag_counts``, ``library_collection_sizes``):
a few thousand rows, whatever the library's size. Any other subset (a request id prefix, a date
range) is counted from its rows through the views, at a cost proportional to its size (about
15 us per asset of 10 tags on the benchmark machine: docs/benchmarks.md); so is everything while
the counts are marked invalid (after a delete, until ``rebuild_counts``).

Every function takes a Session and only SELECTs, except ``rebuild_counts``, an operator's repair.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import desc, func, select, text, true, tuple_
from sqlalchemy.orm import Session

from models import Job
from models.jobs import LibraryCollectionSize, LibraryCountsState, LibraryTagCount
from services.library.records import (
    CLIENT_CATEGORY,
    ClientTagCoverage,
    CollectionSize,
    CoOccurrence,
    Frequency,
    Scope,
    SubsetComparison,
    TagCount,
    TagDiff,
    TagMatch,
    TagPair,
    TagRef,
)
from services.library.views import in_scope, library_assets, library_tags, tag_is, tag_is_any, tags_table

la, lt, tags = library_assets, library_tags, tags_table
counts, sizes = LibraryTagCount.__table__, LibraryCollectionSize.__table__


def counts_are_exact(session: Session) -> bool:
    """Whether the maintained counts may be read (false after a delete, until ``rebuild_counts``)."""
    return bool(session.execute(select(LibraryCountsState.valid).where(LibraryCountsState.id == 1)).scalar())


def rebuild_counts(session: Session) -> None:
    """Recompute the maintained counts from the rows (after jobs, assets or tags were deleted).
    Writers of tags wait meanwhile (readers do not): seconds per million tags. The statement
    timeout is lifted for the caller's transaction, which should do nothing else."""
    session.execute(text("SET LOCAL statement_timeout = 0"))
    session.execute(text("SELECT library_rebuild_counts()"))


def _from_counts(session: Session, scope: Scope) -> bool:
    """Whether ``scope`` is answered from the maintained counts: the whole library or one
    collection, while the counts are exact."""
    by_collection_only = scope.request_id_prefix is None and scope.tagged_since is None and scope.tagged_until is None
    return by_collection_only and counts_are_exact(session)


def _of_collection(scope: Scope) -> list[Any]:
    return [counts.c.collection == scope.collection] if scope.collection is not None else []


def subset_size(session: Session, scope: Scope) -> int:
    """How many assets the subset holds."""
    return _size(session, scope, _from_counts(session, scope))


def _size(session: Session, scope: Scope, from_counts: bool) -> int:
    if from_counts:
        where = [sizes.c.collection == scope.collection] if scope.collection is not None else []
        # SUM of an INTEGER column is a BIGINT: an int.
        total: int = session.execute(select(func.coalesce(func.sum(sizes.c.assets), 0)).where(*where)).scalar_one()
        return total
    return session.execute(select(func.count()).select_from(la).where(*in_scope(la, scope))).scalar_one()


def tag_frequency(
    session: Session, scope: Scope | None = None, *, category: str | None = None, top: int | None = 50
) -> Frequency:
    """The ``top`` tags of the subset (all when None), most frequent first; of one ``category``
    when given ("client" for client tags)."""
    scope = scope or Scope()
    if _from_counts(session, scope):
        n = func.sum(counts.c.assets).label("n")
        stmt = select(counts.c.category, counts.c.label, n).where(counts.c.assets > 0, *_of_collection(scope))
        if category is not None:
            stmt = stmt.where(counts.c.category == category)
        stmt = stmt.group_by(counts.c.category, counts.c.label).order_by(desc(n), counts.c.category, counts.c.label)
        rows = session.execute(stmt.limit(top)).all()
        total = _size(session, scope, True)
    else:
        # The subset's assets once (each one's "is it the latest tagging" probe is most of the
        # cost), for both the count of its assets and its tags.
        scoped = select(la.c.asset_id).where(*in_scope(la, scope)).cte("scoped").prefix_with("MATERIALIZED")
        n = func.count().label("n")
        stmt = (
            select(
                tags.c.category,
                tags.c.label,
                n,
                select(func.count()).select_from(scoped).scalar_subquery().label("total"),
            )
            .join_from(scoped, tags, tags.c.asset_id == scoped.c.asset_id)
            .group_by(tags.c.category, tags.c.label)
        )
        if category is not None:
            stmt = stmt.where(tags.c.category == category)
        rows = session.execute(stmt.order_by(desc(n), tags.c.category, tags.c.label).limit(top)).all()
        total = rows[0].total if rows else _size(session, scope, False)
    return Frequency(scope, total, tuple(TagCount(r.category, r.label, r.n, _share(r.n, total)) for r in rows))


def co_occurring(session: Session, tag: TagMatch, scope: Scope | None = None, *, top: int | None = 20) -> CoOccurrence:
    """The tags most often found on the assets carrying ``tag`` (itself excluded). Counted from
    the rows: proportional to the tags of those assets."""
    scope = scope or Scope()
    with_tag = select(lt.c.asset_id).where(*in_scope(lt, scope), tag_is(lt, tag)).distinct().cte("with_tag")
    assets = session.execute(select(func.count()).select_from(with_tag)).scalar_one()
    n = func.count().label("n")
    rows = session.execute(
        select(tags.c.category, tags.c.label, n)
        .join_from(with_tag, tags, tags.c.asset_id == with_tag.c.asset_id)
        .where(~tag_is(tags, tag))
        .group_by(tags.c.category, tags.c.label)
        .order_by(desc(n), tags.c.category, tags.c.label)
        .limit(top)
    ).all()
    return CoOccurrence(
        tag, scope, assets, tuple(TagCount(r.category, r.label, r.n, _share(r.n, assets)) for r in rows)
    )


def tag_pairs(
    session: Session, scope: Scope | None = None, *, among: Sequence[TagMatch] = (), top: int | None = 20
) -> list[TagPair]:
    """The pairs of tags most often found together on one asset, among the tags ``among`` names
    (all tags when empty). Counted from the rows: an asset with k tags makes k(k-1)/2 pairs, so
    over a large subset name the tags (the top ten of ``tag_frequency``, say)."""
    scope = scope or Scope()
    tagged = (
        select(lt.c.asset_id, lt.c.category, lt.c.label)
        .where(*in_scope(lt, scope), tag_is_any(lt, tuple(among)) if among else true())
        .cte("tagged")
    )
    a, b = tagged.alias("a"), tagged.alias("b")
    n = func.count().label("n")
    rows = session.execute(
        select(a.c.category, a.c.label, b.c.category.label("b_category"), b.c.label.label("b_label"), n)
        .join(b, b.c.asset_id == a.c.asset_id)
        .where(tuple_(a.c.category, a.c.label) < tuple_(b.c.category, b.c.label))
        .group_by(a.c.category, a.c.label, b.c.category, b.c.label)
        .order_by(desc(n), a.c.category, a.c.label, b.c.category, b.c.label)
        .limit(top)
    ).all()
    return [TagPair(TagRef(r.category, r.label), TagRef(r.b_category, r.b_label), r.n) for r in rows]


def compare_subsets(session: Session, a: Scope, b: Scope, *, category: str | None = None) -> SubsetComparison:
    """Every tag of either subset with its count and share in each, the tags most
    over-represented in ``a`` first; ``.only_in_a`` are the tags ``a`` has and ``b`` lacks."""
    fa = tag_frequency(session, a, category=category, top=None)
    fb = tag_frequency(session, b, category=category, top=None)
    in_a = {t.tag: t.assets for t in fa.tags}
    in_b = {t.tag: t.assets for t in fb.tags}
    diffs = [
        TagDiff(
            tag.category,
            tag.label,
            in_a.get(tag, 0),
            in_b.get(tag, 0),
            _share(in_a.get(tag, 0), fa.total_assets),
            _share(in_b.get(tag, 0), fb.total_assets),
        )
        for tag in in_a.keys() | in_b.keys()
    ]
    diffs.sort(key=lambda d: (d.b_share - d.a_share, d.category, d.label))
    return SubsetComparison(a, b, fa.total_assets, fb.total_assets, tuple(diffs))


def client_tag_coverage(session: Session, scope: Scope | None = None) -> list[ClientTagCoverage]:
    """Each client tag asked for or found in the subset: how many of its assets were tagged by a
    job that asked for it, and how many carry it. By label."""
    scope = scope or Scope()
    if _from_counts(session, scope):
        rows = session.execute(
            select(
                counts.c.label, func.sum(counts.c.requested).label("requested"), func.sum(counts.c.assets).label("n")
            )
            .where(counts.c.category == CLIENT_CATEGORY, *_of_collection(scope))
            .group_by(counts.c.label)
        ).all()
        requested = {r.label: r.requested for r in rows}
        tagged = {r.label: r.n for r in rows}
    else:
        asked = func.library_client_labels(Job.client_tags).table_valued("label").render_derived().lateral("asked")
        requested = dict(
            session.execute(
                select(asked.c.label, func.count())
                .select_from(la)
                .join(Job, Job.id == la.c.job_id)
                .join(asked, true())
                .where(*in_scope(la, scope))
                .group_by(asked.c.label)
            ).all()
        )
        tagged = dict(
            session.execute(
                select(lt.c.label, func.count())
                .where(lt.c.category == CLIENT_CATEGORY, *in_scope(lt, scope))
                .group_by(lt.c.label)
            ).all()
        )
    labels = sorted(label for label in requested.keys() | tagged.keys() if requested.get(label) or tagged.get(label))
    return [ClientTagCoverage(label, requested.get(label, 0), tagged.get(label, 0)) for label in labels]


def list_collections(session: Session) -> list[CollectionSize]:
    """The library's collections (None: jobs sent without one), largest first."""
    if counts_are_exact(session):
        rows = session.execute(
            select(sizes.c.collection, sizes.c.assets)
            .where(sizes.c.assets > 0)
            .order_by(desc(sizes.c.assets), sizes.c.collection)
        ).all()
        return [CollectionSize(r.collection or None, r.assets) for r in rows]
    n = func.count().label("n")
    rows = session.execute(
        select(la.c.collection, n).group_by(la.c.collection).order_by(desc(n), la.c.collection)
    ).all()
    return [CollectionSize(r.collection, r.n) for r in rows]


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0
