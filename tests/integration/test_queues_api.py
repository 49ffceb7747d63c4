"""Queues as objects over real HTTP on a real PostgreSQL: GET /v1/queues (counts, oldest
pending age, settings), PUT /v1/queues/{name} (pause, concurrency, rate; 400s), and the
claim honouring them (TaskQueue, the worker's own claim code)."""

from __future__ import annotations

import psycopg
import pytest

from flowforge.stores import queue_sql
from flowforge.worker.limits import SKIP_BACKLOG
from flowforge.worker.queue import Outcome, TaskQueue

from ..support import ApiClient, add_tasks, assert_error, make_settings


def _queue(database_url: str, name: str = "w", **env: str) -> TaskQueue:
    queue = TaskQueue(make_settings(database_url, **env), name)
    queue.refresh_limits()
    return queue


def test_get_lists_queues_with_tasks_or_settings(client: ApiClient, read_client, db) -> None:
    add_tasks(db, 2, queue="mail")
    add_tasks(db, 1, queue="mail", status="failed")
    add_tasks(db, 1, queue="default", run_at="2000-01-01T00:00:00Z")
    assert client.put("/v1/queues/empty", json={"concurrency": 2}).status_code == 200
    response = read_client.get("/v1/queues")  # read scope is enough
    assert response.status_code == 200, response.text
    queues = {q["name"]: q for q in response.json()["data"]}
    assert list(queues) == ["default", "empty", "mail"]
    mail = queues["mail"]
    assert mail["counts"]["pending"] == 2 and mail["counts"]["failed"] == 1
    assert mail["counts"]["processing"] == 0
    assert mail["paused"] is False and mail["concurrency"] is None and mail["rate"] is None
    assert mail["updated_at"] is None  # never set
    assert queues["default"]["oldest_pending_age_seconds"] > 20 * 365 * 86400
    assert queues["empty"]["concurrency"] == 2 and sum(queues["empty"]["counts"].values()) == 0
    one = read_client.get("/v1/queues/mail").json()["data"]
    assert one["counts"] == mail["counts"] and one["name"] == "mail"
    assert_error(read_client.get("/v1/queues/nothing-here"), 404, "not_found")


def test_put_sets_and_keeps_settings(client: ApiClient, read_client, db) -> None:
    body = client.put("/v1/queues/mail", json={"paused": True}).json()["data"]
    assert body["paused"] is True and body["paused_by"] == "operator"
    body = client.put(
        "/v1/queues/mail", json={"concurrency": 5, "rate": {"limit": 10, "per": 1}}
    ).json()["data"]
    assert body["paused"] is True  # kept: only what is sent changes
    assert body["concurrency"] == 5 and body["rate"] == {"limit": 10, "per": 1}
    body = client.put("/v1/queues/mail", json={"paused": False, "rate": None}).json()["data"]
    assert body["paused"] is False and body["paused_by"] is None
    assert body["rate"] is None and body["concurrency"] == 5 and body["updated_at"]
    body = client.put("/v1/queues/mail", json={"rate": {"limit": 3, "per": 0.5}}).json()["data"]
    assert body["rate"] == {"limit": 3, "per": 0.5}
    assert_error(read_client.put("/v1/queues/mail", json={"paused": True}), 403, "forbidden")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body"),
        ([], "body"),
        ({"paused": "yes"}, "paused"),
        ({"paused": None}, "paused"),
        ({"concurrency": 0}, "concurrency"),
        ({"concurrency": True}, "concurrency"),
        ({"concurrency": 1.5}, "concurrency"),
        ({"rate": 10}, "rate"),
        ({"rate": {"limit": 10}}, "rate"),
        ({"rate": {"limit": 0, "per": 1}}, "rate"),
        ({"rate": {"limit": 10, "per": 0}}, "rate"),
        ({"rate": {"limit": 10, "per": "1s"}}, "rate"),
        ({"rate": {"limit": 10, "per": 1, "burst": 2}}, "rate"),
        ({"colour": "red"}, "colour"),
        ({"breaker": {"failures": 3, "window": 60}}, "breaker"),
        ({"breaker": {"failures": 0, "window": 60, "cooldown": 5}}, "breaker"),
        ({"breaker": {"failures": 3, "window": 0, "cooldown": 5}}, "breaker"),
    ],
)
def test_bad_bodies_are_400_naming_the_field(client: ApiClient, body, field: str) -> None:
    error = assert_error(client.put("/v1/queues/mail", json=body), 400, "validation_failed")
    assert field in error["details"], error
    assert client.get("/v1/queues").json()["data"] == []  # nothing was stored


