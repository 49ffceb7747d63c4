"""Handlers' declarations over real HTTP on a real PostgreSQL: payload schemas checked at
creation (single and batch, the built-in ``sleep``'s and a plug-in's, a plug-in with a bad
schema not loaded), and a plug-in's ``max_attempts`` and ``backoff`` honoured by a real
``flowforge worker``, a task's own ``max_attempts`` winning."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from ..support import (
    ApiClient,
    Tokens,
    WorkerProc,
    assert_error,
    create,
    final_row,
    handler_runs,
    start_api,
    stop_api,
    task_row,
    wait_until,
    worker_spawner,
    write_plugin,
)

MODULE = "ff_declared_handlers"
HANDLERS = """
import os
from flowforge.handlers import handler

def _record(task):
    with open(task.payload["file"], "a") as out:
        out.write(f"{task.id} {task.attempt} {os.getpid()} 0 run\\n")

@handler(schema={
    "type": "object",
    "required": ["to"],
    "properties": {
        "to": {"type": "array", "items": {"type": "string", "pattern": "@"}},
        "count": {"type": "integer", "minimum": 1},
    },
})
def mail(task):
    pass

# Fails every time; retried at once after attempt 1, in 5000 s after attempt 2.
@handler(max_attempts=3, backoff=lambda attempt: 0 if attempt < 2 else 5000)
def declared(task):
    _record(task)
    raise RuntimeError(f"declared failure {task.attempt}")

@handler(backoff=lambda attempt: "soon")
def bad_backoff(task):
    _record(task)
    raise RuntimeError("fails")

@handler(schema={"type": "nonsense"})
def bad_schema(task):
    pass
"""
ENTRY_POINTS = ["mail", "declared", "bad_backoff", "bad_schema"]
# The service's own backoff: an hour, so a retry sooner than that is the handler's.
SERVICE_BACKOFF = {"TASK_RETRY_BACKOFF": "1h", "TASK_RETRY_BACKOFF_MAX": "1h"}


def _details(response) -> dict[str, str]:
    return assert_error(response, 400, "validation_failed")["details"]


def test_sleep_refuses_a_bad_seconds_at_creation(client: ApiClient, db) -> None:
    response = client.post(
        "/v1/tasks", json={"title": "t", "type": "sleep", "payload": {"seconds": "abc"}}
    )
    assert _details(response) == {"payload.seconds": "must be a number"}
    response = client.post(
        "/v1/tasks", json={"title": "t", "type": "sleep", "payload": {"seconds": -1}}
    )
    assert _details(response) == {"payload.seconds": "must be >= 0"}
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (0,)
    # What the schema takes is created as before; other types take any payload.
    assert create(client, type="sleep", payload={"seconds": 0.5})["payload"] == {"seconds": 0.5}
    assert create(client, type="sleep")["payload"] == {}
    assert create(client, payload={"seconds": "abc"})["type"] == "noop"


def test_a_batch_names_each_refused_payload_field_and_creates_nothing(
    client: ApiClient, db
) -> None:
    tasks = [
        {"title": "fine", "type": "sleep", "payload": {"seconds": 1}},
        {"title": "bad", "type": "sleep", "payload": {"seconds": "abc"}},
        {"title": "", "type": "sleep", "payload": {"seconds": -2}},
    ]
    response = client.post("/v1/tasks/batch", json={"tasks": tasks})
    details = _details(response)
    assert details == {
        "tasks[1].payload.seconds": "must be a number",
        "tasks[2].title": "must not be blank",
        "tasks[2].payload.seconds": "must be >= 0",
    }
    assert response.json()["error"]["message"].startswith("the batch is not valid")
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (0,)


def test_a_put_must_leave_a_payload_its_type_takes(client: ApiClient, db) -> None:
    napping = create(client, type="sleep", payload={"seconds": 1})
    plain = create(client, payload={"seconds": "abc"})
    path = f"/v1/tasks/{napping['id']}"
    refused = client.put(path, json={"payload": {"seconds": "later"}})
    assert _details(refused) == {"payload.seconds": "must be a number"}
    # A new type meets the payload already there, and a new pair each other.
    refused = client.put(f"/v1/tasks/{plain['id']}", json={"type": "sleep"})
    assert _details(refused) == {"payload.seconds": "must be a number"}
    both = {"type": "sleep", "payload": {"seconds": -1}}
    assert _details(client.put(path, json=both)) == {"payload.seconds": "must be >= 0"}
    assert client.get(path).json()["data"]["payload"] == {"seconds": 1}
    # What fits is changed; a type with no schema takes any payload; 404 stays 404.
    assert client.put(path, json={"payload": {"seconds": 2}}).status_code == 200
    assert client.put(path, json={"type": "noop", "payload": {"x": "y"}}).status_code == 200
    for missing in ("999999", str(2**64)):
        gone = client.put(f"/v1/tasks/{missing}", json={"payload": {"seconds": 1}})
        assert gone.status_code == 404


def test_a_schedules_payload_is_checked_as_its_tasks_would_be(client: ApiClient, db) -> None:
    body = {"name": "naps", "cron": "* * * * *", "title": "t", "type": "sleep"}
    refused = client.post("/v1/schedules", json={**body, "payload": {"seconds": "abc"}})
    assert _details(refused) == {"payload.seconds": "must be a number"}
    assert db.execute("SELECT count(*) FROM schedules").fetchone() == (0,)
    assert client.post("/v1/schedules", json={**body, "payload": {"seconds": 1}}).status_code == 201
    refused = client.put("/v1/schedules/naps", json={"payload": {"seconds": -3}})
    assert _details(refused) == {"payload.seconds": "must be >= 0"}
    assert client.get("/v1/schedules/naps").json()["data"]["payload"] == {"seconds": 1}
    assert client.put("/v1/schedules/nope", json={"payload": {"seconds": 1}}).status_code == 404


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_plugin(tmp_path_factory.mktemp("declared"), MODULE, HANDLERS, ENTRY_POINTS)


@pytest.fixture(scope="module")
def plugin_api(
    database_url: str, plugin: str, tmp_path_factory: pytest.TempPathFactory, api_tokens: Tokens
) -> Iterator[tuple[str, Path]]:
    """``flowforge api`` with the plug-in on its path: (base URL, its log)."""
    log = tmp_path_factory.mktemp("declared-api") / "api.log"
    proc, url = start_api(database_url, log, API_WORKERS="1", PYTHONPATH=plugin)
    try:
        yield url, log
    finally:
        stop_api(proc)


@pytest.fixture
def api(plugin_api: tuple[str, Path], db, api_tokens: Tokens) -> Iterator[ApiClient]:
    with ApiClient(plugin_api[0], api_tokens.write) as session:
        yield session


@pytest.fixture
def spawn(database_url: str, plugin: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProc]]:
    with worker_spawner(database_url, plugin, tmp_path, **SERVICE_BACKOFF) as start:
        yield start


def test_a_plugins_schema_is_checked_single_and_batch(api: ApiClient, db) -> None:
    body = {"title": "m", "type": "mail", "payload": {"to": ["a@example.org", "nobody"]}}
    assert _details(api.post("/v1/tasks", json=body)) == {
        "payload.to[1]": "'nobody' does not match '@'"
    }
    missing = {"title": "m", "type": "mail"}
    assert _details(api.post("/v1/tasks", json=missing)) == {"payload.to": "is required"}
    good = {"title": "m", "type": "mail", "payload": {"to": ["a@example.org"], "count": 2}}
    batch = {"tasks": [good, {**good, "payload": {"to": [], "count": 0}}]}
    assert _details(api.post("/v1/tasks/batch", json=batch)) == {
        "tasks[1].payload.count": "must be >= 1"
    }
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (0,)
    created = api.post("/v1/tasks/batch", json={"tasks": [good, good]})
    assert created.status_code == 201, created.text


def test_a_plugin_with_a_bad_schema_is_not_loaded_and_says_why(
    api: ApiClient, plugin_api: tuple[str, Path]
) -> None:
    details = _details(api.post("/v1/tasks", json={"title": "b", "type": "bad_schema"}))
    assert details["type"].startswith("unknown task type")
    log = plugin_api[1].read_text()
    assert f"handler plug-in {MODULE}:bad_schema failed to load: handler bad_schema: its " in log
    assert "payload schema is not valid JSON Schema (draft 2020-12) at type:" in log


def test_max_attempts_from_the_handler_unless_the_task_gives_its_own(
    api: ApiClient, settings
) -> None:
    assert create(api, type="declared", payload={"file": "x"})["max_attempts"] == 3
    assert create(api, type="declared", max_attempts=1)["max_attempts"] == 1
    assert (
        create(api, type="mail", payload={"to": []})["max_attempts"] == settings.task_max_attempts
    )


def test_a_schedule_gets_the_handlers_max_attempts_for_its_tasks(api: ApiClient, db) -> None:
    body = {"name": "d", "cron": "* * * * *", "title": "t", "type": "declared"}
    assert api.post("/v1/schedules", json=body).json()["data"]["max_attempts"] == 3
    own = {**body, "name": "e", "max_attempts": 7}
    assert api.post("/v1/schedules", json=own).json()["data"]["max_attempts"] == 7


def _retry_wait(row: dict) -> float:
    """Seconds between the attempt's end and the next run_at."""
    finished: datetime = row["updated_at"]
    return (row["run_at"] - finished).total_seconds()


