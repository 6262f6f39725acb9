"""The job a log line is about: a context variable that services fill in and the log
formatter (workers/logging.py) reads. Kept here, below both, so services never import
the worker layer."""

from __future__ import annotations

from contextvars import ContextVar

CONTEXT_FIELDS = ("job_id", "scoring_id", "request_id", "caller", "vidmob_job_id")
_context: ContextVar[dict[str, str] | None] = ContextVar("aperture_log_context", default=None)


# --- Job context ------------------------------------------------------------------------------


def bind(**fields: object) -> None:
    """Add row fields (``job_id`` or ``scoring_id``, ``request_id``, ``caller``, ``vidmob_job_id``) to every
    line logged from here until the task ends. None values are skipped, so a caller can pass what it has."""
    unknown = set(fields) - set(CONTEXT_FIELDS)
    if unknown:
        raise TypeError(f"unknown log context field(s): {', '.join(sorted(unknown))}")
    current = dict(_context.get() or {})
    current.update({k: str(v) for k, v in fields.items() if v is not None})
    _context.set(current)


def clear() -> None:
    """Forget the job fields: called when a task starts and ends, since a pool process runs
    one task after another in the same context."""
    _context.set(None)


def bound() -> dict[str, str]:
    return dict(_context.get() or {})
