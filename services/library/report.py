"""Everything the HTML report shows, gathered in one read-only pass (rendered by cli/report.py)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy.orm import Session

from services.library.activity import Activity, CallerUsage, CallsPerJob, activity, calls_per_job, usage_by_caller
from services.library.counts import client_tag_coverage, counts_are_exact, list_collections, tag_frequency, tag_pairs
from services.library.records import ClientTagCoverage, CollectionSize, Frequency, Scope, TagMatch, TagPair, TagRef

HEATMAP_TAGS = 12  # the co-occurrence heatmap is of the subset's most frequent tags


@dataclass(frozen=True)
class Report:
    scope: Scope
    generated_at: dt.datetime
    counts_exact: bool
    frequency: Frequency  # every tag of the subset, most frequent first
    collections: tuple[CollectionSize, ...]  # of the whole library (the report's context)
    coverage: tuple[ClientTagCoverage, ...]
    heatmap_tags: tuple[TagRef, ...]  # the subset's most frequent tags, most frequent first
    pairs: tuple[TagPair, ...]  # every pair of them found together on an asset
    activity: Activity
    calls: CallsPerJob
    callers: tuple[CallerUsage, ...] = ()  # usage by caller, most requests first


def gather_report(session: Session, scope: Scope | None = None, *, now: dt.datetime) -> Report:
    """Read what the report shows. The heatmap's pairs are counted from the rows of the assets
    carrying its tags; the rest reads the maintained counts where it can (services/library/counts.py)."""
    scope = scope or Scope()
    frequency = tag_frequency(session, scope, top=None)
    top = tuple(t.tag for t in frequency.tags[:HEATMAP_TAGS])
    pairs = tag_pairs(session, scope, among=[TagMatch(t.category, t.label) for t in top], top=None) if top else []
    return Report(
        scope=scope,
        generated_at=now,
        counts_exact=counts_are_exact(session),
        frequency=frequency,
        collections=tuple(list_collections(session)),
        coverage=tuple(client_tag_coverage(session, scope)),
        heatmap_tags=top,
        pairs=tuple(pairs),
        activity=activity(session, scope),
        calls=calls_per_job(session, scope),
        callers=usage_by_caller(session, scope),
    )
