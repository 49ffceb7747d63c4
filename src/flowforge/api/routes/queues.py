"""``/v1/queues``: queues as objects (``flowforge.stores.queues``): listed with their
counts and settings, read and set by name (pause, concurrency, rate)."""

from __future__ import annotations

import logging

import bottle

from ...domain.queues import checked_name, settings_body
from ...stores.queues import QueueStore
from ..envelope import ApiError, ok
from ..inputs import read_json

log = logging.getLogger("flowforge.api")


class QueueRoutes:
    def __init__(self, queues: QueueStore, *, max_body: int) -> None:
        self.queues = queues
        self.max_body = max_body

    def register(self, app: bottle.Bottle) -> None:
        app.route("/v1/queues", "GET", self.list_queues)
        app.route("/v1/queues/<name>", "GET", self.get_queue)
        app.route("/v1/queues/<name>", "PUT", self.put_queue)

    def list_queues(self) -> bytes:
        return ok(self.queues.list())

    def get_queue(self, name: str) -> bytes:
        found = self.queues.get(checked_name(name))
        if found is None:
            raise ApiError(404, f"queue {name!r} has neither tasks nor settings")
        return ok(found)

    def put_queue(self, name: str) -> bytes:
        name = checked_name(name)
        changes = read_json(settings_body, self.max_body)
        self.queues.put(name, changes)
        log.info("queue settings changed", extra={"queue": name, **changes})
        return ok(self.queues.get(name))
