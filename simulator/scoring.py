"""Scoring guidelines, channels and the per-guideline verdicts of the simulated Scoring API.

Why a fixed guideline set: the product must be testable against scores it can predict. Every channel is scored
against the same five guidelines (names taken from Vidmob's standard criteria); three depend on tags:

=====================  ==================================  ===========  ================================
key                    name                                needs tags   verdict once evaluated
=====================  ==================================  ===========  ================================
BRAND_LOGO_EARLY       Brand Name or Logo Early            yes          PASS iff tag "logo visible"
HUMAN_EARLY            Human Early                         yes          PASS iff tag "human presence"
AUDIO_PRESENT          Audio Present                       yes          PASS iff "music presence" or
                                                                        "voiceover" among the tags
FITS_ASPECT_RATIO      Fits Aspect Ratio                   no           PASS/FAIL from a URL hash
VIDEO_LENGTH           Video Length Within Range           no           NOT_APPLICABLE for image URLs,
                       (Video only)                                     else PASS/FAIL from a URL hash
=====================  ==================================  ===========  ================================

The tags are the simulator's standard tags for the URL (``tagging.derive_tags``), so a scoring verdict agrees
with what the Tags API says about the same asset. Which NO_DATA code (if any) replaces the verdicts is decided
by ``state.SimState`` (it knows about tagging history and the URL rules) and passed in here.

Summary per channel (as in Vidmob's example): ``applicableCount = passCount + failCount``,
``adherencePercent = passCount / applicableCount`` as a fraction rounded to 4 places (0.75, not 75; 0 when
nothing is applicable), ``notAvailableCount`` counts NO_DATA results.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from simulator.tagging import is_url, tag_labels

# fmt: off
CHANNELS: tuple[str, ...] = (
    "META", "X", "ADWORDS", "DV360", "TIKTOK", "PINTEREST", "LINKEDIN", "SNAPCHAT", "REDDIT",
    "AMAZONADVERTISING", "AMAZONADVERTISINGDSP", "TRADEDESK", "YAHOODSP", "ALL_PLATFORMS",
)
# fmt: on
CHANNEL_ALIASES: dict[str, str] = {
    "FACEBOOK": "META",
    "INSTAGRAM": "META",
    "TWITTER": "X",
    "GOOGLE": "ADWORDS",
    "YOUTUBE": "DV360",
    "AMAZON": "AMAZONADVERTISING",
}
DEFAULT_CHANNELS: tuple[str, ...] = ("ALL_PLATFORMS",)

NO_DATA_MEDIA_NOT_TAGGED = "NO_DATA_MEDIA_NOT_TAGGED"
NO_DATA_NEW_CRITERIA = "NO_DATA_NEW_CRITERIA"
NO_DATA_MISSING_REQUIRED_TAGS = "NO_DATA_MISSING_REQUIRED_TAGS"
NO_DATA_ERROR_RETRIEVING_TAGS = "NO_DATA_ERROR_RETRIEVING_TAGS"
NO_DATA_SCORING_BACKLOG = "NO_DATA_SCORING_BACKLOG"
NO_DATA_MEDIA_TAGGING_FAILURE = "NO_DATA_MEDIA_TAGGING_FAILURE"
NO_DATA_MEDIA_DOWNLOAD_FAILURE = "NO_DATA_MEDIA_DOWNLOAD_FAILURE"

_ASPECT_BY_CHANNEL = {
    "TIKTOK": "9:16",
    "SNAPCHAT": "9:16",
    "META": "4:5",
    "PINTEREST": "2:3",
    "DV360": "16:9",
    "ADWORDS": "16:9",
    "TRADEDESK": "16:9",
    "YAHOODSP": "16:9",
}
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp")


@dataclass(frozen=True)
class Guideline:
    key: str
    name: str
    rule: str
    weight: int
    needs_tags: bool

    def rule_for(self, channel: str) -> str:
        return self.rule.format(aspect=_ASPECT_BY_CHANNEL.get(channel, "1:1"))


GUIDELINES: tuple[Guideline, ...] = (
    Guideline(
        "BRAND_LOGO_EARLY",
        "Brand Name or Logo Early",
        "Confirms if, based on this account's settings, the brand name or logo is shown in the first 2 seconds.",
        2,
        True,
    ),
    Guideline(
        "HUMAN_EARLY",
        "Human Early",
        "Indicates if a human was featured in the first 3 seconds of the creative.",
        1,
        True,
    ),
    Guideline(
        "AUDIO_PRESENT",
        "Audio Present",
        "Indicates if any audio details, such as music, voiceover or beats, are included in the video.",
        1,
        True,
    ),
    Guideline(
        "FITS_ASPECT_RATIO",
        "Fits Aspect Ratio",
        "Confirms the creative's aspect ratio is {aspect}.",
        1,
        False,
    ),
    Guideline(
        "VIDEO_LENGTH",
        "Video Length Within Range (Video only)",
        "Video length is within 6 and 30 seconds",
        1,
        False,
    ),
)


def normalize_channel(raw: str) -> str | None:
    """Canonical channel name for ``raw`` (case-insensitive, aliases resolved), or None if unknown."""
    key = raw.strip().upper()
    if key in CHANNELS:
        return key
    return CHANNEL_ALIASES.get(key)


def parse_channels(values: list[Any], where: str) -> tuple[list[str], list[str]]:
    """Normalise a list of channel names; return (channels without duplicates, error messages)."""
    channels: list[str] = []
    errors: list[str] = []
    for index, value in enumerate(values):
        if not isinstance(value, str):
            errors.append(f"{where}.{index} must be a string")
            continue
        channel = normalize_channel(value)
        if channel is None:
            errors.append(f"{where}.{index} '{value}' is not a valid channel; expected one of {', '.join(CHANNELS)}")
        elif channel not in channels:
            channels.append(channel)
    return channels, errors


def _bucket(*parts: str) -> int:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()[0]


def _tag_verdict(guideline: Guideline, url: str) -> str:
    labels = tag_labels(url)
    if guideline.key == "BRAND_LOGO_EARLY":
        ok = "logo visible" in labels
    elif guideline.key == "HUMAN_EARLY":
        ok = "human presence" in labels
    else:
        ok = "music presence" in labels or "voiceover" in labels
    return "PASS" if ok else "FAIL"


def is_image_url(url: str) -> bool:
    """Whether the URL names an image (video-only guidelines are then NOT_APPLICABLE)."""
    return url.lower().split("?", 1)[0].endswith(_IMAGE_EXTENSIONS)


def _plain_verdict(guideline: Guideline, url: str, channel: str) -> str:
    if guideline.key == "VIDEO_LENGTH" and is_image_url(url):
        return "NOT_APPLICABLE"
    return "FAIL" if _bucket(guideline.key, channel, url) % 3 == 0 else "PASS"


def verdict(guideline: Guideline, url: str, channel: str, tag_code: str | None, global_code: str | None) -> str:
    """One guideline's result. ``global_code`` replaces every verdict; ``tag_code`` the tag-dependent ones."""
    if global_code:
        return global_code
    if guideline.needs_tags:
        return tag_code or _tag_verdict(guideline, url)
    return _plain_verdict(guideline, url, channel)


