"""The log formatters and handlers in this process: JSON and text lines with their
fields, the bound request context, journald field names and the journal handler."""

from __future__ import annotations

import atexit
import io
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowforge import logs

# -- units: the formatter, the context, journald ------------------------------------------


def _record(**extra) -> logging.LogRecord:
    record = logging.LogRecord("flowforge.test", logging.INFO, __file__, 1, "hello %s",
                               ("world",), None)  # fmt: skip
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_formatter_fields() -> None:
    line = json.loads(logs.json_formatter("worker").format(_record(task_id=7, attempt=2)))
    assert line["message"] == "hello world"
    assert (line["level"], line["logger"], line["service"]) == ("INFO", "flowforge.test", "worker")
    assert (line["task_id"], line["attempt"]) == (7, 2)
    assert "timestamp" in line


def test_text_formatter_is_one_readable_line_with_the_same_fields() -> None:
    record = _record(request_id="r-1", task_id=7, error='ValueError: bad "x"', empty=None)
    line = logs.make_formatter("worker", "text").format(record)
    assert "\n" not in line
    assert re.match(
        r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO +worker flowforge\.test: hello world  ", line
    ), line
    fields = line.split("hello world  ", 1)[1]
    assert fields == 'request_id=r-1 task_id=7 error="ValueError: bad \\"x\\""'
    # a traceback follows on lines of its own
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = _record()
        record.exc_info = sys.exc_info()
    lines = logs.make_formatter("api", "text").format(record).splitlines()
    assert lines[0].endswith("flowforge.test: hello world")
    assert lines[1] == "Traceback (most recent call last):" and lines[-1] == "RuntimeError: boom"
    # so does a handler process's traceback, kept in the JSON line as a field
    record = _record(task_id=7, traceback="Fatal Python error: Segmentation fault\n\n  File x")
    lines = logs.make_formatter("worker", "text").format(record).splitlines()
    assert lines[0].endswith("hello world  task_id=7")
    assert lines[1:] == ["Fatal Python error: Segmentation fault", "", "  File x"]
    line = json.loads(logs.make_formatter("worker").format(record))
    assert line["traceback"].endswith("Segmentation fault\n\n  File x")
    # json stays the default
    assert json.loads(logs.make_formatter("api").format(_record()))["message"] == "hello world"


def test_text_lines_reach_the_journal_with_their_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict] = []
    handler = logs.JournalHandler("api")
    handler._send = lambda **kw: sent.append(kw)
    handler.setFormatter(logs.make_formatter("api", "text"))
    handler.emit(_record(request_id="rq", task_id=3))
    assert sent[0]["request_id"] == "rq" and sent[0]["task_id"] == "3"
    assert sent[0]["message"].endswith("hello world  request_id=rq task_id=3")


def test_lone_surrogates_are_written_escaped_in_every_format() -> None:
    # A handler's text may hold them and UTF-8 cannot: the line was lost to a logging error.
    assert logs.encodable("bad \ud800 text") == "bad \\ud800 text"
    plain, accented = "plain", "caf\u00e9 \u2713"
    assert logs.encodable(plain) is plain and logs.encodable(accented) is accented
    record = _record(error="ValueError: \udc80", nested={"k\udfff": ["\ud800"]})
    record.msg = "hello \ud83d %s"
    line = logs.json_formatter("worker").format(record)
    assert json.loads(line)["message"] == "hello \\ud83d world"
    assert json.loads(line)["error"] == "ValueError: \\udc80"
    assert json.loads(line)["nested"] == {"k\\udfff": ["\\ud800"]}
    line = logs.json_formatter("worker").format_line("x", "INFO", "m", {"f": "\ud800"})
    assert json.loads(line)["f"] == "\\ud800"
    text = logs.make_formatter("worker", "text").format(record)
    text.encode()  # the stream writes UTF-8
    assert "hello \\ud83d world" in text and 'error="ValueError: \\\\udc80"' in text
    sent: list[dict] = []
    handler = logs.JournalHandler("worker")
    handler._send = lambda **kw: sent.append(kw)
    handler.setFormatter(logs.json_formatter("worker"))
    handler.emit(record)
    assert sent[0]["error"] == "ValueError: \\udc80"
    assert json.loads(sent[0]["message"])["error"] == "ValueError: \\udc80"


