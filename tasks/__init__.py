"""Thin Celery tasks over services/: their names, declared in config/tasks, are public and pinned by tests.

- base.py         ``aperture_task`` (name, queue, retry policy), sending what a step owes after commit
- tagging.py      aperture.create_job (public), submit_job, poll_job
- scoring.py      aperture.score_media (public), submit_scoring, rescore, poll_scoring, flush_tagging
- maintenance.py  aperture.sweep: one dispatcher pass on demand
"""

from tasks import maintenance, scoring, tagging

__all__ = ["maintenance", "scoring", "tagging"]
