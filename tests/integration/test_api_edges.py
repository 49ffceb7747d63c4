"""Edges an adversarial client finds: broken chunked bodies, other scripts' digits in a
task id, repeated query parameters, numbers JSON parsers change, HEAD in ``Allow``, and
a repeated PUT that must change nothing (``updated_at`` included)."""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest
import requests

from ..support import ApiClient


def _raw(base: str, request: bytes, *, half_close: bool = False) -> tuple[str, dict, dict]:
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        if half_close:  # the client stops sending, mid-chunk, and waits for the answer
            sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return status, headers, json.loads(body)


def _chunked(token: str) -> bytes:
    return (
        b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("body", "half_close"),
    [
        (b"zz\r\n{}\r\n0\r\n\r\n", False),  # not a hexadecimal chunk size
        (b"100\r\n" + b'{"title": "cut', True),  # 256 bytes announced, 14 sent, then EOF
        (b'e\r\n{"title": "x"}XX0\r\n\r\n', False),  # a chunk without its CRLF
    ],
    ids=["bad-size", "stops-mid-chunk", "no-terminator"],
)
def test_a_broken_chunked_body_is_a_400_envelope(
    gunicorn_api: dict, db, body: bytes, half_close: bool
) -> None:
    request = _chunked(gunicorn_api["token"]) + body
    status, headers, reply = _raw(gunicorn_api["url"], request, half_close=half_close)
    assert status.startswith("HTTP/1.1 400"), (status, reply)
    assert headers["content-type"] == "application/json"
    assert reply["data"] is None and reply["error"]["code"] == "bad_request"
    assert "could not be read" in reply["error"]["message"]
    rid = headers["x-request-id"]
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (0,)
    logged = [json.loads(line) for line in gunicorn_api["log"].read_text().splitlines()]
    mine = [line for line in logged if line.get("request_id") == rid]
    assert mine and all(line["level"] != "ERROR" for line in mine), mine
    assert not any("Traceback" in line.get("message", "") for line in mine)


@pytest.mark.parametrize("path", ["%D9%A3", "%EF%BC%93", "%E0%A5%A9", "-1", "+1", "1.0"])
def test_task_ids_are_ascii_digits_only(client: ApiClient, path: str) -> None:
    created = client.post("/v1/tasks", json={"title": "three"})
    assert created.status_code == 201
    for _ in range(2):
        client.post("/v1/tasks", json={"title": "more"})
    assert client.get("/v1/tasks/3").status_code == 200
    for method in ("GET", "PUT", "DELETE"):
        response = client.request(method, f"/v1/tasks/{path}", json={"title": "x"})
        assert response.status_code == 404, (method, response.text)
        assert response.json()["error"]["code"] == "not_found"
    assert client.get("/v1/tasks/3").json()["data"]["title"] == "more"


@pytest.mark.parametrize(
    "query", ["limit=abc&limit=1", "limit=1&limit=abc", "limit=1&limit=1", "status=x&page=1&page=2"]
)
def test_a_repeated_query_parameter_is_a_400(client: ApiClient, query: str) -> None:
    response = client.get(f"/v1/tasks?{query}")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_failed"
    repeated = {name for name in ("limit", "page") if query.count(f"{name}=") > 1}
    assert {k for k, v in error["details"].items() if "at most once" in v} == repeated


@pytest.mark.parametrize(
    "number",
    [
        "18446744073709551616",  # 2**64: orjson would make it 1.8446744073709552e+19
        "-9223372036854775809",  # one below the signed 64-bit range
        "123456789012345678901234567890",
        "1e-400",  # below a double's range: it would become 0.0
        "0.000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000000000000000000000000000000000000000000000000000000000000000000000001",
        "1e400",  # beyond a double's range (orjson refuses it itself)
    ],
)
def test_a_number_that_would_change_is_refused(client: ApiClient, db, number: str) -> None:
    for method, url in (("POST", "/v1/tasks"), ("PUT", "/v1/tasks/1")):
        body = '{"title": "n", "payload": {"deep": [{"n": ' + number + "}]}}"
        response = client.request(
            method, url, data=body.encode(), headers={"Content-Type": "application/json"}
        )
        assert response.status_code in (400, 404), response.text
        if method == "POST":
            assert response.status_code == 400
            assert response.json()["error"]["code"] in ("number_out_of_range", "invalid_json")
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (0,)


def test_numbers_that_fit_are_stored_exactly(client: ApiClient, db) -> None:
    numbers = {
        "u64_max": "18446744073709551615",
        "i64_min": "-9223372036854775808",
        "tiny": "5e-324",
        "zero": "0e-999",
        "float": "1.5",
        "whole_float": "1.0",
        "in_a_string": '"18446744073709551616"',
    }
    fields = ", ".join(f'"{k}": {v}' for k, v in numbers.items())
    body = '{"title": "n", "payload": {' + fields + "}}"
    created = client.post(
        "/v1/tasks", data=body.encode(), headers={"Content-Type": "application/json"}
    )
    assert created.status_code == 201, created.text
    payload = client.get(f"/v1/tasks/{created.json()['data']['id']}").json()["data"]["payload"]
    assert payload["u64_max"] == 2**64 - 1 and payload["i64_min"] == -(2**63)
    assert payload["tiny"] == 5e-324 and payload["zero"] == 0.0
    assert payload["whole_float"] == 1.0 and isinstance(payload["whole_float"], float)
    assert payload["in_a_string"] == "18446744073709551616"
    stored = db.execute("SELECT payload->>'u64_max' FROM tasks").fetchone()
    assert stored == ("18446744073709551615",)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PATCH", "/v1/tasks/1", "DELETE,GET,HEAD,PUT"),
        ("DELETE", "/v1/tasks", "GET,HEAD,POST"),
        ("POST", "/health", "GET,HEAD"),
    ],
)
def test_allow_names_head_where_get_is_served(
    client: ApiClient, method: str, path: str, allow: str
) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["Allow"] == allow
    assert response.json()["error"]["details"]["allow"] == allow
    assert client.head(path).status_code in (200, 404)  # HEAD is served: never a 405


def test_a_repeated_put_changes_nothing_more(client: ApiClient) -> None:
    task = client.post("/v1/tasks", json={"title": "t", "payload": {"n": 1}}).json()["data"]
    url = f"/v1/tasks/{task['id']}"
    body = {"title": "renamed", "status": "processing"}
    first = client.put(url, json=body).json()["data"]
    assert first["updated_at"] > task["updated_at"]
    again = client.put(url, json=body)
    assert again.status_code == 200
    assert again.json()["data"] == first  # updated_at included
    assert client.put(url, json={"title": "renamed"}).json()["data"] == first
    # JSON is compared as JSON: true is not 1, 1.0 is not 1.
    pending = client.post("/v1/tasks", json={"title": "p", "payload": {"n": 1}}).json()["data"]
    for value in (True, 1.0):
        changed = client.put(f"/v1/tasks/{pending['id']}", json={"payload": {"n": value}})
        assert changed.json()["data"]["payload"] == {"n": value}
        assert type(changed.json()["data"]["payload"]["n"]) is type(value)


def test_head_answers_like_get_without_a_body(client: ApiClient) -> None:
    response = requests.head(client.base + "/health", timeout=5)
    assert response.status_code == 200 and response.content == b""
