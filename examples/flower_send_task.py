"""Enqueue a tagging job over HTTP, through Flower's REST API: for applications that do not
speak the Celery protocol. Standard library only; the same request with curl:

    curl -u "$FLOWER_BASIC_AUTH" -H 'Content-Type: application/json' \
        -d '{"kwargs": {"assets": [{"url": "https://cdn.example.com/a.mp4"}], "request_id": "campaign-42"},
             "queue": "aperture.submit"}' \
        http://localhost:5555/api/task/send-task/aperture.create_job

Usage:

    FLOWER_BASIC_AUTH=user:password python examples/flower_send_task.py \
        --flower http://localhost:5555 --request-id campaign-42 https://cdn.example.com/a.mp4

Flower always runs behind authentication here; its API answers 401 without it. The keyword
arguments are described by docs/schemas/aperture.create_job.json. Prints Flower's answer
(the message's task id).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.request
import uuid


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", nargs="+", help="asset URLs (http or https)")
    parser.add_argument("--flower", default=os.environ.get("FLOWER_URL", "http://localhost:5555"))
    parser.add_argument("--request-id", default=f"example-{uuid.uuid4()}")
    args = parser.parse_args()
    credentials = os.environ.get("FLOWER_BASIC_AUTH")
    if not credentials:
        parser.error("set FLOWER_BASIC_AUTH=user:password")

    body = {
        "kwargs": {"assets": [{"url": url} for url in args.urls], "request_id": args.request_id},
        # Any other top-level field is passed to Celery's send_task: the submit workers' queue.
        "queue": "aperture.submit",
    }
    request = urllib.request.Request(  # noqa: S310  (the URL is the operator's)
        f"{args.flower.rstrip('/')}/api/task/send-task/aperture.create_job",
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(credentials.encode()).decode(),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310  (the URL is the operator's)
            print(response.read().decode())
    except urllib.error.HTTPError as exc:
        print(f"Flower answered {exc.code}: {exc.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
