"""Logs: one JSON object per line with the fields README names, one access line per request,
the request ID on every line of a request, no secret anywhere; journald field mapping."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys
from pathlib import Path

import pytest
import requests

from flowforge import logs

from .test_api import start_api, stop_api

ACCESS_FIELDS = {"timestamp", "level", "message", "logger", "service", "request_id", "method",
                 "path", "status", "duration_ms"}  # fmt: skip


def read_lines(path: Path) -> list[dict]:
    text = path.read_text()
    lines = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    assert lines, "no log lines"
    return lines


def test_one_access_line_per_request_with_every_field(
    database_url, db, auth_headers, tmp_path
) -> None:
    log_path = tmp_path / "api.log"
    proc, url = start_api(database_url, log_path, API_WORKERS="2")
    calls = [
        ("GET", "/health", None, 200),
        ("POST", "/v1/tasks", {"title": "logged"}, 201),
        ("POST", "/v1/tasks", {"title": ""}, 400),
        ("GET", "/v1/tasks/987654", None, 404),
        ("PATCH", "/v1/tasks", None, 405),
        ("GET", "/no/such/route", None, 404),
    ]
    for i, (method, path, body, status) in enumerate(calls):
        response = requests.request(
            method,
            url + path,
            json=body,
            timeout=10,
            headers={"X-Request-ID": f"log-{i}", **auth_headers},
        )
        assert response.status_code == status
    stop_api(proc)
    lines = read_lines(log_path)
    for i, (method, path, _, status) in enumerate(calls):
        mine = [line for line in lines if line.get("request_id") == f"log-{i}"]
        access = [line for line in mine if "status" in line]
        assert len(access) == 1, mine
        line = access[0]
        assert set(line) >= ACCESS_FIELDS, line
        assert (line["method"], line["path"], line["status"]) == (method, path, status)
        assert line["service"] == "api" and line["level"] == "INFO"
        assert line["logger"] == "flowforge.api"
        assert isinstance(line["duration_ms"], int | float) and line["duration_ms"] >= 0
        assert line["timestamp"].startswith("20")
    # Lines logged inside a request carry its ID too (the creation line names the task).
    created = [line for line in lines if line.get("request_id") == "log-1" and "task_id" in line]
    assert len(created) == 1 and created[0]["message"] == "task created"


def test_log_format_text_gives_readable_access_lines(
    database_url, db, auth_headers, tmp_path
) -> None:
    log_path = tmp_path / "api.log"
    proc, url = start_api(database_url, log_path, API_WORKERS="1", LOG_FORMAT="text")
    response = requests.get(
        url + "/v1/tasks/4242", headers={"X-Request-ID": "txt-1", **auth_headers}, timeout=10
    )
    assert response.status_code == 404
    stop_api(proc)
    text = log_path.read_text()
    lines = [line for line in text.splitlines() if "request_id=txt-1" in line]
    assert len(lines) == 1, text
    assert re.search(
        r"Z INFO +api flowforge\.api: GET /v1/tasks/4242 404  request_id=txt-1 method=GET "
        r"path=/v1/tasks/4242 status=404 duration_ms=[\d.]+ remote_addr=127\.0\.0\.1$",
        lines[0],
    ), lines[0]
    assert not any(line.startswith("{") for line in text.splitlines())  # no JSON at all


SECRET = "Sup3r-Secret-Pw-7731"


def test_no_line_shows_the_database_password(
    database_url: str, db, auth_headers, tmp_path: Path
) -> None:
    db.execute("DROP ROLE IF EXISTS flowforge_logged")
    db.execute(f"CREATE ROLE flowforge_logged LOGIN SUPERUSER PASSWORD '{SECRET}'")
    good = database_url.replace("postgres:flowforge@", f"flowforge_logged:{SECRET}@")
    wrong = database_url.replace("postgres:flowforge@", f"flowforge_logged:{SECRET}-wrong@")
    assert good != database_url
    log_path = tmp_path / "api.log"
    wrong_log = tmp_path / "api-wrong.log"
    proc, base = start_api(good, log_path, API_WORKERS="1", DATABASE_CONNECT_TIMEOUT="1s")
    wrong_proc, wrong_base = start_api(
        wrong, wrong_log, API_WORKERS="1", DATABASE_CONNECT_TIMEOUT="1s"
    )
    try:
        assert requests.get(base + "/health").status_code == 200
        auth = auth_headers
        assert (
            requests.post(base + "/v1/tasks", json={"title": "x"}, headers=auth).status_code == 201
        )
        assert requests.post(base + "/v1/tasks", data=b"{", headers=auth).status_code == 415
        # The wrong password: the database refuses, the API says 503 and logs why.
        assert requests.get(wrong_base + "/health").status_code == 503
        assert requests.get(wrong_base + "/v1/tasks", headers=auth).status_code == 503
    finally:
        stop_api(proc)
        stop_api(wrong_proc)
    good_lines = log_path.read_text()
    wrong_lines = wrong_log.read_text()
    assert "authentication failed" in wrong_lines  # the failure itself is logged
    for text in (good_lines, wrong_lines):
        assert SECRET not in text
        assert all(json.loads(line)["service"] == "api" for line in text.splitlines())
    db.execute("DROP ROLE flowforge_logged")


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
        assert type(root.handlers[0]) is logging.StreamHandler
        # Under systemd without the journal library: JSON on stdout still reaches journald.
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        monkeypatch.setitem(sys.modules, "cysystemd.journal", None)  # import fails
        logs.configure_logging("api", "info")
        assert type(root.handlers[0]) is logging.StreamHandler
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
