"""The queue's SQL on a real PostgreSQL: claims, outcomes, leases, fencing, the reaper."""

from __future__ import annotations

import time

import psycopg

from flowforge.worker.queue import Outcome, TaskQueue

from ..support import add_tasks, make_settings, task_row


def _queue(database_url: str, name: str, **overrides: str) -> TaskQueue:
    return TaskQueue(make_settings(database_url, **overrides), name)


def test_claim_marks_processing_with_lease_worker_and_counted_attempt(database_url, db) -> None:
    ids = add_tasks(db, 3)
    q = _queue(database_url, "host-a:1")
    claimed = q.claim(2)
    assert [t.id for t in claimed] == ids[:2]  # oldest first
    assert {t.token for t in claimed} == {claimed[0].token}  # one fencing token per claim
    row = task_row(db, ids[0])
    assert row["status"] == "processing"
    assert row["worker"] == "host-a:1"
    assert row["attempts"] == 1 and claimed[0].attempt == 1
    assert row["lease_token"] == claimed[0].token
    assert row["lease_expires_at"] > row["started_at"]
    assert claimed[0].request_id == "req-1"
    # The third is still there for someone else; nothing more after it.
    assert [t.id for t in q.claim(10)] == ids[2:]
    assert q.claim(10) == []
    q.close()


def test_claims_skip_rows_another_transaction_has_locked(database_url, db) -> None:
    ids = add_tasks(db, 2)
    with psycopg.connect(database_url) as other:
        other.execute("SELECT id FROM tasks WHERE id = %s FOR UPDATE", (ids[0],))
        q = _queue(database_url, "host-a:1")
        assert [t.id for t in q.claim(10)] == [ids[1]]  # no waiting on the locked row
        q.close()


def test_tasks_not_due_yet_are_not_claimed(database_url, db) -> None:
    (task_id,) = add_tasks(db)
    db.execute("UPDATE tasks SET run_at = now() + interval '1 hour' WHERE id = %s", (task_id,))
    q = _queue(database_url, "host-a:1")
    assert q.claim(10) == []
    assert 3590 < q.seconds_until_due() <= 3600
    q.close()


def test_outcomes_complete_retry_with_backoff_and_fail(database_url, db) -> None:
    ids = add_tasks(db, 3, max_attempts=1)
    db.execute("UPDATE tasks SET max_attempts = 3 WHERE id = %s", (ids[1],))
    q = _queue(database_url, "host-a:1")
    ok, retry, dead = q.claim(3)
    accepted = q.finish(
        [Outcome(ok), Outcome(retry, "ValueError: bad input", 30.0), Outcome(dead, "boom", 1.0)]
    )
    assert accepted == set(ids)
    row = task_row(db, ok.id)
    assert (row["status"], row["lease_token"]) == ("completed", None)
    assert row["completed_at"] is not None
    row = task_row(db, retry.id)
    assert (row["status"], row["last_error"], row["attempts"]) == (
        "pending",
        "ValueError: bad input",
        1,
    )
    assert 29 < (row["run_at"] - row["updated_at"]).total_seconds() <= 30.01
    assert row["completed_at"] is None and row["lease_token"] is None
    row = task_row(db, dead.id)
    assert (row["status"], row["last_error"]) == ("failed", "boom")  # the dead letter
    assert row["completed_at"] is not None
    q.close()


def test_fencing_a_stale_holder_cannot_write_after_the_lease_moved(database_url, db) -> None:
    (task_id,) = add_tasks(db)
    a = _queue(database_url, "host-a:1", WORKER_LEASE="1s")
    b = _queue(database_url, "host-b:2", WORKER_LEASE="30s")
    (stale,) = a.claim(1)
    db.execute("UPDATE tasks SET lease_expires_at = now() - interval '1s'")
    reaped = b.reap_expired()
    assert [(r.id, r.status, r.lease_expiries, r.worker) for r in reaped] == [
        (task_id, "pending", 1, "host-a:1")
    ]
    row = task_row(db, task_id)
    assert row["status"] == "pending" and "lease expired" in row["last_error"]
    (fresh,) = b.claim(1)
    assert fresh.token != stale.token and fresh.attempt == 2  # the expired run counted
    # The old holder wakes up: its heartbeat and its outcome are refused.
    assert set(a.heartbeat([stale])) == set()
    assert a.finish([Outcome(stale, "late failure", 1.0)]) == set()
    assert task_row(db, task_id)["status"] == "processing"
    assert set(b.heartbeat([fresh])) == {task_id}
    assert b.finish([Outcome(fresh)]) == {task_id}
    row = task_row(db, task_id)
    assert (row["status"], row["worker"]) == ("completed", "host-b:2")
    a.close()
    b.close()


def test_heartbeat_keeps_a_lease_from_expiring(database_url, db) -> None:
    (task_id,) = add_tasks(db)
    q = _queue(database_url, "host-a:1", WORKER_LEASE="300ms")
    (task,) = q.claim(1)
    for _ in range(4):
        time.sleep(0.15)
        assert set(q.heartbeat([task])) == {task_id}
        assert q.reap_expired() == []
    time.sleep(0.4)
    assert [r.id for r in q.reap_expired()] == [task_id]
    q.close()


