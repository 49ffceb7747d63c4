"""TaskStore: the reads and writes of tasks (the API's, ``flowforge tasks``'), a thin
manager over the SQL in ``tasks_sql.py``. Its rows and refusals are in task_types.py."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

import orjson
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from sqlalchemy import Engine

from ..db import ConnectionSource, DatabaseUnavailable, ping
from ..domain.fields import DEFAULT_TIMEOUT
from ..domain.states import CANCELLABLE, RETRYABLE, UNDELETABLE, Status, transition_allowed
from ..domain.tasks import TASK_COLUMNS, Task
from . import attempts, common_sql, idempotency, stats, tasks_sql
from .idempotency import KeyUse
from .stats import QueueMetrics
from .task_types import (
    REFUSALS,
    Cancelled,
    NewTask,
    NotFound,
    Page,
    TransitionRefused,
    inserted_task,
    task_row,
)

T = TypeVar("T")

# A list whose estimate is large (no count follows: COUNT_WHEN_ESTIMATE_BELOW) keeps that
# estimate this long, per process and per filter values: the lists that follow are one
# statement (the rows), not the rows and an EXPLAIN (planning, its JSON parsed) each,
# which made a list cost three times a GET by id in CPU. A small estimate is never kept,
# so a total up to EXACT_TOTAL_MAX is counted on every request and stays exact.
ESTIMATE_SECONDS = 2.0
ESTIMATES_KEPT = 256  # filter value combinations kept at most (then forgotten at once)


class TaskStore:
    """The API's reads and writes. ``keep_connection``: see ``db.ConnectionSource``."""

    def __init__(
        self,
        engine: Engine,
        *,
        default_max_attempts: int,
        lease_seconds: float,
        default_timeout: int = DEFAULT_TIMEOUT,
        keep_connection: bool = False,
        health_timeout: float = 3.0,
    ) -> None:
        self.engine = engine
        self.health_timeout = health_timeout
        self.source = ConnectionSource(engine, keep=keep_connection)
        # (filters, their values) -> (the planner's estimate, kept until): see ESTIMATE_SECONDS
        self._estimates: dict[tuple[Any, ...], tuple[int, float]] = {}
        self.clock: Callable[[], float] = time.monotonic
        self.default_max_attempts = default_max_attempts
        self.default_timeout = default_timeout
        self.lease_seconds = lease_seconds

    def _retry_read(self, read: Callable[[], T]) -> T:
        """Run a read; once more on a fresh connection if the first one had gone stale
        (after a PostgreSQL restart every pooled connection is dead, the server is not)."""
        try:
            return read()
        except DatabaseUnavailable:
            return read()

    def ping(self) -> None:
        """Raise ``DatabaseUnavailable`` unless PostgreSQL answers within ``health_timeout``
        (``db.ping``: a hung server must not hang the health check too)."""
        ping(self.source, self.health_timeout)

    def queue_metrics(
        self, timeout_ms: int, *, cap: int = 10_000, sample: int = 1_000
    ) -> QueueMetrics:
        """The queue's gauges for /metrics (``stats.queue_metrics``)."""
        return stats.queue_metrics(self.source, timeout_ms, cap=cap, sample=sample)

    def stats(self, timeout_ms: int, *, minutes: int = 15, failures: int = 10) -> dict[str, Any]:
        """What GET /v1/stats shows (``stats.stats``)."""
        return stats.stats(self.source, timeout_ms, minutes=minutes, failures=failures)

    def get(self, task_id: int) -> Task | None:
        def read() -> Task | None:
            with self.source.connection() as conn:
                cur = conn.cursor(row_factory=task_row)
                return cur.execute(tasks_sql.GET_TASK, {"id": task_id}).fetchone()

        return self._retry_read(read)

    def attempts(self, task_id: int) -> list[dict[str, Any]] | None:
        """The task's attempt history, oldest first (None: no such task)."""
        return self._retry_read(lambda: attempts.read_attempts(self.source, task_id))

    def list(
        self,
        *,
        limit: int,
        offset: int = 0,
        filters: dict[str, str | None] | None = None,
        after: tuple[datetime, int] | None = None,
        fields: tuple[str, ...] | None = None,
    ) -> Page:
        """One page, newest first. ``filters`` maps status/type/queue to a value (or None);
        ``after`` is the (created_at, id) the page starts below (keyset), else ``offset``;
        ``fields`` limits the columns (rows are then dicts of those fields, id included)."""
        used, params = _list_params(limit, offset, filters, after)
        # created_at and id are the cursor's key: selected even when not asked for.
        columns = TASK_COLUMNS
        if fields is not None:
            wanted = {"id", "created_at", *fields}
            columns = tuple(c for c in TASK_COLUMNS if c in wanted)
        rows_sql = tasks_sql.list_tasks(used, columns, after is not None)
        row_factory = task_row if fields is None else dict_row

        estimate_key = (used, *(params[name] for name in used))

        def read() -> Page:
            now = self.clock()
            kept = self._estimates.get(estimate_key)
            with self.source.connection() as conn:
                if kept is not None and now < kept[1]:
                    # A large estimate read a moment ago: the rows alone, one statement.
                    rows = conn.cursor(row_factory=row_factory).execute(rows_sql, params).fetchall()
                    estimate = kept[0]
                else:
                    # The rows, then the planner's estimate: two round trips, never one
                    # pipeline. psycopg prepares a statement on its sixth run; in a pipeline
                    # whose first statement fails, PostgreSQL skips the second's PREPARE but
                    # psycopg records it as prepared, and every later run of it on this
                    # connection fails ("prepared statement _pg3_N does not exist"). Outside
                    # a pipeline psycopg waits for the PREPARE's answer before recording it.
                    # The extra trip: bench/bench_list_trips.py.
                    cur = conn.cursor(row_factory=row_factory)
                    rows = cur.execute(rows_sql, params).fetchall()
                    plan_row = conn.execute(tasks_sql.estimate_tasks(used), params).fetchone()
                    (plan,) = plan_row or ([{"Plan": {"Plan Rows": 0}}],)
                    estimate = int(plan[0]["Plan"]["Plan Rows"])
                    if estimate >= tasks_sql.COUNT_WHEN_ESTIMATE_BELOW:
                        if len(self._estimates) >= ESTIMATES_KEPT:
                            self._estimates.clear()
                        self._estimates[estimate_key] = (estimate, now + ESTIMATE_SECONDS)
                total, exact = estimate, False
                if estimate < tasks_sql.COUNT_WHEN_ESTIMATE_BELOW:  # a count, a second trip
                    row = conn.execute(tasks_sql.count_tasks(used), params).fetchone()
                    counted = row[0] if row else 0
                    if counted <= tasks_sql.EXACT_TOTAL_MAX:
                        total, exact = counted, True
                    else:
                        total = max(estimate, counted)  # never below what was counted
            return _page(rows, limit, fields, columns, total, exact)

        return self._retry_read(read)

    def count_pending_upto(self, limit: int) -> int:
        """Pending tasks, counted up to ``limit`` (API_MAX_PENDING's check)."""

        def read() -> int:
            with self.source.connection() as conn:
                row = conn.execute(tasks_sql.COUNT_PENDING_UPTO, {"limit": limit}).fetchone()
                return row[0] if row else 0

        return self._retry_read(read)

    def _row(self, new: NewTask) -> dict[str, Any]:
        """The columns of a new task, this store's defaults filled in (payload as is)."""
        return {
            "title": new.title,
            "description": new.description,
            "type": new.type,
            "payload": new.payload or {},
            "max_attempts": new.max_attempts or self.default_max_attempts,
            "run_at": new.run_at,
            "queue": new.queue,
            "priority": new.priority,
            "timeout": new.timeout or self.default_timeout,
        }

    @staticmethod
    def _insert_params(row: dict[str, Any], request_id: str | None) -> dict[str, Any]:
        return {**row, "payload": Jsonb(row["payload"]), "request_id": request_id}

    def create(self, new: NewTask, *, request_id: str | None) -> Task:
        row = self._row(new)
        with self.source.connection() as conn:
            inserted = conn.execute(
                tasks_sql.INSERT_TASK, self._insert_params(row, request_id)
            ).fetchone()
        assert inserted is not None
        task_id, now = inserted
        return inserted_task(task_id, now, row, request_id)

    def create_once(
        self, new: NewTask, *, request_id: str | None, use: KeyUse
    ) -> tuple[Task, bool]:
        """Create a task unless this token's key already made one within 24 hours:
        (task, replayed). ``IdempotencyMismatch`` if that was for another body."""
        with self.source.connection() as conn:
            params = self._insert_params(self._row(new), request_id)
            return idempotency.create_once(conn, params, use)

    def create_many(self, news: Sequence[NewTask], *, request_id: str | None) -> list[Task]:
        """Create every task of a batch in one statement (all or nothing), in order."""
        params, made = self._batch(news, request_id)
        with self.source.connection() as conn:
            return made(conn.execute(tasks_sql.INSERT_TASKS, params).fetchall())

    def create_many_once(
        self, news: Sequence[NewTask], *, request_id: str | None, use: KeyUse
    ) -> tuple[list[Task], bool]:
        """``create_many`` unless this token's key already made a batch within 24 hours:
        (tasks, replayed), as ``create_once``."""
        params, made = self._batch(news, request_id)
        with self.source.connection() as conn:
            return idempotency.create_batch_once(conn, params, use, made)

    def _batch(
        self, news: Sequence[NewTask], request_id: str | None
    ) -> tuple[dict[str, Any], Callable[[list[Any]], list[Task]]]:
        """A batch statement's values, and what turns its (id, created_at) rows into tasks."""
        rows = [self._row(new) for new in news]
        params = {
            "tasks": orjson.dumps(rows, option=orjson.OPT_UTC_Z).decode(),
            "request_id": request_id,
        }

        def made(created: list[Any]) -> list[Task]:
            return [
                inserted_task(task_id, now, row, request_id)
                for (task_id, now), row in zip(sorted(created), rows, strict=True)
            ]

        return params, made

    def update(self, task_id: int, changes: dict[str, Any]) -> Task | None:
        """Apply a PUT. ``None`` if there is no such task; ``TransitionRefused`` on 409."""
        with self.source.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=task_row)
            current = cur.execute(tasks_sql.GET_TASK_FOR_UPDATE, {"id": task_id}).fetchone()
            if current is None:
                return None
            old, new = Status(current.status), Status(changes.get("status", current.status))
            if not transition_allowed(old, new):
                raise TransitionRefused(old, new)
            queue_fields = (
                "type", "payload", "max_attempts", "run_at", "queue", "priority", "timeout"
            )  # fmt: skip
            changed = [
                f for f in queue_fields if f in changes and changes[f] != getattr(current, f)
            ]
            if changed and new != Status.PENDING:
                raise TransitionRefused(
                    old, new, f"{', '.join(changed)} can only change while a task is pending"
                )
            if new == old and not any(_differs(v, getattr(current, f)) for f, v in changes.items()):
                return current  # nothing to change: a repeated PUT leaves updated_at alone
            max_attempts = changes.get("max_attempts", current.max_attempts)
            if new == old == Status.PENDING and max_attempts <= current.attempts:
                # It keeps its attempts (a retry waiting out its backoff): with no attempt
                # left it could never run again (and attempts <= max_attempts is a CHECK).
                raise TransitionRefused(
                    old,
                    new,
                    f"max_attempts must stay above the {current.attempts} attempts this task "
                    "has made (retry it to start again from 0)",
                )
            params = {
                "id": task_id,
                "title": changes.get("title", current.title),
                "description": changes.get("description", current.description),
                "type": changes.get("type", current.type),
                "payload": Jsonb(changes.get("payload", current.payload)),
                "max_attempts": changes.get("max_attempts", current.max_attempts),
                "queue": changes.get("queue", current.queue),
                "priority": changes.get("priority", current.priority),
                "timeout": changes.get("timeout", current.timeout),
                "run_at": changes.get("run_at"),
                "status": new.value,
                "lease_seconds": self.lease_seconds,
            }
            task = cur.execute(tasks_sql.UPDATE_TASK, params).fetchone()
            if new == Status.PENDING and old != Status.PENDING:
                conn.execute(common_sql.NOTIFY_IF_WAITING)
            return task

    def _conditional(self, sql: str, task_id: int, wanted: str, allowed: frozenset[str]) -> Task:
        """Run a write whose WHERE names the statuses it applies to (one statement: no
        read-then-write). When it matches no row, say why: ``NotFound`` or
        ``TransitionRefused`` with the status that refused it. A status that allows it
        again by then (another client moved the task meanwhile) is tried once more."""
        with self.source.connection() as conn:
            cur = conn.cursor(row_factory=task_row)
            for _ in range(3):
                task = cur.execute(sql, {"id": task_id}).fetchone()
                if task is not None:
                    return task
                current = conn.execute(tasks_sql.GET_TASK_STATUS, {"id": task_id}).fetchone()
                if current is None:
                    raise NotFound(task_id)
                if current[0] not in allowed:
                    raise TransitionRefused(current[0], wanted, REFUSALS[wanted].format(current[0]))
        raise TransitionRefused(current[0], wanted, "the task kept changing: try again")

    def delete(self, task_id: int) -> None:
        """Delete a task; ``NotFound``, or ``TransitionRefused`` while a worker runs it."""
        with self.source.connection() as conn:
            for _ in range(3):
                if conn.execute(tasks_sql.DELETE_TASK, {"id": task_id}).fetchone() is not None:
                    return
                current = conn.execute(tasks_sql.GET_TASK_STATUS, {"id": task_id}).fetchone()
                if current is None:
                    raise NotFound(task_id)
                if current[0] in UNDELETABLE:
                    raise TransitionRefused(
                        current[0], "deleted", REFUSALS["deleted"].format(current[0])
                    )
        raise TransitionRefused(current[0], "deleted", "the task kept changing: try again")

    def cancel(self, task_id: int) -> Cancelled:
        """Cancel a pending task at once, or ask the worker running it to stop."""
        task = self._conditional(tasks_sql.CANCEL_TASK, task_id, Status.CANCELLED, _CANCELLABLE)
        return Cancelled(task, immediate=task.status == Status.CANCELLED)

    def retry(self, task_id: int) -> Task:
        """Put a finished task (failed, cancelled, completed) back to pending, attempts 0."""
        return self._conditional(tasks_sql.RETRY_TASK, task_id, Status.PENDING, _RETRYABLE)


