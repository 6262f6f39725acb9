"""Simulator settings.

Kept in a plain dataclass (not pydantic settings) because the simulator must start from tests and from the
CLI without reading the environment: everything it needs is passed explicitly, and everything can be changed
live through ``POST /_sim/config``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# Fields that hold durations (and the noise's sigma): they must be non-negative numbers.
_DURATION_FIELDS = (
    "pending_s",
    "processing_s",
    "scoring_s",
    "download_ttl_s",
    "processing_per_asset_s",
    "processing_noise_sigma",
)


@dataclass
class SimulatorConfig:
    """Behaviour knobs of the simulator.

    Timings are snapshotted into each job / media submission when it is created, so changing them later only
    affects new work: a job's state never moves backwards because somebody shortened ``pending_s``.
    """

    api_key: str = "sim-secret-key"
    # A tagging job is PENDING (guide) / QUEUED (media) for pending_s, then PROCESSING for processing_s.
    pending_s: float = 1.0
    processing_s: float = 2.0
    # Work that grows with the job, for adaptive polling to learn: PROCESSING lasts processing_s +
    # processing_per_asset_s per asset, each asset weighted by its size (``sim_size=<factor>`` in its URL's
    # query, else 1; with ``hash_asset_sizes``, a factor from 0.5 to 2 drawn from a hash of the URL), times
    # log-normal noise of this sigma (0: none), drawn from a generator seeded with ``noise_seed`` (None:
    # unseeded). The defaults keep the fixed timings above.
    processing_per_asset_s: float = 0.0
    processing_noise_sigma: float = 0.0
    hash_asset_sizes: bool = False
    noise_seed: int | None = None
    # A media scoring submission is PROCESSING for scoring_s, then COMPLETE (or its URL-rule outcome).
    scoring_s: float = 2.0
    # Lifetime of the signed download links handed out by the media dialect.
    download_ttl_s: float = 300.0
    # When true every scored media answers NO_DATA_MEDIA_NOT_TAGGED on tag-dependent guidelines, forever.
    never_tagged: bool = False
    # Base URL used in download links; None means "whatever Host the client used to reach us".
    public_url: str | None = None
    # Largest accepted request body; bigger ones get 413 without being read into memory.
    max_body_bytes: int = 10 * 1024 * 1024
    # Log one line per request through logging at INFO (otherwise DEBUG). Never includes headers.
    log_requests: bool = False
    # At most this many requests per endpoint in any 1-second window, the rest answered 429 with
    # Retry-After (simulator/traffic.py); 0 = no limit.
    rate_limit_per_s: float = 0.0
    # How many seconds of per-second request counts /_sim/stats keeps.
    stats_keep_s: int = 60

    def update(self, changes: dict[str, Any]) -> list[str]:
        """Apply ``changes`` in place after validating all of them; return error messages (nothing applied if any)."""
        errors: list[str] = []
        known = {f.name: f for f in dataclasses.fields(self)}
        validated: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in known:
                errors.append(f"unknown config field: {name}")
                continue
            coerced, error = _coerce(name, value)
            if error:
                errors.append(error)
            else:
                validated[name] = coerced
        if not errors:
            for name, value in validated.items():
                setattr(self, name, value)
        return errors

    def public_dict(self) -> dict[str, Any]:
        """The config as JSON, with the API key redacted (it must never leave the process)."""
        data = dataclasses.asdict(self)
        data["api_key"] = "***"
        return data


def _coerce(name: str, value: Any) -> tuple[Any, str | None]:
    if name in _DURATION_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            return None, f"{name} must be a non-negative number"
        return float(value), None
    if name == "noise_seed":
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            return None, "noise_seed must be an integer or null"
        return value, None
    if name in ("never_tagged", "log_requests", "hash_asset_sizes"):
        if not isinstance(value, bool):
            return None, f"{name} must be a boolean"
        return value, None
    if name == "rate_limit_per_s":
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            return None, f"{name} must be a non-negative number"
        return float(value), None
    if name in ("max_body_bytes", "stats_keep_s"):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            return None, f"{name} must be a positive integer"
        return value, None
    if name == "api_key":
        if not isinstance(value, str) or not value:
            return None, "api_key must be a non-empty string"
        return value, None
    if name == "public_url":
        if value is not None and not isinstance(value, str):
            return None, "public_url must be a string or null"
        return (value.rstrip("/") if value else None), None
    return value, None
