"""The system's own processes as child processes (cli/processes.py): a run stopped from outside stops what
it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support import wait_for

ROOT = Path(__file__).resolve().parent.parent

# A run of the chaos suite or a benchmark in small: a child process of its own started through
# cli.processes, stopped in a ``finally`` as theirs are.
RUN = """
import sys, time
from pathlib import Path
from cli.processes import Process, interrupt_on_term

interrupt_on_term()
child = None
try:
    child = Process("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"], {}, Path(sys.argv[1]))
    print(child.pid, flush=True)
    time.sleep(600)
finally:
    if child is not None:
        child.stop()
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_run_stopped_with_term_stops_the_processes_it_started(tmp_path: Path) -> None:
    # given a run that started a process of its own (a process group of its own, as every worker is)
    run = subprocess.Popen(
        [sys.executable, "-c", RUN, str(tmp_path / "sleeper.log")], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert run.stdout is not None
    child = int(run.stdout.readline())
    assert alive(child)
    # when it is sent TERM, as a timeout or `kill` does
    run.send_signal(signal.SIGTERM)
    run.wait(timeout=60)
    # then the process it started is gone too
    wait_for(lambda: not alive(child), timeout=30, what="the run's child process to be stopped")


FORKED_HEAP = """
import gc, os
from celery.signals import worker_before_create_process
from workers import app  # the app connects the worker's signal handlers, as `celery -A workers worker` does
before = gc.get_freeze_count()
worker_before_create_process.send(sender=None)
read, write = os.pipe()
if os.fork() == 0:
    os.write(write, str(gc.get_freeze_count()).encode())
    os._exit(0)
os.wait()
print(before, os.read(read, 64).decode())
"""


def test_a_pool_process_is_forked_from_a_frozen_heap(app_env):
    # Before the prefork pool forks, the worker moves its heap to the collector's permanent generation: a
    # full collection in the child then never writes to the pages it shares with its parent (copy on write
    # would otherwise copy the parent's heap into every pool process, about 22 MB each).
    env = os.environ | app_env
    done = subprocess.run(
        [sys.executable, "-c", FORKED_HEAP], capture_output=True, text=True, timeout=60, cwd=ROOT, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    before, in_child = map(int, done.stdout.split())
    assert before == 0 and in_child > 10_000, done.stdout
