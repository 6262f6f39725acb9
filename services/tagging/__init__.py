"""Tagging: a request's assets through one Vidmob Creative Tags job, its tags stored per asset.

The lifecycle (claim, look again, end, callbacks, sweeping) is the durable engine's
(services/durable/); this package decides only what to submit, what a status means and
what a result stores:

- kind.py         the engine's view of a tagging job (``KIND``), its end hook
- intake.py       accept_job: store a create_job request, valid or rejected
- policy.py       what a job status means (pure)
- lifecycle.py    claim and record a submission and a poll
- annotations.py  store the tags of a completed job
- callbacks.py    what the caller's callback says
- steps.py        the steps the tasks run
"""

from services.tagging.kind import KIND

__all__ = ["KIND"]
