"""The Celery application. `celery -A workers worker|flower` and the dispatcher find it here."""

from __future__ import annotations

import sys
from urllib.parse import urlsplit

from celery import Celery, bootsteps
from pydantic import ValidationError

from config import get_settings
from config.celery import celery_config
from config.settings import describe_invalid
from services import domains
from workers import bounded_json, signals
from workers import logging as worker_logging
from workers.health import install_heartbeat


class ConfigurationError(SystemExit):
    """A worker, the dispatcher or Flower that cannot run as configured: one line on stderr, exit 4 like
    the `aperture` command's (a SystemExit, so `celery -A workers ...` prints the sentence, not a traceback)."""

    exit_code = 4

    def __init__(self, message: str) -> None:
        self.message = f"aperture: {message}"
        print(self.message, file=sys.stderr, flush=True)
        super().__init__(self.exit_code)


def _loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def create_app() -> Celery:
    try:
        settings = get_settings()
    except ValidationError as exc:
        raise ConfigurationError(describe_invalid(exc)) from None
    if not settings.broker_url:
        # A pod must never quietly start its own private broker: refuse, and say what to do.
        raise ConfigurationError(
            "APERTURE_BROKER_URL is not set. Set it (e.g. redis://localhost:6379/0), or run through "
            "`aperture up`/`aperture demo`, which start an embedded Redis and set it for their processes."
        )
    # Before anything is decoded: bodies too large or too deep are refused with a reason.
    bounded_json.install(settings.max_message_bytes, settings.max_message_depth)
    app = Celery("aperture")
    app.config_from_object(celery_config(settings, settings.broker_url))
    app.steps["worker"].add(RequireApiKey)
    # Liveness for pods: a file touched while the worker's loop runs, not a broker round-trip.
    install_heartbeat(app)
    # Everything else a process of the system needs wired, explicitly, before any task runs: the
    # kinds' end hooks, the worker's signal hooks and metrics observers, JSON logs.
    domains.wire()
    signals.connect()
    worker_logging.install()
    return app


class RequireApiKey(bootsteps.Step):
    """Workers call Vidmob; the dispatcher, Flower and migrations never do and get no key (deploy/)."""

    def __init__(self, parent: object, **kwargs: object) -> None:
        super().__init__(parent, **kwargs)
        settings = get_settings()
        if not settings.vidmob_api_key.get_secret_value() and not _loopback(settings.vidmob_api_base_url):
            raise ConfigurationError(
                f"VIDMOB_API_KEY is not set, and {settings.vidmob_api_base_url} needs it: set the key, "
                "or point VIDMOB_API_BASE_URL at the simulator (`aperture simulator`)."
            )


app = create_app()

# The tasks register themselves on the app that exists now (Celery's shared_task): imported after it.
import tasks  # noqa: E402,F401
