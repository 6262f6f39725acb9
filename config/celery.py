"""The Celery configuration, built from Settings and nothing else.

Every choice here is one the durability model depends on: docs/celery.md gives the fact behind each
(Celery's, kombu's and KEDA's own documentation and trackers) and what it costs when it bites.
"""

from __future__ import annotations

from typing import Any

from kombu import Exchange, Queue

from config.settings import Settings
from config.tasks import TASK_ROUTES, QueueName

__all__ = ["TASK_ROUTES", "QueueName", "celery_config"]


def celery_config(settings: Settings, broker_url: str) -> dict[str, Any]:
    transport_options = {
        # One value everywhere: Redis hands an unacked message to another worker after it.
        "visibility_timeout": settings.visibility_timeout_s,
        # A Redis that stops answering (a half-open socket, a failover) is noticed, not waited on.
        "socket_timeout": settings.broker_socket_timeout_s,
        "socket_connect_timeout": settings.broker_connect_timeout_s,
        "socket_keepalive": True,
        "retry_on_timeout": True,
        "health_check_interval": 25,
    }
    return {
        "broker_url": broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": transport_options,
        "result_backend_transport_options": transport_options,
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
        "worker_prefetch_multiplier": 1,
        # Countdown messages are held in worker RAM; cap them (Celery >= 5.6).
        "worker_eta_task_limit": settings.worker_eta_task_limit,
        # TERM is a warm shutdown: running tasks finish, and closing the channel hands the
        # countdown messages this worker holds back to Redis. These two govern the cold
        # path (SIGQUIT): a grace period before tasks are cut, also when the worker is idle.
        "worker_soft_shutdown_timeout": settings.worker_soft_shutdown_timeout_s,
        "worker_enable_soft_shutdown_on_idle": True,
        "task_soft_time_limit": settings.task_soft_time_limit_s,
        "task_time_limit": settings.task_time_limit_s,
        "task_default_queue": QueueName.DEFAULT.value,
        "task_queues": [Queue(q.value, Exchange(q.value), routing_key=q.value) for q in QueueName],
        "task_routes": TASK_ROUTES,
        "task_create_missing_queues": True,
        # Task events feed Flower and its metrics.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        "timezone": "UTC",
        "enable_utc": True,
    }
