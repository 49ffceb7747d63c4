"""A task's attempt history as the API shows it (GET /v1/tasks/{id}/attempts).

The worker writes it (stores/queue_sql.py, with the fragments of attempts_sql.py, which
says where each attempt is kept); this only reads it."""

from __future__ import annotations

from typing import Any

from ..db import ConnectionSource
from . import attempts_sql


def read_attempts(source: ConnectionSource, task_id: int) -> list[dict[str, Any]] | None:
    """The task's attempts, oldest first (None: no such task)."""
    with source.connection() as conn:
        rows = conn.execute(attempts_sql.GET_ATTEMPTS, {"id": task_id}).fetchall()
    if not rows:
        return None
    fields = attempts_sql.ATTEMPT_FIELDS
    return [dict(zip(fields, row, strict=True)) for row in rows if row[4] is not None]
