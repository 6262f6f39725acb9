"""Thin Celery tasks over services/. Names are public and pinned by tests."""

from tasks import maintenance, scoring, tagging

__all__ = ["maintenance", "scoring", "tagging"]
