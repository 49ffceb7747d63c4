"""The rows and answers of TaskStore: a new task's fields, a cancel's outcome, a page, and
the refusals (the API maps each to its status)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import args_row

from ..domain.fields import DEFAULT_PRIORITY, DEFAULT_QUEUE, DEFAULT_TYPE
from ..domain.states import Actor, Status, sources, spoken
from ..domain.tasks import Task


class TransitionRefused(Exception):
    """PUT asked for a change the state machine does not allow."""

    def __init__(self, current: str, wanted: str, reason: str | None = None) -> None:
        self.current = current
        self.wanted = wanted
        super().__init__(reason or f"a {current} task cannot become {wanted}")


# Why a delete, a cancel or a retry was refused, by what it wanted. The statuses they name
# are the state machine's; "already finished" holds because every status a cancel refuses
# is terminal (tests/unit/test_states.py).
REFUSALS = {
    "deleted": "a {} task cannot be deleted while a worker runs it: cancel it first",
    Status.CANCELLED.value: "a {} task cannot be cancelled: it has already finished",
    Status.PENDING.value: "a {} task cannot be retried: only "
    f"{spoken(sources(Actor.RETRY, table_order=True))} ones",
}


@dataclass(frozen=True, slots=True)
class NewTask:
    title: str
    description: str = ""
    type: str = DEFAULT_TYPE
    payload: dict[str, Any] | None = None
    max_attempts: int | None = None
    run_at: datetime | None = None
    queue: str = DEFAULT_QUEUE
    priority: int = DEFAULT_PRIORITY
    timeout: int | None = None


class NotFound(Exception):
    """No task with that id."""


class IdempotencyMismatch(Exception):
    """The Idempotency-Key was first used with another body (422)."""


class IdempotentTaskGone(Exception):
    """The task the Idempotency-Key created has been deleted since (409)."""


@dataclass(frozen=True, slots=True)
class Cancelled:
    """What a cancel did: ``task`` as it is now; ``immediate`` False means the worker that
    runs it was asked to stop (202), True that a pending task was cancelled at once."""

    task: Task
    immediate: bool


# Rows as Task, built positionally: every task query here selects tasks_sql.COLUMNS, which
# is TASK_COLUMNS in order. ``Task(*row)`` costs a quarter of class_row's
# ``Task(**dict(zip(names, row)))``, which was a tenth of a list page's CPU.
task_row = args_row(Task)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list: its rows (Task, or dicts of the asked-for fields), the total that
    matches (exact up to tasks_sql.EXACT_TOTAL_MAX, else the planner's estimate) and the
    sort key (created_at, id) of its last row when another page follows."""

    tasks: list[Any]
    total: int
    total_exact: bool
    next_key: tuple[datetime, int] | None


def inserted_task(task_id: int, now: datetime, row: dict[str, Any], request_id: str | None) -> Task:
    """A new task as the API answers it: ``row`` (``TaskStore._row``) as sent, with the id
    and time its INSERT returned and the columns' defaults, rather than the whole row
    read back (tests/integration/test_batch.py compares every field with GET). The
    payload is the one sent: jsonb keeps its value, not its spelling (GET may write
    1e2 as 100, and order keys its own way)."""
    return Task(
        id=task_id,
        title=row["title"],
        description=row["description"],
        status=Status.PENDING.value,
        queue=row["queue"],
        priority=row["priority"],
        type=row["type"],
        payload=row["payload"],
        result=None,
        attempts=0,
        max_attempts=row["max_attempts"],
        timeout=row["timeout"],
        last_error=None,
        cancel_requested=False,
        run_at=row["run_at"] or now,
        started_at=None,
        completed_at=None,
        worker=None,
        schedule=None,
        request_id=request_id,
        created_at=now,
        updated_at=now,
    )
