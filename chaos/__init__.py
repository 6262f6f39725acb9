"""`make chaos`: the system under kill -9, broker and database outages, API faults and hostile
messages, on real processes and its own servers. Figures: docs/reliability.md."""