def test_a_reaped_task_keeps_a_run_at_in_the_future(database_url, db) -> None:
    # The bug: the reaper set run_at = now(), so a task due in 2099 that a client had put
    # in processing (PUT) ran at once when its lease expired.
    later, due = add_tasks(db, 2)
    db.execute(
        "UPDATE tasks SET status = 'processing', attempts = 1, run_at = CASE id WHEN %s "
        "THEN '2099-01-01T00:00:00Z'::timestamptz ELSE now() - interval '1 hour' END, "
        "lease_token = gen_random_uuid(), lease_expires_at = now() - interval '1s'",
        (later,),
    )
    q = _queue(database_url, "host-a:1")
    assert sorted(r.id for r in q.reap_expired()) == [later, due]
    row = task_row(db, later)
    assert (row["status"], row["run_at"].year) == ("pending", 2099)
    row = task_row(db, due)  # due already: due now, not an hour ago (FIFO among retries)
    assert row["status"] == "pending"
    assert abs(row["run_at"] - row["updated_at"]).total_seconds() < 0.001
    assert [t.id for t in q.claim(10)] == [due]
    q.close()


def test_a_task_whose_lease_keeps_expiring_ends_failed(database_url, db) -> None:
    (task_id,) = add_tasks(db, max_attempts=5)  # the expiry limit, not the attempts, ends it
    q = _queue(database_url, "host-a:1", WORKER_MAX_LEASE_EXPIRIES="3")
    statuses = []
    for _ in range(3):
        assert len(q.claim(1)) == 1
        db.execute("UPDATE tasks SET lease_expires_at = now() - interval '1s'")
        statuses += [r.status for r in q.reap_expired()]
    assert statuses == ["pending", "pending", "failed"]
    row = task_row(db, task_id)
    assert row["status"] == "failed" and row["lease_expiries"] == 3
    assert "lease expired 3 times" in row["last_error"]
    assert "WORKER_MAX_LEASE_EXPIRIES=3" in row["last_error"]
    assert q.claim(1) == []
    q.close()


def test_give_back_returns_unstarted_attempts_and_explains_interrupted_ones(
    database_url, db
) -> None:
    ids = add_tasks(db, 2)
    q = _queue(database_url, "host-a:1")
    running, waiting = q.claim(2)
    running.started = True
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN flowforge_tasks")
        assert q.give_back([running, waiting], "interrupted: stopping") == (set(ids), set(), set())
        assert len(list(listener.notifies(timeout=2, stop_after=1))) == 1
    row = task_row(db, running.id)
    assert (row["status"], row["attempts"], row["last_error"]) == (
        "pending",
        1,
        "interrupted: stopping",
    )
    row = task_row(db, waiting.id)
    assert (row["status"], row["attempts"], row["last_error"]) == ("pending", 0, None)
    q.close()


def test_a_lease_expiring_on_the_last_attempt_fails_the_task(database_url, db) -> None:
    # The bug: a lease expiry on the last attempt put the task back to pending, and the
    # next claim ran it as attempt max_attempts + 1.
    (task_id,) = add_tasks(db, max_attempts=2)
    q = _queue(database_url, "host-a:1")
    for attempt, expected in ((1, "pending"), (2, "failed")):
        assert len(q.claim(1)) == 1
        db.execute("UPDATE tasks SET lease_expires_at = now() - interval '1s'")
        (reaped,) = q.reap_expired()
        assert (reaped.status, reaped.attempts, reaped.max_attempts) == (expected, attempt, 2)
    row = task_row(db, task_id)
    assert (row["status"], row["attempts"], row["lease_expiries"]) == ("failed", 2, 2)
    error = row["last_error"]
    assert error.startswith("lease expired on the last attempt (2 of 2): worker host-a:1")
    assert row["completed_at"] is not None and row["lease_token"] is None
    assert q.claim(1) == []  # never attempt 3
    q.close()


def test_give_back_of_a_run_on_its_last_attempt_fails_it(database_url, db) -> None:
    ids = add_tasks(db, 2, max_attempts=1)
    q = _queue(database_url, "host-a:1")
    running, waiting = q.claim(2)
    running.started = True
    assert q.give_back([running, waiting], "interrupted by shutdown") == (
        set(ids),
        {running.id},
        set(),
    )
    row = task_row(db, running.id)
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert row["last_error"] == "interrupted by shutdown; that was the last attempt (1 of 1)"
    assert row["completed_at"] is not None
    row = task_row(db, waiting.id)  # never started: its attempt given back, it runs later
    assert (row["status"], row["attempts"], row["last_error"]) == ("pending", 0, None)
    q.close()


