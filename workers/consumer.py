"""The worker's consumer, with one workaround (a Redis restart must not end the worker) and two choices.

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

One choice: how soon the consumer tries again to reach a broker that went away. Celery asks kombu's
``ensure_connection`` for its defaults, 2 s, then 2 s more each time, up to 30 s apart; after a minute's
outage or partition the next try can come 16 s after the broker is back. Here the tries come
``RECONNECT_MAX_S`` apart at most (each bounded by the connect timeout), so a worker is back within
seconds of its broker, at the cost of one refused connection (and one log line) per interval while it
is away. Both brokers use this consumer.

And where the prefetch is sized: Celery reads its multiplier before the worker knows its queues, and a
worker that serves aperture.poll on RabbitMQ takes more than the others (``_prefetch_for_the_queues``).
"""

from __future__ import annotations

from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

from config import get_settings

# The longest wait between two tries at the broker while it is unreachable.
RECONNECT_MAX_S = 2.0


class Consumer(CeleryConsumer):
    # Set by Celery's __init__ (untyped there).
    prefetch_multiplier: int
    initial_prefetch_count: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._prefetch_for_the_queues()

    def _prefetch_for_the_queues(self) -> None:
        """Celery has one prefetch multiplier per worker, read before it knows its queues; the settings
        want more for a worker that serves the polls on RabbitMQ (``Settings.prefetch_multiplier_for``).
        By now ``-Q`` is applied, so the multiplier and the prefetch count built from it are set again here,
        unless ``--prefetch-multiplier`` named one (then it differs from the configuration's) or prefetch
        is off."""
        configured = int(self.app.conf.worker_prefetch_multiplier)
        if self.prefetch_multiplier != configured or not self.initial_prefetch_count:
            return
        queues = self.app.amqp.queues
        wanted = get_settings().prefetch_multiplier_for(queues.consume_from or queues)
        self.initial_prefetch_count = self.initial_prefetch_count // configured * wanted
        self.prefetch_multiplier = wanted

    def ensure_connected(self, conn: Any) -> Any:
        ensure = conn.ensure_connection

        def sooner(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("interval_start", 1.0)
            kwargs.setdefault("interval_step", 1.0)
            kwargs.setdefault("interval_max", RECONNECT_MAX_S)
            return ensure(*args, **kwargs)

        conn.ensure_connection = sooner
        try:
            return super().ensure_connected(conn)
        finally:
            conn.ensure_connection = ensure

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