def test_bad_queue_names_are_400(client: ApiClient) -> None:
    response = client.put("/v1/queues/Mail", json={"paused": True})
    error = assert_error(response, 400, "validation_failed")
    assert "name" in error["details"]
    assert_error(client.get("/v1/queues/" + "x" * 65), 400, "validation_failed")


def test_a_paused_queue_is_not_claimed_and_a_resumed_one_is(
    client: ApiClient, db, database_url: str
) -> None:
    held = add_tasks(db, 2, queue="held")
    free = add_tasks(db, 2, queue="free")
    client.put("/v1/queues/held", json={"paused": True})
    every, named = _queue(database_url), _queue(database_url, WORKER_QUEUES="held,free")
    assert sorted(t.id for t in every.claim(10)) == free
    assert named.claim(10) == []
    assert every.seconds_until_due() is None  # the paused queue's tasks do not wake it
    client.put("/v1/queues/held", json={"paused": False})
    named.refresh_limits()
    assert sorted(t.id for t in named.claim(10)) == held
    every.close(), named.close()


def test_a_concurrency_limit_holds_across_claimers(client: ApiClient, db, database_url) -> None:
    add_tasks(db, 10, queue="few")
    others = add_tasks(db, 3, queue="many")
    client.put("/v1/queues/few", json={"concurrency": 3})
    a, b = _queue(database_url, "a"), _queue(database_url, "b")
    first = a.claim(2)
    assert [t.queue for t in first] == ["few", "few"]  # the limited queue first
    second = b.claim(10)
    assert [t.queue for t in second].count("few") == 1
    assert sorted(t.id for t in second if t.queue == "many") == others
    assert a.claim(10) == [] and b.claim(10) == []
    # A finished task frees its slot, for the one that finished it as for anyone.
    result = a.finish_and_claim([Outcome(first[0])], 10)
    assert result.finished == {first[0].id} and [t.queue for t in result.claimed] == ["few"]
    a.limits.retry_at = 0.0
    assert a.claim(10) == [] and b.claim(10) == []
    running = db.execute("SELECT count(*) FROM tasks WHERE status = 'processing' AND queue = 'few'")
    assert running.fetchone()[0] == 3
    a.close(), b.close()


def test_a_rate_limit_counts_starts_in_its_window(client: ApiClient, db, database_url) -> None:
    add_tasks(db, 10, queue="slow")
    client.put("/v1/queues/slow", json={"rate": {"limit": 4, "per": 3600}})
    a, b = _queue(database_url, "a"), _queue(database_url, "b")
    got = a.claim(3)
    a.finish([Outcome(t) for t in got])  # finishing does not give starts back
    assert len(got) == 3 and len(b.claim(10)) == 1 and b.claim(10) == []
    row = db.execute("SELECT window_counts FROM queue_settings WHERE name = 'slow'").fetchone()
    assert sum(row[0]) == 4
    # The window slides: starts older than it no longer count.
    db.execute(
        "UPDATE queue_settings SET window_starts = array_fill(now() - interval '2 hours', "
        "ARRAY[cardinality(window_starts)])"
    )
    b.limits.retry_at = 0.0
    assert len(b.claim(10)) == 4
    a.close(), b.close()


