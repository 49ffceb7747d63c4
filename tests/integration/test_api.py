"""The HTTP contract (docs/api.md, openapi.yaml), over real HTTP against a real PostgreSQL:
every route, its statuses and its errors, all in the JSON envelope with X-Request-ID."""

from __future__ import annotations

import http.client
import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
import requests

import flowforge
from flowforge.api import create_app
from flowforge.api.envelope import request_id_from
from flowforge.config import Settings

from ..support import (
    ApiClient,
    assert_error,
    create,
    serve,
    start_api,
    stop_api,
)

MiB = 1024 * 1024


def raw_request(base: str, method: str, path: str, body: bytes, headers: dict) -> tuple[int, dict]:
    """A request exactly as written (requests would add Content-Length on its own)."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.putrequest(method, path)
    for name, value in headers.items():
        conn.putheader(name, value)
    conn.endheaders(body)
    response = conn.getresponse()
    payload = json.loads(response.read())
    conn.close()
    return response.status, {"headers": response.headers, "body": payload}


@pytest.fixture(scope="module")
def real_api(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, base = start_api(database_url, tmp_path_factory.mktemp("api") / "api.log",
                           API_WORKERS="2")  # fmt: skip
    yield base
    stop_api(proc)


# -- health and the spec -------------------------------------------------------------------


def test_health_is_ok_with_the_database_up(client: ApiClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "data": {"status": "ok", "database": "ok", "version": flowforge.__version__},
        "error": None,
    }


def test_openapi_is_served(client: ApiClient) -> None:
    response = client.get("/openapi.yaml")
    assert response.status_code == 200
    assert b"openapi: 3.0" in response.content


# -- create and read -----------------------------------------------------------------------


def test_create_returns_201_location_and_every_field(client: ApiClient, db) -> None:
    response = client.post(
        "/v1/tasks",
        json={"title": "  mail the report  ", "description": "weekly", "payload": {"to": "ops"}},
        headers={"X-Request-ID": "create-1"},
    )
    assert response.status_code == 201
    task = response.json()["data"]
    assert response.json()["error"] is None
    assert response.headers["Location"] == f"/v1/tasks/{task['id']}"
    assert response.headers["X-Request-ID"] == "create-1"
    assert task["title"] == "mail the report"  # surrounding blanks trimmed
    assert task["description"] == "weekly"
    assert task["status"] == "pending"
    assert task["type"] == "noop"
    assert task["payload"] == {"to": "ops"}
    assert task["attempts"] == 0 and task["max_attempts"] >= 1
    assert task["request_id"] == "create-1"
    for name in ("last_error", "started_at", "completed_at", "worker"):
        assert task[name] is None
    for name in ("created_at", "updated_at", "run_at"):
        assert task[name].endswith("Z")  # RFC 3339, UTC
    row = db.execute("SELECT title, request_id FROM tasks WHERE id = %s", [task["id"]]).fetchone()
    assert row == ("mail the report", "create-1")
    fetched = client.get(response.headers["Location"])
    assert fetched.status_code == 200 and fetched.json()["data"] == task


def test_create_takes_every_optional_field(client: ApiClient) -> None:
    task = create(
        client,
        type="sleep",
        payload={"seconds": 0},
        max_attempts=7,
        run_at="2030-01-01T10:00:00.123456+02:00",
        description=None,
        queue="mail",
        priority=5,
        timeout=30,
    )
    assert (task["type"], task["max_attempts"], task["description"]) == ("sleep", 7, "")
    assert task["run_at"] == "2030-01-01T08:00:00.123456Z"
    assert (task["queue"], task["priority"], task["timeout"]) == ("mail", 5, 30)
    # The answer is the task as stored: what GET reads back, field for field.
    assert client.get(f"/v1/tasks/{task['id']}").json()["data"] == task


def test_get_unknown_task_is_404(client: ApiClient) -> None:
    assert_error(client.get("/v1/tasks/999999"), 404, "not_found")


@pytest.mark.parametrize("task_id", ["0", "-1", str(2**63), str(10**30)])
def test_ids_outside_bigint_are_404_not_500(client: ApiClient, task_id: str) -> None:
    assert_error(client.get(f"/v1/tasks/{task_id}"), 404, "not_found")
    assert_error(client.delete(f"/v1/tasks/{task_id}"), 404, "not_found")
    assert_error(client.put(f"/v1/tasks/{task_id}", json={"title": "x"}), 404, "not_found")


def test_tasks_alias_serves_the_same(client: ApiClient) -> None:
    created = client.post("/tasks", json={"title": "via the alias"})
    assert created.status_code == 201
    task = created.json()["data"]
    assert client.get(f"/tasks/{task['id']}").json() == client.get(f"/v1/tasks/{task['id']}").json()
    assert client.get("/tasks").json()["meta"]["total"] == 1
    assert client.put(f"/tasks/{task['id']}", json={"title": "renamed"}).status_code == 200
    assert client.delete(f"/tasks/{task['id']}").status_code == 204
    assert_error(client.get(f"/v1/tasks/{task['id']}"), 404, "not_found")


# -- list ----------------------------------------------------------------------------------


def test_list_is_newest_first_with_pages_and_total(client: ApiClient) -> None:
    ids = [create(client, title=f"t{i}")["id"] for i in range(25)]
    first = client.get("/v1/tasks").json()
    assert first["error"] is None
    assert first["meta"] == {
        "page": 1,
        "limit": 20,
        "total": 25,
        "total_exact": True,
        "next_cursor": first["meta"]["next_cursor"],  # opaque; tests/test_api_lists.py
    }
    assert first["meta"]["next_cursor"]
    assert [t["id"] for t in first["data"]] == ids[::-1][:20]
    second = client.get("/v1/tasks", params={"page": 2, "limit": 20}).json()
    assert [t["id"] for t in second["data"]] == ids[::-1][20:]
    beyond = client.get("/v1/tasks", params={"page": 9}).json()
    assert beyond["data"] == [] and beyond["meta"]["total"] == 25
    small = client.get("/v1/tasks", params={"limit": 1, "page": 3}).json()
    assert [t["id"] for t in small["data"]] == [ids[-3]]
    assert client.get("/v1/tasks", params={"limit": 100}).json()["meta"]["limit"] == 100


def test_list_filters_by_status(client: ApiClient) -> None:
    a, b = create(client)["id"], create(client)["id"]
    create(client)
    client.put(f"/v1/tasks/{a}", json={"status": "processing"})
    client.put(f"/v1/tasks/{b}", json={"status": "processing"})
    page = client.get("/v1/tasks", params={"status": "processing"}).json()
    assert [t["id"] for t in page["data"]] == [b, a]
    assert page["meta"]["total"] == 2
    assert client.get("/v1/tasks", params={"status": "failed"}).json()["meta"]["total"] == 0


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"page": "0"}, "page"),
        ({"page": "-1"}, "page"),
        ({"page": str(10**30)}, "page"),
        ({"page": "1.5"}, "page"),
        ({"page": " 2"}, "page"),
        ({"page": "1_0"}, "page"),
        ({"page": "\u0663"}, "page"),  # an Arabic-Indic 3: int() takes it, we do not
        ({"page": ""}, "page"),
        ({"limit": "+5"}, "limit"),
        ({"status": "done"}, "status"),
        ({"status": ""}, "status"),
    ],
)
def test_bad_list_queries_are_400_per_field(client: ApiClient, params: dict, field: str) -> None:
    error = assert_error(client.get("/v1/tasks", params=params), 400, "validation_failed")
    assert set(error["details"]) == {field}


def test_query_values_that_are_not_utf8_are_400(client: ApiClient) -> None:
    response = client.get("/v1/tasks?page=%ff&limit=%fe&status=%fd")
    error = assert_error(response, 400, "validation_failed")
    assert set(error["details"]) == {"page", "limit", "status"}


# -- update --------------------------------------------------------------------------------


def test_put_changes_only_what_is_sent_and_is_idempotent(client: ApiClient) -> None:
    task = create(client, description="keep me")
    body = {"title": "new title", "status": "processing"}
    first = client.put(f"/v1/tasks/{task['id']}", json=body)
    assert first.status_code == 200
    again = client.put(f"/v1/tasks/{task['id']}", json=body)
    assert again.status_code == 200
    one, two = first.json()["data"], again.json()["data"]
    assert one["title"] == two["title"] == "new title"
    assert one["description"] == "keep me"
    assert one["status"] == two["status"] == "processing"
    # The same PUT twice is one change: the claim made by the first is not made again.
    assert one["started_at"] == two["started_at"] is not None
    assert client.get(f"/v1/tasks/{task['id']}").json()["data"]["title"] == "new title"


def test_put_follows_the_state_machine(client: ApiClient) -> None:
    task_id = create(client)["id"]
    url = f"/v1/tasks/{task_id}"
    error = assert_error(client.put(url, json={"status": "completed"}), 409, "conflict")
    assert error["details"] == {"status": "pending", "requested": "completed"}
    assert client.put(url, json={"status": "processing"}).json()["data"]["status"] == "processing"
    # Queue fields only change while pending.
    for field, value in [("max_attempts", 9), ("priority", 5), ("queue", "q"), ("timeout", 9)]:
        assert_error(client.put(url, json={field: value}), 409, "conflict")
    # Only the worker moves a task out of processing (a client cancels it instead).
    for status in ("completed", "failed", "pending", "cancelled"):
        error = assert_error(client.put(url, json={"status": status}), 409, "conflict")
        assert error["details"] == {"status": "processing", "requested": status}
    assert client.get(url).json()["data"]["status"] == "processing"  # nothing changed
    assert client.put(url, json={"title": "renamed"}).json()["data"]["title"] == "renamed"


def test_failed_task_can_be_requeued(client: ApiClient, db) -> None:
    task_id = create(client)["id"]
    db.execute("UPDATE tasks SET status = 'failed', attempts = 3 WHERE id = %s", [task_id])
    task = client.put(f"/v1/tasks/{task_id}", json={"status": "pending"}).json()["data"]
    assert (task["status"], task["attempts"], task["completed_at"]) == ("pending", 0, None)


def test_put_unknown_task_is_404(client: ApiClient) -> None:
    assert_error(client.put("/v1/tasks/424242", json={"title": "x"}), 404, "not_found")


# -- delete --------------------------------------------------------------------------------


def test_delete_is_204_then_404(client: ApiClient) -> None:
    task_id = create(client)["id"]
    response = client.delete(f"/v1/tasks/{task_id}")
    assert response.status_code == 204 and response.content == b""
    assert response.headers["X-Request-ID"]
    assert_error(client.get(f"/v1/tasks/{task_id}"), 404, "not_found")
    assert_error(client.delete(f"/v1/tasks/{task_id}"), 404, "not_found")


# -- routing errors ------------------------------------------------------------------------


def test_unknown_route_is_a_404_envelope(client: ApiClient) -> None:
    for path in ("/nope", "/v1/tasks/abc", "/v2/tasks", "/v1/tasks/1/extra"):
        error = assert_error(client.get(path), 404, "not_found")
        assert "no route" in error["message"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PATCH", "/v1/tasks/1", {"GET", "PUT", "DELETE"}),
        ("DELETE", "/v1/tasks", {"GET", "POST"}),
        ("PUT", "/tasks", {"GET", "POST"}),
        ("POST", "/health", {"GET"}),
    ],
)
def test_wrong_method_is_a_405_envelope_with_allow(
    client: ApiClient, method: str, path: str, allowed: set[str]
) -> None:
    response = client.request(method, path)
    error = assert_error(response, 405, "method_not_allowed")
    assert allowed <= {m.strip() for m in response.headers["Allow"].split(",")}
    assert error["details"]["allow"] == response.headers["Allow"]


# -- bodies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
def test_a_body_that_is_not_json_is_415(client: ApiClient, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/v1/tasks", data=b'{"title": "x"}', headers=headers)
    assert_error(response, 415, "unsupported_media_type")
    assert client.get("/v1/tasks").json()["meta"]["total"] == 0


def test_json_with_charset_and_vendor_types_is_accepted(client: ApiClient) -> None:
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = client.post(
            "/v1/tasks", data=b'{"title": "x"}', headers={"Content-Type": content_type}
        )
        assert response.status_code == 201, content_type


def test_a_body_over_one_mib_is_413(client: ApiClient) -> None:
    body = json.dumps({"title": "big", "description": "x" * MiB}).encode()
    response = client.post("/v1/tasks", data=body, headers={"Content-Type": "application/json"})
    error = assert_error(response, 413, "payload_too_large")
    assert str(MiB) in error["message"]
    assert client.get("/v1/tasks").json()["meta"]["total"] == 0


def test_a_body_just_under_one_mib_is_read(client: ApiClient) -> None:
    # Within the limit the body is read and judged on its fields (description too long).
    body = json.dumps({"title": "big", "description": "x" * (MiB - 100)}).encode()
    assert len(body) <= MiB
    response = client.post("/v1/tasks", data=body, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "validation_failed")


@pytest.mark.parametrize(
    ("body", "framing"),
    [
        (b"", {}),  # neither Content-Length nor chunking: HTTP/1.1's empty body
        (b"", {"Content-Length": "0"}),
        (b"0\r\n\r\n", {"Transfer-Encoding": "chunked"}),
    ],
    ids=["no-length", "length-0", "chunked"],
)
def test_an_empty_body_is_a_400_saying_so(
    real_api: str, db, auth_headers, body: bytes, framing: dict
) -> None:
    # not 411 "a Content-Length header is required": there is no body to measure.
    # gunicorn (real_api), which de-chunks; the in-process server does not.
    headers = {"Content-Type": "application/json", **framing, **auth_headers}
    status, reply = raw_request(real_api, "POST", "/v1/tasks", body, headers)
    assert status == 400
    assert reply["body"]["error"]["code"] == "invalid_json"  # as any body that is not JSON
    assert reply["body"]["error"]["message"].startswith("the body is empty")
    assert reply["headers"]["X-Request-ID"]


@pytest.mark.parametrize("declared", ["abc", "-5", "1e3", "\u0663"])
def test_a_malformed_content_length_is_400(api_url: str, db, auth_headers, declared: str) -> None:
    # gunicorn refuses these itself; the app must not trust its server to.
    status, reply = raw_request(
        api_url, "POST", "/v1/tasks", b"{}",
        {"Content-Type": "application/json", "Content-Length": declared.encode(), **auth_headers},
    )  # fmt: skip
    assert status == 400
    assert reply["body"]["error"]["code"] == "bad_request"
    assert "Content-Length" in reply["body"]["error"]["message"]


@pytest.mark.parametrize("body", [b"{", b"", b"nul", b'{"title": "x",}', b"\xff\xfe"])
def test_invalid_json_is_400(client: ApiClient, body: bytes) -> None:
    response = client.post("/v1/tasks", data=body, headers={"Content-Type": "application/json"})
    assert_error(response, 400, "invalid_json")


# -- request IDs ---------------------------------------------------------------------------


def test_a_sane_request_id_is_kept(client: ApiClient) -> None:
    for rid in ("abc-123", "a" * 128, "trace:1/span.2+x=y@z_"):
        response = client.get("/v1/tasks", headers={"X-Request-ID": rid})
        assert response.headers["X-Request-ID"] == rid


@pytest.mark.parametrize("rid", ["a" * 129, "has space", 'quote"d', "semi;colon", "<script>"])
def test_an_insane_request_id_is_replaced(client: ApiClient, db, rid: str) -> None:
    response = client.post("/v1/tasks", json={"title": "x"}, headers={"X-Request-ID": rid})
    new = response.headers["X-Request-ID"]
    assert new != rid and request_id_from(new) == new  # a fresh, sane one
    assert response.json()["data"]["request_id"] == new
    assert db.execute("SELECT request_id FROM tasks").fetchone() == (new,)


def test_a_missing_request_id_is_generated_and_unique(client: ApiClient) -> None:
    ids = {client.get("/health").headers["X-Request-ID"] for _ in range(5)}
    assert len(ids) == 5 and all(len(rid) == 32 for rid in ids)
    for rid in ids:  # a version 4 UUID's 32 hex digits, as uuid.uuid4().hex writes it
        generated = uuid.UUID(hex=rid)
        assert (generated.hex, generated.version, generated.variant) == (rid, 4, uuid.RFC_4122)


# -- concurrency ---------------------------------------------------------------------------


def test_fifty_concurrent_creates_all_land(real_api: str, db, auth_headers) -> None:
    api_url = real_api  # gunicorn: its backlog takes a burst

    def post(i: int) -> int:
        response = requests.post(
            f"{api_url}/v1/tasks",
            json={"title": f"c{i}"},
            headers={"X-Request-ID": f"c-{i}", **auth_headers},
        )
        assert response.status_code == 201, response.text
        return response.json()["data"]["id"]

    with ThreadPoolExecutor(max_workers=25) as pool:
        ids = list(pool.map(post, range(50)))
    assert len(set(ids)) == 50
    total = requests.get(f"{api_url}/v1/tasks", headers=auth_headers).json()["meta"]["total"]
    assert total == 50
    rows = db.execute("SELECT title, request_id FROM tasks").fetchall()
    assert sorted(rows) == sorted((f"c{i}", f"c-{i}") for i in range(50))


def test_concurrent_puts_on_one_task_serialize(real_api: str, db, auth_headers) -> None:
    api_url = real_api
    created = requests.post(f"{api_url}/v1/tasks", json={"title": "x"}, headers=auth_headers)
    task_id = created.json()["data"]["id"]

    def claim(_: int) -> int:
        return requests.put(
            f"{api_url}/v1/tasks/{task_id}", json={"status": "processing"}, headers=auth_headers
        ).status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(claim, range(20)))
    assert statuses == [200] * 20  # idempotent: the same status again is allowed
    row = db.execute("SELECT status, lease_token IS NOT NULL FROM tasks").fetchone()
    assert row == ("processing", True)


def test_an_unexpected_failure_is_a_500_envelope_with_the_request_id(
    settings: Settings, db, auth_headers, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings)
    store = app.config["flowforge.store"]

    def broken(task_id: int):  # a bug in the store, as the route sees it
        raise RuntimeError("secret internals: stack goes here")

    store.get = broken
    with serve(app) as url, caplog.at_level("ERROR", logger="flowforge.api"):
        response = requests.get(
            f"{url}/v1/tasks/1", headers={"X-Request-ID": "boom-1", **auth_headers}
        )
        healthy = requests.get(f"{url}/health")
    error = assert_error(response, 500, "internal_error")
    assert "boom-1" in error["message"] and error["details"] == {"request_id": "boom-1"}
    assert response.headers["X-Request-ID"] == "boom-1"
    assert "secret internals" not in response.text and "RuntimeError" not in response.text
    # The operator's side: the traceback is in the log, under the request ID.
    logged = [r for r in caplog.records if getattr(r, "request_id", None) == "boom-1"]
    assert any(r.exc_info and "secret internals" in str(r.exc_info[1]) for r in logged)
    assert healthy.status_code == 200  # one failing request does not take the app down


def test_a_failure_outside_the_routes_is_still_the_envelope(
    settings: Settings, db, auth_headers
) -> None:
    app = create_app(settings)

    @app.hook("before_request")
    def explode() -> None:  # a hook failing before any route runs: Bottle's own 500
        raise RuntimeError("hook failed")

    with serve(app) as url:
        response = requests.get(
            f"{url}/v1/tasks", headers={"X-Request-ID": "hook-1", **auth_headers}
        )
    error = assert_error(response, 500, "internal_error")
    assert "hook failed" not in response.text
    assert "hook-1" in error["message"]
    assert response.headers["X-Request-ID"] == "hook-1"


# -- chunked bodies (gunicorn de-chunks them) ----------------------------------------------


def _chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def test_a_chunked_body_is_read(real_api: str, db, auth_headers) -> None:
    body = json.dumps({"title": "sent in chunks", "description": "d" * 5000}).encode()
    response = requests.post(
        f"{real_api}/v1/tasks", data=_chunks(body, 1000),
        headers={"Content-Type": "application/json", **auth_headers}, timeout=10,
    )  # fmt: skip
    assert response.status_code == 201, response.text
    assert response.json()["data"]["title"] == "sent in chunks"


def test_a_chunked_body_over_one_mib_is_413(real_api: str, db, auth_headers) -> None:
    body = json.dumps({"title": "big", "description": "x" * (2 * MiB)}).encode()
    response = requests.post(
        f"{real_api}/v1/tasks", data=_chunks(body),
        headers={"Content-Type": "application/json", **auth_headers}, timeout=10,
    )  # fmt: skip
    assert_error(response, 413, "payload_too_large")
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (0,)


def test_bottle_responses_raised_by_a_route_pass_through(settings: Settings, db) -> None:
    """A route (a future one, a plug-in's) may raise Bottle's own responses: a redirect
    goes out as is, an abort becomes the envelope."""
    import bottle

    app = create_app(settings)
    app.route("/moved", "GET", lambda: bottle.redirect("/health"))
    app.route("/teapot", "GET", lambda: bottle.abort(418, "short and stout"))
    with serve(app) as url:
        moved = requests.get(f"{url}/moved", allow_redirects=False)
        teapot = requests.get(f"{url}/teapot", headers={"X-Request-ID": "tea-1"})
    assert moved.status_code in (302, 303) and moved.headers["Location"].endswith("/health")
    assert moved.headers["X-Request-ID"]
    error = assert_error(teapot, 418, "error")
    assert error["message"] == "short and stout"
    assert teapot.headers["X-Request-ID"] == "tea-1"
