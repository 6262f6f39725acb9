"""The Celery application. `celery -A workers worker|beat|flower` finds it here."""

from __future__ import annotations

from celery import Celery

from config import get_settings
from config.celery import celery_config
from workers import messages
from workers.health import install_heartbeat


class BrokerNotConfigured(RuntimeError):
    pass


def create_app() -> Celery:
    settings = get_settings()
    if not settings.broker_url:
        # A pod must never quietly start its own private broker: refuse, and say what to do.
        raise BrokerNotConfigured(
            "APERTURE_BROKER_URL is not set. Set it (e.g. redis://localhost:6379/0), or run through "
            "`aperture up`/`aperture demo`, which start an embedded Redis and set it for their processes."
        )
    # Before anything is decoded: bodies too large or too deep are refused with a reason.
    messages.install(settings.max_message_bytes, settings.max_message_depth)
    app = Celery("aperture")
    app.config_from_object(celery_config(settings, settings.broker_url))
    app.conf.beat_schedule_filename = f"{settings.data_dir}/celerybeat-schedule"
    app.autodiscover_tasks(["tasks"], related_name=None, force=True)
    return app


app = create_app()
# Liveness for pods: a file touched while the worker's loop runs, not a broker round-trip.
install_heartbeat(app)

# Registering the tasks and the worker hooks needs `app` to exist first.
import tasks  # noqa: E402,F401

# JSON log lines: importing workers.logging hooks Celery's setup_logging.
import workers.logging  # noqa: E402
import workers.signals  # noqa: E402,F401
