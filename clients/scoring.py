"""The Scoring ("Media Scoring") API client, plus the helpers that say what a score result asks for.

Why here: it is the other half of the loop. Some guidelines come back ``NO_DATA_MEDIA_NOT_TAGGED`` until
the asset went through the Tags API; ``classify_result`` turns each result code into one action so that
services branch on a small enum instead of on Vidmob's strings.

Accepted shapes of ``result.summary`` in the scores response (Vidmob documents "per channel" only):

- an object keyed by channel: ``{"TIKTOK": {"adherencePercent": ..., "passCount": ..., ...}}``;
- a list of objects naming their channel in ``channel`` or ``channelIdentifier``.

In both, a missing count reads as 0 and a missing/null ``adherencePercent`` as None; a count that is not
an integer, or any other shape, is a ``MalformedResponseError`` (retryable). Channel keys are kept as
Vidmob spells them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from clients._shape import (
    as_object,
    optional_int,
    optional_number,
    optional_str,
    require_id,
    require_list,
    require_str,
    result_of,
)
from clients.errors import ResponseShapeError
from clients.http import VidmobHttp

logger = logging.getLogger(__name__)

CHANNELS = frozenset(
    {
        "META",
        "X",
        "ADWORDS",
        "DV360",
        "TIKTOK",
        "PINTEREST",
        "LINKEDIN",
        "SNAPCHAT",
        "REDDIT",
        "AMAZONADVERTISING",
        "AMAZONADVERTISINGDSP",
        "TRADEDESK",
        "YAHOODSP",
        "ALL_PLATFORMS",
    }
)
CHANNEL_ALIASES = {
    "FACEBOOK": "META",
    "INSTAGRAM": "META",
    "TWITTER": "X",
    "GOOGLE": "ADWORDS",
    "YOUTUBE": "DV360",
    "AMAZON": "AMAZONADVERTISING",
}


def normalize_channel(name: str) -> str:
    """Vidmob's canonical channel name for ``name`` (case-insensitive, aliases resolved).

    Raises ValueError for an unknown channel: better to fail at submit time than score on nothing.
    """
    key = name.strip().upper()
    key = CHANNEL_ALIASES.get(key, key)
    if key not in CHANNELS:
        raise ValueError(f"unknown scoring channel {name!r}; known: {', '.join(sorted(CHANNELS))}")
    return key


def _normalize_channels(channels: Sequence[str]) -> list[str]:
    # dict.fromkeys keeps the first order and drops duplicates (e.g. FACEBOOK and INSTAGRAM -> META once).
    return list(dict.fromkeys(normalize_channel(channel) for channel in channels))


class MediaScoringStatus(StrEnum):
    COMPLETE = "COMPLETE"
    PROCESSING = "PROCESSING"
    UNSUPPORTED = "UNSUPPORTED"
    FAILED = "FAILED"
    ERROR = "ERROR"

    @property
    def is_final(self) -> bool:
        """COMPLETE, UNSUPPORTED and FAILED do not change any more: stop polling."""
        return self in (
            MediaScoringStatus.COMPLETE,
            MediaScoringStatus.UNSUPPORTED,
            MediaScoringStatus.FAILED,
        )

    @property
    def worth_retrying(self) -> bool:
        """ERROR is Vidmob's transient failure: submitting again (a new version) may succeed."""
        return self is MediaScoringStatus.ERROR


class ScoreAction(StrEnum):
    """What a guideline result asks the system to do next."""

    SCORED = "scored"
    TAG_THEN_RESCORE = "tag_then_rescore"
    RETAG_THEN_RESCORE = "retag_then_rescore"
    WAIT_AND_REFETCH = "wait_and_refetch"
    RESCORE = "rescore"
    NOT_FIXABLE = "not_fixable"


_RESULT_ACTIONS = {
    "PASS": ScoreAction.SCORED,
    "FAIL": ScoreAction.SCORED,
    "NOT_APPLICABLE": ScoreAction.SCORED,
    "NO_DATA_MEDIA_NOT_TAGGED": ScoreAction.TAG_THEN_RESCORE,
    "NO_DATA_MEDIA_TAGGING_FAILURE": ScoreAction.RETAG_THEN_RESCORE,
    "NO_DATA_SCORING_BACKLOG": ScoreAction.WAIT_AND_REFETCH,
    "NO_DATA_NEW_CRITERIA": ScoreAction.RESCORE,
    "NO_DATA_MISSING_REQUIRED_TAGS": ScoreAction.RESCORE,
    "NO_DATA_ERROR_RETRIEVING_TAGS": ScoreAction.RESCORE,
}


def classify_result(result: str) -> ScoreAction:
    """The action for a guideline ``result``: PASS/FAIL/NOT_APPLICABLE are scored; each NO_DATA code has
    its fix; any other ``NO_DATA``/``NO_DATA_*`` (download failure, recognition failure, predates model...)
    is not fixable by retrying. Case-insensitive.

    Raises ValueError for a value that is neither a verdict nor a NO_DATA code, so a new Vidmob result
    type is noticed instead of silently counted as something it is not.
    """
    key = result.strip().upper()
    action = _RESULT_ACTIONS.get(key)
    if action is not None:
        return action
    if key == "NO_DATA" or key.startswith("NO_DATA_"):
        return ScoreAction.NOT_FIXABLE
    raise ValueError(f"unknown guideline result {result!r}")


