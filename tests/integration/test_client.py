"""flowforge.client.Client against the live API (real HTTP, real PostgreSQL), used as an
application would: every method, the cursor paging, the exceptions, the retries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from flowforge.client import (
    BadRequest,
    Client,
    Conflict,
    ConnectionFailed,
    FlowForgeError,
    Forbidden,
    IdempotencyMismatch,
    NotFound,
    ServerError,
    Task,
    Unauthorized,
    ValidationFailed,
    WaitTimedOut,
)
from flowforge.devdb import free_port

from ..support import Tokens, add_tasks, serve, statuses

FAST = {"backoff": 0.01}  # retries without the default's pauses


@pytest.fixture
def ff(api_url: str, db: psycopg.Connection, api_tokens: Tokens) -> Client:
    return Client(api_url, api_tokens.write, **FAST)


def _keys(db: psycopg.Connection) -> int:
    return db.execute("SELECT count(*) FROM idempotency_keys").fetchone()[0]


def test_create_and_get_are_typed(ff: Client, db: psycopg.Connection) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    task = ff.create(title="report", type="noop", queue="reports", priority=5, run_at=later)
    assert isinstance(task, Task) and task.status == "pending" and not task.final
    assert (task.queue, task.priority, task.run_at) == ("reports", 5, later)
    assert isinstance(task.created_at, datetime) and task.created_at.tzinfo is not None
    assert ff.get(task.id) == task
    assert _keys(db) == 1  # the automatic Idempotency-Key


def test_create_batch_keeps_the_order(ff: Client, db: psycopg.Connection) -> None:
    tasks = ff.create_batch([{"title": f"t{i}"} for i in range(3)])
    assert [t.title for t in tasks] == ["t0", "t1", "t2"]
    assert [t.id for t in tasks] == sorted(t.id for t in tasks)
    assert statuses(db) == {"pending": 3} and _keys(db) == 1


def test_wait_returns_the_final_task(ff: Client, db: psycopg.Connection, spawn, tmp_path) -> None:
    spawn().wait_for("worker ready")
    done = ff.wait(ff.create(title="quick").id, timeout=30)
    assert done.status == "completed" and done.final and done.completed_at is not None
    # The test plug-in's types are the worker's only (the API here has the built-ins).
    (doomed,) = add_tasks(db, 1, "flaky", {"file": str(tmp_path / "runs")}, max_attempts=1)
    failed = ff.wait(doomed, timeout=30)
    assert failed.status == "failed" and "flaky failure" in failed.last_error


def test_wait_times_out_with_the_task_as_last_seen(ff: Client) -> None:
    task = ff.create(title="nobody runs me")
    with pytest.raises(WaitTimedOut) as timed_out:
        ff.wait(task.id, timeout=0.2)
    assert timed_out.value.task.status == "pending" and isinstance(timed_out.value, TimeoutError)


def test_cancel_and_retry(ff: Client) -> None:
    task = ff.create(title="maybe")
    assert ff.cancel(task.id).status == "cancelled"
    with pytest.raises(Conflict) as refused:
        ff.cancel(task.id)
    assert refused.value.status == 409 and refused.value.code == "conflict"
    assert refused.value.request_id
    again = ff.retry(task.id)
    assert again.status == "pending" and again.attempts == 0
    with pytest.raises(Conflict):
        ff.retry(task.id)


def test_list_pages_through_every_task(ff: Client, db: psycopg.Connection) -> None:
    ids = add_tasks(db, 230)
    add_tasks(db, 2, queue="other")
    listed = [t.id for t in ff.list(queue="default")]
    assert listed == sorted(ids, reverse=True)  # newest first, no page missed or repeated
    assert len(list(ff.list(limit=7))) == 232  # 34 pages of 7
    assert list(ff.list(status="failed")) == []
    with pytest.raises(BadRequest) as unknown:  # a typo is refused, never "everything"
        list(ff.list(colour="red"))
    assert isinstance(unknown.value, ValidationFailed) and "colour" in unknown.value.errors


def test_errors_are_exceptions_per_code(
    ff: Client, api_url: str, api_tokens: Tokens, db: psycopg.Connection
) -> None:
    with pytest.raises(NotFound) as missing:
        ff.get(999_999)
    assert missing.value.status == 404 and missing.value.code == "not_found"
    with pytest.raises(ValidationFailed) as invalid:
        ff.create(title=" ", priority=1000)
    assert {"title", "priority"} <= set(invalid.value.errors)
    with pytest.raises(ValidationFailed) as batch:
        ff.create_batch([{"title": "ok"}, {"title": "ok", "queue": "Bad!"}])
    assert "tasks[1].queue" in batch.value.errors
    with pytest.raises(Unauthorized):
        Client(api_url, "not-a-token").get(1)
    with pytest.raises(Forbidden):
        Client(api_url, api_tokens.read).create(title="read tokens do not write")
    ff.create(title="first", idempotency_key="order-7")
    with pytest.raises(IdempotencyMismatch) as mismatch:
        ff.create(title="second", idempotency_key="order-7")
    assert mismatch.value.code == "idempotency_mismatch" and mismatch.value.status == 422
    assert statuses(db) == {"pending": 1}  # nothing refused was stored


class _LostAnswer:
    """The network failure, and nothing else, faked: the first request reaches the API
    and is answered, but the answer is lost (the connection drops) as the client reads."""

    def __init__(self, opener) -> None:
        self.opener = opener
        self.calls = 0

    def open(self, req, timeout):
        self.calls += 1
        answer = self.opener.open(req, timeout=timeout)
        if self.calls == 1:
            answer.close()
            raise ConnectionResetError("connection reset by peer")
        return answer


def test_a_retried_create_makes_one_task(ff: Client, db: psycopg.Connection) -> None:
    ff._http._opener = lost = _LostAnswer(ff._http._opener)
    task = ff.create(title="exactly once")
    assert lost.calls == 2
    assert statuses(db) == {"pending": 1} and _keys(db) == 1
    # The retry was answered with the task the first attempt made.
    assert db.execute("SELECT id, title FROM tasks").fetchall() == [(task.id, "exactly once")]
    batch = ff.create_batch([{"title": "a"}, {"title": "b"}])  # the next call succeeds at once
    assert lost.calls == 3 and len(batch) == 2


def test_a_cancel_whose_answer_was_lost_is_not_sent_again(ff: Client) -> None:
    task = ff.create(title="cancel me")
    ff._http._opener = lost = _LostAnswer(ff._http._opener)
    with pytest.raises(ConnectionFailed):
        ff.cancel(task.id)
    assert lost.calls == 1  # a second cancel would be a 409 for a cancel that worked
    assert ff.get(task.id).status == "cancelled"


def test_a_refused_connection_is_retried_then_raised() -> None:
    client = Client(f"http://127.0.0.1:{free_port()}", "t", retries=2, **FAST)
    with pytest.raises(ConnectionFailed) as failed:
        client.cancel(1)  # never reached an API: safe to retry even for a cancel
    assert failed.value.status is None and failed.value.code == "connection_failed"


def test_bad_gateway_is_retried_then_raised() -> None:
    hits: list[str] = []

    def edge(environ, start_response):  # an edge whose API is away: HTML, no envelope
        hits.append(environ["REQUEST_METHOD"])
        start_response("502 Bad Gateway", [("Content-Type", "text/html")])
        return [b"<html>502 Bad Gateway</html>"]

    with serve(edge) as url:
        client = Client(url, "t", retries=2, **FAST)
        with pytest.raises(ServerError) as failed:
            client.get(1)
        assert hits == ["GET"] * 3
        assert (failed.value.status, failed.value.code) == (502, "http_502")
        hits.clear()
        with pytest.raises(ServerError):
            client.retry(1)  # the API may have acted: not sent twice
        assert hits == ["POST"]
    assert isinstance(failed.value, FlowForgeError)