def score(
    url: str, channels: list[str], tag_code: str | None, global_code: str | None
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """(summary per channel, detail list) for ``url`` on ``channels``."""
    summary: dict[str, dict[str, Any]] = {}
    detail: list[dict[str, Any]] = []
    for channel in channels:
        counts = {"PASS": 0, "FAIL": 0, "NOT_APPLICABLE": 0, "NO_DATA": 0}
        for guideline in GUIDELINES:
            result = verdict(guideline, url, channel, tag_code, global_code)
            counts["NO_DATA" if result.startswith("NO_DATA") else result] += 1
            detail.append(
                {
                    "name": guideline.name,
                    "rule": guideline.rule_for(channel),
                    "channelIdentifier": channel,
                    "result": result,
                    "weight": guideline.weight,
                }
            )
        applicable = counts["PASS"] + counts["FAIL"]
        summary[channel] = {
            "adherencePercent": round(counts["PASS"] / applicable, 4) if applicable else 0,
            "passCount": counts["PASS"],
            "failCount": counts["FAIL"],
            "applicableCount": applicable,
            "notApplicableCount": counts["NOT_APPLICABLE"],
            "notAvailableCount": counts["NO_DATA"],
        }
    return summary, detail


@dataclass
class MediaFields:
    """A validated ``POST /v1/media`` body."""

    media_id: str
    url: str
    version: str | None
    source: str | None
    name: str | None
    description: str | None
    channels: list[str]
    workspace_id: int | None
    brands: list[str]
    markets: list[str]


def _optional_str(body: dict[str, Any], key: str, errors: list[str]) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        errors.append(f"{key} must be a string")
        return None
    return value


def _optional_str_list(body: dict[str, Any], key: str, errors: list[str]) -> list[str]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        errors.append(f"each value in {key} must be a string")
        return []
    return list(value)


def parse_media_submission(body: Any) -> tuple[MediaFields | None, list[str]]:
    """Validate a ``POST /v1/media`` body; return (fields or None, error messages)."""
    if not isinstance(body, dict):
        return None, ["request body must be a JSON object"]
    errors: list[str] = []
    media_id = body.get("id")
    if media_id is None or media_id == "":
        errors.append("id should not be empty")
    elif not isinstance(media_id, str):
        errors.append("id must be a string")
    url = body.get("url")
    if url is None or url == "":
        errors.append("url should not be empty")
    elif not isinstance(url, str):
        errors.append("url must be a string")
    elif not is_url(url):
        errors.append("url must be a URL address")
    version = _optional_str(body, "version", errors)
    source = _optional_str(body, "source", errors)
    name = _optional_str(body, "name", errors)
    description = _optional_str(body, "description", errors)
    channels: list[str] = []
    raw_channels = body.get("channels")
    if raw_channels is not None:
        if not isinstance(raw_channels, list):
            errors.append("channels must be an array")
        else:
            channels, channel_errors = parse_channels(raw_channels, "channels")
            errors.extend(channel_errors)
    workspace_id = body.get("workspaceId")
    if workspace_id is not None and (isinstance(workspace_id, bool) or not isinstance(workspace_id, int)):
        errors.append("workspaceId must be an integer number")
        workspace_id = None
    brands = _optional_str_list(body, "brands", errors)
    markets = _optional_str_list(body, "markets", errors)
    if errors:
        return None, errors
    assert isinstance(media_id, str) and isinstance(url, str)
    return (
        MediaFields(media_id, url, version, source, name, description, channels, workspace_id, brands, markets),
        [],
    )
