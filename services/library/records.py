"""What the library's questions take and answer: plain frozen values, no ORM objects.

The library is every asset URL at its latest tagging (docs/library.md). A ``Scope`` narrows it to
a subset; a ``TagMatch`` names tags; the results are the dataclasses below.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

CLIENT_CATEGORY = "client"  # client tags come back from Vidmob as tags of this category (clients/tags.py)


@dataclass(frozen=True)
class Scope:
    """A subset of the library; every field narrows it, ``Scope()`` is the whole library.

    An asset belongs to a subset by its latest tagging: a URL tagged for the spring collection
    and tagged again for the summer one is in summer's, with summer's tags.
    """

    collection: str | None = None  # the ``collection`` given to aperture.create_job
    request_id_prefix: str | None = None  # e.g. "aperture-scoring-tags:" (the scoring loop's jobs)
    tagged_since: dt.datetime | None = None  # inclusive
    tagged_until: dt.datetime | None = None  # exclusive

    def __post_init__(self) -> None:
        if self.collection == "" or self.request_id_prefix == "":
            raise ValueError("an empty collection or request id prefix names nothing: use None for any")
        for bound in (self.tagged_since, self.tagged_until):
            if bound is not None and bound.tzinfo is None:
                raise ValueError("tagged_since and tagged_until must be timezone-aware")

    @property
    def is_whole_library(self) -> bool:
        return self == Scope()

    def describe(self) -> str:
        """For headings: "collection 'summer-2026', tagged from 2026-06-01 00:00 UTC"."""
        parts = []
        if self.collection is not None:
            parts.append(f"collection {self.collection!r}")
        if self.request_id_prefix is not None:
            parts.append(f"request id {self.request_id_prefix!r}…")
        if self.tagged_since is not None:
            parts.append(f"tagged from {self.tagged_since:%Y-%m-%d %H:%M %Z}")
        if self.tagged_until is not None:
            parts.append(f"tagged before {self.tagged_until:%Y-%m-%d %H:%M %Z}")
        return ", ".join(parts) or "the whole library"


@dataclass(frozen=True, order=True)
class TagRef:
    """One tag, as stored: ``category`` ("visual", "brand", ..., "client" for client tags) and ``label``."""

    category: str
    label: str

    @property
    def is_client_tag(self) -> bool:
        return self.category == CLIENT_CATEGORY

    def __str__(self) -> str:
        return f"{self.category}:{self.label}"


@dataclass(frozen=True)
class TagMatch:
    """Tags to look for: a category and a label, a label in any category, or any tag of a category."""

    category: str | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        if not self.category and not self.label:
            raise ValueError("a tag match needs a category, a label or both")

    @classmethod
    def parse(cls, text: str) -> TagMatch:
        """``"brand:logo visible"`` (category and label), ``"logo visible"`` (the label in any
        category), ``"client:"`` (any client tag). The first colon splits; ``":a:b"`` is label ``a:b``."""
        category, sep, label = text.partition(":")
        if not sep:
            return cls(label=text.strip())
        return cls(category=category.strip() or None, label=label.strip() or None)

    def matches(self, tag: TagRef) -> bool:
        return (self.category is None or self.category == tag.category) and (
            self.label is None or self.label == tag.label
        )

    def __str__(self) -> str:
        if self.category is None:
            return str(self.label)
        return f"{self.category}:{self.label or ''}"


@dataclass(frozen=True)
class AssetQuery:
    """Assets of ``scope`` carrying a tag matching each of ``all_of``, at least one of ``any_of``
    (when given) and none of ``none_of``. ``AssetQuery()`` is every asset of the library."""

    all_of: tuple[TagMatch, ...] = ()
    any_of: tuple[TagMatch, ...] = ()
    none_of: tuple[TagMatch, ...] = ()
    scope: Scope = field(default_factory=Scope)


@dataclass(frozen=True)
class LibraryAsset:
    """An asset of the library: its URL at its latest tagging, and that tagging's tags."""

    asset_id: int  # the row of the latest tagging (changes when the URL is tagged again)
    url: str
    external_id: str | None  # the caller's id, when given
    job_id: uuid.UUID
    request_id: str
    collection: str | None
    tagged_at: dt.datetime
    tags: tuple[TagRef, ...]  # sorted by category, label


@dataclass(frozen=True)
class Tagging:
    """One tagging of a URL (its history: every job that tagged it)."""

    asset_id: int
    job_id: uuid.UUID
    request_id: str
    collection: str | None
    external_id: str | None
    tagged_at: dt.datetime
    is_latest: bool
    tags: tuple[TagRef, ...]


@dataclass(frozen=True)
class TagCount:
    """How many assets carry a tag, and their share of the assets counted against (a subset, or
    the assets carrying another tag)."""

    category: str
    label: str
    assets: int
    share: float  # 0..1

    @property
    def tag(self) -> TagRef:
        return TagRef(self.category, self.label)


@dataclass(frozen=True)
class Frequency:
    """The tags of a subset, most frequent first (ties by category, label)."""

    scope: Scope
    total_assets: int  # assets in the subset
    tags: tuple[TagCount, ...]


@dataclass(frozen=True)
class CoOccurrence:
    """The tags found with ``tag``: ``share`` is the fraction of ``assets`` that also carry each."""

    tag: TagMatch
    scope: Scope
    assets: int  # assets of the subset carrying ``tag``
    tags: tuple[TagCount, ...]


@dataclass(frozen=True)
class TagPair:
    first: TagRef  # first < second
    second: TagRef
    assets: int  # assets carrying both


@dataclass(frozen=True)
class TagDiff:
    category: str
    label: str
    a_assets: int
    b_assets: int
    a_share: float
    b_share: float

    @property
    def tag(self) -> TagRef:
        return TagRef(self.category, self.label)


@dataclass(frozen=True)
class SubsetComparison:
    """Every tag of either subset, the most over-represented in ``a`` first (by share difference)."""

    a: Scope
    b: Scope
    a_assets: int
    b_assets: int
    tags: tuple[TagDiff, ...]

    @property
    def only_in_a(self) -> tuple[TagDiff, ...]:
        """Tags that ``a`` has and ``b`` lacks ("what summer has that spring does not")."""
        return tuple(t for t in self.tags if t.a_assets and not t.b_assets)

    @property
    def only_in_b(self) -> tuple[TagDiff, ...]:
        return tuple(t for t in reversed(self.tags) if t.b_assets and not t.a_assets)


@dataclass(frozen=True)
class ClientTagCoverage:
    """A client tag over a subset: ``requested`` assets were tagged by a job that asked for it,
    ``tagged`` assets carry it (Vidmob matched it)."""

    label: str
    requested: int
    tagged: int

    @property
    def coverage(self) -> float | None:
        """tagged / requested; None when no asset of the subset asked for it."""
        return self.tagged / self.requested if self.requested else None


@dataclass(frozen=True)
class CollectionSize:
    collection: str | None  # None: jobs sent without a collection
    assets: int
