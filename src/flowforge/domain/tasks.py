"""The Task row: what the stores return and the API shows (column order = field order).

The fields a client sets are the ones of ``fields.TASK_FIELDS`` (a unit test holds the
two together); the others are the queue's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class Task:
    """One row of ``tasks``, as the API shows it (column order = API field order)."""

    id: int
    title: str
    description: str
    status: str
    queue: str
    priority: int
    type: str
    payload: dict[str, Any]
    result: Any
    attempts: int
    max_attempts: int
    timeout: int
    last_error: str | None
    cancel_requested: bool
    run_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    worker: str | None
    schedule: str | None
    request_id: str | None
    created_at: datetime
    updated_at: datetime


# The columns the API returns, in order; queries select exactly these.
TASK_COLUMNS: tuple[str, ...] = tuple(Task.__dataclass_fields__)


def task_fields(task: Task, fields: tuple[str, ...]) -> dict[str, Any]:
    """Only these fields of ``task`` (and ``id``), in column order: a task as
    ``GET /v1/tasks?fields=`` lists it."""
    return {name: getattr(task, name) for name in TASK_COLUMNS if name in fields or name == "id"}
