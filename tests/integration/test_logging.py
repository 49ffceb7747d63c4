"""Logs: one JSON object per line with the fields docs/operations.md names, one access line
per request, the request ID on every line of a request, no secret anywhere; journald field
mapping."""

from __future__ import annotations

import json
import re
from pathlib import Path

import requests

from ..support import start_api, stop_api

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
        ("POST", "/v1/tasks", {"title": "once"}, 201),
        ("POST", "/v1/tasks", {"title": "once"}, 200),  # the same key again: a replay
    ]
    for i, (method, path, body, status) in enumerate(calls):
        key = {"Idempotency-Key": "log-key"} if body == {"title": "once"} else {}
        response = requests.request(
            method,
            url + path,
            json=body,
            timeout=10,
            headers={"X-Request-ID": f"log-{i}", **key, **auth_headers},
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
    for rid, message in (("log-1", "task created"), ("log-6", "task created"),
                         ("log-7", "task creation replayed (Idempotency-Key)")):  # fmt: skip
        told = [line for line in lines if line.get("request_id") == rid and "task_id" in line]
        assert len(told) == 1 and told[0]["message"] == message, told
        assert told[0]["level"] == "INFO" and told[0]["logger"] == "flowforge.api"
    created, replayed = (
        next(line for line in lines if line.get("request_id") == rid and "task_id" in line)
        for rid in ("log-6", "log-7")
    )
    assert replayed["task_id"] == created["task_id"] and created["type"] == "noop"


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
