"""Builds the Vidmob clients from Settings: the only place that reads the API key."""

from __future__ import annotations

import os
from collections.abc import Callable

import requests

from clients.http import Attempt, VidmobHttp
from clients.tags import TagsClient, make_tags_client
from config import get_settings

OnAttempt = Callable[[Attempt], None]

_session: requests.Session | None = None
_session_pid: int | None = None


def _http_session() -> requests.Session:
    # One keep-alive pool per process; never shared across fork.
    global _session, _session_pid
    if _session is None or _session_pid != os.getpid():
        _session = requests.Session()
        _session_pid = os.getpid()
    return _session


def vidmob_http(on_attempt: OnAttempt | None = None) -> VidmobHttp:
    settings = get_settings()
    return VidmobHttp(
        settings.vidmob_api_base_url,
        settings.vidmob_api_key,
        connect_timeout=settings.http_connect_timeout_s,
        read_timeout=settings.http_read_timeout_s,
        session=_http_session(),
        on_attempt=on_attempt,
        download_hosts=settings.download_hosts.split(","),
        max_response_bytes=settings.http_max_response_bytes,
        max_response_seconds=settings.http_max_response_s,
    )


def tags_client(dialect: str, on_attempt: OnAttempt | None = None) -> TagsClient:
    return make_tags_client(dialect, vidmob_http(on_attempt))  # type: ignore[arg-type]