@dataclass(frozen=True)
class ChannelSummary:
    adherence_percent: float | None
    pass_count: int
    fail_count: int
    applicable_count: int
    not_applicable_count: int
    not_available_count: int


@dataclass(frozen=True)
class GuidelineResult:
    name: str
    rule: str | None
    channel: str
    result: str
    weight: float | None

    @property
    def action(self) -> ScoreAction:
        """``classify_result(self.result)``."""
        return classify_result(self.result)


@dataclass(frozen=True)
class Scores:
    """``media`` is passed through as Vidmob sent it; ``summary`` is keyed by channel."""

    media: dict[str, Any]
    summary: dict[str, ChannelSummary]
    detail: tuple[GuidelineResult, ...]


_SUBMIT = "/v1/media"
_STATUS = "/v1/media/{media_id}/status"
_SCORES = "/v1/scoring/media/{media_id}/scores"


class ScoringClient:
    """Submit media for scoring, poll its status, fetch its detailed scores."""

    def __init__(self, http: VidmobHttp) -> None:
        self._http = http

    def submit_media(
        self,
        *,
        media_id: str,
        url: str,
        version: str | None = None,
        channels: Sequence[str] = (),
        workspace_id: int | None = None,
        name: str | None = None,
    ) -> str:
        """Submit one media; return Vidmob's ``uniqueId``. The same id + version again -> ConflictError.

        Channels are normalized (aliases resolved; unknown -> ValueError before any HTTP call).
        """
        payload: dict[str, Any] = {"id": media_id, "url": url}
        if version is not None:
            payload["version"] = version
        if name is not None:
            payload["name"] = name
        if channels:
            payload["channels"] = _normalize_channels(channels)
        if workspace_id is not None:
            payload["workspaceId"] = workspace_id
        return self._http.request("POST", _SUBMIT, json=payload, expected=(200, 201), parse=_parse_unique_id)

    def get_status(self, unique_id: str) -> MediaScoringStatus:
        return self._http.request(
            "GET", _STATUS, path_params={"media_id": unique_id}, expected=(200,), parse=self._parse_status
        )

    def get_scores(self, unique_id: str, channels: Sequence[str] = ()) -> Scores:
        """Detailed scores; ``channels`` (normalized) limits them, empty means all of the media's."""
        params = {"format": "detail"}
        if channels:
            params["channel"] = ",".join(_normalize_channels(channels))
        return self._http.request(
            "GET",
            _SCORES,
            path_params={"media_id": unique_id},
            params=params,
            expected=(200,),
            parse=_parse_scores,
        )

    def _parse_status(self, body: dict[str, Any]) -> MediaScoringStatus:
        raw = require_str(result_of(body), "status", "result")
        try:
            return MediaScoringStatus(raw)
        except ValueError:
            shown = self._http.redact(raw)[:64]
            logger.warning("vidmob scoring: unknown media status %r", shown)
            raise ResponseShapeError(f"unknown media scoring status {shown!r}") from None


def _parse_unique_id(body: dict[str, Any]) -> str:
    return require_id(result_of(body), "uniqueId", "result")


def _parse_scores(body: dict[str, Any]) -> Scores:
    result = result_of(body)
    media = result.get("media", {})
    if not isinstance(media, dict):
        raise ResponseShapeError("result.media is not an object")
    detail = require_list(result, "detail", "result")
    return Scores(
        media=media,
        summary=_parse_summary(result.get("summary")),
        detail=tuple(_guideline(entry, f"result.detail[{i}]") for i, entry in enumerate(detail)),
    )


def _parse_summary(raw: Any) -> dict[str, ChannelSummary]:
    if isinstance(raw, dict):
        return {
            str(channel): _channel_summary(as_object(entry, f"result.summary.{channel}"), f"result.summary.{channel}")
            for channel, entry in raw.items()
        }
    if isinstance(raw, list):
        summary: dict[str, ChannelSummary] = {}
        for i, entry in enumerate(raw):
            where = f"result.summary[{i}]"
            obj = as_object(entry, where)
            channel = optional_str(obj, "channel", where) or require_str(obj, "channelIdentifier", where)
            summary[channel] = _channel_summary(obj, where)
        return summary
    raise ResponseShapeError("result.summary is missing or neither an object nor a list")


def _channel_summary(obj: dict[str, Any], where: str) -> ChannelSummary:
    return ChannelSummary(
        adherence_percent=optional_number(obj, "adherencePercent", where),
        pass_count=optional_int(obj, "passCount", where),
        fail_count=optional_int(obj, "failCount", where),
        applicable_count=optional_int(obj, "applicableCount", where),
        not_applicable_count=optional_int(obj, "notApplicableCount", where),
        not_available_count=optional_int(obj, "notAvailableCount", where),
    )


def _rule_text(rule: Any) -> str | None:
    # Vidmob does not document the rule's type; keep any JSON value readable rather than reject the scores.
    if rule is None or isinstance(rule, str):
        return rule
    return json.dumps(rule, sort_keys=True)


def _guideline(entry: Any, where: str) -> GuidelineResult:
    obj = as_object(entry, where)
    channel = optional_str(obj, "channelIdentifier", where) or require_str(obj, "channel", where)
    return GuidelineResult(
        name=require_str(obj, "name", where),
        rule=_rule_text(obj.get("rule")),
        channel=channel,
        result=require_str(obj, "result", where),
        weight=optional_number(obj, "weight", where),
    )