def test_no_settings_claim_with_the_plain_statement(db, database_url: str) -> None:
    add_tasks(db, 2)
    queue = _queue(database_url)
    assert queue.limits.restricted == []
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("INSERT INTO queue_settings (name) VALUES ('idle')")  # a row, no setting
    queue.refresh_limits()
    assert queue.limits.restricted == [] and len(queue.claim(10)) == 2
    # ... the statement of a tree without queue settings: no word of them in it
    assert queue.claim_sql is queue_sql.FINISH_AND_CLAIM
    assert "restricted" not in queue.claim_sql and "queue_settings" not in queue.claim_sql
    queue.close()


def test_the_breaker_trips_probes_and_recovers(client: ApiClient, db, database_url) -> None:
    add_tasks(db, 10, queue="flaky")
    breaker = {"failures": 3, "window": 60, "cooldown": 0.5}
    body = client.put("/v1/queues/flaky", json={"breaker": breaker}).json()["data"]
    assert body["breaker"] == breaker and body["paused"] is False
    queue = _queue(database_url)
    assert queue.limits.restricted == []  # a breaker alone changes no claim
    tasks = queue.claim(3)
    fails = [Outcome(t, error="boom", delay=0) for t in tasks]
    queue.finish(fails[:2])
    assert client.get("/v1/queues/flaky").json()["data"]["paused"] is False  # 2 of 3
    queue.finish(fails[2:])
    seen = client.get("/v1/queues/flaky").json()["data"]
    assert seen["paused"] is True and seen["paused_by"] == "breaker"
    queue.refresh_limits()
    assert queue.claim(10) == []  # paused: nothing, until the cooldown is over
    db.execute("UPDATE queue_settings SET tripped_at = now() - interval '1 second'")
    queue.refresh_limits()
    probe = queue.claim(10)
    assert len(probe) == 1  # one probe, however many are due
    queue.limits.retry_at = 0.0
    assert queue.claim(10) == []  # and only one while it runs
    queue.finish([Outcome(probe[0], error="still down", delay=0)])
    seen = client.get("/v1/queues/flaky").json()["data"]
    assert seen["paused_by"] == "breaker"  # a failed probe: another cooldown
    db.execute("UPDATE queue_settings SET tripped_at = now() - interval '1 second'")
    queue.refresh_limits()
    queue.limits.retry_at = 0.0  # the worker's own 20 ms wait after an empty limited claim
    probe = queue.claim(10)
    assert len(probe) == 1
    queue.finish([Outcome(probe[0])])
    seen = client.get("/v1/queues/flaky").json()["data"]
    assert seen["paused"] is False and seen["paused_by"] is None  # the probe succeeded
    queue.refresh_limits()
    assert len(queue.claim(10)) > 1
    body = client.put("/v1/queues/flaky", json={"breaker": None}).json()["data"]
    assert body["breaker"] is None
    queue.close()


def test_a_restricted_backlog_is_stepped_around(client: ApiClient, db, database_url) -> None:
    held = add_tasks(db, SKIP_BACKLOG, queue="held", run_at="2000-01-01T00:00:00Z")
    low = add_tasks(db, 2, queue="b-free")
    high = add_tasks(db, 2, queue="a-free", priority=5)
    client.put("/v1/queues/held", json={"paused": True})
    queue = _queue(database_url)
    assert queue.limits.backlog == SKIP_BACKLOG
    assert queue.limits.plain_claim(queue.claim_sql)[0] is queue_sql.FINISH_AND_CLAIM_SKIPPING
    assert [t.id for t in queue.claim(3)] == [*high, low[0]]  # priority order across queues
    assert [t.id for t in queue.claim(10)] == low[1:]
    client.put("/v1/queues/held", json={"paused": False})
    queue.refresh_limits()
    assert queue.limits.backlog == 0 and len(queue.claim(10)) == 10
    assert db.execute("SELECT count(*) FROM tasks WHERE status = 'pending'").fetchone()[0] == (
        len(held) - 10
    )
    queue.close()
