"""JSON Schema of every public task's keyword arguments, for applications written in any language.

Generated from the very pydantic models the tasks validate with (services/contract.py), so the
published schema cannot say something the worker does not enforce. The files under docs/schemas/
are committed; a test checks they equal what this module generates, and `aperture schema --write`
regenerates them after a change to the contract.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from config.tasks import PUBLIC_TASKS, queue_of
from services import contract

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"


def public_tasks() -> dict[str, type[BaseModel]]:
    """Task name -> the model of its keyword arguments, for every public task (config/tasks.py)."""
    return {spec.name: contract.MODELS[spec.name] for spec in PUBLIC_TASKS}


def schema_for(task: str) -> dict[str, Any]:
    model = public_tasks()[task]
    body = model.model_json_schema(mode="validation")
    body.pop("title", None)
    doc = body.pop("description", None) or (model.__doc__ or "").strip()
    queue = queue_of(task)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"urn:aperture:task:{task}",
        "title": task,
        "description": (
            f"{doc} Sent as the JSON keyword arguments (no positional arguments) of a Celery message "
            f"naming the task `{task}`"
            + (f", on queue `{queue}` (or a configured caller's own, `{queue}.<caller>`)" if queue else "")
            + ". Unknown fields are refused."
        ).strip(),
        "x-celery-task": task,
        "x-celery-queue": queue,
        **body,
    }


def render(task: str) -> str:
    return json.dumps(schema_for(task), indent=2, ensure_ascii=False) + "\n"


def path_for(task: str, directory: Path = SCHEMA_DIR) -> Path:
    return directory / f"{task}.json"


def write_all(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for task in public_tasks():
        path = path_for(task, directory)
        path.write_text(render(task), encoding="utf-8")
        written.append(path)
    return written


def stale(directory: Path = SCHEMA_DIR) -> list[str]:
    """Tasks whose file is missing or differs from the generated schema."""
    out = []
    for task in public_tasks():
        path = path_for(task, directory)
        if not path.exists() or path.read_text(encoding="utf-8") != render(task):
            out.append(task)
    return out