def test_bound_context_reaches_every_line_and_explicit_extra_wins() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.json_formatter("api"))
    handler.addFilter(logs.ContextFilter())
    logger = logging.getLogger("flowforge.test.context")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with logs.bind(request_id="r-1"):
            with logs.bind(task_id=5):
                assert logs.bound() == {"request_id": "r-1", "task_id": 5}
                logger.info("inner")
                logger.info("explicit", extra={"request_id": "r-2"})
            logger.info("outer")
        logger.info("after")
        assert logs.bound() == {}
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(ln["message"], ln.get("request_id"), ln.get("task_id")) for ln in lines] == [
        ("inner", "r-1", 5),
        ("explicit", "r-2", 5),
        ("outer", "r-1", None),
        ("after", None, None),
    ]


def test_journal_fields_are_upper_case_and_safe() -> None:
    record = _record(request_id="abc", task_id=42, **{"weird-key.x": "v", "_private": 1,
                     "empty": None, "x" * 80: "long"})  # fmt: skip
    fields = logs.journal_fields(record)
    assert fields["REQUEST_ID"] == "abc"
    assert fields["TASK_ID"] == "42"  # journald fields are text
    assert fields["WEIRD_KEY_X"] == "v"
    assert "X" * 64 in fields and all(len(name) <= 64 for name in fields)
    assert "EMPTY" not in fields and "_PRIVATE" not in fields
    # The record's own machinery (message, level, ...) is not repeated as fields.
    assert not {"MSG", "ARGS", "LEVELNAME", "MESSAGE", "NAME", "CREATED"} & set(fields)
    assert all(name.replace("_", "").isalnum() and name.isupper() for name in fields)


def test_journal_handler_sends_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict] = []
    handler = logs.JournalHandler("worker")
    handler._send = lambda **kw: sent.append(kw)  # the real sd_journal_send needs journald
    handler.setFormatter(logs.json_formatter("worker"))
    handler.emit(_record(request_id="rq", task_id=3))
    handler.emit(_record(levelno=logging.ERROR))
    assert sent[0]["request_id"] == "rq" and sent[0]["task_id"] == "3"
    assert sent[0]["syslog_identifier"] == "flowforge-worker"
    assert sent[0]["priority"] == 6 and sent[1]["priority"] == 3
    assert json.loads(sent[0]["message"])["message"] == "hello world"


def test_journal_handler_failures_go_to_handle_error(monkeypatch) -> None:
    handler = logs.JournalHandler("api")
    handler._send = lambda **kw: (_ for _ in ()).throw(OSError("journal gone"))
    errors: list = []
    monkeypatch.setattr(handler, "handleError", errors.append)
    handler.emit(_record())
    assert len(errors) == 1


