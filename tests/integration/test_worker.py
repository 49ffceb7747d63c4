"""`flowforge worker` processes on a real PostgreSQL: throughput without duplicates, chaos,
graceful stops, retries, lease expiry and fencing, a database restart, tracing, systemd.

Handler runs are counted by a real plug-in: a module plus a ``*.dist-info`` with an
``entry_points.txt`` on ``PYTHONPATH``, found through the ``flowforge.handlers`` group
exactly as an installed package would be. Each run appends one line to a file.
"""

from __future__ import annotations

import random
import signal
import socket
import time
from collections import Counter

import psycopg

from flowforge.devdb import TempPostgres
from flowforge.stores import tasks_sql

from ..support import (
    WorkerProc,
    add_tasks,
    create_database,
    handler_runs,
    make_settings,
    statuses,
    wait_until,
)


def test_four_processes_complete_5000_tasks_each_exactly_once(db, spawn, tmp_path) -> None:
    runs = tmp_path / "runs"
    workers = [spawn(name=f"w{i}", WORKER_CONCURRENCY="4") for i in range(4)]
    for w in workers:
        w.wait_for("worker ready")
    add_tasks(db, 5000, "count", {"file": str(runs), "sleep": 0.001}, notify=True)
    wait_until(lambda: statuses(db) == {"completed": 5000}, 60, "5,000 completed tasks")
    assert [w.stop() for w in workers] == [0, 0, 0, 0]
    done = handler_runs(runs)
    per_task = Counter(int(f[0]) for f in done)
    assert len(per_task) == 5000 and set(per_task.values()) == {1}  # each ran exactly once
    # Handlers ran in child processes (WORKER_ISOLATION=process): none in a worker itself.
    by_pid = Counter(f[2] for f in done)
    assert not set(by_pid) & {str(w.proc.pid) for w in workers}
    holders = dict(db.execute("SELECT worker, count(*) FROM tasks GROUP BY worker").fetchall())
    host = socket.gethostname()
    assert set(holders) == {f"{host}:{w.proc.pid}" for w in workers}  # all four took a share
    assert db.execute("SELECT max(attempts), count(lease_token) FROM tasks").fetchone() == (1, 0)


def test_sigkill_chaos_loses_nothing_and_leaves_nothing_processing(db, spawn, tmp_path) -> None:
    runs = tmp_path / "runs"
    env = {"WORKER_LEASE": "1s", "WORKER_CONCURRENCY": "4", "WORKER_BATCH_SIZE": "20"}
    workers = [spawn(name=f"w{i}", **env) for i in range(3)]
    for w in workers:
        w.wait_for("worker ready")
    add_tasks(db, 2000, "count", {"file": str(runs), "sleep": 0.05}, notify=True)
    rng = random.Random(1)
    kills = 0
    deadline = time.monotonic() + 90
    while statuses(db).get("completed", 0) < 2000:
        assert time.monotonic() < deadline, f"stuck: {statuses(db)}"
        time.sleep(rng.uniform(0.3, 0.8))
        i = rng.randrange(len(workers))
        # Kill only a worker that is up (it holds work then): handler processes make
        # start-up take a moment, and a kill before it would disturb nothing.
        if kills < 8 and '"worker ready"' in workers[i].log.read_text():
            workers[i].proc.kill()
            workers[i].proc.wait()
            kills += 1
            workers[i] = spawn(name=f"w{i}-{kills}", **env)
    assert kills >= 4  # the run really was disturbed
    assert statuses(db) == {"completed": 2000}  # none lost, failed or left processing
    runs_per_task = Counter(int(f[0]) for f in handler_runs(runs))
    assert len(runs_per_task) == 2000  # at least once each
    assert db.execute("SELECT count(*) FROM tasks WHERE lease_expiries > 0").fetchone()[0] > 0
    for w in workers:  # a SIGTERM before the worker is up would stop the import instead
        w.wait_for("worker ready")
    assert [w.stop() for w in workers] == [0, 0, 0]


