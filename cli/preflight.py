"""Before starting anything: the configured PostgreSQL, broker and Redis answer, or one line says why not.

A wrong URL used to surface as a 60-line traceback from deep inside SQLAlchemy or kombu. Each
check here turns the usual mistakes (a malformed URL, nothing listening, a database that does
not exist, a password refused) into one sentence that names the variable to fix.
"""

from __future__ import annotations

import click


class ConfigurationError(click.ClickException):
    """Something in the environment a person must fix: said in one line, exit 4."""

    exit_code = 4


def check_database(url: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from models.db import libpq_url, sqlalchemy_url

    try:
        parsed = make_url(sqlalchemy_url(url))
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise ConfigurationError(
            "APERTURE_DATABASE_URL is not a database URL (expected postgresql://user:password@host:5432/name)"
        ) from None
    shown = parsed.set(drivername=url.split("://", 1)[0]).render_as_string(hide_password=True)
    if not parsed.drivername.startswith(("postgresql", "postgres")):
        raise ConfigurationError(f"APERTURE_DATABASE_URL must be a PostgreSQL URL, not {parsed.drivername}://")
    libpq = libpq_url(url)  # as written: libpq reads a multi-host list itself
    try:
        psycopg.connect(libpq, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
        hint = "fix APERTURE_DATABASE_URL, or unset it to use an embedded PostgreSQL"
        if "does not exist" in detail:
            hint = f"create it (createdb {parsed.database}) or fix APERTURE_DATABASE_URL"
        elif "password" in detail or "authentication" in detail:
            hint = "fix the user or password in APERTURE_DATABASE_URL"
        raise ConfigurationError(
            f"cannot use PostgreSQL at {shown}: {detail.removeprefix('FATAL:').strip()}; {hint}"
        ) from None


def check_broker(url: str) -> None:
    from config.settings import is_rabbitmq_url

    if is_rabbitmq_url(url):
        check_rabbitmq(url)
    else:
        check_redis(url, variable="APERTURE_BROKER_URL")


def check_rabbitmq(url: str) -> None:
    from kombu import Connection
    from kombu.utils.url import maybe_sanitize_url

    connection = Connection(url, connect_timeout=5)
    try:
        connection.ensure_connection(max_retries=1, timeout=5)
    except Exception as exc:  # noqa: BLE001  # socket, AMQP (access refused, no vhost) and kombu errors alike
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigurationError(
            f"cannot reach RabbitMQ at {maybe_sanitize_url(url)}: {detail}; start it, or fix the host, "
            "user, password or vhost in APERTURE_BROKER_URL"
        ) from None
    finally:
        connection.release()


def check_redis(url: str, *, variable: str) -> None:
    import redis

    shown = _hide_password(url)
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    except ValueError as exc:
        raise ConfigurationError(f"{variable} is not a Redis URL ({exc}); expected redis://host:6379/0") from None
    try:
        client.ping()
    except redis.RedisError as exc:
        raise ConfigurationError(
            f"cannot reach Redis at {shown}: {exc}; start it, fix {variable}, or unset it to use an embedded Redis"
        ) from None
    finally:
        client.close()


def _hide_password(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password:
        return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()
    return url
