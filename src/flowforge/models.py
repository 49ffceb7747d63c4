"""The task row and its state machine."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any


class Status(enum.StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


# Where a task can no longer go on its own: only a retry (or a re-queue) moves it again.
TERMINAL: frozenset[Status] = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED})


# Changes a client may ask for through PUT (the worker makes the others itself: only the
# worker that holds a processing task moves it on; a client cancels it instead).
# Unchanged status is always allowed, so PUT stays idempotent. POST .../cancel and
# POST .../retry are the other ways a client moves a task.
CLIENT_TRANSITIONS: frozenset[tuple[Status, Status]] = frozenset(
    {
        (Status.PENDING, Status.PROCESSING),
        # Re-queue a dead letter: it starts over with a fresh attempt count (= retry).
        (Status.FAILED, Status.PENDING),
    }
)


def transition_allowed(current: Status, wanted: Status) -> bool:
    return current == wanted or (current, wanted) in CLIENT_TRANSITIONS


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