def test_sigterm_lets_the_running_task_finish_and_claims_nothing_more(db, spawn, tmp_path) -> None:
    runs = tmp_path / "runs"
    w = spawn(WORKER_CONCURRENCY="1", WORKER_SHUTDOWN_TIMEOUT="20s")
    w.wait_for("worker ready")
    add_tasks(db, 2, "count", {"file": str(runs), "sleep": 1.5}, notify=True)
    wait_until(lambda: len(handler_runs(runs, "start")) == 1, 10, "the first task to start")
    w.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert w.proc.poll() is None, "the worker must wait for its running task"
    assert w.proc.wait(timeout=20) == 0
    rows = db.execute("SELECT status, attempts, lease_token FROM tasks ORDER BY id")
    # The running one finished; the other one, never started, is pending as it was (a
    # worker with long tasks claims only for free executors).
    assert rows.fetchall() == [("completed", 1, None), ("pending", 0, None)]
    assert len(handler_runs(runs)) == 1
    messages = [line["message"] for line in w.lines()]
    assert "worker stopped" in messages
    assert "stopping: running tasks get 20s to finish" in messages  # as written, not 20.0s


def test_sigterm_gives_back_a_task_still_running_at_the_shutdown_timeout(
    db, spawn, tmp_path
) -> None:
    w = spawn(WORKER_SHUTDOWN_TIMEOUT="500ms")
    w.wait_for("worker ready")
    runs = tmp_path / "runs"
    add_tasks(db, 1, "count", {"file": str(runs), "sleep": 60}, notify=True)
    wait_until(lambda: handler_runs(runs, "start"), 10, "the task to start")
    time.sleep(0.2)
    started = time.monotonic()
    assert w.stop(timeout=15) == 0
    assert time.monotonic() - started < 5
    row = db.execute("SELECT status, attempts, last_error, lease_token FROM tasks").fetchone()
    assert row[:2] == ("pending", 1) and row[3] is None
    assert "WORKER_SHUTDOWN_TIMEOUT 500ms ran out" in row[2]


def test_sigterm_on_the_last_attempt_fails_the_task_never_attempt_2(db, spawn, tmp_path) -> None:
    w = spawn(WORKER_SHUTDOWN_TIMEOUT="300ms")
    w.wait_for("worker ready")
    runs = tmp_path / "runs"
    add_tasks(db, 1, "count", {"file": str(runs), "sleep": 60}, max_attempts=1, notify=True)
    wait_until(lambda: handler_runs(runs, "start"), 10, "the task to start")
    time.sleep(0.2)
    assert w.stop(timeout=15) == 0
    row = db.execute("SELECT status, attempts, max_attempts, last_error FROM tasks").fetchone()
    assert row[:3] == ("failed", 1, 1)
    assert row[3].startswith("interrupted by shutdown: worker ")
    assert row[3].endswith("that was the last attempt (1 of 1)")
    again = spawn(name="again")  # a restarted worker finds nothing to run
    again.wait_for("worker ready")
    time.sleep(0.3)
    assert db.execute("SELECT status, attempts FROM tasks").fetchone() == ("failed", 1)
    assert again.stop() == 0
    messages = [line["message"] for line in w.lines()]
    assert "task failed: interrupted by shutdown on its last attempt" in messages


