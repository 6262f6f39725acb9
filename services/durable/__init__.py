"""The durable engine: the lifecycle that tagging jobs and scored media share, written once.

A durable row (models.durable.Durable) is accepted (intake), claimed by compare-and-set on its
token, looked at again later (parked for the dispatcher, or a countdown message), and ended with
its callback owed in the same transaction. Only this package writes the engine's columns
(``next_poll_at``, ``poll_token``, ``dispatched_at``, ``leased_until``). Domains (services/tagging,
services/scoring) declare a ``DurableKind`` and decide what each Vidmob answer means:

- kind.py        what the engine needs to know about a kind (model, states, look tasks), its end hook
- intake.py      one row per idempotency key, valid or rejected with a reason
- claims.py      taking a row: ``Claim``, claim (compare-and-set, lease), read (optimistic)
- lifecycle.py   every other transition: reschedule, end, wait on another row, wake, restart
- steps.py       a step: claim -> call with no transaction open -> record; the hooks' Protocols
- policy.py      what an API error means (pure)
- schedule.py    when to look next: parked or a countdown, backoff, jitter, lease (pure)
- prediction.py  how long remote work takes, learned from finished work (pure)
- checking.py    when to check on it: the optimal checking plan per size, the p95 guard (pure)
- durations.py   the finished work prediction learns from, read from PostgreSQL
- attempts.py    every API attempt, with its owner; the intent row before a non-idempotent call
- callbacks.py   owed callbacks and their delivery
- sweeper.py     one dispatcher pass: due and lost looks, overdue callbacks, for every kind
- messages.py    Message, OwedCallback and Outcome: what to send after commit, as plain values
- storable.py    values PostgreSQL can store, from input nobody here controls
"""
