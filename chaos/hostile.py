"""f. Hostile messages: payloads generated from the project's own JSON Schemas (hypothesis-jsonschema),
mutated into every kind of wrong, plus the classics (NUL, unpaired surrogates, control characters,
huge and deeply nested values, 10 MB bodies, wrong types, positional arguments, non-JSON and pickle
content types). Every JSON message must end as a stored row (accepted, or rejected with its reason);
a message in another content type must be refused before any task runs; every worker stays alive.
"""

from __future__ import annotations

import json
import pickle
import random
import time
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from chaos.harness import ROOT, Row, System

SCHEMA = json.loads((ROOT / "docs" / "schemas" / "aperture.create_job.json").read_text())
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
NASTY = ["\x00", "\ud800", "\x07", "\u202e", "\n", "\ufeff", "🦄" * 3, "x" * 5000, "' OR 1=1 --", "../../etc/passwd"]


# hypothesis-jsonschema draws a few payloads a second from this schema on a busy machine: the distinct ones come
# from it, the rest are cheap mutations of them (so 10,000 cases take seconds, not many minutes).
DRAWN_MAX = 200


def generated_payloads(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Half valid payloads straight from the schema, half mutated away from it."""
    found: list[dict[str, Any]] = []

    @settings(
        max_examples=min(count, DRAWN_MAX),
        database=None,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(valid=from_schema(SCHEMA), junk=JSON_VALUES, nasty=st.sampled_from(NASTY), how=st.integers(0, 7))
    def collect(valid: dict[str, Any], junk: Any, nasty: str, how: int) -> None:
        found.append(mutate(dict(valid), junk, nasty, how) if len(found) % 2 else valid)

    collect()
    rng = random.Random(seed)
    drawn = list(found)
    while len(found) < count:
        junk: Any = rng.choice([None, 0, -1.5, "", "x" * 300, [], {}, [[[]]], {"k": [1, {"v": None}]}])
        found.append(mutate(json.loads(json.dumps(rng.choice(drawn))), junk, rng.choice(NASTY), rng.randrange(8)))
    rng.shuffle(found)
    return found[:count]


def mutate(payload: dict[str, Any], junk: Any, nasty: str, how: int) -> dict[str, Any]:
    if how == 0:
        payload["assets"] = junk
    elif how == 1:
        payload[f"unknown{nasty}"] = junk
    elif how == 2 and isinstance(payload.get("assets"), list) and payload["assets"]:
        payload["assets"][0] = {"url": f"https://cdn.example.com/{nasty}.mp4", "id": nasty}
    elif how == 3:
        payload["client_tags"] = [{"label": nasty, "description": junk}]
    elif how == 4:
        payload["callback"] = {"task": nasty, "queue": "unacked"}
    elif how == 5:
        payload["request_id"] = junk
    elif how == 6:
        payload.pop("assets", None)
    else:
        payload["callback"] = junk
    return payload


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


def classics() -> list[tuple[tuple, dict[str, Any]]]:
    """(args, kwargs) of the hand-written cases."""
    url = "https://cdn.example.com/hostile.mp4"
    return [
        ((), {"assets": [{"url": url}], "notes": nested(600)}),
        ((), {"assets": [{"url": url}], "blob": "x" * 10_000_000}),
        ((), {"assets": [{"url": url + "\x00"}]}),
        ((), {"assets": [{"url": url}], "client_tags": [{"label": "a\ud800b"}]}),
        (("positional",), {"assets": [{"url": url}]}),
        ((), {"assets": "not a list"}),
        ((), {"assets": [{"url": 42}]}),
        ((), {"assets": [{"url": url}], "callback": {"task": "aperture.sweep"}}),
        ((), {"assets": [{"url": url}], "callback": {"task": "caller.done", "queue": "unacked"}}),
        ((), {}),
    ]


def send_hostile(s: System, cases: int, row: Row, timeout: float) -> None:
    from kombu import Connection

    from services.durable.intake import request_id_for
    from services.durable.storable import pg_safe

    payloads = [((), p) for p in generated_payloads(max(0, cases - len(classics())))] + classics()
    app = s.caller()
    expected: set[str] = set()
    described: dict[str, str] = {}
    try:
        for args, kwargs in payloads:
            if isinstance(kwargs.get("request_id"), str):
                kwargs["request_id"] = f"hostile-{uuid.uuid4().hex}"  # one row per message, countable
            task_id = f"hostile-{uuid.uuid4().hex}"
            app.send_task("aperture.create_job", args=args, kwargs=kwargs, task_id=task_id, queue="aperture.submit")
            key = pg_safe(request_id_for(kwargs, task_id))
            expected.add(key)
            described[key] = repr((args, kwargs))[:80]
    finally:
        app.close()
    # JSON nested deeper than any encoder will write: sent as raw text, as a hostile client would.
    with Connection(s.broker_url) as conn:
        for depth in (5_000, 100_000):
            task_id = f"hostile-{uuid.uuid4().hex}"
            body = '[[], {"assets": [{"url": "https://cdn.example.com/deep.mp4"}], "notes": '
            body += "[" * depth + "0" + "]" * depth + '}, {"callbacks": null, "errbacks": null, "chain": null}]'
            conn.Producer().publish(
                body.encode(),
                routing_key="aperture.submit",
                exchange="aperture.submit",
                content_type="application/json",
                content_encoding="utf-8",
                headers={"lang": "py", "task": "aperture.create_job", "id": task_id, "root_id": task_id},
            )
            expected.add(f"celery-task:{task_id}")
    # Other content types: a worker accepts JSON only and must refuse these before any task runs.
    refused_ids = [f"refused-{uuid.uuid4().hex}" for _ in range(3)]
    with Connection(s.broker_url) as conn:
        producer = conn.Producer()
        headers = {"lang": "py", "task": "aperture.create_job", "argsrepr": "", "kwargsrepr": ""}
        celery_body: tuple[Any, ...] = ((), {"assets": [{"url": "https://cdn.example.com/p.mp4"}]}, {})
        for task_id, (data, ctype) in zip(
            refused_ids,
            [
                (pickle.dumps(celery_body), "application/x-python-serialize"),
                (b"\x80\x04not json at all", "application/json"),
                (b"assets: [x]", "application/x-yaml"),
            ],
            strict=True,
        ):
            producer.publish(
                data,
                routing_key="aperture.submit",
                exchange="aperture.submit",
                content_type=ctype,
                content_encoding="binary",
                headers={**headers, "id": task_id, "root_id": task_id},
            )
    row.submitted = len(expected)
    deadline = time.monotonic() + timeout
    stored: set[str] = set()
    while time.monotonic() < deadline and len(stored) < len(expected):
        time.sleep(1.0)
        stored = {rid for (rid,) in s.pg.query("SELECT request_id FROM jobs")} & expected
    row.ended = len(stored)
    row.lost = len(expected) - len(stored)
    (for_refused,) = s.pg.query("SELECT count(*) FROM jobs WHERE request_id LIKE %s", "celery-task:refused-%")[0]
    (rejected,) = s.pg.query("SELECT count(*) FROM jobs WHERE state = 'rejected'")[0]
    alive = sum(w.alive() for w in s.workers)
    row.notes.append(
        f"{len(stored)}/{len(expected)} JSON messages stored ({rejected} rejected with a reason); "
        f"{len(refused_ids)} pickle/non-JSON/YAML messages refused, {for_refused} rows for them; "
        f"workers alive: {alive}/{len(s.workers)}"
    )
    missing = sorted(expected - stored)[:3]
    if missing:
        row.notes.append(f"not stored: {[described.get(m, m) for m in missing]}")
    if alive < len(s.workers) or for_refused:
        row.lost += 1
    row.requests = s.sim_stats()["requests_total"]
