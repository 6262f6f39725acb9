"""Tagging: a request's assets through one Vidmob Creative Tags job, its tags stored per asset.

The lifecycle (claim, look again, end, callbacks, dispatching) is the durable engine's
(services/durable/); this package decides what to submit, what a status means and what a result
stores:

- kind.py            the engine's view of a tagging job (``KIND``)
- intake.py          ``INTAKE``: a create_job request stored, valid or rejected
- claims.py          what a submission sends and a poll asks (``SubmitClaim``, ``PollClaim``)
- steps.py           the steps the tasks run, and the submit step's holds in order
- lifecycle.py       recording a submission and a poll
- policy.py          what a job status means (pure)
- annotations.py     storing a completed job's tags (upserts)
- reuse.py           assets answered from earlier tags, with no Vidmob call
- packing.py         batching: small requests in one Vidmob job (a pack), and a pack's end
- budgets.py         a caller's assets sent to Vidmob per day, and what happens past it
- capacity.py        the cap on Vidmob jobs open at once, and fair admission across callers
- callbacks.py       what the caller's callback says
- reads.py           read-only views of jobs, for the CLI and the metrics
- operator_retry.py  an operator's retry of a failed or timed-out job
"""

from services.tagging.kind import KIND

__all__ = ["KIND"]