def test_journal_is_chosen_only_when_stdout_is_the_journal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    out = open(tmp_path / "stdout", "w")  # noqa: SIM115
    monkeypatch.setattr(sys, "stdout", out)
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        st = os.fstat(out.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert logs.stdout_is_journal()
        logs.configure_logging("api", "debug")
        assert isinstance(root.handlers[0], logs.JournalHandler)
        assert root.level == logging.DEBUG
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
        assert not logs.stdout_is_journal()
        monkeypatch.setenv("JOURNAL_STREAM", "garbage")
        assert not logs.stdout_is_journal()
        logs.configure_logging("api", "info")
        assert type(root.handlers[0]) is logs.StreamLineHandler
        # Under systemd without the journal library: JSON on stdout still reaches journald.
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        monkeypatch.setitem(sys.modules, "cysystemd.journal", None)  # import fails
        logs.configure_logging("api", "info")
        assert type(root.handlers[0]) is logs.StreamLineHandler
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        out.close()


def test_json_formatter_writes_what_the_library_formatter_writes() -> None:
    """The one-pass formatter (logs.JsonFormatter) loses no field: key for key, value for
    value, what python-json-logger's OrjsonFormatter configured the same way writes."""
    from pythonjsonlogger.orjson import OrjsonFormatter

    library = OrjsonFormatter(
        "{message}{levelname}{name}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        static_fields={"service": "api"},
        timestamp=True,
    )
    ours = logs.json_formatter("api")
    try:
        raise ValueError("bad")
    except ValueError:
        failed = sys.exc_info()
    records = [
        _record(
            request_id="r",
            method="GET",
            path="/v1/tasks/1",
            status=200,
            duration_ms=1.5,
            remote_addr=None,
        ),
        _record(task_id=3, error=ValueError("x"), raw=b"\x00b", kind=logging.Logger, n={1: 2}),
        _record(_private=1),
    ]
    with_exc = _record(task_id=9)
    with_exc.exc_info = failed
    with_stack = _record()
    with_stack.stack_info = "Stack (most recent call last):\n  here"
    as_dict = _record()
    as_dict.msg, as_dict.args = {"event": "x", "n": 1}, ()
    for record in [*records, with_exc, with_stack, as_dict]:
        assert json.loads(ours.format(record)) == json.loads(library.format(record))
    assert "exc_info" in json.loads(ours.format(with_exc))


def test_a_handler_process_traceback_file_is_read_once_and_cut_at_its_limit(tmp_path) -> None:
    from flowforge.worker import child

    short = tmp_path / "a.traceback"
    short.write_text("Fatal Python error: Aborted\n\n  File x\n")
    assert child.read_fault(str(short)) == "Fatal Python error: Aborted\n\n  File x"
    assert not short.exists()  # removed: a second read finds nothing
    assert child.read_fault(str(short)) == ""
    long = tmp_path / "b.traceback"
    long.write_bytes(b"x" * (child.FAULT_LIMIT + 10))
    text = child.read_fault(str(long))
    assert text == "x" * child.FAULT_LIMIT + "\n[cut off]"


def _without_timestamp(line: str) -> list[tuple[str, object]]:
    data = json.loads(line)
    assert data.pop("timestamp").startswith("20")
    return list(data.items())  # the order too


ACCESS = {"request_id": "r-1", "method": "GET", "path": "/v1/tasks/5", "status": 200,
          "duration_ms": 0.5, "remote_addr": None}  # fmt: skip


@pytest.fixture
def stdout_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Any]:
    """A file for the test to make sys.stdout (pytest's capture puts its own back after
    the set-up: set it in the test), not a journal; afterwards the root logger as it was
    and no background writer left running."""
    out = open(tmp_path / "stdout", "w")  # noqa: SIM115
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    yield out
    if logs._listener is not None:
        atexit.unregister(logs._listener.stop)
        if logs._listener._thread is not None:
            logs._listener.stop()
    logs._listener = logs._enqueue = logs._direct = None  # as before any configuration
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    out.close()


