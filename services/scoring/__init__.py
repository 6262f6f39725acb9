"""Scoring: score a media; when Vidmob says it is not tagged, tag it, then rescore.

States of a scored media (models.scoring.ScoringState; docs/scoring.md has the diagram):

    submitting -> polling -> scored | unsupported | failed | timed_out
                     |  \\-> (NEW_CRITERIA, MISSING_REQUIRED_TAGS, ERROR_RETRIEVING_TAGS) -> submitting (rescore)
                     \\-> (MEDIA_NOT_TAGGED, MEDIA_TAGGING_FAILURE) -> awaiting_tags -> tagging
    tagging -> (tagging job COMPLETE) -> submitting (aperture.rescore) | (FAILED, TIMED_OUT) -> awaiting_tags
    any rescore or re-tag past its bound -> needs_attention

The lifecycle is the durable engine's (services/durable/); this package holds the decisions:

- kind.py         the engine's view of a scored media (``KIND``), and which task looks at a round
- intake.py       ``INTAKE``: a score_media request stored with its first round
- policy.py       what a status and a round's scores ask for (pure)
- lifecycle.py    the claims, and recording a submission and a poll; rounds and rescores
- storage.py      a round's scores, stored and read back
- tag_batches.py  media waiting for tags, put into tagging jobs; what a tagging job's end does to them
- callbacks.py    what the caller's callback says
- steps.py        the steps the tasks run
"""

from services.scoring.kind import KIND

__all__ = ["KIND"]
