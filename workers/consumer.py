"""The worker's consumer, with one workaround: a Redis restart must not end the worker.

On a connection error Celery 5.7's consumer first ``collect()``s the broken connection, which detaches its
transport (``transport.client = None``), and then ``close()``s it. With kombu 5.7's Redis transport, when the
worker holds unacknowledged messages (a task running under ``acks_late``, a prefetched or countdown message)
and Redis refuses connections, the first close fails to restore them, so the second one tries again; the
channel's pool is gone by then and rebuilding it reads ``transport.client.hostname`` from ``None``. The
``AttributeError`` is no connection error, so nothing catches it and the worker exits ("Unrecoverable
error"). Reproduced by ``bench/bench_redis_held.py restart``; the report is in docs/reliability.md.

Here that second close, on a connection whose transport ``collect()`` already detached, ignores the
``AttributeError``: the messages stay in Redis's ``unacked`` hash and are restored after the visibility
timeout, as for a worker killed with kill -9, and the consumer reconnects as it does for any other error.
"""

from __future__ import annotations

from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer


class Consumer(CeleryConsumer):
    def on_connection_error_after_connected(self, exc: Exception) -> None:
        connection: Any = self.connection  # kombu's Connection: its close is replaced for this one call
        if connection is not None:
            connection.close = _tolerating_a_detached_transport(connection)
        super().on_connection_error_after_connected(exc)


def _tolerating_a_detached_transport(connection: Any) -> Any:
    close = connection.close

    def close_once_detached() -> None:
        try:
            close()
        except AttributeError:
            if connection._transport is not None:  # not the detached case: a real bug, let it show
                raise

    return close_once_detached
