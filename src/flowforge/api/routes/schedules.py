"""``/v1/schedules``: periodic tasks (``flowforge.stores.schedules``), listed, created, read,
changed (paused and resumed too) and deleted by name, and run once now."""

from __future__ import annotations

import logging
from typing import Any

import bottle

from ...domain.declarations import Declarations
from ...domain.schedules import Schedule, schedule_body, valid_name
from ...domain.schedules import list_query as schedule_list_query
from ...domain.validation import ValidationError
from ...stores.schedules import ScheduleStore
from ..admission import Admission
from ..envelope import ApiError, ok
from ..inputs import query_params, read_json

log = logging.getLogger("flowforge.api")


class ScheduleRoutes:
    """The schedule routes over ``schedules``; ``declarations`` are the handlers' (an
    unknown type is refused, so is a payload its type's schema refuses)."""

    def __init__(
        self,
        schedules: ScheduleStore,
        declarations: Declarations,
        *,
        max_body: int,
        admit: Admission,
    ) -> None:
        self.schedules = schedules
        self.declarations = declarations
        self.max_body = max_body
        self.admit = admit  # a run creates a task: API_MAX_PENDING as for POST /v1/tasks

    def register(self, app: bottle.Bottle) -> None:
        app.route("/v1/schedules", "GET", self.list_schedules)
        app.route("/v1/schedules", "POST", self.create_schedule)
        app.route("/v1/schedules/<name>", "GET", self.get_schedule)
        app.route("/v1/schedules/<name>", "PUT", self.update_schedule)
        app.route("/v1/schedules/<name>", "DELETE", self.delete_schedule)
        app.route("/v1/schedules/<name>/run", "POST", self.run_schedule)

    def _body(self, *, partial: bool) -> dict[str, Any]:
        known_types, declared = self.declarations.types, self.declarations.apply
        return read_json(
            lambda body: schedule_body(
                body, partial=partial, known_types=known_types, declared=declared
            ),
            self.max_body,
        )

    def _get_or_404(self, name: str) -> Schedule:
        found = self.schedules.get(name) if valid_name(name) else None
        if found is None:
            raise ApiError(404, f"schedule {name!r} not found")
        return found

    def list_schedules(self) -> bytes:
        page, limit = schedule_list_query(query_params())
        rows, total = self.schedules.list(limit=limit, offset=(page - 1) * limit)
        return ok(rows, meta={"page": page, "limit": limit, "total": total})

    def create_schedule(self) -> bytes:
        created = self.schedules.create(self._body(partial=False))
        log.info("schedule created", extra={"schedule": created.name, "cron": created.cron})
        bottle.response.set_header("Location", f"/v1/schedules/{created.name}")
        return ok(created, status=201)

    def get_schedule(self, name: str) -> bytes:
        return ok(self._get_or_404(name))

    def update_schedule(self, name: str) -> bytes:
        changes = self._body(partial=True)
        if changes.get("name", name) != name:
            raise ValidationError(
                "the schedule is not valid", {"name": "cannot change (it names the schedule)"}
            )
        if valid_name(name):
            self.declarations.check_change(changes, lambda: self.schedules.get(name))
        updated = self.schedules.update(name, changes) if valid_name(name) else None
        if updated is None:
            raise ApiError(404, f"schedule {name!r} not found")
        log.info("schedule changed", extra={"schedule": name})
        return ok(updated)

    def run_schedule(self, name: str) -> bytes:
        """One task now from the schedule (paused or not), answered as POST /v1/tasks."""
        if not valid_name(name):
            raise ApiError(404, f"schedule {name!r} not found")
        self.admit()
        task = self.schedules.run(name, request_id=bottle.request.environ["flowforge.request_id"])
        if task is None:
            raise ApiError(404, f"schedule {name!r} not found")
        log.info("schedule run now", extra={"schedule": name, "task_id": task.id})
        bottle.response.set_header("Location", f"/v1/tasks/{task.id}")
        return ok(task, status=201)

    def delete_schedule(self, name: str) -> bytes:
        if not (valid_name(name) and self.schedules.delete(name)):
            raise ApiError(404, f"schedule {name!r} not found")
        log.info("schedule deleted", extra={"schedule": name})
        bottle.response.status = 204
        return b""
