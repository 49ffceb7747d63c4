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
exception is recorded in ``last_error`` and the task retried with backoff). Two
exceptions say more: ``raise Discard("why")`` fails the task now, attempts left or not;
``raise Snooze(seconds)`` puts it back to ``pending`` for that long without counting the
attempt. Every attempt is kept (``GET /v1/tasks/{id}/attempts``), with the traceback.

A handler may declare what it takes and how it is retried, with ``@handler``::

    @flowforge.handlers.handler(
        schema={"type": "object", "required": ["to"]},  # JSON Schema draft 2020-12
        max_attempts=5,
        backoff=lambda attempt: 10 * attempt,  # seconds after failed attempt N
    )
    def send_email(task): ...

The API refuses a payload its schema refuses (400 naming the field); ``max_attempts``
applies when a task does not give its own (a task's field wins, then the handler's, then
TASK_MAX_ATTEMPTS); ``backoff`` replaces TASK_RETRY_BACKOFF and ..._MAX for its tasks.

- **Return value**: what a handler returns is stored as the task's ``result`` (JSON, at
  most 64 KiB once serialised; ``None`` stores nothing). A value that cannot be
  serialised, or a larger one, fails that attempt with the reason in ``last_error``.
- **Cancellation**: ``task.cancelled`` is a ``threading.Event``, set within a second of
  ``POST /v1/tasks/{id}/cancel`` (and when the task's timeout passes in thread mode). A
  long handler checks it (``if task.cancelled.is_set()``) or waits on it instead of
  sleeping (``task.cancelled.wait(5)``) and returns or raises soon after: the task then
  ends ``cancelled``, whatever it returned. One that ignores it is terminated after
  ``WORKER_CANCEL_GRACE`` (process isolation).
- **Timeouts**: ``task.timeout`` seconds per attempt (the task's ``timeout``, default
  ``TASK_TIMEOUT``). With ``WORKER_ISOLATION=process`` (the default) the handler's
  process is terminated when it passes (SIGTERM, SIGKILL after ``WORKER_KILL_GRACE``) and
  the attempt fails "timed out after N s"; with ``thread`` only ``task.cancelled`` is set.
- **Isolation**: with ``process``, handlers run in child processes that never touch the
  database; a crash (segfault, ``os._exit``) fails only that task's attempt. Module-level
  state lives per child process; children may be replaced at any time
  (``WORKER_MAX_TASKS_PER_CHILD``, ``WORKER_MAX_CHILD_MEMORY``, after a crash).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, TypeVar

from .domain.fields import ATTEMPTS_MAX, DEFAULT_QUEUE, DEFAULT_TIMEOUT

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "flowforge.handlers"
# The longest a task is put off by its handler: a Snooze, or a declared backoff's wait.
LONGEST_WAIT = 30 * 86400


_EVENT_LOCK = threading.Lock()


class TaskContext:
    """What a handler gets: the task's identity and input, and ``cancelled``: set when the
    task should stop (a cancel request; in thread mode also its timeout).

    ``cancelled`` is made on first use (a ``threading.Event`` costs more to create than
    a noop task takes to run), by whichever side asks first: the handler or a cancel."""

    __slots__ = (
        "_cancelled",
        "attempt",
        "id",
        "max_attempts",
        "payload",
        "queue",
        "request_id",
        "timeout",
        "type",
    )

    def __init__(
        self,
        id: int,
        type: str,
        payload: dict[str, Any],
        attempt: int,
        max_attempts: int,
        request_id: str | None,
        queue: str = DEFAULT_QUEUE,
        timeout: int = DEFAULT_TIMEOUT,
    ) -> None:
        self.id = id
        self.type = type
        self.payload = payload
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.request_id = request_id
        self.queue = queue
        self.timeout = timeout
        self._cancelled: threading.Event | None = None

    @property
    def cancelled(self) -> threading.Event:
        event = self._cancelled
        if event is None:
            with _EVENT_LOCK:
                event = self._cancelled
                if event is None:
                    event = self._cancelled = threading.Event()
        return event

    def is_cancelled(self) -> bool:
        """``cancelled.is_set()`` without making the event."""
        event = self._cancelled
        return event is not None and event.is_set()

    def __repr__(self) -> str:
        return (
            f"TaskContext(id={self.id}, type={self.type!r}, attempt={self.attempt}/"
            f"{self.max_attempts}, queue={self.queue!r}, timeout={self.timeout})"
        )


Handler = Callable[[TaskContext], object]


class Discard(Exception):
    """Raised by a handler: fail the task now, with no more attempts (its outcome
    ``discarded``, ``last_error`` "Discard: <why>")."""

    def __init__(self, why: str = "discarded by its handler") -> None:
        super().__init__(why)


class Snooze(Exception):
    """Raised by a handler: put the task back to ``pending`` with ``run_at`` ``seconds``
    from now (0 to 30 days), the attempt not counted (its outcome ``snoozed``)."""

    MAX_SECONDS = LONGEST_WAIT

    def __init__(self, seconds: float) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise TypeError("Snooze(seconds): seconds must be a number")
        if not 0 <= seconds <= self.MAX_SECONDS:
            raise ValueError(f"Snooze(seconds): 0 to {self.MAX_SECONDS} seconds, not {seconds}")
        super().__init__(seconds)
        self.seconds = float(seconds)


class HandlerSpecError(ValueError):
    """A handler's declaration is not usable (a bad schema, max_attempts or backoff)."""


Backoff = Callable[[int], float]
H = TypeVar("H", bound=Callable[..., object])
SPEC_ATTRIBUTE = "__flowforge_spec__"


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """What a handler declares (``@handler``): ``schema``, the JSON Schema (draft 2020-12)
    its payload must match at creation; ``max_attempts`` for tasks that give none;
    ``backoff(attempt)``, the seconds to wait after failed attempt ``attempt`` (1 for
    the first) before the next, as Oban's ``backoff/1`` and River's ``NextRetry``."""

    schema: Mapping[str, Any] | None = None
    max_attempts: int | None = None
    backoff: Backoff | None = None

    def __post_init__(self) -> None:
        if self.schema is not None and not isinstance(self.schema, Mapping | bool):
            raise HandlerSpecError("schema must be a JSON Schema (a dict)")
        attempts = self.max_attempts
        if attempts is not None and (
            isinstance(attempts, bool)
            or not isinstance(attempts, int)
            or not 1 <= attempts <= ATTEMPTS_MAX
        ):
            raise HandlerSpecError(f"max_attempts must be an integer from 1 to {ATTEMPTS_MAX}")
        if self.backoff is not None and not callable(self.backoff):
            raise HandlerSpecError("backoff must be a function of the attempt number")

    def delay_after(self, attempt: int) -> float | None:
        """The declared wait after failed attempt ``attempt`` (None: none declared).
        Raises HandlerSpecError when the backoff raises or answers no number of seconds
        from 0 to LONGEST_WAIT (the worker then falls back to TASK_RETRY_BACKOFF)."""
        if self.backoff is None:
            return None
        try:
            seconds = self.backoff(attempt)
        except Exception as exc:  # the handler's code: never the worker's failure
            raise HandlerSpecError(f"backoff({attempt}) raised {exc!r}") from exc
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 <= seconds <= LONGEST_WAIT  # NaN fails this too
        ):
            raise HandlerSpecError(
                f"backoff({attempt}) answered {seconds!r}, not 0 to {LONGEST_WAIT} seconds"
            )
        return float(seconds)


