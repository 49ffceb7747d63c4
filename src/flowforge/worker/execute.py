"""Running one handler call, the same in a thread and in a child process: the error text,
the result as JSON, the duration. Nothing here touches the database.

This is where a handler's text enters the worker (the attempt's error, its result): what
leaves here can be written to PostgreSQL and to the log as it is. An error message is made
storable (NUL and lone surrogates escaped, cut to ERROR_LIMIT); a result that JSON cannot
carry faithfully (not serialisable, NaN or Infinity, a lone surrogate, a NUL, too large)
fails the attempt instead of being stored altered."""

from __future__ import annotations

import dataclasses
import math
from time import perf_counter
from typing import Any

import orjson

from ..handlers import Handler, TaskContext
from ..logs import encodable

ERROR_LIMIT = 2000  # characters of an exception kept in last_error
RESULT_LIMIT = 64 * 1024  # bytes of a handler's result, as JSON


def storable(text: str) -> str:
    """``text`` as PostgreSQL's text and UTF-8 can hold it: NUL as ``\\0`` (text cannot
    hold one), lone surrogates as their escapes (UTF-8 cannot), at most ERROR_LIMIT
    characters."""
    return encodable(text.replace("\x00", "\\0")[:ERROR_LIMIT])


def error_text(exc: BaseException) -> str:
    try:
        message = str(exc)
    except BaseException as inner:  # a handler's exception may break even str()
        message = f"(its message could not be read: {type(inner).__name__})"
    return storable(f"{type(exc).__name__}: {message}")


def _not_finite(value: Any, path: str) -> str | None:
    """Where in ``value`` a NaN or an infinity is, as ``result.key[2]`` (None: nowhere):
    orjson writes them as ``null``, and JSON has no such numbers."""
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        kind = "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
        return f"{kind} is not allowed in JSON (at {path})"
    if isinstance(value, dict):
        for key, item in value.items():
            found = _not_finite(item, f"{path}.{key}")
            if found:
                return found
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _not_finite(item, f"{path}[{i}]")
            if found:
                return found
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):  # orjson's too
        for field in dataclasses.fields(value):
            found = _not_finite(getattr(value, field.name), f"{path}.{field.name}")
            if found:
                return found
    return None


def run_handler(
    handlers: dict[str, Handler], task: TaskContext
) -> tuple[str | None, str | None, float]:
    """Call the task's handler: (error or None, result as JSON text or None, duration ms).

    A return value that is not JSON-serialisable (NaN and Infinity included), or over
    RESULT_LIMIT as JSON, fails the attempt like an exception would (the run itself is
    done: the handler is not retried within this attempt)."""
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
        error, result = _as_json(value)
    except BaseException as exc:  # a dict subclass's items(), say: the handler's code
        error, result = storable(f"result not JSON-serialisable: {error_text(exc)}"), None
    return error, result, duration_ms


def _as_json(value: Any) -> tuple[str | None, str | None]:
    """A handler's return value as JSON text, or why it cannot be stored."""
    try:
        data = orjson.dumps(value)
    except TypeError as exc:  # orjson.JSONEncodeError (a lone surrogate is one too)
        return storable(f"result not JSON-serialisable: {exc}"), None
    if b"null" in data:  # a NaN or an infinity may be one of these: look (rare, so cheap)
        where = _not_finite(value, "result")
        if where is not None:
            return storable(f"result not JSON-serialisable: {where}"), None
    if b"\\u0000" in data:  # PostgreSQL's jsonb refuses it: the whole write would fail
        return "result not storable: a string in it holds a NUL character", None
    if len(data) > RESULT_LIMIT:
        return f"result too large: {len(data)} bytes as JSON (limit {RESULT_LIMIT})", None
    return None, data.decode()


def cancelled_note(error: str | None) -> str:
    """How a run ended after its task.cancelled was set."""
    if error is None:
        return "cancelled by request: the handler stopped after task.cancelled was set"
    return f"cancelled by request: the handler raised after task.cancelled was set: {error}"
