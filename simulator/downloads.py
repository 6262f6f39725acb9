"""Short-lived signed download links for completed media-dialect tagging jobs, and the files behind them.

Vidmob answers a COMPLETED ``GET /v1/media/aperture/{jobId}`` with ``download_url_json`` / ``download_url_csv``:
pre-signed links that need no bearer key and stop working after a while. The simulator serves them itself::

    /_sim/downloads/{job_id}.json?expires=<unix ms>&sig=<hex HMAC-SHA256>
    /_sim/downloads/{job_id}.csv?expires=<unix ms>&sig=<hex HMAC-SHA256>

A fresh link (new ``expires`` = now + ``download_ttl_s``) is minted on every status read. A link past its
expiry, or whose signature does not match (any tampering with path or ``expires``), is refused with 403 and an
S3-style XML ``<Error>`` body, as a real pre-signed object link would be.

JSON file shape::

    {"job_id": "<uuid>",
     "creatives": [{"id": "<creative id>", "url": "<url>",
                    "tags": [{"category": "visual", "label": "outdoor scene"}, ...,
                             {"category": "client", "label": "<clientTags key>"}]}]}

Creatives come in submission order; ``tags`` are exactly what the guide dialect returns for the same URL,
client tags being matched with the key as label and the value as description.

CSV file: a header ``creative_id,url,category,label`` then one row per (creative, tag).
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
from typing import Any
from urllib.parse import quote

FORMATS = ("json", "csv")


class DownloadSigner:
    """HMAC signer with a per-process secret (never the API key, which must not leak into URLs)."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def signature(self, job_id: str, fmt: str, expires_ms: int) -> str:
        message = f"{job_id}.{fmt}:{expires_ms}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def link(self, base_url: str, job_id: str, fmt: str, now: float, ttl_s: float) -> str:
        expires_ms = int((now + ttl_s) * 1000)
        sig = self.signature(job_id, fmt, expires_ms)
        return f"{base_url}/_sim/downloads/{quote(job_id)}.{fmt}?expires={expires_ms}&sig={sig}"

    def refusal(self, job_id: str, fmt: str, expires: str | None, sig: str | None, now: float) -> str | None:
        """Why the link is refused (an S3 error code), or None when it is valid."""
        if not expires or not sig or not expires.isdigit():
            return "AccessDenied"
        if not hmac.compare_digest(self.signature(job_id, fmt, int(expires)), sig):
            return "SignatureDoesNotMatch"
        if now * 1000 > int(expires):
            return "AccessDenied"
        return None


def s3_error(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>'
    ).encode()


def render_json(job_id: str, creatives: list[dict[str, Any]]) -> bytes:
    return json.dumps({"job_id": job_id, "creatives": creatives}, separators=(",", ":")).encode()


def render_csv(creatives: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["creative_id", "url", "category", "label"])
    for creative in creatives:
        for tag in creative["tags"]:
            writer.writerow([creative["id"], creative["url"], tag["category"], tag["label"]])
    return buffer.getvalue().encode()
