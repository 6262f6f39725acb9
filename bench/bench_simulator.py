"""Load benchmark of the Vidmob API simulator, side by side with a trivial stdlib server.

Why: the simulator must hold thousands of concurrent jobs and serve hundreds of requests a second on a small
machine, so the product's own load tests measure the product, not the simulator. The baseline (a
ThreadingHTTPServer answering one constant JSON, same keep-alive setup) shows how much of the cost is the
stdlib HTTP stack itself and how much is the simulator's logic.

Each server runs in its own process (so the client threads do not share its GIL). The script creates
``--jobs`` guide-dialect tagging jobs (1-3 assets each), then ``--threads`` client threads, each with its own
keep-alive connection, poll random job statuses for ``--seconds``. Timings are chosen so that polls see a mix
of PENDING, PROCESSING and COMPLETE (with annotations) jobs.

Usage::

    .venv/bin/python bench/bench_simulator.py [--jobs 5000] [--threads 16] [--seconds 10] [--client requests]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulator import SimulatorConfig, start_simulator

API_KEY = "bench-key"
HEADERS = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}


# --------------------------------------------------------------------------- servers (child processes)
def _run_simulator(port_queue: Any, stop_event: Any) -> None:
    config = SimulatorConfig(api_key=API_KEY, pending_s=3.0, processing_s=8.0)
    handle = start_simulator("127.0.0.1", 0, config)
    port_queue.put(handle.port)
    stop_event.wait()
    handle.stop()


class _ConstantHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    body = json.dumps({"status": "OK", "result": {"job_id": "x", "status": "PENDING"}}).encode()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_GET = _answer
    do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        return


def _run_baseline(port_queue: Any, stop_event: Any) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ConstantHandler)
    server.daemon_threads = True
    server.request_queue_size = 1024
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port_queue.put(server.server_address[1])
    stop_event.wait()
    server.shutdown()
    server.server_close()


class ServerProcess:
    def __init__(self, target: Callable[[Any, Any], None]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._ports = ctx.Queue()
        self._stop = ctx.Event()
        self._proc = ctx.Process(target=target, args=(self._ports, self._stop), daemon=True)

    def __enter__(self) -> str:
        self._proc.start()
        return f"http://127.0.0.1:{self._ports.get(timeout=30)}"

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._proc.join(10)


# --------------------------------------------------------------------------- clients
class Client:
    """One keep-alive connection, through requests.Session or bare http.client (lighter on the client CPU)."""

    def __init__(self, base_url: str, kind: str) -> None:
        self.base_url = base_url
        self.kind = kind
        if kind == "requests":
            self.session = requests.Session()
            self.session.headers.update(HEADERS)
        else:
            host, port = base_url.removeprefix("http://").split(":")
            self.conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        if self.kind == "requests":
            response = self.session.request(method, self.base_url + path, data=data, timeout=30)
            return response.status_code, response.content
        self.conn.request(method, path, body=data, headers=HEADERS)
        reply = self.conn.getresponse()
        return reply.status, reply.read()

    def close(self) -> None:
        if self.kind == "requests":
            self.session.close()
        else:
            self.conn.close()


def create_jobs(base_url: str, count: int, threads: int, kind: str) -> list[str]:
    local = threading.local()

    def one(index: int) -> str:
        if not hasattr(local, "client"):
            local.client = Client(base_url, kind)
        assets = [{"url": f"https://cdn.example.com/bench/{index}-{n}.mp4"} for n in range(1 + index % 3)]
        status, body = local.client.request("POST", "/v1/aperture/jobs", {"assets": assets})
        if status != 200:
            raise RuntimeError(f"job creation failed: {status} {body[:200]!r}")
        return json.loads(body)["result"]["job_id"]

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(count)))


def hammer(base_url: str, job_ids: list[str], threads: int, seconds: float, kind: str) -> dict[str, float]:
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors = [0] * threads
    start_barrier = threading.Barrier(threads + 1)
    deadline_box: list[float] = []

    def worker(slot: int) -> None:
        client = Client(base_url, kind)
        rng = random.Random(slot)
        mine = latencies[slot]
        start_barrier.wait()
        deadline = deadline_box[0]
        try:
            while True:
                t0 = time.perf_counter()
                if t0 >= deadline:
                    break
                status, _ = client.request("GET", f"/v1/aperture/jobs/{rng.choice(job_ids)}/status")
                mine.append(time.perf_counter() - t0)
                if status != 200:
                    errors[slot] += 1
        finally:
            client.close()

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    began = time.perf_counter()
    deadline_box.append(began + seconds)
    start_barrier.wait()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - began
    flat = sorted(x for slot in latencies for x in slot)
    return {
        "requests": len(flat),
        "errors": sum(errors),
        "rps": len(flat) / elapsed,
        "p50_ms": statistics.median(flat) * 1000,
        "p99_ms": flat[min(len(flat) - 1, int(len(flat) * 0.99))] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--client", choices=("requests", "httpclient"), default="requests")
    args = parser.parse_args()

    with ServerProcess(_run_simulator) as sim_url:
        t0 = time.perf_counter()
        job_ids = create_jobs(sim_url, args.jobs, args.threads, args.client)
        created_s = time.perf_counter() - t0
        sim = hammer(sim_url, job_ids, args.threads, args.seconds, args.client)
        stats = requests.get(f"{sim_url}/_sim/stats", timeout=30).json()
    with ServerProcess(_run_baseline) as base_url:
        base = hammer(base_url, ["x"], args.threads, args.seconds, args.client)

    print(f"client: {args.client}, {args.threads} threads with keep-alive, {args.seconds:.0f} s per server")
    print(f"created {args.jobs} jobs in {created_s:.1f} s ({args.jobs / created_s:.0f} jobs/s)")
    print(f"jobs held: {stats['jobs_held']}  states at the end: {stats['jobs_by_state']}")
    print(f"{'server':<12}{'requests':>10}{'errors':>8}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, row in (("simulator", sim), ("baseline", base)):
        print(
            f"{name:<12}{row['requests']:>10.0f}{row['errors']:>8.0f}{row['rps']:>10.0f}"
            f"{row['p50_ms']:>10.2f}{row['p99_ms']:>10.2f}"
        )
    print(f"simulator / baseline throughput: {sim['rps'] / base['rps']:.2f}")


if __name__ == "__main__":
    main()
