"""The Celery configuration, built from Settings and nothing else.

Every choice here is one the durability model depends on: docs/celery.md gives the fact behind each
(Celery's, kombu's and KEDA's own documentation and trackers) and what it costs when it bites.
"""

from __future__ import annotations

from typing import Any

from kombu import Exchange, Queue

from config.settings import Settings, is_rabbitmq_url
from config.tasks import TASK_ROUTES, QueueName, queue_names

__all__ = ["TASK_ROUTES", "QueueName", "caller_config", "celery_config"]


def celery_config(settings: Settings, broker_url: str) -> dict[str, Any]:
    if is_rabbitmq_url(broker_url):
        broker = _rabbitmq(settings)
    else:
        broker = _redis(settings)
    return {
        "broker_url": broker_url,
        "broker_connection_retry_on_startup": True,
        **broker,
        # Nothing reads task results: Postgres is the record of what happened.
        "result_backend": None,
        "task_ignore_result": True,
        # JSON only: other applications send these messages, and pickle from the
        # network is code execution.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        # Ack after the task ran; every task is idempotent (tokens, compare-and-set, upserts).
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_prefetch_multiplier": settings.prefetch_multiplier,
        # Countdown messages are held in worker RAM; cap them (Celery >= 5.6).
        "worker_eta_task_limit": settings.worker_eta_task_limit,
        # TERM is a warm shutdown: running tasks finish, and closing the channel hands the
        # countdown messages this worker holds back to the broker. These two govern the cold
        # path (SIGQUIT): a grace period before tasks are cut, also when the worker is idle.
        "worker_soft_shutdown_timeout": settings.worker_soft_shutdown_timeout_s,
        "worker_enable_soft_shutdown_on_idle": True,
        "task_soft_time_limit": settings.task_soft_time_limit_s,
        "task_time_limit": settings.task_time_limit_s,
        "task_default_queue": QueueName.DEFAULT.value,
        "task_routes": TASK_ROUTES,
        "task_create_missing_queues": True,
        # Task events feed Flower and its metrics.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        # Reconnects to a broker that went away every 2 s at most, not up to 30 s apart; and on Redis a
        # restart while the worker holds unacked messages would otherwise end the worker (workers/consumer.py).
        "worker_consumer": "workers.consumer:Consumer",
        "timezone": "UTC",
        "enable_utc": True,
    }


def _redis(settings: Settings) -> dict[str, Any]:
    transport_options = {
        # One value everywhere: Redis hands an unacked message to another worker after it. Minutes (what
        # the design holds unacked, plus a margin), so a kill -9 delays what the worker held by as much.
        "visibility_timeout": settings.redis_visibility_timeout_s,
        # kombu >= 5.7: each worker restores timed-out messages every interval (the default throttle of 10
        # would scan only every tenth tick, ~100 s).
        "unacked_restore_interval": settings.unacked_restore_interval_s,
        "unacked_restore_throttle": 1,
        # A Redis that stops answering (a half-open socket, a failover) is noticed, not waited on.
        "socket_timeout": settings.broker_socket_timeout_s,
        "socket_connect_timeout": settings.broker_connect_timeout_s,
        "socket_keepalive": True,
        "retry_on_timeout": True,
        "health_check_interval": 25,
    }
    return {
        "broker_transport_options": transport_options,
        "result_backend_transport_options": transport_options,
        "task_queues": [Queue(q, Exchange(q), routing_key=q) for q in queue_names(settings.callers)],
    }


def _rabbitmq(settings: Settings) -> dict[str, Any]:
    """Every queue of config/tasks.py a quorum queue (replicated, kept on disk, no message lost with a
    node), each behind a topic exchange of its own name: native delayed delivery (Celery >= 5.5) needs a
    non-direct exchange to route a countdown through the broker's ``celery_delayed_*`` queues, so the
    wait is held by RabbitMQ, never by a worker."""
    quorum = {"x-queue-type": "quorum"}
    return {
        # Publisher confirms: a send returns once the broker has the message (for a quorum queue: on a
        # majority of its nodes), and a refused one raises instead of vanishing. Quorum queues need it.
        "broker_transport_options": {"confirm_publish": True},
        "broker_heartbeat": settings.broker_heartbeat_s,
        "broker_connection_timeout": settings.broker_connect_timeout_s,
        "task_queues": [
            Queue(q, Exchange(q, type="topic"), routing_key=q, queue_arguments=quorum)
            for q in queue_names(settings.callers)
        ],
        "task_default_queue_type": "quorum",
        "task_default_exchange_type": "topic",
        # Quorum queues refuse a global QoS: the worker sets a per-consumer prefetch instead (default on,
        # stated so that it is not turned off by accident).
        "worker_detect_quorum_queues": True,
        # The delay queues replicated too by default (Celery's default): a countdown survives a node.
        "broker_native_delayed_delivery_queue_type": settings.rabbitmq_delay_queue_type,
        # A caller's callback queue that does not exist yet is declared as Celery declares one by
        # default (classic, a direct exchange of its name), which is what a caller's own worker expects.
        "task_create_missing_queue_type": "classic",
        # The worker's remote-control queue not exclusive (Celery's default makes it so): after a network
        # partition the worker reconnects before RabbitMQ has noticed the old connection is gone (two
        # missed heartbeats), and an exclusive queue still held by that connection refuses the new
        # declaration with RESOURCE_LOCKED, which Celery treats as unrecoverable: every worker exited.
        # Not exclusive, it is declared again and expires on its own once nobody consumes it.
        "control_queue_exclusive": False,
    }


def caller_config(broker_url: str) -> dict[str, Any]:
    """What a plain ``Celery(broker=...)`` that only sends these tasks needs on top of its defaults: on
    RabbitMQ, to declare each queue as the workers do (quorum, behind a topic exchange of its name), since
    RabbitMQ refuses a declaration that differs from the queue's; on Redis nothing. README shows the same
    four settings for other applications."""
    if not is_rabbitmq_url(broker_url):
        return {}
    return {
        "task_default_queue_type": "quorum",
        "task_default_exchange_type": "topic",
        "task_create_missing_queue_type": "quorum",
        "task_create_missing_queue_exchange_type": "topic",
        "broker_transport_options": {"confirm_publish": True},
    }
