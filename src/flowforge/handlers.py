"""Task handlers: callables registered by name; ``type`` picks the one that runs a task.

Built-ins are ``noop`` and ``sleep``. Plug-ins come from the ``flowforge.handlers``
entry-point group, so a package of yours can add its own::

    # your pyproject.toml
    [project.entry-points."flowforge.handlers"]
    send_email = "yourpackage.tasks:send_email"

    # yourpackage/tasks.py
    def send_email(task: flowforge.handlers.TaskContext) -> None:
        ...

A handler that returns has succeeded; one that raises has failed that attempt (the
exception is recorded in ``last_error`` and the task retried with backoff).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "flowforge.handlers"


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a handler gets: the task's identity and input."""

    id: int
    type: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    request_id: str | None


Handler = Callable[[TaskContext], object]


def noop(task: TaskContext) -> None:
    """Does nothing; the default type."""


def sleep(task: TaskContext) -> None:
    """Sleeps ``payload["seconds"]`` (default 1, at most one hour)."""
    seconds = task.payload.get("seconds", 1)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise ValueError("payload.seconds must be a non-negative number")
    time.sleep(min(float(seconds), 3600.0))


BUILTINS: dict[str, Handler] = {"noop": noop, "sleep": sleep}


def load_handlers() -> dict[str, Handler]:
    """Built-ins plus every plug-in of the entry-point group (a plug-in may not shadow one)."""
    handlers = dict(BUILTINS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILTINS:
            log.warning("handler plug-in %s ignored: the name is a built-in", ep.value)
            continue
        try:
            handlers[ep.name] = ep.load()
        except Exception as exc:  # a broken plug-in must not take the service down
            log.error("handler plug-in %s failed to load: %s", ep.value, exc)
    return handlers
