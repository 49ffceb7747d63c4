"""Logging: one JSON object per line, with the request and task context on every line.

Under systemd (``JOURNAL_STREAM`` names our stdout) lines go to journald natively: the
JSON line is MESSAGE, and the context (``request_id`` -> ``REQUEST_ID``, ``task_id`` ->
``TASK_ID``, ...) become journal fields, so ``journalctl REQUEST_ID=<id>`` finds every
line of one request in the API and the worker. Elsewhere the same JSON goes to stdout.
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import queue
import re
import signal
import sys
import time
from contextvars import ContextVar
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener
from typing import Any, NamedTuple

import orjson
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.orjson import OrjsonFormatter

# Fields bound to the current request or task; added to every record logged meanwhile.
_context: ContextVar[dict[str, Any]] = ContextVar("flowforge_log_context", default={})  # noqa: B039

_JOURNAL_FIELD = re.compile(r"[^A-Z0-9_]")
_RESERVED = frozenset(RESERVED_ATTRS) | {"service", "message", "asctime", "taskName"}
_listener: QueueListener | None = None  # the background writer, when there is one
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}


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


def _encodable_value(value: Any) -> Any:
    """``value`` with ``encodable`` applied to every string in it (dict keys too)."""
    if isinstance(value, str):
        return encodable(value)
    if isinstance(value, dict):
        return {_encodable_value(k): _encodable_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encodable_value(v) for v in value]
    return value


def own_fields(record: logging.LogRecord) -> dict[str, Any]:
    """A record's own fields: its ``extra`` and the bound context, in the order they were
    set (``None`` values included), without the record's machinery (msg, args, ...)."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _RESERVED and key[:1] != "_"
    }


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
                _encodable_value(data),
                default=lambda obj: _encodable_value(default(obj)),
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


# The handler configure_logging installed, when ``log_fields`` may write to it directly
# (JSON lines); in the background mode, the queue handler in front of it too.
_direct: StreamLineHandler | JournalHandler | None = None
_enqueue: _Enqueue | None = None


class _Line(NamedTuple):
    """What ``log_fields`` hands the background writer instead of a LogRecord."""

    name: str
    levelno: int
    message: str
    fields: dict[str, Any]
    created: float


def log_fields(logger: logging.Logger, level: int, message: str, fields: dict[str, Any]) -> None:
    """What ``logger.log(level, message, extra=fields)`` writes, the same line with the same
    fields (the bound context included), for a line on a hot path: the API's access line,
    once per request, and the worker's outcome line, once per task. With JSON lines from
    ``configure_logging`` (and nothing else attached), it formats the fields straight to a
    line: no LogRecord, no filter or handler chain, which cost about half of the access
    line's 24 us in the API's profile (stdout and journald alike). In the background mode
    (the worker) the fields go to the writer thread, which formats them. Otherwise it is
    that ``logger.log`` call."""
    if not logger.isEnabledFor(level):
        return
    direct = _direct
    if direct is None or logger.handlers or logger.filters or not logger.propagate:
        logger.log(level, message, extra=fields)
        return
    handlers = logging.root.handlers
    background = _enqueue is not None and handlers == [_enqueue]
    if not background and handlers != [direct]:
        logger.log(level, message, extra=fields)
        return
    context = _context.get()
    if context:  # as ContextFilter adds them: after the fields, which win
        fields = {**fields, **{k: v for k, v in context.items() if k not in fields}}
    if background:
        _enqueue.queue.put_nowait(_Line(logger.name, level, message, fields, time.time()))  # type: ignore[union-attr]
        return
    formatter: JsonFormatter = direct.formatter  # type: ignore[assignment]
    try:
        line = formatter.format_line(logger.name, logging.getLevelName(level), message, fields)
        direct.emit_line(logger.name, level, line, fields)
    except Exception:  # as a handler does: a failed line never fails the request
        logger.log(level, message, extra=fields)


