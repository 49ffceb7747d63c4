"""Creates under an ``Idempotency-Key`` (POST /v1/tasks and POST /v1/tasks/batch): the
key's row is claimed by the statement that inserts (tasks_sql.INSERT_TASK_WITH_KEY,
INSERT_TASKS_WITH_KEY); when it is taken, the key's first request answers: a replay of
what it made, or ``IdempotencyMismatch`` for another body or the other kind of create
(a single create's key never answers a batch, nor the reverse)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg

from ..db import DatabaseUnavailable
from ..domain.tasks import Task
from . import tasks_sql
from .task_types import IdempotencyMismatch, IdempotentTaskGone, task_row

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class KeyUse:
    """A create's key: the token that sent it (0 without one), the key and the SHA-256 of
    the request's body."""

    token_id: int
    key: str
    request_hash: bytes

    def params(self) -> dict[str, Any]:
        return {"token_id": self.token_id, "key": self.key, "hash": self.request_hash}


def _once(
    conn: psycopg.Connection,
    use: KeyUse,
    insert: Callable[[], T | None],
    replay: Callable[[int, list[int] | None], T],
    *,
    batch: bool,
) -> tuple[T, bool]:
    """(what ``insert`` made, False), or when the key is taken (``insert`` gave None), the
    key's first request replayed: (``replay(task_id, task_ids)``, True)."""
    for _ in range(3):
        made = insert()
        if made is not None:
            return made, False
        first = conn.execute(tasks_sql.GET_IDEMPOTENCY_KEY, use.params()).fetchone()
        if first is None:  # expired and taken over meanwhile: try again
            continue
        request_hash, task_id, task_ids = first
        if bytes(request_hash) != use.request_hash or (task_ids is not None) != batch:
            raise IdempotencyMismatch(use.key)
        return replay(task_id, task_ids), True
    raise DatabaseUnavailable("the idempotency key kept changing")


def create_once(conn: psycopg.Connection, params: dict[str, Any], use: KeyUse) -> tuple[Task, bool]:
    """One task (INSERT_TASK_WITH_KEY with ``params``) unless the key made one: (task,
    replayed)."""
    cur = conn.cursor(row_factory=task_row)
    params = {**params, **use.params()}

    def replay(task_id: int, _: list[int] | None) -> Task:
        task = cur.execute(tasks_sql.GET_TASK, {"id": task_id}).fetchone()
        if task is None:
            raise IdempotentTaskGone(task_id)
        return task

    return _once(
        conn,
        use,
        lambda: cur.execute(tasks_sql.INSERT_TASK_WITH_KEY, params).fetchone(),
        replay,
        batch=False,
    )


def create_batch_once(
    conn: psycopg.Connection,
    params: dict[str, Any],
    use: KeyUse,
    made: Callable[[list[tuple[Any, ...]]], list[Task]],
) -> tuple[list[Task], bool]:
    """A batch (INSERT_TASKS_WITH_KEY with ``params``; ``made`` turns the (id, created_at)
    rows it returns into tasks) unless the key made one: (tasks, replayed). A replay
    answers the batch's tasks as they are now, in its order; ``IdempotentTaskGone`` names
    the first one deleted since."""
    params = {**params, **use.params()}

    def insert() -> list[Task] | None:
        rows = conn.execute(tasks_sql.INSERT_TASKS_WITH_KEY, params).fetchall()
        return made(rows) if rows else None

    def replay(_: int, task_ids: list[int] | None) -> list[Task]:
        ids = task_ids or []
        cur = conn.cursor(row_factory=task_row)
        tasks = cur.execute(tasks_sql.GET_TASKS_IN_ORDER, {"ids": ids}).fetchall()
        if len(tasks) < len(ids):
            there = {task.id for task in tasks}
            raise IdempotentTaskGone(next(i for i in ids if i not in there))
        return tasks

    return _once(conn, use, insert, replay, batch=True)
