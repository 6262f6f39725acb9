"""python -m chaos [--size smoke|full] [--broker redis|rabbitmq|both] [--only a,b,...] [--parallel N] [--json FILE]:
one row per scenario and broker (h runs on RabbitMQ only: a cluster of its own)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from chaos.harness import BROKERS, Row, dump, print_rows
from chaos.scenarios import ORDER, SCENARIOS, SIZES, Size
from cli.processes import interrupt_on_term


def units(size: Size, brokers: tuple[str, ...], only: str | None) -> list[tuple[str, str]]:
    """(broker, scenario letter) pairs to run, RabbitMQ's first: its nodes take longest to start and stop,
    so with ``--parallel`` they should not be the last lane to finish."""
    pairs = []
    for broker in sorted(brokers, key=lambda b: b != "rabbitmq"):
        chosen = only or (size.rabbitmq_scenarios if broker == "rabbitmq" else None) or ORDER
        letters = [letter.strip() for letter in chosen.split(",")]
        pairs += [(broker, letter) for letter in letters if broker == "rabbitmq" or letter != "h"]
    return pairs


def run_here(size: Size, broker: str, letter: str) -> list[Row]:
    t0 = time.monotonic()
    result = SCENARIOS[letter](size, broker)
    rows = result if isinstance(result, list) else [result]
    for row in rows:
        row.notes.append(f"scenario took {time.monotonic() - t0:.0f} s")
        print_rows([row])
        sys.stdout.flush()
    return rows


def run_apart(size_name: str, broker: str, letter: str) -> list[Row]:
    """One scenario in a process of its own (every scenario starts its own servers on free ports, so several
    run side by side); its output printed whole once it ends, its rows read back from its JSON."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        argv = [sys.executable, "-m", "chaos", "--size", size_name, "--broker", broker, "--only", letter]
        done = subprocess.run([*argv, "--json", out.name], capture_output=True, text=True, check=False)
        sys.stdout.write(done.stdout.split("\nchaos (")[0].rstrip("\n") + "\n")
        sys.stdout.flush()
        try:
            rows = [Row(**row) for row in json.loads(Path(out.name).read_text() or "[]")]
        except (OSError, ValueError, TypeError):
            rows = []
    if done.returncode not in (0, 1) or not rows:
        failed = Row(f"{letter} [{broker}]")
        # The first lines too: a library's own log of what failed comes before the traceback's tail.
        text = done.stderr if len(done.stderr) <= 4000 else f"{done.stderr[:2000]}\n...\n{done.stderr[-2000:]}"
        failed.unexpected.append(f"the scenario's process exited {done.returncode}: {text}")
        rows.append(failed)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument(
        "--broker", choices=[*BROKERS, "both"], default="redis", help="the broker carrying the messages"
    )
    parser.add_argument(
        "--only", help="scenario letters, comma-separated (default: every one; at smoke size a,h,j on RabbitMQ)"
    )
    parser.add_argument(
        "--parallel", type=int, default=1, help="scenarios run side by side, each in a process of its own"
    )
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    interrupt_on_term()  # a run stopped from outside still stops every process and server it started
    size = SIZES[args.size]
    started = time.monotonic()
    brokers = BROKERS if args.broker == "both" else (args.broker,)
    todo = units(size, brokers, args.only)
    rows: list[Row] = []
    if args.parallel > 1 and len(todo) > 1:
        with ThreadPoolExecutor(args.parallel) as pool:
            for result in pool.map(lambda unit: run_apart(args.size, *unit), todo):
                rows += result
    else:
        for broker, letter in todo:
            rows += run_here(size, broker, letter)
    print(f"\nchaos ({args.size}, {' and '.join(brokers)}), {time.monotonic() - started:.0f} s in all:")
    print_rows(rows)
    if args.json:
        dump(rows, args.json)
    failed = [r.scenario for r in rows if not r.ok()]
    if failed:
        print(f"FAILED: {', '.join(failed)}")
        return 1
    print("every scenario: 0 lost, 0 duplicate rows, duplicate Vidmob jobs within the flagged ones")
    return 0


if __name__ == "__main__":
    sys.exit(main())
