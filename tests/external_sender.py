"""A stand-in for another application: it imports nothing of this project, only
Celery, and enqueues `aperture.create_job` by name. Usage:

    python external_sender.py BROKER_URL REQUEST_ID URL [URL ...]

Prints the task id it sent.
"""

import sys

from celery import Celery

broker, request_id, *urls = sys.argv[1:]
app = Celery("some-other-app", broker=broker)
result = app.send_task(
    "aperture.create_job",
    kwargs={
        "assets": [{"url": url, "id": f"creative-{i}"} for i, url in enumerate(urls)],
        "client_tags": [{"label": "lifestyle", "description": "Assets featuring real-life settings or activities"}],
        "request_id": request_id,
    },
    serializer="json",
)
print(result.id)
