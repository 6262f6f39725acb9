"""Thin Celery tasks over services/. Names are public and pinned by tests."""

from tasks import maintenance, tagging

__all__ = ["maintenance", "tagging"]
