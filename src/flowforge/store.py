"""TaskStore: the API's thin manager over the SQL in ``queries.py``."""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import orjson
import psycopg
from psycopg import pq
from psycopg.rows import class_row, scalar_row
from psycopg.types.json import Jsonb, set_json_loads
from sqlalchemy import Engine, event

from . import queries
from .db import ConnectionSource, DatabaseUnavailable
from .models import Status, Task, transition_allowed

T = TypeVar("T")


class TransitionRefused(Exception):
    """PUT asked for a change the state machine does not allow."""

    def __init__(self, current: str, wanted: str, reason: str | None = None) -> None:
        self.current = current
        self.wanted = wanted
        super().__init__(reason or f"a {current} task cannot become {wanted}")


@dataclass(frozen=True, slots=True)
class NewTask:
    title: str
    description: str = ""
    type: str = "noop"
    payload: dict[str, Any] | None = None
    max_attempts: int | None = None
    run_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Page:
    tasks: list[Task]
    total: int


def _query_within(conn: psycopg.Connection, sql: str, timeout: float) -> None:
    """Run ``sql`` (no parameters, result ignored) or raise ``psycopg.OperationalError``
    after ``timeout`` seconds. psycopg has no client-side timeout, so this drives libpq
    directly; the caller's connection source throws the connection away on that error."""
    pgconn = conn.pgconn
    deadline = time.monotonic() + timeout

    def wait(read: bool) -> None:
        remaining = max(0.0, deadline - time.monotonic())
        fds = [pgconn.socket]
        readable, writable, _ = select.select(fds if read else [], [] if read else fds, [],
                                              remaining)  # fmt: skip
        if not (readable or writable):
            raise psycopg.OperationalError(f"no answer from the database within {timeout:g}s")

    pgconn.send_query(sql.encode())
    while pgconn.flush():
        wait(read=False)
    while True:
        pgconn.consume_input()
        if not pgconn.is_busy():
            break
        wait(read=True)
    error = None
    while (result := pgconn.get_result()) is not None:  # drain them all: the conn is idle again
        if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            error = (result.error_message or b"").decode(errors="replace").strip()
    if error is not None:
        raise psycopg.OperationalError(error or "the health query failed")


def _orjson_json_loads(dbapi_connection: Any, _record: Any) -> None:
    set_json_loads(orjson.loads, dbapi_connection)


class TaskStore:
    """The API's reads and writes. ``keep_connection``: see ``db.ConnectionSource``."""

    def __init__(
        self,
        engine: Engine,
        *,
        default_max_attempts: int,
        lease_seconds: float,
        keep_connection: bool = False,
        health_timeout: float = 3.0,
    ) -> None:
        self.engine = engine
        self.health_timeout = health_timeout
        # jsonb comes back through orjson (also faster): PostgreSQL writes 1.5e300 as 301
        # digits, which the json module reads as an int that no encoder takes; orjson reads
        # it as the float it was, so every stored payload can be served again.
        if not event.contains(engine, "connect", _orjson_json_loads):
            event.listen(engine, "connect", _orjson_json_loads)
        self.source = ConnectionSource(engine, keep=keep_connection)
        self.default_max_attempts = default_max_attempts
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
        (a hung server accepts TCP and never answers; the health check must not hang too)."""

        def read() -> None:
            with self.source.connection() as conn:
                _query_within(conn, queries.HEALTH, self.health_timeout)

        self._retry_read(read)

    def get(self, task_id: int) -> Task | None:
        def read() -> Task | None:
            with self.source.connection() as conn:
                cur = conn.cursor(row_factory=class_row(Task))
                return cur.execute(queries.GET_TASK, {"id": task_id}).fetchone()

        return self._retry_read(read)

    def list(self, *, limit: int, offset: int, status: str | None = None) -> Page:
        params = {"limit": limit, "offset": offset, "status": status}
        rows_sql = queries.LIST_TASKS_BY_STATUS if status else queries.LIST_TASKS
        count_sql = queries.COUNT_TASKS_BY_STATUS if status else queries.COUNT_TASKS

        def read() -> Page:
            with self.source.connection() as conn:
                # Both statements in one round trip.
                with conn.pipeline():
                    rows = conn.cursor(row_factory=class_row(Task)).execute(rows_sql, params)
                    count = conn.cursor(row_factory=scalar_row).execute(count_sql, params)
                return Page(tasks=rows.fetchall(), total=count.fetchone() or 0)

        return self._retry_read(read)

    def create(self, new: NewTask, *, request_id: str | None) -> Task:
        params = {
            "title": new.title,
            "description": new.description,
            "type": new.type,
            "payload": Jsonb(new.payload or {}),
            "max_attempts": new.max_attempts or self.default_max_attempts,
            "run_at": new.run_at,
            "request_id": request_id,
        }
        with self.source.connection() as conn:
            cur = conn.cursor(row_factory=class_row(Task))
            task = cur.execute(queries.INSERT_TASK, params).fetchone()
        assert task is not None
        return task

    def update(self, task_id: int, changes: dict[str, Any]) -> Task | None:
        """Apply a PUT. ``None`` if there is no such task; ``TransitionRefused`` on 409."""
        with self.source.connection() as conn, conn.transaction():
            cur = conn.cursor(row_factory=class_row(Task))
            current = cur.execute(queries.GET_TASK_FOR_UPDATE, {"id": task_id}).fetchone()
            if current is None:
                return None
            old, new = Status(current.status), Status(changes.get("status", current.status))
            if not transition_allowed(old, new):
                raise TransitionRefused(old, new)
            queue_fields = ("type", "payload", "max_attempts", "run_at")
            changed = [
                f for f in queue_fields if f in changes and changes[f] != getattr(current, f)
            ]
            if changed and new != Status.PENDING:
                raise TransitionRefused(
                    old, new, f"{', '.join(changed)} can only change while a task is pending"
                )
            params = {
                "id": task_id,
                "title": changes.get("title", current.title),
                "description": changes.get("description", current.description),
                "type": changes.get("type", current.type),
                "payload": Jsonb(changes.get("payload", current.payload)),
                "max_attempts": changes.get("max_attempts", current.max_attempts),
                "run_at": changes.get("run_at"),
                "status": new.value,
                "lease_seconds": self.lease_seconds,
            }
            task = cur.execute(queries.UPDATE_TASK, params).fetchone()
            if new == Status.PENDING and old != Status.PENDING:
                conn.execute(queries.NOTIFY_IF_WAITING)
            return task

    def delete(self, task_id: int) -> bool:
        with self.source.connection() as conn:
            return conn.execute(queries.DELETE_TASK, {"id": task_id}).fetchone() is not None
