"""Configuration: one settings class, the Celery configuration built from it, every task's name.

- settings.py  ``Settings``: every knob, from the environment
- celery.py    the Celery configuration (the facts behind each choice: docs/celery.md)
- tasks.py     every task's name and queue, declared once
"""

from config.settings import Settings, get_settings

__all__ = ["Settings", "get_settings"]