def test_creation_notifies_only_while_a_worker_waits(database_url, db) -> None:
    from flowforge.stores import tasks_sql

    params = {
        "title": "t",
        "description": "",
        "type": "noop",
        "payload": "{}",
        "max_attempts": 3,
        "run_at": None,
        "request_id": "r",
        "queue": "default",
        "priority": 0,
        "timeout": 900,
    }
    q = _queue(database_url, "host-a:1")
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN flowforge_tasks")

        def notified_after_insert() -> bool:
            row = db.execute(tasks_sql.INSERT_TASK, params).fetchone()
            assert row is not None and isinstance(row[0], int)  # the id comes back either way
            return bool(list(listener.notifies(timeout=0.3, stop_after=1)))

        assert not notified_after_insert()  # nobody waits: no NOTIFY, no commit-time lock
        q.set_waiting(True)
        assert notified_after_insert()
        q.set_waiting(False)
        assert not notified_after_insert()
        q.set_waiting(True)
        q.close()  # a worker that goes away drops the lock with its session
        # The server ends the closed session's backend asynchronously: wait for it to go.
        deadline = time.monotonic() + 5
        while db.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()[0]:
            assert time.monotonic() < deadline, "the closed session kept its advisory lock"
            time.sleep(0.01)
        assert not notified_after_insert()
    assert db.execute("SELECT count(*) FROM tasks").fetchone()[0] == 4


def test_requeue_notify_is_sent_only_while_a_worker_waits(database_url, db) -> None:
    from flowforge.stores import common_sql

    q = _queue(database_url, "host-a:1")
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN flowforge_tasks")
        db.execute(common_sql.NOTIFY_IF_WAITING)
        assert list(listener.notifies(timeout=0.3, stop_after=1)) == []
        q.set_waiting(True)
        db.execute(common_sql.NOTIFY_IF_WAITING)
        assert len(list(listener.notifies(timeout=2, stop_after=1))) == 1
    q.close()


def test_give_back_of_a_task_whose_cancel_was_requested_cancels_it(database_url, db) -> None:
    (task_id,) = add_tasks(db)
    q = _queue(database_url, "host-a:1")
    (running,) = q.claim(1)
    running.started = True
    db.execute("UPDATE tasks SET cancel_requested = true WHERE id = %s", (task_id,))
    assert q.give_back([running], "interrupted by shutdown") == ({task_id}, set(), {task_id})
    row = task_row(db, task_id)
    assert (row["status"], row["last_error"]) == (
        "cancelled",
        "cancelled by request; the worker was stopping",
    )
    assert row["completed_at"] is not None and row["lease_token"] is None
    q.close()


def test_a_claim_alone_commits_asynchronously_outcomes_as_configured(database_url, db) -> None:
    """The claim statement sets synchronous_commit off for its own transaction only when no
    outcome rides along (a lost claim only puts the task back): seen inside that
    transaction, and gone after it."""
    ids = add_tasks(db, 2)
    q = _queue(database_url, "host-a:1")
    (claimed,) = q.claim(1)
    conn = q.conn
    assert conn is not None
    assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)  # nothing leaked
    params = {
        "ids": [], "tokens": [], "errors": [], "delays": [], "results": [], "notes": [],
        "kinds": [], "tracebacks": [], "cpus": [], "rsss": [], "signals": [], "kept": 25,
        "worker": "host-a:1", "token": claimed.token, "lease": 30, "limit": 1,
        "queues": ["*"],
    }  # fmt: skip
    with conn.transaction():
        conn.execute(q.claim_sql, params)
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)
    with conn.transaction():
        outcome = {"ids": [claimed.id], "tokens": [claimed.token], "errors": [None],
                   "delays": [0.0], "results": [None], "notes": [None], "kinds": [None],
                   "tracebacks": [None], "cpus": [None], "rsss": [None], "signals": [None],
                   "limit": 0}  # fmt: skip
        conn.execute(q.claim_sql, {**params, **outcome})
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("on",)
    assert task_row(db, claimed.id)["status"] == "completed"
    assert task_row(db, ids[1])["status"] == "processing"  # the second claim's
    q.close()


def _index_of_one_queue_scan(db: psycopg.Connection, due: str) -> set[str]:
    """The indexes the planner takes for a claim of 50 from `default`, which waits behind
    a backlog of `other` in claim order, the table analysed."""
    db.execute(
        "INSERT INTO tasks (title, type, queue) "
        "SELECT 't', 'noop', 'other' FROM generate_series(1, 20000)"
    )
    db.execute(
        "INSERT INTO tasks (title, type, queue) "
        "SELECT 't', 'noop', 'default' FROM generate_series(1, 8000)"
    )
    db.execute("ANALYZE tasks")
    with db.transaction():
        ((plan,),) = db.execute(
            "EXPLAIN (FORMAT JSON) " + due,
            {"queues": ["default"], "limit": 50, "restricted": ["other"]},
        ).fetchall()
    found: set[str] = set()

    def walk(node: dict) -> None:
        if "Index Name" in node:
            found.add(node["Index Name"])
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return found


def test_one_queue_is_claimed_by_its_own_index_behind_another_queues_backlog(db) -> None:
    # Keyed on priority DESC, tasks_queue_claim_idx gave the order of the every-queue
    # index, which the planner then took, filtering on the queue: a claim behind 50,000
    # tasks of another queue walked them all (revision 0017).
    from flowforge.stores import queue_sql

    assert _index_of_one_queue_scan(db, queue_sql._DUE_NAMED_QUEUES) == {"tasks_queue_claim_idx"}