def test_handler_errors_are_retried_with_backoff_then_failed(db, spawn, tmp_path) -> None:
    runs = tmp_path / "runs"
    w = spawn(TASK_RETRY_BACKOFF="200ms", WORKER_POLL_INTERVAL="30s")
    w.wait_for("worker ready")
    add_tasks(db, 1, "flaky", {"file": str(runs)}, max_attempts=3, notify=True)
    add_tasks(db, 1, "flaky", {"file": str(runs), "succeed_on": 2}, max_attempts=3, notify=True)
    wait_until(
        lambda: statuses(db) == {"failed": 1, "completed": 1}, 15, "one failed, one completed"
    )
    rows = db.execute("SELECT status, attempts, last_error FROM tasks ORDER BY id").fetchall()
    assert rows[0] == ("failed", 3, "RuntimeError: flaky failure on attempt 3")
    assert rows[1] == ("completed", 2, "RuntimeError: flaky failure on attempt 1")
    times = sorted(float(f[3]) for f in handler_runs(runs) if f[0] == "1")
    assert len(times) == 3
    # Backoff: attempt 1 -> 0.1..0.2 s, attempt 2 -> 0.2..0.4 s (equal jitter), met on time
    # although the poll interval is 30 s (the worker wakes for the next due retry).
    assert 0.1 <= times[1] - times[0] < 1.5
    assert 0.2 <= times[2] - times[1] < 1.5
    assert w.proc.poll() is None  # the exceptions never took the worker down
    w.wait_for("task failed: attempts used up", timeout=5)  # the logging thread's, after the commit
    levels = Counter((line["message"], line["level"]) for line in w.lines() if "task_id" in line)
    assert levels[("task failed: attempts used up", "ERROR")] == 1
    assert w.stop() == 0


def test_expired_lease_is_reclaimed_and_the_stale_holder_is_fenced(db, spawn, tmp_path) -> None:
    runs = tmp_path / "runs"
    env = {"WORKER_LEASE": "1s", "WORKER_CONCURRENCY": "1"}
    a = spawn(name="a", **env)
    a.wait_for("worker ready")
    add_tasks(db, 1, "count", {"file": str(runs), "sleep": 0.5}, notify=True)
    wait_until(lambda: len(handler_runs(runs, "start")) == 1, 10, "worker a to start the task")
    a.proc.send_signal(signal.SIGSTOP)  # a hung holder: no heartbeat, no outcome
    try:
        b = spawn(name="b", **env)
        wait_until(lambda: statuses(db) == {"completed": 1}, 20, "worker b to finish it")
        row = db.execute("SELECT worker, attempts, lease_expiries FROM tasks").fetchone()
        assert row == (f"{socket.gethostname()}:{b.proc.pid}", 2, 1)
    finally:
        a.proc.send_signal(signal.SIGCONT)
    discarded = a.wait_for("outcome discarded", timeout=15)
    assert discarded["task_id"] == 1 and discarded["attempt"] == 1
    row = db.execute("SELECT status, worker FROM tasks").fetchone()
    assert row == ("completed", f"{socket.gethostname()}:{b.proc.pid}")  # b's result stands
    assert len(handler_runs(runs)) == 2
    assert a.stop() == 0 and b.stop() == 0


def test_postgresql_restart_mid_run_loses_nothing(plugin_path, tmp_path) -> None:
    server = TempPostgres().start()  # its own server: the restart breaks every connection
    try:
        url = create_database(server.url(), "restart")
        from flowforge import migrate

        migrate.upgrade(make_settings(url))
        runs = tmp_path / "runs"
        w = WorkerProc(url, tmp_path / "w.log", plugin_path, WORKER_CONCURRENCY="4")
        try:
            w.wait_for("worker ready")
            with psycopg.connect(url, autocommit=True) as conn:
                add_tasks(conn, 1000, "count", {"file": str(runs), "sleep": 0.005}, notify=True)
                wait_until(lambda: len(handler_runs(runs)) >= 100, 20, "work under way")
            server.restart_server()
            with psycopg.connect(url, autocommit=True) as conn:
                # created after the restart: the listener is back
                add_tasks(conn, 200, "noop", {}, notify=True)
                wait_until(lambda: statuses(conn) == {"completed": 1200}, 60, "all 1,200 completed")
            assert w.proc.poll() is None
            messages = [line["message"] for line in w.lines()]
            assert any(m.startswith("database connection lost") for m in messages)
            assert "database reachable again" in messages
            assert w.stop() == 0
        finally:
            if w.proc.poll() is None:
                w.proc.kill()
    finally:
        server.destroy()


