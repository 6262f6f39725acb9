"""Flower, the Celery monitor, for `aperture up`: the same `celery -A workers flower` an operator
runs, always behind basic auth.

Credentials are never in the repository: FLOWER_BASIC_AUTH (``user:password``) from the
environment, or a random password made at start and printed once. They reach Flower through
its environment, not its command line, so `ps` does not show them.

Sane limits for a long-running monitor: at most 10,000 tasks kept in memory (Flower's default
is 100,000), offline workers dropped after 10 minutes (pods come and go), and no
``--persistent`` shelve file (it corrupts on some volumes, flower#1398). Flower learns about
tasks from events: the workers run with ``-E`` and the app sets ``task_send_sent_event``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from rich.console import Console

from cli.processes import Process, celery

FLOWER_USER = "aperture"
MAX_TASKS = 10_000
PURGE_OFFLINE_WORKERS_S = 600
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def flower_args(port: int, *, address: str = "127.0.0.1") -> list[str]:
    """Flower's options (after `celery -A workers flower`), as docker-compose also uses them."""
    return [
        f"--port={port}",
        f"--address={address}",
        f"--max_tasks={MAX_TASKS}",
        "--persistent=False",
        f"--purge_offline_workers={PURGE_OFFLINE_WORKERS_S}",
    ]


def credentials(env: dict[str, str]) -> tuple[str, bool]:
    """``user:password`` and whether it was generated here."""
    given = env.get("FLOWER_BASIC_AUTH") or os.environ.get("FLOWER_BASIC_AUTH")
    if given:
        return given, False
    return f"{FLOWER_USER}:{secrets.token_urlsafe(18)}", True


def start_flower(
    env: dict[str, str], log_dir: Path, port: int, *, address: str = "127.0.0.1", console: Console | None = None
) -> Process:
    basic_auth, generated = credentials(env)
    # Flower serves its own metrics from its own process: it must never write into the
    # workers' multiprocess metrics directory (prometheus_client only checks that the variable exists).
    child_env = {k: v for k, v in env.items() if k != MULTIPROC_ENV} | {"FLOWER_BASIC_AUTH": basic_auth}
    inherited = os.environ.pop(MULTIPROC_ENV, None)
    try:
        argv = celery("flower", *flower_args(port, address=address))
        child = Process("flower", argv, child_env, log_dir / "flower.log")
    finally:
        if inherited is not None:
            os.environ[MULTIPROC_ENV] = inherited
    console = console or Console()
    user, _, password = basic_auth.partition(":")
    where = f"http://{address if address not in ('', '0.0.0.0') else '127.0.0.1'}:{port}"  # noqa: S104
    if generated:
        console.print(
            f"[bold]Flower[/] at {where}  user [bold]{user}[/]  password [bold]{password}[/]"
            "  (set FLOWER_BASIC_AUTH=user:password to choose them)"
        )
    else:
        console.print(f"[bold]Flower[/] at {where}  user [bold]{user}[/] (password from FLOWER_BASIC_AUTH)")
    return child