NO_SPEC = HandlerSpec()


def handler(
    *,
    schema: Mapping[str, Any] | None = None,
    max_attempts: int | None = None,
    backoff: Backoff | None = None,
) -> Callable[[H], H]:
    """Declare a handler's payload schema, max_attempts and backoff (see HandlerSpec);
    the function is returned as it was, with its spec attached."""
    spec = HandlerSpec(schema, max_attempts, backoff)

    def attach(function: H) -> H:
        setattr(function, SPEC_ATTRIBUTE, spec)
        return function

    return attach


def spec_of(function: object) -> HandlerSpec:
    """A handler's declaration; a plain function declares nothing."""
    spec = getattr(function, SPEC_ATTRIBUTE, NO_SPEC)
    return spec if isinstance(spec, HandlerSpec) else NO_SPEC


def check_schema(name: str, schema: Mapping[str, Any] | bool) -> None:
    """Refuse a schema that is no JSON Schema draft 2020-12, naming the handler and where
    in the schema it is wrong."""
    from jsonschema import Draft202012Validator  # here: a process with no schema skips it
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "(the root)"
        raise HandlerSpecError(
            f"handler {name}: its payload schema is not valid JSON Schema (draft 2020-12) "
            f"at {where}: {exc.message}"
        ) from None


def noop(task: TaskContext) -> None:
    """Does nothing; the default type."""


SLEEP_SCHEMA = {
    "type": "object",
    "properties": {"seconds": {"type": "number", "minimum": 0}},
}


@handler(schema=SLEEP_SCHEMA)
def sleep(task: TaskContext) -> None:
    """Sleeps ``payload["seconds"]`` (default 1, at most one hour); stops early when the
    task is cancelled. The schema refuses another ``seconds`` at creation; the check
    here is for tasks the API did not check (an edit, a schedule's, SQL)."""
    seconds = task.payload.get("seconds", 1)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise ValueError("payload.seconds must be a non-negative number")
    task.cancelled.wait(min(float(seconds), 3600.0))


BUILTINS: dict[str, Handler] = {"noop": noop, "sleep": sleep}


def load_handlers() -> dict[str, Handler]:
    """Built-ins plus every plug-in of the entry-point group (a plug-in may not shadow one).

    Each declared payload schema is checked here, once: a plug-in with a bad one is a
    broken plug-in (logged, not loaded: its type is unknown to the API and the worker)."""
    handlers = dict(BUILTINS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILTINS:
            log.warning("handler plug-in %s ignored: the name is a built-in", ep.value)
            continue
        try:
            function = ep.load()
            schema = spec_of(function).schema
            if schema is not None:
                check_schema(ep.name, schema)
        except Exception as exc:  # a broken plug-in must not take the service down
            log.error("handler plug-in %s failed to load: %s", ep.value, exc)
            continue
        handlers[ep.name] = function
    return handlers
