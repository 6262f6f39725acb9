"""Deterministic creative tags, client-tag matching and request validation for both tagging dialects.

Why deterministic: tests and the product's own checks must be able to predict what the "AI" returns, and the
same URL must yield the same tags in either dialect, in any process, on any day.

Standard tags
-------------
Each asset URL gets 1 to 3 labels from each of four categories (``CATEGORIES``): ``visual``, ``people``,
``brand`` and ``audio``. The count and the choice come from SHA-256 of the URL (see ``derive_tags``), so the
same URL always gives the same list, in category order and, within a category, in vocabulary order.

Client tag matching
-------------------
A client tag is a label plus a description (guide dialect: ``{"label", "description"}``; media dialect: each
``clientTags`` key is the label and its value the description). It matches an asset when at least one of its
*keywords* is in the asset's *vocabulary*:

* words: lower-cased runs of letters ``a-z`` of 3 or more letters; a plural "s" is dropped from words of 5+
  letters that do not end in "ss" or "us" ("settings" -> "setting", "focus" stays "focus");
* keywords: the words of label + description, minus common English words and generic nouns (``STOPWORDS``:
  "the", "with", "assets", "featuring", ...);
* vocabulary: the words of the URL, minus URL noise (``URL_NOISE``: "https", "www", "com", "cdn", file
  extensions...), plus the words of the asset's standard tag labels.

Example: ``{"label": "lifestyle", "description": "Assets featuring real-life settings"}`` matches
``https://cdn.example.com/summer-lifestyle.mp4`` (URL word "lifestyle") and any asset tagged
``indoor setting`` (tag word "setting"). Matches are appended after the standard tags as
``{"category": "client", "label": <label>}``, in the order the client tags were submitted, without duplicates.

The ``fail`` rule
-----------------
A tagging job ends FAILED (instead of COMPLETE) when any of its URLs, lower-cased, contains ``fail`` once the
scoring rule markers that happen to contain "fail" (``sim-tagging-failure``, ``sim-scoring-failed``,
``sim-download-failure``) are removed: otherwise a URL meant to exercise a scoring rule could never be tagged.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any
from urllib.parse import urlsplit

MAX_ASSETS = 200
MAX_MEDIA_CLIENT_TAGS = 10

CATEGORIES: dict[str, tuple[str, ...]] = {
    "visual": (
        "outdoor scene",
        "indoor setting",
        "product close-up",
        "text overlay",
        "urban street",
        "nature landscape",
        "studio backdrop",
        "food and drink",
        "vehicle",
        "animated graphics",
    ),
    "people": (
        "human presence",
        "smiling face",
        "group of people",
        "expressive body language",
        "direct eye contact",
        "hands in frame",
        "athlete in motion",
        "surprised expression",
    ),
    "brand": (
        "logo visible",
        "brand colors",
        "product appearance",
        "packaging shot",
        "call to action",
        "tagline text",
        "brand name on screen",
    ),
    "audio": (
        "music presence",
        "voiceover",
        "sound effects",
        "upbeat music",
        "dialogue",
        "ambient sound",
        "brand jingle",
        "silence",
    ),
}

# fmt: off
STOPWORDS = frozenset(
    {
        "the", "and", "for", "with", "where", "that", "this", "these", "those", "are", "was", "were", "is",
        "from", "into", "onto", "its", "our", "your", "their", "any", "all", "not", "but", "has", "have",
        "been", "being", "who", "what", "which", "when", "than", "then", "there", "here", "such", "some",
        "more", "most", "very", "also", "only", "other", "about", "over", "under", "within", "without",
        "asset", "creative", "media", "video", "image", "content", "featuring", "feature", "showing",
        "show", "shown", "contain", "containing", "include", "including", "primary", "focus",
        "tag", "label",
    }
)

URL_NOISE = frozenset(
    {
        "http", "https", "www", "com", "net", "org", "cdn", "example", "static", "asset", "media",
        "mp4", "mov", "webm", "avi", "mkv", "jpg", "jpeg", "png", "gif", "webp", "html", "amazonaws",
    }
)

# fmt: on

SCORING_MARKERS_WITH_FAIL = ("sim-tagging-failure", "sim-scoring-failed", "sim-download-failure")

_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class ClientTag:
    """One client tag, whatever the dialect it came from."""

    label: str
    description: str = ""


def _normalise_word(word: str) -> str:
    if len(word) >= 5 and word.endswith("s") and not word.endswith(("ss", "us")):
        return word[:-1]
    return word


def words(text: str) -> set[str]:
    """Lower-cased words of 3+ letters, singularised (see the module docstring)."""
    return {_normalise_word(w) for w in _WORD.findall(text.lower()) if len(w) >= 3}


def _digest(*parts: str) -> bytes:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()


@lru_cache(maxsize=65536)
def derive_tags(url: str) -> tuple[tuple[str, str], ...]:
    """The standard (category, label) tags of ``url``: 1-3 per category, a pure function of the URL."""
    tags: list[tuple[str, str]] = []
    for category, vocabulary in CATEGORIES.items():
        count = 1 + _digest("count", category, url)[0] % 3
        # Each label ranked by _digest("pick", category, url, label).
        ranked = sorted(vocabulary, key=partial(_digest, "pick", category, url))
        chosen = set(ranked[:count])
        tags.extend((category, label) for label in vocabulary if label in chosen)
    return tuple(tags)


def tag_labels(url: str) -> frozenset[str]:
    """The set of standard labels of ``url`` (used by tag-dependent scoring guidelines)."""
    return frozenset(label for _, label in derive_tags(url))


@lru_cache(maxsize=65536)
def asset_vocabulary(url: str) -> frozenset[str]:
    """Words a client tag may match on: URL words (minus noise) and standard tag label words."""
    vocab = words(url) - URL_NOISE
    for _, label in derive_tags(url):
        vocab |= words(label)
    return frozenset(vocab)


@lru_cache(maxsize=4096)
def client_tag_keywords(tag: ClientTag) -> frozenset[str]:
    return frozenset(words(f"{tag.label} {tag.description}") - STOPWORDS)


def client_tag_matches(tag: ClientTag, url: str) -> bool:
    return not client_tag_keywords(tag).isdisjoint(asset_vocabulary(url))


def annotate(url: str, client_tags: tuple[ClientTag, ...] | list[ClientTag]) -> list[dict[str, str]]:
    """The full tag list of one asset: standard tags, then matching client tags."""
    tags = [{"category": category, "label": label} for category, label in derive_tags(url)]
    seen: set[str] = set()
    for tag in client_tags:
        if tag.label not in seen and client_tag_matches(tag, url):
            seen.add(tag.label)
            tags.append({"category": "client", "label": tag.label})
    return tags


def url_fails_tagging(url: str) -> bool:
    """The ``fail`` rule (see the module docstring)."""
    lowered = url.lower()
    for marker in SCORING_MARKERS_WITH_FAIL:
        lowered = lowered.replace(marker, "")
    return "fail" in lowered


def is_url(value: str) -> bool:
    """An absolute http(s) URL: what Vidmob needs to download the asset."""
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _check_url(value: Any, where: str, errors: list[str]) -> str | None:
    if not isinstance(value, str):
        errors.append(f"{where} must be a string")
        return None
    if not value.strip():
        errors.append(f"{where} should not be empty")
        return None
    if not is_url(value):
        errors.append(f"{where} must be a URL address")
        return None
    return value


def _check_list_size(value: Any, name: str, errors: list[str]) -> list[Any] | None:
    if not isinstance(value, list):
        errors.append(f"{name} must be an array")
        return None
    if not value:
        errors.append(f"{name} must contain at least 1 elements")
        return None
    if len(value) > MAX_ASSETS:
        errors.append(f"{name} must contain no more than {MAX_ASSETS} elements")
        return None
    return value


def parse_guide_job(body: Any) -> tuple[list[str], list[ClientTag], list[str]]:
    """Validate a ``POST /v1/aperture/jobs`` body; return (urls, client tags, error messages)."""
    errors: list[str] = []
    if not isinstance(body, dict):
        return [], [], ["request body must be a JSON object"]
    urls: list[str] = []
    assets = _check_list_size(body.get("assets"), "assets", errors)
    for index, asset in enumerate(assets or []):
        if not isinstance(asset, dict):
            errors.append(f"assets.{index} must be an object")
            continue
        url = _check_url(asset.get("url"), f"assets.{index}.url", errors)
        if url is not None:
            urls.append(url)
    client_tags: list[ClientTag] = []
    raw_tags = body.get("clientTags")
    if raw_tags is not None:
        if not isinstance(raw_tags, list):
            errors.append("clientTags must be an array")
        else:
            for index, item in enumerate(raw_tags):
                if not isinstance(item, dict):
                    errors.append(f"clientTags.{index} must be an object")
                    continue
                label = item.get("label")
                description = item.get("description", "")
                if not isinstance(label, str) or not label.strip():
                    errors.append(f"clientTags.{index}.label must be a non-empty string")
                    continue
                if description is None:
                    description = ""
                if not isinstance(description, str):
                    errors.append(f"clientTags.{index}.description must be a string")
                    continue
                client_tags.append(ClientTag(label, description))
    return urls, client_tags, errors


def parse_media_job(body: Any) -> tuple[list[tuple[str, str]], dict[str, str], list[str]]:
    """Validate a ``POST /v1/media/aperture`` body; return ((id, url) pairs, client tags, error messages).

    ``clientTags`` is required by Vidmob's OpenAPI, so a missing one gets "clientTags must be an object".
    Creative ids must be unique within a job because ``FAILED`` reports errors keyed by creative id.
    """
    errors: list[str] = []
    if not isinstance(body, dict):
        return [], {}, ["request body must be a JSON object"]
    creatives: list[tuple[str, str]] = []
    raw = _check_list_size(body.get("creatives"), "creatives", errors)
    seen: set[str] = set()
    for index, item in enumerate(raw or []):
        if not isinstance(item, dict):
            errors.append(f"creatives.{index} must be an object")
            continue
        creative_id = item.get("id")
        if isinstance(creative_id, bool) or not isinstance(creative_id, str | int):
            errors.append(f"creatives.{index}.id must be a string")
            continue
        creative_id = str(creative_id)
        if not creative_id:
            errors.append(f"creatives.{index}.id should not be empty")
            continue
        url = _check_url(item.get("url"), f"creatives.{index}.url", errors)
        if url is None:
            continue
        if creative_id in seen:
            errors.append(f"creatives.{index}.id '{creative_id}' is duplicated")
            continue
        seen.add(creative_id)
        creatives.append((creative_id, url))
    client_tags: dict[str, str] = {}
    raw_tags = body.get("clientTags")
    if not isinstance(raw_tags, dict):
        errors.append("clientTags must be an object")
    elif len(raw_tags) > MAX_MEDIA_CLIENT_TAGS:
        errors.append(f"clientTags must contain no more than {MAX_MEDIA_CLIENT_TAGS} keys")
    else:
        for key, value in raw_tags.items():
            if not isinstance(value, str):
                errors.append(f"clientTags.{key} must be a string")
            else:
                client_tags[key] = value
    return creatives, client_tags, errors
