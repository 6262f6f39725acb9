"""python -m chaos [--size smoke|full] [--broker redis|rabbitmq|both] [--only a,b,...] [--json FILE]:
one row per scenario and broker (h runs on RabbitMQ only: a cluster of its own)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from chaos.harness import BROKERS, Row, dump, print_rows
from chaos.scenarios import ORDER, SCENARIOS, SIZES
from cli.processes import interrupt_on_term


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument(
        "--broker", choices=[*BROKERS, "both"], default="redis", help="the broker carrying the messages"
    )
    parser.add_argument("--only", default=ORDER, help="scenario letters, comma-separated")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    interrupt_on_term()  # a run stopped from outside still stops every process and server it started
    size = SIZES[args.size]
    rows: list[Row] = []
    started = time.monotonic()
    brokers = BROKERS if args.broker == "both" else (args.broker,)
    for broker in brokers:
        for letter in args.only.split(","):
            t0 = time.monotonic()
            result = SCENARIOS[letter.strip()](size, broker)
            for row in result if isinstance(result, list) else [result]:
                row.notes.append(f"scenario took {time.monotonic() - t0:.0f} s")
                rows.append(row)
                print_rows([row])
                sys.stdout.flush()
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
