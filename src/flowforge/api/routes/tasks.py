"""``/v1/tasks`` (and the same under ``/tasks``): list, create (one, or a batch), read,
change, delete, cancel and retry."""

from __future__ import annotations

import hashlib
import logging

import bottle
import orjson

from ... import logs, pagination
from ...domain.declarations import Declarations
from ...domain.tasks import task_fields
from ...domain.validation import batch_body, item_query, list_query, task_body
from ...stores.idempotency import KeyUse
from ...stores.task_types import NewTask
from ...stores.tasks import TaskStore
from ..admission import Admission
from ..envelope import REPLAYED_HEADER, ApiError, ok
from ..inputs import check_id, idempotency_key, query_params, read_json

log = logging.getLogger("flowforge.api")

PREFIXES = ("/v1", "")


class TaskRoutes:
    """The task routes over ``store``; ``declarations`` are the registered handlers' (a
    task of another type is refused; a payload their schema refuses too), ``max_body``
    the largest body in bytes."""

    def __init__(
        self, store: TaskStore, declarations: Declarations, *, max_body: int, admit: Admission
    ) -> None:
        self.store = store
        self.known_types = declarations.types
        self.declarations = declarations
        self.declared = declarations.apply
        self.max_body = max_body
        self.admit = admit

    def register(self, app: bottle.Bottle) -> None:
        for prefix in PREFIXES:
            app.route(f"{prefix}/tasks", "GET", self.list_tasks)
            app.route(f"{prefix}/tasks", "POST", self.create_task)
            app.route(f"{prefix}/tasks/batch", "POST", self.create_batch)
            app.route(f"{prefix}/tasks/<task_id:id>", "GET", self.get_task)
            app.route(f"{prefix}/tasks/<task_id:id>", "PUT", self.update_task)
            app.route(f"{prefix}/tasks/<task_id:id>", "DELETE", self.delete_task)
            app.route(f"{prefix}/tasks/<task_id:id>/cancel", "POST", self.cancel_task)
            app.route(f"{prefix}/tasks/<task_id:id>/retry", "POST", self.retry_task)
            app.route(f"{prefix}/tasks/<task_id:id>/attempts", "GET", self.list_attempts)

    def list_tasks(self) -> bytes:
        q = list_query(query_params())
        filters = {"status": q.status, "type": q.type, "queue": q.queue}
        after = (q.cursor.created_at, q.cursor.id) if q.cursor else None
        result = self.store.list(
            limit=q.limit,
            offset=(q.page - 1) * q.limit,
            filters=filters,
            after=after,
            fields=q.fields,
        )
        next_cursor = None
        if result.next_key is not None:
            next_cursor = pagination.encode(pagination.Cursor(*result.next_key, q.filters))
        meta = {
            "page": None if q.cursor else q.page,
            "limit": q.limit,
            "total": result.total,
            "total_exact": result.total_exact,
            "next_cursor": next_cursor,
        }
        return ok(result.tasks, meta=meta)

    def create_task(self) -> bytes:
        known_types, declared = self.known_types, self.declared
        body, fields = read_json(
            lambda body: (
                body,
                task_body(body, partial=False, known_types=known_types, declared=declared),
            ),
            self.max_body,
        )
        use = _key_use(body)
        rid = bottle.request.environ["flowforge.request_id"]
        self.admit()
        if use is None:
            task = self.store.create(NewTask(**fields), request_id=rid)
            replayed = False
        else:
            task, replayed = self.store.create_once(NewTask(**fields), request_id=rid, use=use)
        bottle.response.set_header("Location", f"/v1/tasks/{task.id}")
        # Once per POST, beside the access line: the hot path's way of logging (``log_fields``
        # writes the same line as log.info at half its cost, 10 us a request here).
        if replayed:
            message = "task creation replayed (Idempotency-Key)"
            logs.log_fields(log, logging.INFO, message, {"task_id": task.id})
            return _replayed(task)
        logs.log_fields(log, logging.INFO, "task created", {"task_id": task.id, "type": task.type})
        return ok(task, status=201)

    def create_batch(self) -> bytes:
        known_types, declared = self.known_types, self.declared
        body, items = read_json(
            lambda body: (body, batch_body(body, known_types=known_types, declared=declared)),
            self.max_body,
        )
        use = _key_use(body)
        self.admit(len(items))
        rid = bottle.request.environ["flowforge.request_id"]
        news = [NewTask(**fields) for fields in items]
        if use is None:
            tasks, replayed = self.store.create_many(news, request_id=rid), False
        else:
            tasks, replayed = self.store.create_many_once(news, request_id=rid, use=use)
        extra = {"count": len(tasks), "first_task_id": tasks[0].id, "last_task_id": tasks[-1].id}
        if replayed:
            log.info("batch creation replayed (Idempotency-Key)", extra=extra)
            return _replayed(tasks)
        log.info("tasks created in a batch", extra=extra)
        return ok(tasks, status=201)

    def get_task(self, task_id: int) -> bytes:
        fields = item_query(query_params())
        task = self.store.get(check_id(task_id))
        if task is None:
            raise ApiError(404, f"task {task_id} not found")
        return ok(task if fields is None else task_fields(task, fields))

    def list_attempts(self, task_id: int) -> bytes:
        """Every attempt kept (TASK_ATTEMPTS_KEPT), oldest first."""
        found = self.store.attempts(check_id(task_id))
        if found is None:
            raise ApiError(404, f"task {task_id} not found")
        return ok(found)

    def update_task(self, task_id: int) -> bytes:
        known_types = self.known_types
        changes = read_json(
            lambda body: task_body(body, partial=True, known_types=known_types), self.max_body
        )
        task_id = check_id(task_id)
        self.declarations.check_change(changes, lambda: self.store.get(task_id))
        task = self.store.update(task_id, changes)
        if task is None:
            raise ApiError(404, f"task {task_id} not found")
        return ok(task)

    def delete_task(self, task_id: int) -> bytes:
        self.store.delete(check_id(task_id))
        bottle.response.status = 204
        return b""

    def cancel_task(self, task_id: int) -> bytes:
        outcome = self.store.cancel(check_id(task_id))
        if outcome.immediate:
            log.info("task cancelled", extra={"task_id": task_id})
            return ok(outcome.task)
        log.info("task cancel requested: its worker was told", extra={"task_id": task_id})
        return ok(outcome.task, status=202)

    def retry_task(self, task_id: int) -> bytes:
        task = self.store.retry(check_id(task_id))
        log.info("task retried: pending again, attempts 0", extra={"task_id": task_id})
        return ok(task)


def _key_use(body: object) -> KeyUse | None:
    """The request's ``Idempotency-Key`` with its token and the SHA-256 of its ``body``
    (keys sorted: field order and spacing do not make another body); None without one."""
    key = idempotency_key()
    if key is None:
        return None
    digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).digest()
    token_id = bottle.request.environ.get("flowforge.token_id") or 0
    return KeyUse(token_id=token_id, key=key, request_hash=digest)


def _replayed(data: object) -> bytes:
    """A create answered from its key: 200 (nothing was created) and the replay header."""
    bottle.response.set_header(REPLAYED_HEADER, "true")
    return ok(data, status=200)
