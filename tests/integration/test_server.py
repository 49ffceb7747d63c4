"""`flowforge api` is gunicorn: a real server, a graceful stop."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from urllib.parse import urlsplit

import requests

from ..support import start_api


def _start(database_url: str, log_path) -> tuple[subprocess.Popen, int]:
    """``support.start_api`` with 2 workers and a 10 s graceful timeout; (process, port)."""
    proc, base = start_api(database_url, log_path, API_WORKERS="2", API_GRACEFUL_TIMEOUT="10s")
    return proc, urlsplit(base).port  # type: ignore[return-value]


def test_sigterm_lets_an_in_flight_request_finish(database_url, db, api_tokens, tmp_path) -> None:
    proc, port = _start(database_url, tmp_path / "api.log")
    body = json.dumps({"title": "sent across a graceful stop"}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # Half a request: the worker is now busy reading its body.
        sock.sendall(
            b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"X-Request-ID: graceful-1\r\nAuthorization: Bearer %s\r\n"
            b"Content-Length: %d\r\n\r\n" % (api_tokens.write.encode(), len(body)) + body[:10]
        )
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None, "gunicorn must wait for the in-flight request"
        sock.sendall(body[10:])
        reply = sock.recv(65536).decode()
    assert reply.startswith("HTTP/1.1 201"), reply
    assert proc.wait(timeout=20) == 0
    row = db.execute("SELECT title, request_id FROM tasks").fetchall()
    assert row == [("sent across a graceful stop", "graceful-1")]
    # Once stopped, nothing answers.
    try:
        requests.get(f"http://127.0.0.1:{port}/health", timeout=1)
        raise AssertionError("the server still answers after SIGTERM")
    except requests.ConnectionError:
        pass


def test_logs_are_json_with_the_service_name(database_url, db, auth_headers, tmp_path) -> None:
    log_path = tmp_path / "api.log"
    proc, port = _start(database_url, log_path)
    try:
        requests.get(
            f"http://127.0.0.1:{port}/v1/tasks", headers={"X-Request-ID": "srv-1", **auth_headers}
        )
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert all(line["service"] == "api" for line in lines)
    # gunicorn's own messages come through the same JSON handler.
    assert any(line["logger"].startswith("gunicorn") for line in lines)
    access = [line for line in lines if line.get("request_id") == "srv-1"]
    assert len(access) == 1 and access[0]["status"] == 200
    # gunicorn >= 25's control socket (gunicornc) is off: FlowForge is run by signals.
    assert not [line for line in lines if "control socket" in line["message"].lower()]


def _raw(port: int, request: bytes) -> tuple[str, dict[str, str], dict]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return status, headers, json.loads(body)


def test_requests_gunicorn_cannot_parse_get_the_json_envelope(database_url, tmp_path) -> None:
    log_path = tmp_path / "api.log"
    proc, port = _start(database_url, log_path)
    try:
        status, headers, body = _raw(port, b"NOT A REQUEST LINE\r\n\r\n")
        assert status.startswith("HTTP/1.1 400"), status
        assert headers["content-type"] == "application/json"
        assert body["data"] is None and body["error"]["code"] == "bad_request"
        assert "Invalid" in body["error"]["message"]
        rid = headers["x-request-id"]
        assert len(rid) == 32

        big = b"GET /v1/tasks HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n"
        status, headers, body = _raw(port, big)
        assert status.startswith("HTTP/1.1 431"), status
        assert body["error"]["code"] == "headers_too_large"
        assert headers["x-request-id"] != rid
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert any(line.get("request_id") == rid and "malformed" in line["message"] for line in lines)
