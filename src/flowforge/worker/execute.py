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
import traceback
from time import perf_counter
from typing import Any

import orjson

from ..handlers import Discard, Handler, Snooze, TaskContext
from ..logs import encodable

ERROR_LIMIT = 2000  # characters of an exception kept in last_error
RESULT_LIMIT = 64 * 1024  # bytes of a handler's result, as JSON
TRACEBACK_LIMIT = 16 * 1024  # bytes of a handler's traceback kept in its attempt
TRACEBACK_HEAD = 4 * 1024  # of which the start (the outer frames); the rest is the end
CUT_MARKER = "\n[... {} bytes of the traceback cut ...]\n"


@dataclasses.dataclass(slots=True)
class Detail:
    """What an attempt's history entry says beyond the error when the run did not simply
    return: ``kind`` (``snoozed``, ``discarded``, ``timed_out``, ``crashed`` or None),
    ``traceback`` (the handler's, at most TRACEBACK_LIMIT bytes), ``delay`` (a snooze's
    seconds) and ``signal`` (the one that ended a child process). None for a success: the
    CPU seconds and peak RSS every run has travel as plain numbers beside it."""

    kind: str | None = None
    traceback: str | None = None
    delay: float = 0.0
    signal: int | None = None


def bounded_traceback(text: str) -> str:
    """``text`` in at most TRACEBACK_LIMIT bytes of UTF-8, storable: the start and the end
    (where the exception was raised) kept, the middle replaced by a marker saying how much
    went."""
    text = encodable(text.replace("\x00", "\\0"))
    data = text.encode()
    if len(data) <= TRACEBACK_LIMIT:
        return text
    marker = CUT_MARKER.format(len(data))  # an upper bound of what is cut: long enough
    tail = TRACEBACK_LIMIT - TRACEBACK_HEAD - len(marker.encode())
    cut = len(data) - TRACEBACK_HEAD - tail
    head = data[:TRACEBACK_HEAD].decode("utf-8", "ignore")
    end = data[-tail:].decode("utf-8", "ignore")
    return head + CUT_MARKER.format(cut) + end


def failure(exc: BaseException) -> Detail:
    """A handler's exception as its attempt records it (the traceback of the exception
    being handled: call it in the ``except``)."""
    if isinstance(exc, Snooze):
        return Detail("snoozed", None, exc.seconds)
    kind = "discarded" if isinstance(exc, Discard) else None
    return Detail(kind, bounded_traceback(traceback.format_exc()))


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
) -> tuple[str | None, str | None, float, Detail | None]:
    """Call the task's handler: (error or None, result as JSON text or None, duration ms,
    what its attempt records beyond that: None for a success).

    A return value that is not JSON-serialisable (NaN and Infinity included), or over
    RESULT_LIMIT as JSON, fails the attempt like an exception would (the run itself is
    done: the handler is not retried within this attempt). ``Snooze`` is no error: the
    error is None, the detail says ``snoozed``."""
    started = perf_counter()
    try:
        handler = handlers.get(task.type)
        if handler is None:
            raise LookupError(f"no handler for task type {task.type!r}")
        value = handler(task)
    except BaseException as exc:  # a handler must never take the worker down
        detail = failure(exc)
        error = None if detail.kind == "snoozed" else error_text(exc)
        return error, None, round((perf_counter() - started) * 1000, 3), detail
    duration_ms = round((perf_counter() - started) * 1000, 3)
    if value is None:
        return None, None, duration_ms, None
    try:
        error, result = _as_json(value)
    except BaseException as exc:  # a dict subclass's items(), say: the handler's code
        error, result = storable(f"result not JSON-serialisable: {error_text(exc)}"), None
    return error, result, duration_ms, None


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
