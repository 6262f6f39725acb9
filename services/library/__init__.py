"""Know the library: the stored tags as an inventory that can be asked questions.

The library is every asset URL at its latest tagging (earlier taggings stay, as its history);
subsets are narrowed by ``Scope`` (a collection, a request id prefix, a date range). Read-only
services over PostgreSQL, for the CLI (``aperture tags ...``), the HTML report and anything else:
each takes a Session, never commits, and returns the frozen dataclasses of ``model``.
The same library is offered to BI tools as SQL views (docs/library.md).
"""

from services.library.counts import (
    client_tag_coverage,
    co_occurring,
    compare_subsets,
    counts_are_exact,
    list_collections,
    rebuild_counts,
    subset_size,
    tag_frequency,
    tag_pairs,
)
from services.library.records import (
    CLIENT_CATEGORY,
    AssetQuery,
    ClientTagCoverage,
    CollectionSize,
    CoOccurrence,
    Frequency,
    LibraryAsset,
    Scope,
    SubsetComparison,
    TagCount,
    TagDiff,
    Tagging,
    TagMatch,
    TagPair,
    TagRef,
)
from services.library.search import asset_history, count_assets, search_assets, stream_assets, tags_of

__all__ = [
    "CLIENT_CATEGORY",
    "AssetQuery",
    "ClientTagCoverage",
    "CoOccurrence",
    "CollectionSize",
    "Frequency",
    "LibraryAsset",
    "Scope",
    "SubsetComparison",
    "TagCount",
    "TagDiff",
    "TagMatch",
    "TagPair",
    "TagRef",
    "Tagging",
    "asset_history",
    "client_tag_coverage",
    "co_occurring",
    "compare_subsets",
    "count_assets",
    "counts_are_exact",
    "list_collections",
    "rebuild_counts",
    "search_assets",
    "stream_assets",
    "subset_size",
    "tag_frequency",
    "tag_pairs",
    "tags_of",
]
