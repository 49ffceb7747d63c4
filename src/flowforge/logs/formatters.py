"""The two line formats ``LOG_FORMAT`` chooses from: JSON (one object per line) and text
(readable ``key=value`` lines for a terminal)."""

from __future__ import annotations

import logging
import re
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from pythonjsonlogger.orjson import OrjsonFormatter

from .fields import encodable, encodable_value, own_fields


class JsonFormatter(OrjsonFormatter):
    """python-json-logger's orjson formatter, its output unchanged (``message``, ``level``,
    ``logger``, ``service``, the record's own fields, ``timestamp``, ``exc_info`` and
    ``stack_info`` when there are some), built in one pass: the library's generic path
    (renames looked up per field, the reserved set walked per attribute, its hooks) cost
    about 13 us a line, most of the access line's formatting. A ``dict`` message still
    takes the library's path. ``format_fields`` takes fields already gathered, so a
    handler that needs them too (journald) walks the record once."""

    def __init__(self, service: str) -> None:
        super().__init__(
            "{message}{levelname}{name}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger"},
            static_fields={"service": service},
            timestamp=True,
        )
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record.msg, dict):
            return super().format(record)
        return self.format_fields(record, own_fields(record))

    def format_fields(self, record: logging.LogRecord, fields: dict[str, Any]) -> str:
        record.message = message = record.getMessage()
        data: dict[str, Any] = {
            "message": message,
            "level": record.levelname,
            "logger": record.name,
            "service": self._service,
        }
        if record.exc_info:
            data["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exc_info"] = record.exc_text
        if record.stack_info:
            data["stack_info"] = self.formatStack(record.stack_info)
        data.update(fields)
        data["timestamp"] = datetime.fromtimestamp(record.created, UTC)
        return self._dumps(data)

    def format_line(
        self,
        name: str,
        levelname: str,
        message: str,
        fields: dict[str, Any],
        created: float | None = None,
    ) -> str:
        """The line ``format_fields`` writes for a record of these (no traceback), stamped
        ``created`` (seconds since the epoch; None: now): for ``log_fields``, which makes
        no record."""
        data: dict[str, Any] = {
            "message": message,
            "level": levelname,
            "logger": name,
            "service": self._service,
        }
        data.update(fields)
        data["timestamp"] = (
            datetime.now(UTC) if created is None else datetime.fromtimestamp(created, UTC)
        )
        return self._dumps(data)

    def _dumps(self, data: dict[str, Any]) -> str:
        try:
            return orjson.dumps(data, default=self.json_default, option=_ORJSON_OPTIONS).decode()
        except TypeError:  # a lone surrogate somewhere (a handler's text): write it escaped
            default = self.json_default
            return orjson.dumps(
                encodable_value(data),
                default=lambda obj: encodable_value(default(obj)),
                option=_ORJSON_OPTIONS,
            ).decode()


_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS


def json_formatter(service: str) -> logging.Formatter:
    return JsonFormatter(service)


_PLAIN_VALUE = re.compile(r"^[^\s\"=]+$")


class TextFormatter(logging.Formatter):
    """One readable line per event, for a terminal (``LOG_FORMAT=text``): time, level,
    service, logger and message, then the same fields the JSON line has as ``key=value``
    (values with spaces or quotes are quoted). A traceback (``exc_info``, or a handler
    process's ``traceback`` field) follows on its own lines."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        return self.format_fields(record, own_fields(record))

    def format_fields(self, record: logging.LogRecord, fields: dict[str, Any]) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = (
            f"{stamp}.{int(record.msecs):03d}Z {record.levelname:<7} {self.service} "
            f"{record.name}: {record.getMessage()}"
        )
        pairs = []
        below = ""  # a multi-line traceback field: on lines of its own, as exc_info
        for key, value in fields.items():
            if value is None:
                continue
            if key == "traceback":
                below = f"\n{value}"
                continue
            text = str(value)
            if not _PLAIN_VALUE.match(text):
                text = orjson.dumps(encodable(text)).decode()
            pairs.append(f"{key}={text}")
        if pairs:
            line += "  " + " ".join(pairs)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return encodable(line + below)  # the stream writes UTF-8 and refuses lone surrogates


def make_formatter(service: str, log_format: str = "json") -> logging.Formatter:
    """The formatter ``LOG_FORMAT`` names: ``json`` (default) or ``text``."""
    return TextFormatter(service) if log_format == "text" else json_formatter(service)
