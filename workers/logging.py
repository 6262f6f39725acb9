"""Structured logs: one JSON object per line, saying which task and which job it is about.

Every line has the same keys (null when unknown): ``ts``, ``level``, ``logger``, ``process``,
``message``, ``task_name``, ``task_id``, ``attempt``, ``job_id``, ``scoring_id``, ``request_id``, ``vidmob_job_id``,
and ``exc`` when there is a traceback. The task fields come from Celery's current task; the job
fields from ``extra=`` on the call, else from ``bind()``: a context variable that the task hooks
(workers/signals.py) set from the message and that services fill in as they learn more.

The Vidmob API key is removed from every record that reaches our handler, whatever logged it:
the HTTP client never logs it, and this is the last line of defence if something else does.

Installed by ``install()`` through Celery's ``setup_logging`` signal, so ``celery -A workers worker``
uses it (the dispatcher calls ``configure`` itself);
APERTURE_LOG_FORMAT=text gives one human-readable line per event instead.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import sys
from typing import Any

from celery._state import get_current_task
from celery.signals import setup_logging

from services.log_context import CONTEXT_FIELDS, bind, bound, clear

__all__ = ["bind", "bound", "clear", "configure", "event_fields", "make_handler", "redact"]

REDACTED = "[REDACTED]"
_BEARER = re.compile(r"(?i)\b(bearer\s+)[^\s'\",;]+")


def event_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The task and job a record belongs to; ``extra=`` wins over the bound context."""
    fields: dict[str, Any] = {"task_name": None, "task_id": None, "attempt": None}
    task = get_current_task()
    request = getattr(task, "request", None) if task is not None else None
    if request is not None and getattr(request, "id", None):
        fields["task_name"] = task.name
        fields["task_id"] = request.id
        fields["attempt"] = (request.retries or 0) + 1
    context = bound()
    for name in CONTEXT_FIELDS:
        value = record.__dict__.get(name, context.get(name))
        fields[name] = None if value is None else str(value)
    return fields


# --- Redaction ------------------------------------------------------------------------------


def secret_values() -> list[str]:
    """The values that must never be written: the Vidmob API key, as configured."""
    found = {os.environ.get("VIDMOB_API_KEY", ""), _configured_key()}
    # A key shorter than this would turn ordinary words into [REDACTED]; real keys are long.
    return sorted((s for s in found if len(s) >= 6), key=len, reverse=True)


def _configured_key() -> str:
    try:
        from config import get_settings

        return get_settings().vidmob_api_key.get_secret_value()
    except Exception:  # noqa: BLE001  (settings that fail to load must not stop logging; the variable is covered)
        return ""


def redact(text: str, values: list[str] | None = None) -> str:
    for value in secret_values() if values is None else values:
        if value in text:
            text = text.replace(value, REDACTED)
        escaped = json.dumps(value)[1:-1]  # as it appears inside a JSON string
        if escaped != value and escaped in text:
            text = text.replace(escaped, REDACTED)
    return _BEARER.sub(lambda m: m.group(1) + REDACTED, text)


class RedactSecrets(logging.Filter):
    """Rewrites each record so that no secret survives in its message or traceback. Put on a
    handler, it sees every record the handler writes, from any logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        values = secret_values()
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        cleaned = redact(message, values)
        if record.args or cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, values)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, values)
        for name in CONTEXT_FIELDS:
            if isinstance(record.__dict__.get(name), str):
                record.__dict__[name] = redact(record.__dict__[name], values)
        return True


# --- Formatters ----------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the same keys on every line."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": record.processName,
            "message": record.getMessage(),
            **event_fields(record),
        }
        exc = record.exc_text or (self.formatException(record.exc_info) if record.exc_info else None)
        if exc:
            data["exc"] = exc
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return redact(json.dumps(data, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """For a person at a terminal: Celery's usual line, then the task and job it is about."""

    def __init__(self) -> None:
        super().__init__("[%(asctime)s: %(levelname)s/%(processName)s] %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = event_fields(record)
        parts = []
        if fields["task_name"]:
            parts.append(f"task={fields['task_name']}[{fields['task_id']}] attempt={fields['attempt']}")
        parts.extend(f"{name}={fields[name]}" for name in CONTEXT_FIELDS if fields[name])
        if parts:
            head, sep, rest = line.partition("\n")
            line = f"{head} ({' '.join(parts)}){sep}{rest}"
        return redact(line)


def make_handler(stream: Any = None, *, fmt: str = "json", logfile: str | None = None) -> logging.Handler:
    handler: logging.Handler = (
        logging.FileHandler(logfile, encoding="utf-8") if logfile else logging.StreamHandler(stream or sys.stderr)
    )
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactSecrets())
    return handler


def configure(loglevel: int | str | None = None, logfile: str | None = None, fmt: str | None = None) -> None:
    """Make the root logger write through one redacting handler in the configured format."""
    if fmt is None:
        from config import get_settings

        fmt = get_settings().log_format
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(make_handler(fmt=fmt, logfile=logfile or None))
    if loglevel:
        root.setLevel(loglevel)
    # urllib3 logs every URL at DEBUG, Vidmob's short-lived signed download links included; the
    # client logs each attempt by its endpoint template instead (clients/http.py).
    logging.getLogger("urllib3.connectionpool").setLevel(max(root.level, logging.INFO))


def _celery_setup_logging(loglevel: int | str | None = None, logfile: str | None = None, **_: object) -> None:
    configure(loglevel, logfile)


def install() -> None:
    """Make ``celery -A workers ...`` log through ``configure`` (called by the app factory): a receiver
    of Celery's ``setup_logging`` tells Celery to leave logging to us."""
    setup_logging.connect(_celery_setup_logging, weak=False, dispatch_uid="aperture-setup-logging")
