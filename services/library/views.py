"""The library's SQL building blocks: the views of migration 0004 and the filters on them.

The services read the same views BI tools do (``library_assets``, ``library_tags``:
docs/library.md), so a number in a report and the same question asked in Metabase agree.
The views are flattened by the planner: a filter here reaches the indexes of the tables below.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Boolean, ColumnElement, DateTime, String, Text, and_, column, or_, table, true
from sqlalchemy.dialects.postgresql import UUID

from models import Tag
from services.library.records import Scope, TagMatch

library_assets = table(
    "library_assets",
    column("url", Text),
    column("external_id", String),
    column("job_id", UUID(as_uuid=True)),
    column("request_id", String),
    column("collection", String),
    column("tagged_at", DateTime(timezone=True)),
    column("tag_count", BigInteger),
    column("times_tagged", BigInteger),
    column("asset_id", BigInteger),
)

library_tags = table(
    "library_tags",
    column("url", Text),
    column("external_id", String),
    column("category", String),
    column("label", String),
    column("is_client_tag", Boolean),
    column("collection", String),
    column("request_id", String),
    column("tagged_at", DateTime(timezone=True)),
    column("asset_id", BigInteger),
    column("job_id", UUID(as_uuid=True)),
)


def in_scope(view: Any, scope: Scope) -> list[ColumnElement[bool]]:
    """The conditions that narrow ``view`` (library_assets or library_tags) to ``scope``."""
    conditions: list[ColumnElement[bool]] = []
    if scope.collection is not None:
        conditions.append(view.c.collection == scope.collection)
    if scope.request_id_prefix is not None:
        conditions.append(view.c.request_id.startswith(scope.request_id_prefix, autoescape=True))
    if scope.tagged_since is not None:
        conditions.append(view.c.tagged_at >= scope.tagged_since)
    if scope.tagged_until is not None:
        conditions.append(view.c.tagged_at < scope.tagged_until)
    return conditions


def tag_is(tags: Any, match: TagMatch) -> ColumnElement[bool]:
    """A row of ``tags`` (the tags table, library_tags, or an alias of either) is a tag ``match`` names."""
    conditions = []
    if match.category is not None:
        conditions.append(tags.c.category == match.category)
    if match.label is not None:
        conditions.append(tags.c.label == match.label)
    return and_(*conditions)


def tag_is_any(tags: Any, matches: tuple[TagMatch, ...]) -> ColumnElement[bool]:
    return or_(*(tag_is(tags, m) for m in matches)) if matches else true()


tags_table = Tag.__table__
