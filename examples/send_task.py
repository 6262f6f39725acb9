"""Enqueue a tagging job from another Python application: only Celery, nothing of this project.

    python examples/send_task.py --broker redis://localhost:6379/0 \
        --request-id campaign-42 https://cdn.example.com/a.mp4 https://cdn.example.com/b.jpg

or on RabbitMQ, ``--broker amqp://user:password@localhost:5672/vhost``.

The message is `aperture.create_job` with JSON keyword arguments, as described by
docs/schemas/aperture.create_job.json. The request id is the idempotency key: sending the same
one again never creates a second job. Prints the message's task id.

To be told when the job ends, name a task of your own application in `callback`: it is sent
with keyword arguments request_id, job_id, status and, when complete, annotations.
"""

from __future__ import annotations

import argparse
import os
import uuid

from celery import Celery


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", nargs="+", help="asset URLs (http or https)")
    parser.add_argument("--broker", default=os.environ.get("APERTURE_BROKER_URL", "redis://localhost:6379/0"))
    parser.add_argument("--request-id", default=f"example-{uuid.uuid4()}")
    parser.add_argument("--client-tag", action="append", default=[], metavar="LABEL=DESCRIPTION")
    parser.add_argument("--callback-task", help="a task of yours, sent when the job ends")
    parser.add_argument("--callback-queue", help="the queue to send it to")
    args = parser.parse_args()

    kwargs = {
        "assets": [{"url": url, "id": f"asset-{i}"} for i, url in enumerate(args.urls)],
        "client_tags": [dict(zip(("label", "description"), t.split("=", 1), strict=False)) for t in args.client_tag],
        "request_id": args.request_id,
    }
    if args.callback_task:
        kwargs["callback"] = {"task": args.callback_task, "queue": args.callback_queue}

    app = Celery("my-application", broker=args.broker)
    if args.broker.startswith(("amqp://", "amqps://")):
        # RabbitMQ: the workers' queues are quorum queues behind topic exchanges, and RabbitMQ refuses a
        # declaration that differs from the queue's, so declare each queue as they do; confirms make the send
        # return once the broker has the message.
        app.conf.update(
            task_default_queue_type="quorum",
            task_default_exchange_type="topic",
            task_create_missing_queue_type="quorum",
            task_create_missing_queue_exchange_type="topic",
            broker_transport_options={"confirm_publish": True},
        )
    try:
        # Serializer json: the workers accept nothing else. The queue is where the submit workers
        # listen; a message sent with no queue lands on "celery", which they consume too.
        result = app.send_task("aperture.create_job", kwargs=kwargs, queue="aperture.submit", serializer="json")
    finally:
        app.close()
    print(result.id)


if __name__ == "__main__":
    main()
