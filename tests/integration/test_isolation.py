"""Worker isolation and the worker's side of queue control, with real `flowforge worker`
processes on a real PostgreSQL and handlers from a test plug-in (a module plus a
``*.dist-info`` with ``entry_points.txt`` on PYTHONPATH: the ``flowforge.handlers``
entry-point group finds it exactly as it finds an installed package).

Crashes, segfaults and hangs cost only their own task; timeouts free the slot at once;
priorities, queues, results, cancellation (cooperative, ignored, racing the completion,
learned from the heartbeat), a task deleted under a worker, the live-worker registry.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from flowforge.stores import queue_sql, tasks_sql

from ..support import (
    WorkerProc,
    add_task,
    add_tasks,
    final_row,
    handler_runs,
    statuses,
    task_row,
    wait_until,
    worker_spawner,
    write_plugin,
)

HANDLERS = '''
import ctypes, logging, os, time

def _record(task, outcome):
    line = f"{task.id} {task.attempt} {os.getpid()} {time.time():.6f} {outcome}\\n"
    fd = os.open(task.payload["file"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)

def record(task):
    """Records the run; sleeps payload.sleep seconds (ignoring cancellation)."""
    _record(task, "start")
    time.sleep(task.payload.get("sleep", 0))
    _record(task, "run")

def crash(task):
    time.sleep(task.payload.get("after", 0))
    os._exit(1)

def segfault(task):
    ctypes.string_at(0)

def hang(task):
    """Ignores task.cancelled and SIGTERM's polite meaning: sleeps for an hour."""
    time.sleep(3600)

def give(task):
    return task.payload["value"]

def unserialisable(task):
    return {1, 2, 3}

def cooperative(task):
    """Works in small steps until cancelled, then says so (records its start when
    payload.file names a file)."""
    if "file" in task.payload:
        _record(task, "start")
    while not task.cancelled.wait(0.05):
        pass
    raise RuntimeError("stopped: cancelled")

def fork_and_crash(task):
    """Forks a grandchild that outlives it, holding every descriptor the handler process
    had (payload.fork: "os" through Python, "libc" through C, so no at-fork hook runs),
    then dies."""
    pid = os.fork() if task.payload["fork"] == "os" else ctypes.CDLL(None).fork()
    if pid == 0:
        _record(task, "grandchild")
        time.sleep(task.payload.get("sleep", 30))
        os._exit(0)
    time.sleep(0.2)
    os._exit(1)

def surrogate(task):
    """Logs and raises text with lone surrogates (not encodable as UTF-8)."""
    logging.getLogger("ff_isolation_handlers").warning(
        "a line with \\ud800 in it", extra={"field": "x\\udfffy"}
    )
    raise ValueError("bad \\ud800 text")

def surrogate_result(task):
    return {"text": "\\udc80"}

def surrogate_print(task):
    """Prints text with a lone surrogate to stdout, then returns."""
    print("printed \\ud800 text", flush=True)
    return {"printed": True}

def not_finite(task):
    value = float(task.payload["value"])
    if task.payload.get("as") == "dataclass":  # orjson writes these as objects
        import dataclasses
        return dataclasses.make_dataclass("Ratio", ["ratio"])(value)
    return {"ratio": value}

def gil_hog(task):
    """Holds the GIL for its whole run (a loop in C: no thread of its process runs)."""
    sum(range(task.payload["n"]))