def test_log_fields_writes_what_logger_log_writes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stdout_file: Any
) -> None:
    out, root = stdout_file, logging.getLogger()
    monkeypatch.setattr(sys, "stdout", out)
    log = logging.getLogger("flowforge.api")
    logs.configure_logging("api", "info")
    made: list[logging.LogRecord] = []
    make = log.makeRecord
    monkeypatch.setattr(log, "makeRecord", lambda *a, **kw: made.append(make(*a, **kw)) or made[-1])
    with logs.bind(request_id="bound", task_id=5):  # the context too; the fields win
        logs.log_fields(log, logging.INFO, "GET /v1/tasks/5 200", ACCESS)
        assert made == []  # straight to a line: no record
        log.info("GET /v1/tasks/5 200", extra=ACCESS)
    logs.log_fields(log, logging.DEBUG, "not at info", ACCESS)
    out.flush()
    fast, slow = (tmp_path / "stdout").read_text().splitlines()
    assert _without_timestamp(fast) == _without_timestamp(slow)
    assert json.loads(fast)["request_id"] == "r-1" and json.loads(fast)["task_id"] == 5
    # Another handler attached (pytest's caplog, a library's): the record goes to both.
    seen: list[logging.LogRecord] = []
    extra = logging.Handler()
    extra.emit = seen.append  # type: ignore[method-assign]
    root.addHandler(extra)
    logs.log_fields(log, logging.INFO, "GET /v1/tasks/5 200", ACCESS)
    assert [r.getMessage() for r in seen] == ["GET /v1/tasks/5 200"]
    assert seen[0].status == 200
    out.flush()
    assert len((tmp_path / "stdout").read_text().splitlines()) == 3


def test_log_fields_in_the_background_mode_hands_the_writer_fields_not_a_record(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stdout_file: Any
) -> None:
    """The worker's mode: the writer thread formats what log_fields queued, the same line
    log.info writes, stamped when it was logged; a line it cannot format goes the
    generic way."""
    out = stdout_file
    monkeypatch.setattr(sys, "stdout", out)
    log = logging.getLogger("flowforge.worker")
    fields = {"type": "noop", "duration_ms": 0.25}
    logs.configure_logging("worker", "info", background=True)
    made: list[logging.LogRecord] = []
    make = log.makeRecord
    monkeypatch.setattr(log, "makeRecord", lambda *a, **kw: made.append(make(*a, **kw)) or made[-1])
    real_time = logs.time.time
    with logs.bind(request_id="r-1", task_id=5, attempt=1):
        monkeypatch.setattr(logs.time, "time", lambda: 1_000_000_000.0)
        logs.log_fields(log, logging.INFO, "task completed", fields)
        monkeypatch.setattr(logs.time, "time", real_time)
        assert made == []  # fields on the queue, no record
        # written and flushed once the writer's queue is empty, not at the stop
        deadline = time.monotonic() + 5
        while not (tmp_path / "stdout").read_text() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (tmp_path / "stdout").read_text().count("\n") == 1
        log.info("task completed", extra=fields)
    logs.log_fields(log, logging.DEBUG, "not at info", fields)
    formatter = logs._direct.formatter  # type: ignore[union-attr]

    def broken(*args: object) -> str:
        raise ValueError("cannot format")

    monkeypatch.setattr(formatter, "format_line", broken)
    logs.log_fields(log, logging.INFO, "formatted the generic way", {"task_id": 7})
    logs._listener.stop()  # type: ignore[union-attr]  # the writer drains its queue
    out.flush()
    fast, slow, fallback = (tmp_path / "stdout").read_text().splitlines()
    assert json.loads(fast)["timestamp"] == "2001-09-09T01:46:40+00:00"
    assert _without_timestamp(fast) == _without_timestamp(slow)
    assert json.loads(fast)["task_id"] == 5 and json.loads(fast)["type"] == "noop"
    assert json.loads(fallback)["message"] == "formatted the generic way"
    assert json.loads(fallback)["task_id"] == 7


def test_log_fields_sends_the_journal_what_a_record_sends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[dict] = []
    handler = logs.JournalHandler("api")
    handler._send = lambda **kw: sent.append(kw)
    handler.setFormatter(logs.json_formatter("api"))
    handler.addFilter(logs.ContextFilter())
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    log = logging.getLogger("flowforge.api")
    try:
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)
        monkeypatch.setattr(logs, "_direct", handler)
        logs.log_fields(log, logging.INFO, "GET /v1/tasks/5 200", ACCESS)
        log.info("GET /v1/tasks/5 200", extra=ACCESS)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    fast, slow = sent
    assert _without_timestamp(fast.pop("message")) == _without_timestamp(slow.pop("message"))
    assert fast == slow and fast["request_id"] == "r-1" and fast["status"] == "200"
