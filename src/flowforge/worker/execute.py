"""Running one handler call, the same in a thread and in a child process: the error text,
the result as JSON, the duration. Nothing here touches the database."""

from __future__ import annotations

from time import perf_counter

import orjson

from ..handlers import Handler, TaskContext

ERROR_LIMIT = 2000  # characters of an exception kept in last_error
RESULT_LIMIT = 64 * 1024  # bytes of a handler's result, as JSON


def error_text(exc: BaseException) -> str:
    # PostgreSQL text cannot hold NUL: a message with one must not block the write.
    return f"{type(exc).__name__}: {exc}".replace("\x00", "\\0")[:ERROR_LIMIT]


def run_handler(
    handlers: dict[str, Handler], task: TaskContext
) -> tuple[str | None, str | None, float]:
    """Call the task's handler: (error or None, result as JSON text or None, duration ms).

    A return value that is not JSON-serialisable, or over RESULT_LIMIT as JSON, fails the
    attempt like an exception would (the run itself is done: the handler is not retried
    within this attempt)."""
    started = perf_counter()
    try:
        handler = handlers.get(task.type)
        if handler is None:
            raise LookupError(f"no handler for task type {task.type!r}")
        value = handler(task)
    except BaseException as exc:  # a handler must never take the worker down
        return error_text(exc), None, round((perf_counter() - started) * 1000, 3)
    duration_ms = round((perf_counter() - started) * 1000, 3)
    if value is None:
        return None, None, duration_ms
    try:
        data = orjson.dumps(value)
    except TypeError as exc:  # orjson.JSONEncodeError
        return f"result not JSON-serialisable: {exc}"[:ERROR_LIMIT], None, duration_ms
    if b"\\u0000" in data:  # PostgreSQL's jsonb refuses it: the whole write would fail
        return "result not storable: a string in it holds a NUL character", None, duration_ms
    if len(data) > RESULT_LIMIT:
        return (
            f"result too large: {len(data)} bytes as JSON (limit {RESULT_LIMIT})",
            None,
            duration_ms,
        )
    return None, data.decode(), duration_ms


def cancelled_note(error: str | None) -> str:
    """How a run ended after its task.cancelled was set."""
    if error is None:
        return "cancelled by request: the handler stopped after task.cancelled was set"
    return f"cancelled by request: the handler raised after task.cancelled was set: {error}"
