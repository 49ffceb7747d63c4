"""POST /v1/tasks/batch over real HTTP on a real PostgreSQL: all or nothing, in order, one
commit and one notification."""

from __future__ import annotations

import psycopg
import pytest

from flowforge.stores import common_sql

from ..support import ApiClient, assert_error


def batch(client: ApiClient, tasks: list, **kwargs):
    return client.post("/v1/tasks/batch", json={"tasks": tasks}, **kwargs)


def test_a_batch_of_1000_is_created_in_order(client: ApiClient, db, settings) -> None:
    tasks = [
        {"title": f"t{i}", "priority": i % 201 - 100, "payload": {"i": i}} for i in range(1000)
    ]
    tasks[7].update(queue="mail", type="sleep", timeout=5, max_attempts=9)
    tasks[8].update(run_at="2030-01-01T00:00:00+02:00", description="later")
    response = batch(client, tasks, headers={"X-Request-ID": "bulk-1"})
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    assert [t["title"] for t in data] == [f"t{i}" for i in range(1000)]
    assert [t["payload"] for t in data] == [{"i": i} for i in range(1000)]
    ids = [t["id"] for t in data]
    assert ids == sorted(ids) and len(set(ids)) == 1000
    seventh = data[7]
    assert (seventh["queue"], seventh["type"], seventh["timeout"], seventh["max_attempts"]) == (
        "mail",
        "sleep",
        5,
        9,
    )
    assert data[8]["run_at"] == "2029-12-31T22:00:00Z" and data[8]["description"] == "later"
    assert data[0]["timeout"] == settings.task_timeout
    assert data[0]["max_attempts"] == settings.task_max_attempts
    assert {t["status"] for t in data} == {"pending"}
    assert {t["request_id"] for t in data} == {"bulk-1"}
    for index in (0, 7, 8, 999):  # the answer is what the table holds
        assert client.get(f"/v1/tasks/{ids[index]}").json()["data"] == data[index]
    rows = db.execute("SELECT count(*), count(DISTINCT xmin::text) FROM tasks").fetchone()
    assert rows == (1000, 1)  # one transaction


def test_an_invalid_item_refuses_the_whole_batch_naming_its_index(client: ApiClient, db) -> None:
    tasks = [{"title": "ok"}] * 5 + [{"title": ""}, {"title": "x", "priority": 500}, "nope"]
    error = assert_error(batch(client, tasks), 400, "validation_failed")
    assert error["details"] == {
        "tasks[5].title": "must not be blank",
        "tasks[6].priority": "must be between -100 and 100",
        "tasks[7]": "must be an object",
    }
    assert "tasks[5].title" in error["message"]
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (0,)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"tasks": []}, "tasks"),
        ({"tasks": [{"title": "x"}] * 1001}, "tasks"),
        ({"tasks": {"title": "x"}}, "tasks"),
        ({}, "tasks"),
        ({"tasks": [{"title": "x"}], "extra": 1}, "extra"),
    ],
)
def test_bad_batches_are_400(client: ApiClient, db, body: dict, field: str) -> None:
    error = assert_error(client.post("/v1/tasks/batch", json=body), 400, "validation_failed")
    assert field in error["details"]
    assert db.execute("SELECT count(*) FROM tasks").fetchone() == (0,)


def test_a_batch_that_is_not_an_object_or_not_json(client: ApiClient) -> None:
    assert_error(client.post("/v1/tasks/batch", json=[{"title": "x"}]), 400, "validation_failed")
    assert_error(client.post("/v1/tasks/batch", data=b"{"), 415, "unsupported_media_type")
    response = client.post(
        "/v1/tasks/batch", data=b"{", headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, "invalid_json")


def test_a_batch_with_an_unknown_type_names_the_item(client: ApiClient) -> None:
    error = assert_error(
        batch(client, [{"title": "a"}, {"title": "b", "type": "nope"}]), 400, "validation_failed"
    )
    assert set(error["details"]) == {"tasks[1].type"}


def test_a_batch_notifies_a_waiting_worker_once(client: ApiClient, db, database_url) -> None:
    with psycopg.connect(database_url, autocommit=True) as worker:
        worker.execute(f"LISTEN {common_sql.NOTIFY_CHANNEL}")
        worker.execute(common_sql.IDLE_LOCK)
        assert batch(client, [{"title": f"t{i}"} for i in range(50)]).status_code == 201
        notes = list(worker.notifies(timeout=1))
    assert len(notes) == 1


def test_the_batch_alias(client: ApiClient) -> None:
    response = client.post("/tasks/batch", json={"tasks": [{"title": "x"}]})
    assert response.status_code == 201 and len(response.json()["data"]) == 1
