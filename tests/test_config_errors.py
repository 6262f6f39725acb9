"""A wrong setting is one line that says what is wrong and how to fix it, and a non-zero exit;
never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(argv: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("APERTURE_", "VIDMOB_"))}
    return subprocess.run(
        argv, cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=timeout, check=False
    )


def last_line(result: subprocess.CompletedProcess) -> str:
    return (result.stderr.strip() or result.stdout.strip()).splitlines()[-1]


@pytest.mark.parametrize(
    ("db", "broker", "says"),
    [
        ("postgresql://postgres@127.0.0.1:5432/no_such_db", None, "createdb no_such_db"),
        (
            "postgresql://postgres@127.0.0.1:1/aperture",
            None,
            "cannot use PostgreSQL at postgresql://postgres@127.0.0.1:1",
        ),
        ("not a url", None, "APERTURE_DATABASE_URL is not a database URL"),
        ("mysql://root@127.0.0.1/x", None, "must be a PostgreSQL URL"),
        (None, "redis://127.0.0.1:1/0", "cannot reach Redis at redis://127.0.0.1:1/0"),
    ],
    ids=["missing-database", "nothing-listening", "malformed", "not-postgres", "redis-unreachable"],
)
def test_aperture_up_with_a_wrong_url_says_so_in_one_line(app_env, tmp_path, db, broker, says):
    env = {
        "APERTURE_DATABASE_URL": db or app_env["APERTURE_DATABASE_URL"],
        "APERTURE_BROKER_URL": broker or app_env["APERTURE_BROKER_URL"],
        "APERTURE_DATA_DIR": str(tmp_path),
    }
    result = run([str(BIN / "aperture"), "up"], env)
    assert result.returncode == 4
    assert "Traceback" not in result.stdout + result.stderr
    assert says in last_line(result)


def test_a_worker_without_an_api_key_for_the_real_api_refuses_to_start(app_env):
    env = {k: v for k, v in app_env.items() if k != "VIDMOB_API_KEY"}
    env["VIDMOB_API_BASE_URL"] = "https://public-api.vidmob.com"
    result = run([str(BIN / "celery"), "-A", "workers", "worker", "--pool", "solo"], env)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert last_line(result).startswith("aperture: VIDMOB_API_KEY is not set")


@pytest.mark.parametrize(
    ("argv", "variable"),
    [
        (["-m", "celery", "-A", "workers", "worker"], "APERTURE_TASK_TIME_LIMIT_S"),
        (["-m", "workers.dispatcher"], "APERTURE_TASK_TIME_LIMIT_S"),
        (["-m", "workers.dispatcher"], "APERTURE_DISPATCH_INTERVAL_S"),
    ],
)
def test_an_invalid_setting_names_its_variable(app_env, argv, variable):
    result = run([str(BIN / "python"), *argv], {**app_env, variable: "soon"})
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert variable in last_line(result)


@pytest.mark.parametrize(
    ("argv", "env", "says"),
    [
        (
            ["-m", "celery", "-A", "workers", "worker"],
            {"APERTURE_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//"},
            "APERTURE_REDIS_URL is not set: with RabbitMQ as APERTURE_BROKER_URL",
        ),
        (
            ["-m", "workers.dispatcher"],
            {"APERTURE_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//", "APERTURE_REDIS_URL": "amqp://x//"},
            "APERTURE_REDIS_URL must be a Redis URL (redis://host:6379/0), not 'amqp'",
        ),
        (
            ["-m", "celery", "-A", "workers", "worker"],
            {"APERTURE_BROKER_URL": "kafka://127.0.0.1:9092"},
            "APERTURE_BROKER_URL must be a Redis (redis://host:6379/0) or RabbitMQ",
        ),
    ],
    ids=["rabbitmq-without-redis", "redis-url-not-redis", "unknown-broker"],
)
def test_a_broker_without_the_fleets_redis_is_one_line_and_exit_4(app_env, argv, env, says):
    result = run([str(BIN / "python"), *argv], {**app_env, **env})
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr
    assert says in last_line(result)


def test_aperture_up_with_rabbitmq_unreachable_says_so_in_one_line(app_env, tmp_path):
    env = {
        **app_env,
        "APERTURE_BROKER_URL": "amqp://guest:secret-pw@127.0.0.1:1//",
        "APERTURE_REDIS_URL": app_env["APERTURE_BROKER_URL"],
        "APERTURE_DATA_DIR": str(tmp_path),
    }
    result = run([str(BIN / "aperture"), "up"], env)
    assert result.returncode == 4
    assert "Traceback" not in result.stdout + result.stderr
    assert "cannot reach RabbitMQ at amqp://guest:**@127.0.0.1:1//" in last_line(result)
    assert "secret-pw" not in result.stdout + result.stderr