def test_a_worker_honours_the_declared_backoff(
    api: ApiClient, db: psycopg.Connection, spawn, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    task = create(api, type="declared", payload={"file": str(runs)})
    spawn()
    # Attempt 1 failed and was retried at once (backoff 0, not the service's hour) ...
    wait_until(lambda: task_row(db, task["id"])["attempts"] == 2, 30, "attempt 2")
    wait_until(lambda: task_row(db, task["id"])["status"] == "pending", 30, "attempt 2 over")
    row = task_row(db, task["id"])
    assert [run[1] for run in handler_runs(runs)] == ["1", "2"]
    # ... and attempt 2 waits the declared 5000 s (the service would say 30 to 60 min).
    assert 4990 <= _retry_wait(row) <= 5010, row
    assert row["last_error"] == "RuntimeError: declared failure 2"


def test_the_tasks_own_max_attempts_wins_in_the_worker(
    api: ApiClient, db: psycopg.Connection, spawn, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    task = create(api, type="declared", payload={"file": str(runs)}, max_attempts=1)
    spawn()
    row = final_row(db, task["id"], 30)
    assert (row["status"], row["attempts"], row["max_attempts"]) == ("failed", 1, 1)
    assert len(handler_runs(runs)) == 1


def test_an_unusable_backoff_falls_back_to_the_service_one(
    api: ApiClient, db: psycopg.Connection, spawn, tmp_path: Path
) -> None:
    task = create(api, type="bad_backoff", payload={"file": str(tmp_path / "runs")})
    w = spawn()
    line = w.wait_for("handler backoff unusable, TASK_RETRY_BACKOFF used")
    assert "backoff(1) answered 'soon'" in line["message"] and line["task_id"] == task["id"]
    wait_until(lambda: task_row(db, task["id"])["status"] == "pending", 30, "retry planned")
    assert 1790 <= _retry_wait(task_row(db, task["id"])) <= 3610
