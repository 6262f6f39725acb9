"""The durable engine: the lifecycle that tagging jobs and scored media share, written once.

A durable row (models.durable.Durable) is accepted (intake), claimed by compare-and-set on its
token, looked at again later (parked for the dispatcher, or a countdown message), and ended with
its callback owed in the same transaction. Domains (services/tagging, services/scoring) declare
a ``DurableKind`` and decide what each Vidmob answer means; everything else is here:

- kind.py       what the engine needs to know about a kind, and the end hook between domains
- intake.py     one row per idempotency key, valid or rejected with a reason
- lifecycle.py  claim / reschedule / move / end, parameterised by the kind
- policy.py     what an API error means (pure)
- steps.py      claim -> call with no transaction open -> record
- attempts.py   every API attempt, with its owner
- callbacks.py  owed callbacks and their delivery
- sweeper.py    one dispatcher pass: due looks and overdue callbacks, for every kind
- messages.py   Message and Outcome: what to send after commit, as plain values
- schedule.py   when to look next (pure)
"""