def stdout_is_journal() -> bool:
    """True when systemd connected our stdout to journald (``JOURNAL_STREAM=dev:inode``)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in stream.split(":"))
        st = os.fstat(sys.stdout.fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


class _Enqueue(QueueHandler):
    """Hands records to a QueueListener thread as they are: that thread formats and writes
    them. (The stock ``prepare`` formats here, in the caller's thread, and folds a
    traceback into the message.) The bound context is copied on by the filter first.
    ``msg % args`` is applied in that thread too: log values, not objects that change."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class _Writer(QueueListener):
    """The background writer: records as QueueListener handles them, and the lines
    ``log_fields`` queued, formatted here with the time they were logged. Lines for
    stdout are flushed when the queue runs empty, not one by one: the worker logs a
    batch of outcomes at once, and one write for the batch saves a system call a task.
    (journald takes one entry per call whatever we do.)"""

    def handle(self, record: Any) -> None:
        if not isinstance(record, _Line):
            super().handle(record)
            return
        handler = self.handlers[0]
        try:
            formatter: JsonFormatter = handler.formatter  # type: ignore[assignment]
            line = formatter.format_line(
                record.name, logging.getLevelName(record.levelno), record.message,
                record.fields, record.created,
            )  # fmt: skip
            if isinstance(handler, StreamLineHandler):
                handler.emit_line(
                    record.name, record.levelno, line, record.fields, flush=self.queue.empty()
                )
            else:
                handler.emit_line(record.name, record.levelno, line, record.fields)  # type: ignore[attr-defined]
        except Exception:  # the generic path, which reports its own failure on stderr
            fallback = logging.LogRecord(
                record.name, record.levelno, "", 0, record.message, None, None
            )
            fallback.__dict__.update(record.fields)
            fallback.created = record.created
            handler.handle(fallback)

    def stop(self) -> None:
        super().stop()
        self.handlers[0].flush()  # a line queued just before the stop


def configure_logging(
    service: str, level: str = "info", *, background: bool = False, log_format: str = "json"
) -> None:
    """Route every logger (ours, gunicorn's, the libraries') through one handler: JSON
    lines (or, ``log_format="text"``, readable ones); under systemd to journald with the
    context as journal fields whichever the format.

    ``background``: format and write in a thread of its own (the worker: its dispatcher
    thread logs one line per task, about 27 us each, and is what limits its throughput;
    the thread does that work while the dispatcher waits on PostgreSQL). Lines still
    queued are written at exit. Not for processes that fork after this call.
    """
    # A handler's print() writes to this stdout (the worker's, or a handler process's
    # inherited one): with Python's strict errors a lone surrogate in it raised
    # UnicodeEncodeError in the handler and failed a task that had done its work. Escaped
    # instead (\ud800), as stderr already writes them and as the log lines keep them.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
    handler: logging.Handler
    if stdout_is_journal():
        try:
            handler = JournalHandler(service)
        except ImportError:  # no journal library here: JSON on stdout still reaches it
            handler = StreamLineHandler(sys.stdout)
    else:
        handler = StreamLineHandler(sys.stdout)
    handler.setFormatter(make_formatter(service, log_format))
    global _listener, _direct, _enqueue
    _direct = _enqueue = None
    if log_format != "text":
        _direct = handler  # type: ignore[assignment]
    if _listener is not None:  # configured again (tests): flush and end the old writer
        atexit.unregister(_listener.stop)
        _listener.stop()
        _listener = None
    if background:
        _listener = _Writer(queue.SimpleQueue(), handler)
        # The thread must never take a signal: the worker blocks SIGTERM/SIGINT in its
        # threads and waits for them in one (sigwait); a thread started earlier with them
        # unblocked would take SIGTERM's default action and kill the process.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            _listener.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        atexit.register(_listener.stop)
        handler = _enqueue = _Enqueue(_listener.queue)
    handler.addFilter(ContextFilter())  # in the caller's thread: the context is there
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Python's documented logging optimisations: no caller frame walk, thread or process
    # lookups per record; our lines carry neither (a few us on every access line).
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # Alembic announces each of its plug-ins at INFO on every run.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
