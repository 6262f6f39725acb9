"""The system's logic: everything between a task's arguments and PostgreSQL and Vidmob.

Services take a Session and never commit (the task or CLI command owns the transaction), never hold
a transaction open across an HTTP call, and return what to send after commit as plain values.

- durable/     the engine: the lifecycle tagging jobs and scored media share, written once
- tagging/     tagging jobs: submit, poll, store tags; reuse, packing (batching), the open-jobs cap
- scoring/     scored media: score, tag what Vidmob says is untagged, rescore
- library/     the stored tags as an inventory (search, counts, the report's data)
- contract.py  the public tasks' arguments as pydantic models (the JSON Schemas come from them)
- callers.py   who sent a request (RabbitMQ's user_id, or Redis's declared caller), the callback
               allowlist of each caller, their weights
- schema.py    the JSON Schemas of the public tasks, generated from the contract
- domains.py   the kinds of durable row and how they listen to each other (``wire()``)
- gateway.py   the way out to Vidmob: clients built from the settings, behind the fleet's circuit
               breaker and rate limit; the only reader of the API key
- log_context.py  which row a log line is about
"""