def test_worker_lines_carry_the_creating_requests_id(client, spawn) -> None:
    w = spawn()
    w.wait_for("worker ready")
    reply = client.post("/v1/tasks", json={"title": "traced"}, headers={"X-Request-ID": "trace-42"})
    assert reply.status_code == 201
    task_id = reply.json()["data"]["id"]
    line = w.wait_for("task completed", timeout=10)
    assert (line["request_id"], line["task_id"], line["attempt"]) == ("trace-42", task_id, 1)
    assert (line["service"], line["level"]) == ("worker", "INFO")
    assert client.get(f"/v1/tasks/{task_id}").json()["data"]["status"] == "completed"
    assert w.stop() == 0


def test_systemd_readiness_watchdog_and_stopping(db, spawn, tmp_path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(20)
        w = spawn(NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
        seen: list[str] = []
        while not any(m.startswith("READY=1") for m in seen):
            seen.append(sock.recv(4096).decode())
        assert any(line.startswith("MAINPID=") for m in seen for line in m.split("\n"))
        pings = 0
        while pings < 3:  # 200 ms apart, from the main loop while idle
            pings += sock.recv(4096) == b"WATCHDOG=1"
        w.proc.send_signal(signal.SIGTERM)
        while not sock.recv(4096).startswith(b"STOPPING=1"):
            pass
        assert w.proc.wait(timeout=10) == 0


def test_tasks_created_with_the_conditional_notify_wake_an_idle_worker(db, spawn) -> None:
    # A 30 s poll: only the NOTIFY (sent because the idle worker holds the idle lock)
    # or the worker's re-check can explain a pickup within the timeout.
    w = spawn(WORKER_POLL_INTERVAL="30s", WORKER_CONCURRENCY="2")
    w.wait_for("worker ready")
    params = {
        "title": "t",
        "description": "",
        "type": "noop",
        "payload": "{}",
        "max_attempts": 3,
        "run_at": None,
        "request_id": "conditional",
        "queue": "default",
        "priority": 0,
        "timeout": 900,
    }
    for i in range(30):
        time.sleep(0.3 if i % 10 == 0 else random.uniform(0, 0.02))  # idle, then bursts
        db.execute(tasks_sql.INSERT_TASK, params)
    wait_until(lambda: statuses(db) == {"completed": 30}, 10, "30 completed without polling")
    assert w.stop() == 0


def test_long_tasks_are_shared_not_hoarded_by_the_first_worker(db, spawn, tmp_path) -> None:
    runs = tmp_path / "runs"
    a = spawn(name="a", WORKER_CONCURRENCY="2")
    b = spawn(name="b", WORKER_CONCURRENCY="2")
    a.wait_for("worker ready")
    b.wait_for("worker ready")
    add_tasks(db, 8, "count", {"file": str(runs), "sleep": 0.4}, notify=True)
    time.sleep(0.2)
    held = db.execute("SELECT worker, count(*) FROM tasks WHERE status = 'processing' GROUP BY 1")
    assert sorted(n for _, n in held.fetchall()) == [2, 2]  # each holds what it runs, no more
    wait_until(lambda: statuses(db) == {"completed": 8}, 15, "8 completed")
    assert len(handler_runs(runs)) == 8
    per_worker = dict(db.execute("SELECT worker, count(*) FROM tasks GROUP BY worker").fetchall())
    host = socket.gethostname()
    assert set(per_worker) == {f"{host}:{a.proc.pid}", f"{host}:{b.proc.pid}"}
    assert min(per_worker.values()) >= 2
    assert a.stop() == 0 and b.stop() == 0


def test_an_unmigrated_database_is_waited_for_not_crashed_on(admin_url, spawn) -> None:
    from flowforge import migrate

    url = create_database(admin_url, "flowforge_unmigrated")
    w = spawn(url=url, WORKER_POLL_INTERVAL="500ms")
    line = w.wait_for("database error")
    assert 'relation "tasks" does not exist' in line["message"]
    migrate.upgrade(make_settings(url))
    with psycopg.connect(url, autocommit=True) as conn:
        add_tasks(conn, 3, "noop", {}, notify=True)
        wait_until(lambda: statuses(conn) == {"completed": 3}, 20, "3 completed")
    w.wait_for("worker ready")
    assert w.stop() == 0


def test_a_nul_byte_in_an_error_message_is_recorded(db, spawn) -> None:
    w = spawn()
    w.wait_for("worker ready")
    add_tasks(db, 1, "nul", {}, max_attempts=1, notify=True)
    wait_until(lambda: statuses(db) == {"failed": 1}, 10, "the task to fail")
    (error,) = db.execute("SELECT last_error FROM tasks").fetchone()
    assert error == "ValueError: before\\0after"
    assert w.proc.poll() is None
    assert w.stop() == 0


def test_a_second_stop_signal_says_so_in_last_error(db, spawn, tmp_path) -> None:
    """SIGINT then SIGTERM (a terminal's Ctrl-C plus a supervisor's stop) cut the drain
    short; last_error says that, not that WORKER_SHUTDOWN_TIMEOUT ran out."""
    w = spawn(WORKER_SHUTDOWN_TIMEOUT="60s")
    w.wait_for("worker ready")
    runs = tmp_path / "runs"
    add_tasks(db, 1, "count", {"file": str(runs), "sleep": 60}, notify=True)
    wait_until(lambda: handler_runs(runs, "start"), 10, "the task to start")
    w.proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    w.proc.send_signal(signal.SIGTERM)
    assert w.proc.wait(timeout=15) == 0
    row = db.execute("SELECT status, last_error FROM tasks").fetchone()
    assert row[0] == "pending"
    assert "second stop signal" in row[1] and "WORKER_SHUTDOWN_TIMEOUT" not in row[1]
    messages = [line["message"] for line in w.lines()]
    assert "task still running when told to stop at once: given back" in messages
    assert not any("at the shutdown timeout" in m for m in messages)


def test_an_outcome_that_cannot_be_recorded_fails_only_its_own_attempt(database_url, db) -> None:
    """The dispatcher's write of a batch: an outcome the driver cannot send (a lone
    surrogate, which nothing from a handler carries any more) or the database refuses
    (JSON it cannot parse) fails its own attempt with the reason; the others are recorded,
    the claim riding along still claims, and the dispatcher goes on."""
    from flowforge.worker.dispatcher import Worker
    from flowforge.worker.queue import Outcome

    ids = add_tasks(db, 5, max_attempts=1)
    worker = Worker(make_settings(database_url, WORKER_ISOLATION="thread"), handlers={})
    try:
        ok, unsendable, refused = worker.queue.claim(3)
        worker.held.update({t.id: t for t in (ok, unsendable, refused)})
        worker.pending_outcomes = [
            Outcome(ok, result='{"n": 1}'),
            Outcome(unsendable, error="ValueError: \ud800"),
            Outcome(refused, result="{not json"),
        ]
        worker._write(2)
    finally:
        worker.queue.close()
    assert worker.pending_outcomes == [] and set(worker.held) == set(ids[3:])
    rows = dict(
        (r[0], r[1:]) for r in db.execute("SELECT id, status, last_error, result FROM tasks")
    )
    assert rows[ok.id] == ("completed", None, {"n": 1})
    status, error, result = rows[unsendable.id]
    assert (status, result) == ("failed", None)
    assert error.startswith(
        "the worker could not record this attempt's outcome (UnicodeEncodeError: 'utf-8' codec "
        "can't encode character '\\ud800'"
    )
    status, error, result = rows[refused.id]
    assert (status, result) == ("failed", None)
    assert error.startswith(
        "the worker could not record this attempt's outcome (DatabaseRefused: invalid input "
        "syntax for type json)"
    )
    assert [rows[i][0] for i in ids[3:]] == ["processing", "processing"]  # claimed