'''

ENTRY_POINTS = [
    "record",
    "crash",
    "segfault",
    "hang",
    "give",
    "unserialisable",
    "cooperative",
    "fork_and_crash",
    "surrogate",
    "surrogate_result",
    "surrogate_print",
    "not_finite",
    "gil_hog",
]


@pytest.fixture(scope="module")
def handler_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_plugin(
        tmp_path_factory.mktemp("isolation-plugin"), "ff_isolation_handlers", HANDLERS, ENTRY_POINTS
    )


@pytest.fixture
def spawn(
    database_url: str, handler_path: str, tmp_path: Path
) -> Iterator[Callable[..., WorkerProc]]:
    with worker_spawner(database_url, handler_path, tmp_path) as start:
        yield start


def _insert(db: psycopg.Connection, type_: str, payload: dict | None = None, **cols: object) -> int:
    """One task of ``type_`` (``support.add_task``), idle workers notified."""
    return add_task(db, type_, payload, title=f"t-{type_}", request_id=None, notify=True, **cols)


def _final(db: psycopg.Connection, task_id: int, timeout: float = 15) -> dict:
    return final_row(db, task_id, timeout)


def test_a_crashing_handler_fails_only_its_own_task(db, spawn, tmp_path) -> None:
    runs = tmp_path / "runs"
    w = spawn(WORKER_CONCURRENCY="6", TASK_RETRY_BACKOFF="100ms", WORKER_LEASE="3s")
    normal = [_insert(db, "record", {"file": str(runs), "sleep": 1.5}) for _ in range(5)]
    bad = _insert(db, "crash", {"after": 0.3}, max_attempts=2)
    crashed = _final(db, bad)
    assert (crashed["status"], crashed["attempts"]) == ("failed", 2)
    assert crashed["last_error"] == "worker child died: exit code 1"
    for task_id in normal:
        row = _final(db, task_id)
        assert (row["status"], row["attempts"], row["last_error"]) == ("completed", 1, None)
    assert len(handler_runs(runs)) == 5
    assert w.proc.poll() is None  # the worker itself never went down

    def died() -> list[dict]:  # written by the logging thread, after the outcome commits
        return [line for line in w.lines() if line["message"] == "worker child died: exit code 1"]

    wait_until(lambda: len(died()) >= 2, 5, "both 'worker child died' lines")
    assert [line["task_id"] for line in died()] == [bad, bad]
    _keeps_serving(db, w)
    assert w.stop() == 0


def test_a_segfault_leaves_a_traceback_and_fails_its_task(db, spawn) -> None:
    w = spawn(WORKER_CONCURRENCY="2", WORKER_LEASE="3s")
    bad = _insert(db, "segfault", max_attempts=1)
    row = _final(db, bad)
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert row["last_error"] == "worker child died: signal 11 (SIGSEGV)"
    # One record under the task, the traceback in it: where it crashed.
    line = w.wait_for("worker child died: signal 11 (SIGSEGV)", timeout=5)
    assert line["task_id"] == bad
    assert line["traceback"].startswith("Fatal Python error: Segmentation fault")
    assert 'ff_isolation_handlers.py", line' in line["traceback"]
    assert "in segfault" in line["traceback"]
    ok = _insert(db, "give", {"value": 1})
    assert _final(db, ok)["status"] == "completed"  # a new child took the slot
    _keeps_serving(db, w)
    assert w.stop() == 0


def test_a_hung_handler_times_out_and_frees_its_slot_at_once(db, spawn) -> None:
    w = spawn(
        WORKER_CONCURRENCY="1", WORKER_KILL_GRACE="10s", TASK_RETRY_BACKOFF="30s", WORKER_LEASE="3s"
    )
    hung = _insert(db, "hang", timeout=2, max_attempts=2)
    wait_until(lambda: task_row(db, hung)["status"] == "processing", 10, "the hang to start")
    time.sleep(0.5)
    noop = _insert(db, "noop")  # waits for the one slot
    wait_until(lambda: task_row(db, hung)["attempts"] == 1
               and task_row(db, hung)["status"] == "pending",
               5, "the hung attempt to time out")  # fmt: skip
    row = task_row(db, hung)
    assert row["last_error"] == "timed out after 2 s"
    took = (row["updated_at"] - row["started_at"]).total_seconds()
    assert 2 <= took < 3
    done = _final(db, noop)
    assert done["status"] == "completed"
    # The slot was free at once: the noop did not wait for the hung process to go.
    assert (done["completed_at"] - row["updated_at"]).total_seconds() < 1
    # Log lines are written by the worker's logging thread, after the outcome is committed.
    line = w.wait_for("task timed out after 2s", timeout=5)
    assert line["message"] == "task timed out after 2s: terminating its process"
    assert line["task_id"] == hung
    # SIGTERM left a traceback of where it hung: one record under the task, once the
    # process is gone (the dump never lands in the middle of another log line).
    where = w.wait_for("traceback of the terminated handler", timeout=5)
    assert (where["task_id"], where["attempt"], where["pid"]) == (hung, 1, line["pid"])
    assert "in hang" in where["traceback"]
    assert all("level" in ln for ln in w.lines()), w.log.read_text()  # JSON lines only
    _keeps_serving(db, w)
    assert w.stop() == 0


def test_attempts_can_never_exceed_max_attempts(db) -> None:
    task_id = _insert(db, "noop", max_attempts=2)
    db.execute("UPDATE tasks SET attempts = 2 WHERE id = %s", (task_id,))
    with pytest.raises(psycopg.errors.CheckViolation, match="tasks_attempts_check"):
        db.execute("UPDATE tasks SET attempts = 3 WHERE id = %s", (task_id,))
    with pytest.raises(psycopg.errors.CheckViolation, match="tasks_attempts_check"):
        db.execute("UPDATE tasks SET max_attempts = 1 WHERE id = %s", (task_id,))


def test_a_pending_task_whose_attempts_are_used_up_is_failed_not_run(db, spawn) -> None:
    # An edit lowered max_attempts to the attempts already made: it can never run again.
    task_id = _insert(db, "noop", max_attempts=3)
    db.execute("UPDATE tasks SET attempts = 2, max_attempts = 2 WHERE id = %s", (task_id,))
    w = spawn(WORKER_LEASE="1s")  # reaps every half lease
    row = _final(db, task_id)
    assert (row["status"], row["attempts"]) == ("failed", 2)
    assert row["last_error"].startswith("attempts used up (2 of max_attempts 2)")
    assert w.stop() == 0


def test_priority_order_with_a_busy_single_slot_worker(db, spawn, tmp_path) -> None:
    runs = tmp_path / "runs"
    w = spawn(WORKER_CONCURRENCY="1")
    blocker = _insert(db, "record", {"file": str(runs), "sleep": 1.0})
    wait_until(lambda: len(handler_runs(runs, "start")) == 1, 10, "the blocker to start")
    order = {}
    for priority in (0, 5, -3, 5, 10, 0):
        task_id = _insert(db, "record", {"file": str(runs)}, priority=priority)
        order[task_id] = priority
    wait_until(lambda: statuses(db) == {"completed": 7}, 20, "all 7 completed")
    ran = [int(f[0]) for f in handler_runs(runs)]
    assert ran[0] == blocker
    # Highest priority first; within one, in creation order (run_at, then id).
    assert ran[1:] == sorted(order, key=lambda i: (-order[i], i))
    assert w.stop() == 0


def test_workers_claim_only_from_their_queues(db, spawn) -> None:
    host = socket.gethostname()
    a = spawn("a", WORKER_QUEUES="alpha")
    b = spawn("b", WORKER_QUEUES="beta, gamma")
    ids = {q: [_insert(db, "noop", queue=q) for _ in range(3)] for q in
           ("alpha", "beta", "gamma", "default")}  # fmt: skip
    wait_until(lambda: statuses(db).get("completed") == 9, 15, "9 completed")
    time.sleep(0.3)
    by_queue = db.execute(
        "SELECT queue, array_agg(DISTINCT status), array_agg(DISTINCT coalesce(worker, '-')) "
        "FROM tasks GROUP BY queue ORDER BY queue"
    ).fetchall()
    assert by_queue == [
        ("alpha", ["completed"], [f"{host}:{a.proc.pid}"]),
        ("beta", ["completed"], [f"{host}:{b.proc.pid}"]),
        ("default", ["pending"], ["-"]),  # nobody serves it
        ("gamma", ["completed"], [f"{host}:{b.proc.pid}"]),
    ]
    assert len(ids["default"]) == 3
    assert a.stop() == 0 and b.stop() == 0


def test_the_claim_is_an_index_scan_in_priority_order(db) -> None:
    db.execute(
        "INSERT INTO tasks (title, queue, priority, run_at) SELECT 't', "
        "(ARRAY['a','b','c'])[1 + g % 3], g % 7 - 3, now() - g * interval '1 ms' "
        "FROM generate_series(1, 20000) g"
    )
    db.execute("ANALYZE tasks")

    def plan(sql: str, queues: list[str] | None) -> str:
        claim = sql.format(due=queue_sql._DUE_NAMED_QUEUES if queues else queue_sql._DUE_ANY_QUEUE)
        text = "EXPLAIN WITH " + claim + " SELECT * FROM claimed"
        params = {"worker": "x", "token": "00000000-0000-0000-0000-000000000000", "lease": 30,
                  "limit": 50, "queues": queues}  # fmt: skip
        return "\n".join(r[0] for r in db.execute(text, params).fetchall())

    every = plan(queue_sql.CLAIM_CTE, None)
    assert "Index Scan using tasks_priority_claim_idx" in every and "Sort" not in every
    named = plan(queue_sql.CLAIM_CTE, ["a", "c"])
    assert "Index Scan using tasks_queue_claim_idx" in named
    assert "Seq Scan on tasks" not in named
    # With some queue limited or paused, the others' claim is the same ordered scan.
    text = "EXPLAIN " + queue_sql.FINISH_AND_CLAIM_UNRESTRICTED
    params = {"worker": "x", "token": "00000000-0000-0000-0000-000000000000", "lease": 30,
              "limit": 50, "restricted": ["b"], "ids": [], "tokens": [], "errors": [],
              "delays": [], "results": [], "notes": [], "kinds": [], "tracebacks": [],
              "cpus": [], "rsss": [], "signals": [], "kept": 25}  # fmt: skip
    unrestricted = "\n".join(r[0] for r in db.execute(text, params).fetchall())
    assert "Index Scan using tasks_priority_claim_idx" in unrestricted
    # ... and, beside a restricted backlog, one loose scan for the queues, one per queue.
    text = "EXPLAIN " + queue_sql.FINISH_AND_CLAIM_SKIPPING
    skipping = "\n".join(r[0] for r in db.execute(text, params).fetchall())
    assert "tasks_queue_claim_idx" in skipping and "Seq Scan on tasks" not in skipping


def test_results_are_stored_and_bad_ones_fail_the_attempt(db, spawn) -> None:
    w = spawn()
    value = {"answer": 42, "items": [1, "two", None], "nested": {"ok": True}}
    ok = _insert(db, "give", {"value": value})
    nothing = _insert(db, "noop")
    big = _insert(db, "give", {"value": "x" * (64 * 1024)}, max_attempts=1)
    odd = _insert(db, "unserialisable", max_attempts=1)
    row = _final(db, ok)
    assert (row["status"], row["result"]) == ("completed", value)
    assert _final(db, nothing)["result"] is None
    row = _final(db, big)
    assert (row["status"], row["result"]) == ("failed", None)
    assert row["last_error"] == "result too large: 65538 bytes as JSON (limit 65536)"
    row = _final(db, odd)
    assert row["status"] == "failed"
    assert row["last_error"].startswith("result not JSON-serialisable: Type is not JSON")
    assert w.stop() == 0


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_cancel_a_running_task_through_the_api(client, spawn, isolation) -> None:
    w = spawn(WORKER_ISOLATION=isolation)
    # A task shows processing once claimed, before a handler process has it; on a loaded
    # machine a first child can take longer to start than the cancel below takes to come.
    # One task run first leaves a child (or thread) idle and ready, so the sleep starts
    # at once and the cancel reaches a running handler.
    warm = client.post("/v1/tasks", json={"title": "warm-up"}).json()["data"]
    wait_until(
        lambda: client.get(f"/v1/tasks/{warm['id']}").json()["data"]["status"] == "completed",
        15,
        "the warm-up task to complete",
    )
    task = client.post("/v1/tasks", json={"title": "long", "type": "sleep",
                                          "payload": {"seconds": 60}}).json()["data"]  # fmt: skip
    wait_until(
        lambda: client.get(f"/v1/tasks/{task['id']}").json()["data"]["status"] == "processing",
        10,
        "the task to start",
    )
    asked = time.monotonic()
    reply = client.post(f"/v1/tasks/{task['id']}/cancel")
    assert reply.status_code == 202
    wait_until(
        lambda: client.get(f"/v1/tasks/{task['id']}").json()["data"]["status"] == "cancelled",
        2,
        "the cancelled task to end",
    )
    assert time.monotonic() - asked < 2
    data = client.get(f"/v1/tasks/{task['id']}").json()["data"]
    assert data["last_error"] == (
        "cancelled by request: the handler stopped after task.cancelled was set"
    )
    line = w.wait_for("task cancelled")
    assert (line["task_id"], line["outcome"]) == (task["id"], "cancelled")
    assert w.stop() == 0


def test_a_handler_that_ignores_the_cancel_is_terminated_after_the_grace(db, spawn) -> None:
    w = spawn(WORKER_CANCEL_GRACE="1s")
    task_id = _insert(db, "hang")
    wait_until(lambda: task_row(db, task_id)["status"] == "processing", 10, "the hang to start")
    time.sleep(0.3)
    db.execute(tasks_sql.CANCEL_TASK, {"id": task_id})  # the API's statement
    row = _final(db, task_id, timeout=5)
    assert row["status"] == "cancelled" and row["attempts"] == 1
    assert row["last_error"] == (
        "cancelled by request: the handler ignored task.cancelled for 1s; its process was "
        "terminated"
    )
    ok = _insert(db, "give", {"value": "after"})
    assert _final(db, ok)["result"] == "after"
    assert w.stop() == 0


def test_a_cancel_missed_by_the_listener_is_seen_with_the_heartbeat(db, spawn, tmp_path) -> None:
    w = spawn(WORKER_LEASE="1s")  # heartbeat every third of a lease
    started = tmp_path / "started"
    task_id = _insert(db, "cooperative", {"file": str(started)})
    # processing is shown once claimed; the handler itself says when it runs
    wait_until(started.exists, 15, "the handler to start")
    db.execute("UPDATE tasks SET cancel_requested = true WHERE id = %s", (task_id,))  # no NOTIFY
    row = _final(db, task_id, timeout=3)
    assert row["status"] == "cancelled"
    assert row["last_error"] == (
        "cancelled by request: the handler raised after task.cancelled was set: "
        "RuntimeError: stopped: cancelled"
    )
    assert w.stop() == 0


def test_cancels_racing_completions_end_each_task_one_way(db, spawn, database_url) -> None:
    w = spawn(WORKER_CONCURRENCY="4")
    ids = [_insert(db, "sleep", {"seconds": 0.05 * (i % 5)}) for i in range(60)]

    def cancel_all() -> None:
        with psycopg.connect(database_url, autocommit=True) as conn:
            for task_id in ids:
                conn.execute(tasks_sql.CANCEL_TASK, {"id": task_id})
                time.sleep(0.01)

    thread = threading.Thread(target=cancel_all)
    thread.start()
    thread.join()
    wait_until(lambda: sum(statuses(db).get(s, 0) for s in ("completed", "cancelled")) == 60,
                20, "every task to end")  # fmt: skip
    rows = db.execute("SELECT status, cancel_requested, last_error FROM tasks").fetchall()
    for status, flagged, error in rows:
        # Flagged while it ran: cancelled (whatever the handler returned); never flagged:
        # it completed before the cancel arrived (the API answered 409).
        assert (status, flagged) in {("cancelled", True), ("completed", False)}
        if status == "cancelled":
            assert error.startswith("cancelled by request")
    assert {s for s, _, _ in rows} == {"completed", "cancelled"}  # the race really happened
    assert not [line for line in w.lines() if line["message"].startswith("outcome discarded")]
    assert w.stop() == 0


def test_a_task_deleted_while_it_runs_is_reported_as_deleted_not_lease_lost(db, spawn) -> None:
    w = spawn(WORKER_LEASE="1s")
    task_id = _insert(db, "sleep", {"seconds": 1})
    wait_until(lambda: task_row(db, task_id).get("status") == "processing", 10, "it to start")
    db.execute("DELETE FROM tasks WHERE id = %s", (task_id,))  # behind the API's back
    line = w.wait_for("task no longer held by this worker", timeout=5)
    assert line["message"] == (
        "task no longer held by this worker: the task was deleted while it ran; stopping its run"
    )
    messages = [entry["message"] for entry in w.lines()]
    assert not [m for m in messages if "lease lost" in m or "lease expired" in m]
    assert w.stop() == 0


def test_live_workers_are_registered_and_leave_when_stopped(db, spawn) -> None:
    w = spawn(WORKER_QUEUES="alpha,beta", WORKER_CONCURRENCY="3")
    me = f"{socket.gethostname()}:{w.proc.pid}"
    row = db.execute(
        "SELECT host, pid, queues, capacity, busy, isolation, version, expires_at > now() "
        "FROM workers WHERE id = %s",
        (me,),
    ).fetchone()
    from flowforge import __version__

    assert row == (socket.gethostname(), w.proc.pid, ["alpha", "beta"], 3, 0, "process",
                   __version__, True)  # fmt: skip
    assert w.stop() == 0
    assert db.execute("SELECT count(*) FROM workers WHERE id = %s", (me,)).fetchone() == (0,)


def test_handler_processes_are_replaced_after_max_tasks(db, spawn, tmp_path) -> None:
    runs = tmp_path / "runs"
    w = spawn(WORKER_CONCURRENCY="1", WORKER_MAX_TASKS_PER_CHILD="2")
    for _ in range(5):
        _insert(db, "record", {"file": str(runs)})
    wait_until(lambda: statuses(db) == {"completed": 5}, 15, "5 completed")
    pids = [f[2] for f in handler_runs(runs)]
    assert len(set(pids)) == 3 and pids[0] == pids[1] and pids[2] == pids[3] != pids[0]
    assert str(w.proc.pid) not in pids
    assert w.stop() == 0
    assert os.path.exists(runs)


def test_thread_isolation_asks_a_task_to_stop_at_its_timeout(db, spawn) -> None:
    w = spawn(WORKER_ISOLATION="thread")
    task_id = _insert(db, "cooperative", timeout=1, max_attempts=1)
    row = _final(db, task_id, timeout=5)
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert row["last_error"] == "timed out after 1 s (thread isolation: asked to stop)"
    took = (row["completed_at"] - row["started_at"]).total_seconds()
    assert 1 <= took < 2
    assert w.stop() == 0


# --- hostile handlers: the worker keeps its heartbeat and keeps claiming through each ---------


def _keeps_serving(db: psycopg.Connection, w: WorkerProc, seconds: float = 2.0) -> None:
    """For ``seconds``: the worker's registry row stays fresh (it heartbeats every third of
    WORKER_LEASE: every second at the tests' 3 s) and each new task is claimed and
    completed at once."""
    me = f"{socket.gethostname()}:{w.proc.pid}"
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        task_id = _insert(db, "noop")
        row = _final(db, task_id, timeout=2)
        assert row["status"] == "completed"
        (age,) = db.execute(
            "SELECT extract(epoch FROM now() - heartbeat_at)::float8 FROM workers WHERE id = %s",
            (me,),
        ).fetchone()
        assert age < 2.0, f"no heartbeat for {age:.1f} s"
        time.sleep(0.1)
    assert w.proc.poll() is None


def _gone(pid: int) -> bool:
    """Exited (a zombie counts: whoever adopted it may never reap it here)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.parametrize("fork", ["os", "libc"])
def test_a_handler_that_forks_a_grandchild_and_crashes_never_freezes_the_worker(
    db, spawn, tmp_path, fork
) -> None:
    # The bug: the reaper read the dead child's pipe to its end, and the grandchild held a
    # copy of its write end: no claim, outcome, heartbeat or log line for 30 s.
    runs = tmp_path / "runs"
    w = spawn(WORKER_CONCURRENCY="2", WORKER_LEASE="3s")
    payload = {"file": str(runs), "fork": fork, "sleep": 30}
    bad = _insert(db, "fork_and_crash", payload, max_attempts=1)
    row = _final(db, bad, timeout=5)
    assert (row["status"], row["last_error"]) == ("failed", "worker child died: exit code 1")
    _keeps_serving(db, w)
    (grandchild,) = [int(f[2]) for f in handler_runs(runs, "grandchild")]
    # Killed with the handler process's group once that process was gone.
    wait_until(lambda: _gone(grandchild), 5, "the grandchild to be killed")
    assert w.stop() == 0


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_lone_surrogates_from_a_handler_are_recorded_escaped(
    db, spawn, tmp_path, isolation
) -> None:
    # The bug: a message that cannot be encoded as UTF-8 killed the dispatcher in the
    # outcome's write; it stopped claiming, committing and heartbeating.
    runs = tmp_path / "runs"
    w = spawn(WORKER_ISOLATION=isolation, WORKER_CONCURRENCY="4", WORKER_LEASE="3s")
    neighbours = [_insert(db, "record", {"file": str(runs), "sleep": 0.5}) for _ in range(3)]
    raised = _insert(db, "surrogate", max_attempts=1)
    returned = _insert(db, "surrogate_result", max_attempts=1)
    row = _final(db, raised)
    assert (row["status"], row["last_error"]) == ("failed", "ValueError: bad \\ud800 text")
    row = _final(db, returned)
    assert (row["status"], row["result"]) == ("failed", None)
    assert (
        row["last_error"]
        == "result not JSON-serialisable: str is not valid UTF-8: surrogates not allowed"
    )
    for task_id in neighbours:
        assert _final(db, task_id)["status"] == "completed"
    _keeps_serving(db, w)
    # The handler's own line is written, escaped, not lost to a logging error.
    line = w.wait_for("a line with", timeout=5)
    assert (line["message"], line["field"], line["task_id"]) == (
        "a line with \\ud800 in it",
        "x\\udfffy",
        raised,
    )
    # The outcome line (the logging thread's, after the commit) has the same text.
    wait_until(
        lambda: any(
            ln.get("task_id") == raised and ln.get("outcome") == "failed" for ln in w.lines()
        ),
        5,
        "the outcome line",
    )
    (failed,) = [ln for ln in w.lines() if ln.get("task_id") == raised and ln.get("outcome")]
    assert failed["error"] == "ValueError: bad \\ud800 text"
    assert w.stop() == 0


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_a_handler_printing_a_lone_surrogate_completes(db, spawn, isolation) -> None:
    # The bug: stdout's strict UTF-8 raised UnicodeEncodeError in the handler's print(),
    # and a task that had done its work failed with that error.
    w = spawn(WORKER_ISOLATION=isolation, WORKER_CONCURRENCY="2", WORKER_LEASE="3s")
    task_id = _insert(db, "surrogate_print", max_attempts=1)
    row = _final(db, task_id)
    assert (row["status"], row["result"], row["last_error"]) == (
        "completed",
        {"printed": True},
        None,
    )
    # The line reaches the worker's output, escaped as stderr would write it.
    assert w.wait_for("printed \\ud800 text", timeout=5)
    _keeps_serving(db, w)
    assert w.stop() == 0


def test_a_segfault_fails_only_its_task_not_those_that_ran_before_it_in_its_process(
    db, spawn
) -> None:
    # The bug: outcomes waited in the child up to 5 ms to be sent together, and a crash lost
    # them: the healthy tasks before it failed "after this task ran but before it reported".
    w = spawn(WORKER_CONCURRENCY="1", WORKER_LEASE="3s")
    add_tasks(db, 200, "noop", notify=True)  # short: the worker hands them over 32 at a time
    wait_until(lambda: statuses(db) == {"completed": 200}, 20, "the warm-up to complete")
    with db.transaction():  # one claim sees them all, in id order
        before = add_tasks(db, 30, "noop", max_attempts=1)
        bad = _insert(db, "segfault", max_attempts=1)
        after = add_tasks(db, 30, "noop", max_attempts=1)
    row = _final(db, bad)
    assert (row["status"], row["last_error"]) == (
        "failed",
        "worker child died: signal 11 (SIGSEGV)",
    )
    wait_until(lambda: not {"pending", "processing"} & set(statuses(db)), 10, "the rest to end")
    rows = db.execute(
        "SELECT status, attempts, last_error FROM tasks WHERE id = ANY(%s)", (before + after,)
    ).fetchall()
    assert set(rows) == {("completed", 1, None)}
    assert statuses(db) == {"completed": 260, "failed": 1}
    _keeps_serving(db, w)
    assert w.stop() == 0


def test_a_handler_holding_the_gil_is_timed_out_while_its_process_is_sent_more(db, spawn) -> None:
    # The bug: the pool thread wrote to a child's pipe until the child took the whole
    # message; a handler holding the GIL kept the child's reader from reading, and the
    # pool, stuck in that write, enforced no timeout until the handler was done.
    w = spawn(WORKER_CONCURRENCY="1", WORKER_LEASE="3s")
    add_tasks(db, 200, "noop", notify=True)  # short: the worker hands them over 32 at a time
    wait_until(lambda: statuses(db) == {"completed": 200}, 20, "the warm-up to complete")
    hog = _insert(db, "gil_hog", {"n": 10**9}, timeout=1, max_attempts=1)
    wait_until(lambda: task_row(db, hog)["status"] == "processing", 10, "the hog to start")
    time.sleep(0.3)
    # 32 of these (about 256 KiB, four pipes' worth) go to the hog's process as it runs.
    add_tasks(db, 40, "noop", {"pad": "x" * 8000}, notify=True)
    row = _final(db, hog, timeout=5)
    assert (row["status"], row["last_error"]) == ("failed", "timed out after 1 s")
    wait_until(lambda: not {"pending", "processing"} & set(statuses(db)), 15, "the rest to end")
    assert statuses(db) == {"completed": 240, "failed": 1}
    _keeps_serving(db, w)
    assert w.stop() == 0


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_a_result_that_is_not_finite_fails_the_attempt(db, spawn, isolation) -> None:
    # The bug: NaN and Infinity were stored as null.
    w = spawn(WORKER_ISOLATION=isolation)
    kinds = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
    ids = {v: _insert(db, "not_finite", {"value": v}, max_attempts=1) for v in kinds}
    fine = _insert(db, "not_finite", {"value": "1.5"})
    in_dataclass = _insert(db, "not_finite", {"value": "nan", "as": "dataclass"}, max_attempts=1)
    for value, task_id in ids.items():
        row = _final(db, task_id)
        assert (row["status"], row["result"]) == ("failed", None), value
        assert row["last_error"] == (
            f"result not JSON-serialisable: {kinds[value]} is not allowed in JSON (at result.ratio)"
        )
    assert _final(db, fine)["result"] == {"ratio": 1.5}
    row = _final(db, in_dataclass)
    assert (row["status"], row["last_error"]) == (
        "failed",
        "result not JSON-serialisable: NaN is not allowed in JSON (at result.ratio)",
    )
    assert w.stop() == 0
