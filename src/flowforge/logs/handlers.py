"""Where lines go: journald with the fields as journal fields (``JournalHandler``) when
systemd connected stdout to it, else stdout (``StreamLineHandler``). Both can also write a
line ``log_fields`` formatted without a record (``emit_line``)."""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any

from .fields import encodable, own_fields

_JOURNAL_FIELD = re.compile(r"[^A-Z0-9_]")
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}


def _journal_name(key: str) -> str:
    """``key`` as a journal field name (``[A-Z0-9_]``, at most 64 characters)."""
    name = _JOURNAL_NAMES.get(key)
    if name is None:
        name = _JOURNAL_FIELD.sub("_", key.upper())[:64]
        if len(_JOURNAL_NAMES) < 4096:  # field names are few; never grow without bound
            _JOURNAL_NAMES[key] = name
    return name


_JOURNAL_NAMES: dict[str, str] = {}


def journal_fields(record: logging.LogRecord) -> dict[str, str]:
    """A record's own fields (``extra`` and bound context) as journal field names."""
    return _as_journal_fields(own_fields(record))


def _as_journal_fields(fields: dict[str, Any]) -> dict[str, str]:
    # sd_journal takes UTF-8: a value with a lone surrogate would lose the whole entry.
    return {
        _journal_name(key): encodable(str(value))
        for key, value in fields.items()
        if value is not None
    }


class JournalHandler(logging.Handler):
    """Sends each record to journald with its context as fields (cysystemd's sd_journal).
    The record's fields are gathered once, for the formatter and the journal alike."""

    def __init__(self, service: str) -> None:
        super().__init__()
        from cysystemd.journal import send  # imported here: only used under systemd

        self._send = send
        self._identifier = f"flowforge-{service}"
        self._service = service

    def emit_line(self, name: str, levelno: int, line: str, fields: dict[str, Any]) -> None:
        """Send a formatted ``line`` with its fields (a record's, or ``log_fields``')."""
        self._send(
            message=line,
            priority=_PRIORITY.get(levelno, 2),
            syslog_identifier=self._identifier,
            service=self._service,
            logger=name,
            **{key.lower(): value for key, value in _as_journal_fields(fields).items()},
        )

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = own_fields(record)
            format_fields = getattr(self.formatter, "format_fields", None)
            message = (
                format_fields(record, fields) if format_fields is not None else self.format(record)
            )
            self.emit_line(record.name, record.levelno, message, fields)
        except Exception:
            self.handleError(record)


class StreamLineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that can also write a line ``log_fields`` formatted."""

    def emit_line(
        self, name: str, levelno: int, line: str, fields: dict[str, Any], flush: bool = True
    ) -> None:
        """``flush=False``: the line stays in the stream's buffer until the next flush (the
        background writer's, once its queue is empty)."""
        with self.lock:  # type: ignore[union-attr]
            self.stream.write(line + "\n")
            if flush:
                self.stream.flush()


def stdout_is_journal() -> bool:
    """True when systemd connected our stdout to journald (``JOURNAL_STREAM=dev:inode``)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in stream.split(":"))
        st = os.fstat(sys.stdout.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)