_CANCELLABLE = frozenset(s.value for s in CANCELLABLE)
_RETRYABLE = frozenset(s.value for s in RETRYABLE)


def _list_params(
    limit: int,
    offset: int,
    filters: dict[str, str | None] | None,
    after: tuple[datetime, int] | None,
) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The filters a list uses (names, in LIST_FILTERS order) and its statements' values."""
    used = tuple(name for name in tasks_sql.LIST_FILTERS if (filters or {}).get(name))
    params: dict[str, Any] = {name: (filters or {})[name] for name in used}
    params.update(limit=limit + 1, offset=offset, cap=tasks_sql.EXACT_TOTAL_MAX + 1)
    if after is not None:
        params.update(after_created_at=after[0], after_id=after[1])
    return used, params


def _page(
    rows: list[Any],
    limit: int,
    fields: tuple[str, ...] | None,
    columns: tuple[str, ...],
    total: int,
    exact: bool,
) -> Page:
    """A page of ``limit`` rows (one more was read, to know whether a page follows), only
    the asked-for ``fields`` of each when some were."""
    more = len(rows) > limit
    rows = rows[:limit]
    next_key = None
    if more:
        last = rows[-1]
        next_key = (
            (last.created_at, last.id) if fields is None else (last["created_at"], last["id"])
        )
    if fields is not None:
        shown = [c for c in columns if c in fields or c == "id"]
        rows = [{c: row[c] for c in shown} for row in rows]
    return Page(tasks=rows, total=total, total_exact=exact, next_key=next_key)


def _differs(sent: Any, stored: Any) -> bool:
    """Whether a PUT's value changes the stored one. JSON is compared as JSON: in Python
    ``1 == 1.0 == True``, but a payload's ``true`` is not its ``1``."""
    if isinstance(sent, dict | list):
        return orjson.dumps(sent, option=orjson.OPT_SORT_KEYS) != orjson.dumps(
            stored, option=orjson.OPT_SORT_KEYS
        )
    return sent != stored
