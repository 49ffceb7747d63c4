"""Idempotency-Key on POST /v1/tasks and POST /v1/tasks/batch over real HTTP on a real
PostgreSQL: replay, mismatch, per-token keys, concurrency, expiry, a key for one kind of
create never answering the other."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
import requests

from ..support import ApiClient, assert_error, issue_token


@pytest.fixture
def keys(db: psycopg.Connection) -> psycopg.Connection:
    db.execute("TRUNCATE idempotency_keys")
    return db


def post(client: ApiClient, key: str, body: dict | None = None) -> requests.Response:
    return client.post(
        "/v1/tasks", json=body or {"title": "pay invoice 7"}, headers={"Idempotency-Key": key}
    )


def test_the_same_key_replays_the_first_task(client: ApiClient, keys) -> None:
    first = post(client, "order-7")
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    task = first.json()["data"]
    again = post(client, "order-7")
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == f"/v1/tasks/{task['id']}"
    assert again.json()["data"] == task
    assert keys.execute("SELECT count(*) FROM tasks").fetchone() == (1,)
    # Field order and spacing do not make another body.
    same = client.post(
        "/v1/tasks",
        data=b'{ "title" :"pay invoice 7" }',
        headers={"Idempotency-Key": "order-7", "Content-Type": "application/json"},
    )
    assert same.status_code == 200 and same.json()["data"]["id"] == task["id"]


def test_the_same_key_with_another_body_is_422(client: ApiClient, keys) -> None:
    post(client, "k1")
    error = assert_error(post(client, "k1", {"title": "other"}), 422, "idempotency_mismatch")
    assert "different body" in error["message"]
    assert keys.execute("SELECT count(*) FROM tasks").fetchone() == (1,)


def test_other_keys_and_no_key_create_new_tasks(client: ApiClient, keys) -> None:
    ids = {post(client, key).json()["data"]["id"] for key in ("a", "b", "A", "a-")}
    assert len(ids) == 4
    plain = [client.post("/v1/tasks", json={"title": "pay invoice 7"}) for _ in range(2)]
    assert [r.status_code for r in plain] == [201, 201]


def test_keys_belong_to_their_token(client: ApiClient, api_url: str, keys, database_url) -> None:
    mine = post(client, "shared").json()["data"]
    other_token = issue_token(database_url, "tests-other-writer", "write")
    with ApiClient(api_url, other_token) as other:
        theirs = post(other, "shared")
        assert theirs.status_code == 201
        assert theirs.json()["data"]["id"] != mine["id"]
        assert post(other, "shared").json()["data"]["id"] == theirs.json()["data"]["id"]


@pytest.mark.parametrize("key", ["", "x" * 201, "caf\u00e9", "tab\there", "nl\x7f"])
def test_bad_keys_are_400(client: ApiClient, keys, key: str) -> None:
    response = client.post(
        "/v1/tasks",
        json={"title": "x"},
        headers={"Idempotency-Key": key.encode("latin-1")},
    )
    error = assert_error(response, 400, "validation_failed")
    assert set(error["details"]) == {"Idempotency-Key"}
    assert keys.execute("SELECT count(*) FROM tasks").fetchone() == (0,)


def test_the_longest_and_odd_printable_keys_work(client: ApiClient, keys) -> None:
    for key in ("x" * 200, "~!@#$%^&*()_+ {}|:<>?", "a b"):
        assert post(client, key).status_code == 201
        assert post(client, key).status_code == 200


def test_an_invalid_body_stores_no_key(client: ApiClient, keys) -> None:
    assert_error(post(client, "k", {"title": ""}), 400, "validation_failed")
    assert post(client, "k").status_code == 201


def test_concurrent_requests_with_one_key_create_one_task(client: ApiClient, keys) -> None:
    barrier = threading.Barrier(10)
    url, headers = client.base + "/v1/tasks", dict(client.headers)

    def send(_: int) -> tuple[int, int]:
        barrier.wait()
        response = requests.post(
            url, json={"title": "once"}, headers={**headers, "Idempotency-Key": "burst"}
        )
        return response.status_code, response.json()["data"]["id"]

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(send, range(10)))
    assert sorted(code for code, _ in results) == [200] * 9 + [201]
    assert len({task_id for _, task_id in results}) == 1
    assert keys.execute("SELECT count(*) FROM tasks").fetchone() == (1,)


def test_a_key_older_than_24_hours_creates_anew_and_expired_keys_are_swept(
    client: ApiClient, keys
) -> None:
    first = post(client, "old").json()["data"]
    keys.execute(
        "INSERT INTO idempotency_keys (token_id, key, request_hash, task_id, created_at) "
        "SELECT 0, 'stale-' || g, decode(repeat('00', 32), 'hex'), 1, now() - interval '2 days' "
        "FROM generate_series(1, 15) g"
    )
    keys.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
    again = post(client, "old", {"title": "a new body is fine now"})
    assert again.status_code == 201 and again.json()["data"]["id"] != first["id"]
    # 15 stale keys: the new key swept 10 of them (the expired key itself was reused).
    left = keys.execute(
        "SELECT count(*) FROM idempotency_keys WHERE created_at < now() - interval '1 day'"
    ).fetchone()
    assert left == (5,)
    post(client, "another")
    assert keys.execute("SELECT count(*) FROM idempotency_keys").fetchone() == (2,)


def test_a_replay_of_a_deleted_task_is_409(client: ApiClient, keys) -> None:
    task = post(client, "gone").json()["data"]
    assert client.delete(f"/v1/tasks/{task['id']}").status_code == 204
    error = assert_error(post(client, "gone"), 409, "conflict")
    assert error["details"] == {"task_id": task["id"]}


# POST /v1/tasks/batch takes the key as single creates do.


def post_batch(client: ApiClient, key: str, titles: tuple[str, ...] = ("a", "b", "c")):
    tasks = [{"title": title} for title in titles]
    return client.post("/v1/tasks/batch", json={"tasks": tasks}, headers={"Idempotency-Key": key})


def test_the_same_key_replays_the_first_batch(client: ApiClient, keys) -> None:
    first = post_batch(client, "batch-1")
    assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
    tasks = first.json()["data"]
    # A task changed since is answered as it is now, in the batch's order.
    changed = client.put(f"/v1/tasks/{tasks[1]['id']}", json={"title": "b2"}).json()["data"]
    again = post_batch(client, "batch-1")
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["data"] == [tasks[0], changed, tasks[2]]
    assert keys.execute("SELECT count(*) FROM tasks").fetchone() == (3,)
    stored = keys.execute("SELECT task_id, task_ids FROM idempotency_keys").fetchone()
    assert stored == (tasks[0]["id"], [t["id"] for t in tasks])
    # Field order and spacing do not make another body.
    same = client.post(
        "/v1/tasks/batch",
        data=b'{"tasks" : [{"title":"a"}, { "title":"b"}, {"title":"c"}] }',
        headers={"Idempotency-Key": "batch-1", "Content-Type": "application/json"},
    )
    assert same.status_code == 200 and [t["id"] for t in same.json()["data"]] == [
        t["id"] for t in tasks
    ]
    # Another key, or none, makes another batch.
    assert post_batch(client, "batch-2").status_code == 201
    assert client.post("/v1/tasks/batch", json={"tasks": [{"title": "a"}]}).status_code == 201
    assert keys.execute("SELECT count(*) FROM tasks").fetchone() == (7,)


def test_the_same_batch_key_with_another_body_is_422(client: ApiClient, keys) -> None:
    post_batch(client, "k1")
    for titles in (("a", "b"), ("c", "b", "a"), ("a", "b", "c", "d")):
        error = assert_error(post_batch(client, "k1", titles), 422, "idempotency_mismatch")
        assert "different body" in error["message"]
        assert error["details"] == {"header": "Idempotency-Key"}
    assert keys.execute("SELECT count(*) FROM tasks").fetchone() == (3,)


def test_a_key_is_for_a_single_create_or_a_batch_never_both(client: ApiClient, keys) -> None:
    single = post(client, "one").json()["data"]
    assert_error(post_batch(client, "one", ("pay invoice 7",)), 422, "idempotency_mismatch")
    post_batch(client, "many", ("pay invoice 7",))
    assert_error(post(client, "many"), 422, "idempotency_mismatch")
    # Each still replays its own.
    assert post(client, "one").json()["data"] == single
    assert post_batch(client, "many", ("pay invoice 7",)).status_code == 200
    assert keys.execute("SELECT count(*) FROM tasks").fetchone() == (2,)


def test_an_invalid_batch_stores_no_key(client: ApiClient, keys) -> None:
    assert_error(post_batch(client, "k", ("ok", "")), 400, "validation_failed")
    assert keys.execute("SELECT count(*) FROM idempotency_keys").fetchone() == (0,)
    assert post_batch(client, "k", ("ok", "fine")).status_code == 201


def test_concurrent_batches_with_one_key_create_one_batch(client: ApiClient, keys) -> None:
    barrier = threading.Barrier(8)
    url, headers = client.base + "/v1/tasks/batch", dict(client.headers)
    body = {"tasks": [{"title": f"t{i}"} for i in range(50)]}

    def send(_: int) -> tuple[int, list[int]]:
        barrier.wait()
        response = requests.post(url, json=body, headers={**headers, "Idempotency-Key": "bulk"})
        return response.status_code, [task["id"] for task in response.json()["data"]]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, range(8)))
    assert sorted(code for code, _ in results) == [200] * 7 + [201]
    assert len({tuple(ids) for _, ids in results}) == 1
    assert keys.execute("SELECT count(*) FROM tasks").fetchone() == (50,)


def test_an_expired_batch_key_makes_a_new_batch_or_a_single_task(client: ApiClient, keys) -> None:
    first = [t["id"] for t in post_batch(client, "old").json()["data"]]
    keys.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
    again = post_batch(client, "old", ("x", "y"))
    assert again.status_code == 201
    assert not {t["id"] for t in again.json()["data"]} & set(first)
    keys.execute("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
    single = post(client, "old")
    assert single.status_code == 201
    row = keys.execute("SELECT task_id, task_ids FROM idempotency_keys").fetchone()
    assert row == (single.json()["data"]["id"], None)
    assert post(client, "old").status_code == 200


def test_a_replay_of_a_batch_with_a_deleted_task_is_409(client: ApiClient, keys) -> None:
    tasks = post_batch(client, "gone").json()["data"]
    assert client.delete(f"/v1/tasks/{tasks[1]['id']}").status_code == 204
    error = assert_error(post_batch(client, "gone"), 409, "conflict")
    assert error["details"] == {"task_id": tasks[1]["id"]}
