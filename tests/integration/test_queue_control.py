"""Queue control over real HTTP on a real PostgreSQL: the new task fields, cancel, retry,
DELETE and PUT of running tasks, list filters, and the races decided by one statement."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests

from flowforge.stores import common_sql

from ..support import ApiClient, assert_error, create


def set_status(db: psycopg.Connection, task_id: int, status: str, **extra: object) -> None:
    assignments = ", ".join(f"{name} = %({name})s" for name in extra)
    db.execute(
        f"UPDATE tasks SET status = %(status)s{', ' + assignments if extra else ''} "
        "WHERE id = %(id)s",
        {"status": status, "id": task_id, **extra},
    )


# -- fields --------------------------------------------------------------------------------


def test_new_fields_have_their_defaults(client: ApiClient, settings) -> None:
    task = create(client)
    assert task["queue"] == "default"
    assert task["priority"] == 0
    assert task["result"] is None
    assert task["cancel_requested"] is False
    assert task["timeout"] == settings.task_timeout == 900  # TASK_TIMEOUT, 15m
    assert task["schedule"] is None


def test_queue_priority_and_timeout_are_stored(client: ApiClient, db) -> None:
    task = create(client, queue="mail_out-2", priority=-100, timeout=86400)
    assert (task["queue"], task["priority"], task["timeout"]) == ("mail_out-2", -100, 86400)
    row = db.execute("SELECT queue, priority, timeout FROM tasks WHERE id = %s", [task["id"]])
    assert row.fetchone() == ("mail_out-2", -100, 86400)
    top = create(client, priority=100, timeout=1)
    assert (top["priority"], top["timeout"]) == (100, 1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("queue", ""),
        ("queue", "Mail"),
        ("queue", "a" * 65),
        ("queue", "a b"),
        ("queue", "ä"),
        ("queue", 5),
        ("queue", None),
        ("priority", 101),
        ("priority", -101),
        ("priority", 1.5),
        ("priority", True),
        ("priority", "1"),
        ("timeout", 0),
        ("timeout", 86401),
        ("timeout", -1),
        ("timeout", False),
        ("timeout", 60.0),
    ],
)
def test_bad_queue_fields_are_400_naming_the_field(client: ApiClient, field, value) -> None:
    error = assert_error(
        client.post("/v1/tasks", json={"title": "x", field: value}), 400, "validation_failed"
    )
    assert set(error["details"]) == {field}
    task = create(client)
    error = assert_error(
        client.put(f"/v1/tasks/{task['id']}", json={field: value}), 400, "validation_failed"
    )
    assert set(error["details"]) == {field}


def test_result_and_cancel_requested_are_not_client_fields(client: ApiClient) -> None:
    for field, value in [("result", {}), ("cancel_requested", True), ("schedule", "x")]:
        error = assert_error(
            client.post("/v1/tasks", json={"title": "x", field: value}), 400, "validation_failed"
        )
        assert error["details"] == {field: "is not a known field"}


def test_put_changes_queue_fields_while_pending(client: ApiClient) -> None:
    task = create(client)
    changed = client.put(
        f"/v1/tasks/{task['id']}", json={"queue": "bulk", "priority": 7, "timeout": 60}
    ).json()["data"]
    assert (changed["queue"], changed["priority"], changed["timeout"]) == ("bulk", 7, 60)


def test_result_is_served_as_stored(client: ApiClient, db) -> None:
    task = create(client)
    db.execute(
        "UPDATE tasks SET status = 'completed', result = %s WHERE id = %s",
        [psycopg.types.json.Jsonb({"sent": 3, "ids": [1, 2]}), task["id"]],
    )
    assert client.get(f"/v1/tasks/{task['id']}").json()["data"]["result"] == {
        "sent": 3,
        "ids": [1, 2],
    }


# -- list filters --------------------------------------------------------------------------


def test_list_filters_by_type_queue_and_status_combined(client: ApiClient, db) -> None:
    a = create(client, queue="mail", type="sleep")["id"]
    b = create(client, queue="mail")["id"]
    c = create(client, queue="bulk", type="sleep")["id"]
    d = create(client)["id"]
    set_status(db, b, "failed")

    def ids(**params: str) -> list[int]:
        body = client.get("/v1/tasks", params=params).json()
        assert body["meta"]["total"] == len(body["data"])
        return [t["id"] for t in body["data"]]

    assert ids(queue="mail") == [b, a]
    assert ids(type="sleep") == [c, a]
    assert ids(type="noop") == [d, b]
    assert ids(queue="mail", type="sleep") == [a]
    assert ids(queue="mail", status="failed") == [b]
    assert ids(queue="mail", status="pending", type="noop") == []
    assert ids(queue="nowhere") == []
    assert ids() == [d, c, b, a]


@pytest.mark.parametrize(
    "query",
    ["?typ=sleep", "?after=abc", "?select=id", "?page=1&sort=id", "?Status=pending", "?=x"],
)
def test_unknown_list_parameters_are_400(client: ApiClient, query: str) -> None:
    error = assert_error(client.get("/v1/tasks" + query), 400, "validation_failed")
    name = query[1:].split("&")[-1].split("=")[0]
    assert "is not a known parameter" in error["details"][name]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"queue": "Mail"}, "queue"), ({"queue": ""}, "queue"), ({"type": ""}, "type")],
)
def test_bad_filters_are_400(client: ApiClient, params: dict, field: str) -> None:
    error = assert_error(client.get("/v1/tasks", params=params), 400, "validation_failed")
    assert set(error["details"]) == {field}


# -- cancel --------------------------------------------------------------------------------


def test_cancel_of_a_pending_task_is_immediate(client: ApiClient) -> None:
    task = create(client)
    response = client.post(f"/v1/tasks/{task['id']}/cancel")
    assert response.status_code == 200, response.text
    done = response.json()["data"]
    assert done["status"] == "cancelled"
    assert done["cancel_requested"] is True
    assert done["completed_at"] is not None
    assert client.get(f"/v1/tasks/{task['id']}").json()["data"]["status"] == "cancelled"


def test_cancel_of_a_processing_task_flags_it_and_notifies_its_worker(
    client: ApiClient, db, database_url: str
) -> None:
    task = create(client)
    client.put(f"/v1/tasks/{task['id']}", json={"status": "processing"})
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute(f"LISTEN {common_sql.CANCEL_CHANNEL}")
        response = client.post(f"/v1/tasks/{task['id']}/cancel")
        assert response.status_code == 202, response.text
        body = response.json()["data"]
        assert (body["status"], body["cancel_requested"]) == ("processing", True)
        notes = list(listener.notifies(timeout=5, stop_after=1))
    assert [(n.channel, n.payload) for n in notes] == [("flowforge_cancel", str(task["id"]))]
    # Asked again while it still runs: the same answer (and another nudge).
    assert client.post(f"/v1/tasks/{task['id']}/cancel").status_code == 202


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled"])
def test_cancel_of_a_finished_task_is_409(client: ApiClient, db, status: str) -> None:
    task = create(client)
    set_status(db, task["id"], status)
    error = assert_error(client.post(f"/v1/tasks/{task['id']}/cancel"), 409, "conflict")
    assert error["details"] == {"status": status, "requested": "cancelled"}
    assert client.get(f"/v1/tasks/{task['id']}").json()["data"]["status"] == status


def test_cancel_and_retry_of_unknown_tasks_are_404(client: ApiClient) -> None:
    for action in ("cancel", "retry"):
        assert_error(client.post(f"/v1/tasks/424242/{action}"), 404, "not_found")
        assert_error(client.post(f"/v1/tasks/{2**63}/{action}"), 404, "not_found")
        assert_error(client.get(f"/v1/tasks/1/{action}"), 405, "method_not_allowed")


def test_the_unversioned_aliases_cancel_and_retry(client: ApiClient) -> None:
    task = create(client)
    assert client.post(f"/tasks/{task['id']}/cancel").json()["data"]["status"] == "cancelled"
    assert client.post(f"/tasks/{task['id']}/retry").json()["data"]["status"] == "pending"


# -- retry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["failed", "cancelled", "completed"])
def test_retry_of_a_finished_task_starts_it_over(client: ApiClient, db, status: str) -> None:
    task = create(client, max_attempts=3)
    set_status(
        db,
        task["id"],
        status,
        attempts=3,
        lease_expiries=2,
        cancel_requested=status == "cancelled",
        last_error="boom",
        completed_at=task["created_at"],
        result=psycopg.types.json.Jsonb({"x": 1}),
    )
    response = client.post(f"/v1/tasks/{task['id']}/retry")
    assert response.status_code == 200, response.text
    again = response.json()["data"]
    assert again["status"] == "pending"
    assert again["attempts"] == 0
    assert again["cancel_requested"] is False
    assert again["completed_at"] is None and again["result"] is None
    assert again["last_error"] == "boom"  # kept: why it failed before
    assert again["run_at"] >= task["run_at"]
    row = db.execute("SELECT lease_expiries FROM tasks WHERE id = %s", [task["id"]]).fetchone()
    assert row == (0,)


@pytest.mark.parametrize("status", ["pending", "processing"])
def test_retry_of_an_unfinished_task_is_409(client: ApiClient, db, status: str) -> None:
    task = create(client)
    set_status(db, task["id"], status)
    error = assert_error(client.post(f"/v1/tasks/{task['id']}/retry"), 409, "conflict")
    assert error["details"] == {"status": status, "requested": "pending"}


def test_retry_wakes_a_waiting_worker(client: ApiClient, db, database_url: str) -> None:
    task = create(client)
    set_status(db, task["id"], "failed")
    with psycopg.connect(database_url, autocommit=True) as worker:
        worker.execute(f"LISTEN {common_sql.NOTIFY_CHANNEL}")
        worker.execute(common_sql.IDLE_LOCK)  # what an idle worker holds
        assert client.post(f"/v1/tasks/{task['id']}/retry").status_code == 200
        notes = list(worker.notifies(timeout=5, stop_after=1))
    assert [n.channel for n in notes] == [common_sql.NOTIFY_CHANNEL]


def test_put_requeue_of_a_failed_task_clears_the_cancel_flag(client: ApiClient, db) -> None:
    task = create(client)
    set_status(db, task["id"], "failed", attempts=3, cancel_requested=True)
    again = client.put(f"/v1/tasks/{task['id']}", json={"status": "pending"}).json()["data"]
    assert (again["status"], again["attempts"], again["cancel_requested"]) == ("pending", 0, False)


# -- delete and PUT of running tasks -------------------------------------------------------


def test_delete_of_a_processing_task_is_409_and_keeps_it(client: ApiClient, db) -> None:
    task = create(client)
    set_status(db, task["id"], "processing")
    error = assert_error(client.delete(f"/v1/tasks/{task['id']}"), 409, "conflict")
    assert error["details"] == {"status": "processing", "requested": "deleted"}
    assert "cancel it first" in error["message"]
    assert client.get(f"/v1/tasks/{task['id']}").status_code == 200
    for status in ("cancelled", "completed", "failed", "pending"):
        other = create(client)
        set_status(db, other["id"], status)
        assert client.delete(f"/v1/tasks/{other['id']}").status_code == 204


# -- races: one conditional statement decides ----------------------------------------------


def test_a_cancel_racing_a_claim_either_cancels_or_flags(client: ApiClient, db, settings) -> None:
    """Cancel and a worker's claim of the same pending task, at the same moment, many times:
    the task is never claimed after a 200, and a 202 always leaves it flagged."""
    from flowforge.worker.queue import TaskQueue

    queue = TaskQueue(settings, "race-worker")
    try:
        for _ in range(20):
            task = create(client)
            barrier = threading.Barrier(2)

            def cancel(task_id: int = task["id"], barrier: threading.Barrier = barrier) -> int:
                barrier.wait()
                return requests.post(
                    f"{client.base}/v1/tasks/{task_id}/cancel", headers=client.headers
                ).status_code

            def claim(barrier: threading.Barrier = barrier) -> list[int]:
                barrier.wait()
                return [t.id for t in queue.claim(10)]

            with ThreadPoolExecutor(2) as pool:
                cancelled, claimed = pool.submit(cancel), pool.submit(claim)
                status_code, got = cancelled.result(), claimed.result()
            row = db.execute(
                "SELECT status, cancel_requested FROM tasks WHERE id = %s", [task["id"]]
            ).fetchone()
            if status_code == 200:
                assert got == [] and row == ("cancelled", True)
            else:
                assert status_code == 202
                assert got == [task["id"]] and row == ("processing", True)
            db.execute("DELETE FROM tasks")
    finally:
        queue.close()


def test_a_retry_racing_the_outcome_of_a_worker_is_decided_once(
    client: ApiClient, db, settings
) -> None:
    """A worker records a task's final failure while a client retries it: the retry
    either sees it still processing (409, the task ends failed) or sees it failed and
    re-queues it (200, pending with attempts 0): never both, never a lost update."""
    from flowforge.worker.queue import Outcome, TaskQueue

    queue = TaskQueue(settings, "race-worker")
    seen: set[int] = set()
    try:
        for _ in range(20):
            task_id = create(client, max_attempts=1)["id"]
            (claimed,) = queue.claim(1)
            barrier = threading.Barrier(2)

            def retry(task_id: int = task_id, barrier: threading.Barrier = barrier) -> int:
                barrier.wait()
                return requests.post(
                    f"{client.base}/v1/tasks/{task_id}/retry", headers=client.headers
                ).status_code

            def fail(claimed=claimed, barrier: threading.Barrier = barrier) -> set[int]:
                barrier.wait()
                return queue.finish([Outcome(claimed, "boom", 0.0)])

            with ThreadPoolExecutor(2) as pool:
                retried, failed = pool.submit(retry), pool.submit(fail)
                status_code, finished = retried.result(), failed.result()
            assert finished == {task_id}  # the worker's outcome is never lost
            row = db.execute(
                "SELECT status, attempts FROM tasks WHERE id = %s", [task_id]
            ).fetchone()
            if status_code == 200:
                assert row == ("pending", 0)
            else:
                assert status_code == 409 and row == ("failed", 1)
            seen.add(status_code)
            db.execute("DELETE FROM tasks")
    finally:
        queue.close()
    assert seen <= {200, 409}


def test_concurrent_retries_requeue_once(client: ApiClient, db) -> None:
    task = create(client)
    set_status(db, task["id"], "failed", attempts=3)
    url = f"{client.base}/v1/tasks/{task['id']}"
    with ThreadPoolExecutor(8) as pool:
        codes = list(
            pool.map(
                lambda _: requests.post(f"{url}/retry", headers=client.headers).status_code,
                range(8),
            )
        )
    assert sorted(codes) == [200] + [409] * 7


def test_lowering_max_attempts_below_the_attempts_made_is_409(
    client: ApiClient, db: psycopg.Connection
) -> None:
    """A pending task that already ran twice (waiting out its backoff) needs an attempt
    left; a PUT taking it away is refused, never a 500 from the CHECK constraint."""
    task = create(client, max_attempts=5)
    db.execute("UPDATE tasks SET attempts = 2 WHERE id = %s", (task["id"],))
    for lower in (2, 1):
        error = assert_error(
            client.put(f"/v1/tasks/{task['id']}", json={"max_attempts": lower}), 409, "conflict"
        )
        assert "max_attempts" in error["message"]
    ok = client.put(f"/v1/tasks/{task['id']}", json={"max_attempts": 3})
    assert ok.status_code == 200 and ok.json()["data"]["max_attempts"] == 3
