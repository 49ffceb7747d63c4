"""What a line carries besides its message: the fields bound to the current request or
task (``bind``), a record's own fields, and text made safe for UTF-8 sinks."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS

# Fields bound to the current request or task; added to every record logged meanwhile.
_context: ContextVar[dict[str, Any]] = ContextVar("flowforge_log_context", default={})  # noqa: B039

_RESERVED = frozenset(RESERVED_ATTRS) | {"service", "message", "asctime", "taskName"}


class bind:
    """Add ``fields`` (e.g. request_id, task_id) to every line logged inside the block.
    A class rather than a generator context manager: it runs once per request and per
    task, and costs a third of ``contextlib.contextmanager``'s machinery."""

    __slots__ = ("_fields", "_token")

    def __init__(self, **fields: Any) -> None:
        self._fields = fields

    def __enter__(self) -> None:
        self._token = _context.set({**_context.get(), **self._fields})

    def __exit__(self, *exc: object) -> None:
        _context.reset(self._token)


def bound() -> dict[str, Any]:
    """The fields bound right now."""
    return _context.get()


class ContextFilter(logging.Filter):
    """Copies the bound fields onto each record (explicit ``extra`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def encodable(text: str) -> str:
    """``text`` as UTF-8 can carry it: each lone surrogate written as its escape (``\\ud800``,
    six characters). Python strings may hold them (``"\\ud800"``, ``os.fsdecode`` of bytes
    that are not UTF-8) and neither PostgreSQL, orjson nor a UTF-8 stream takes them: one
    in a handler's exception message stopped the worker's dispatcher. The same string
    when there is none (the usual case: an ASCII check, no copy)."""
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    return text


def encodable_value(value: Any) -> Any:
    """``value`` with ``encodable`` applied to every string in it (dict keys too)."""
    if isinstance(value, str):
        return encodable(value)
    if isinstance(value, dict):
        return {encodable_value(k): encodable_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encodable_value(v) for v in value]
    return value


def own_fields(record: logging.LogRecord) -> dict[str, Any]:
    """A record's own fields: its ``extra`` and the bound context, in the order they were
    set (``None`` values included), without the record's machinery (msg, args, ...)."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _RESERVED and key[:1] != "_"
    }
