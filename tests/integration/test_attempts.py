"""Every attempt kept (GET /v1/tasks/{id}/attempts) and the handler's control (Discard,
Snooze), with real `flowforge worker` processes on a real PostgreSQL and handlers from a
test plug-in: outcomes, errors, tracebacks with the handler's file and line, the child's
CPU time, peak memory and exit signal, the bound per task, a worker killed mid-task."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from flowforge.stores import common_sql

from ..support import (
    COUNTING_HANDLERS,
    WorkerProc,
    add_task,
    assert_error,
    final_row,
    handler_runs,
    task_row,
    wait_until,
    worker_spawner,
    write_plugin,
)

MODULE = "ff_attempt_handlers"

HANDLERS = (
    COUNTING_HANDLERS
    + '''
import signal
from flowforge.handlers import Discard, Snooze

def snoozer(task):
    """Snoozes on its first run, succeeds on the next."""
    _record(task, "start")
    if len(open(task.payload["file"]).readlines()) == 1:
        raise Snooze(task.payload["seconds"])

def discarder(task):
    _record(task, "start")
    raise Discard("bad input: no text")  # DISCARD-RAISE

def fail_hang_succeed(task):
    """Attempt 1 fails, attempt 2 hangs (its worker is killed), attempt 3 succeeds."""
    _record(task, "start")
    if task.attempt == 1:
        raise KeyError("text")  # KEYERROR-RAISE
    if task.attempt == 2:
        time.sleep(3600)

def hang(task):
    _record(task, "start")
    time.sleep(3600)

def suicide(task):
    _record(task, "start")
    os.kill(os.getpid(), signal.SIGKILL)

def burn(task):
    """Spends payload.cpu seconds of CPU time holding payload.mib MiB."""
    _record(task, "start")
    block = bytearray(task.payload["mib"] * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    started = time.process_time()
    while time.process_time() - started < task.payload["cpu"]:
        pass

def wordy(task):
    raise ValueError("x" * 40000)
'''
)
ENTRY_POINTS = [
    "flaky", "snoozer", "discarder", "fail_hang_succeed", "hang", "suicide", "burn", "wordy",
]  # fmt: skip
FIELDS = {
    "attempt", "worker", "started_at", "finished_at", "outcome", "error", "traceback",
    "cpu_seconds", "max_rss_bytes", "exit_signal",
}  # fmt: skip


def _line_of(marker: str) -> int:
    """The line of HANDLERS (as written to the module) that holds ``marker``."""
    return next(i for i, line in enumerate(HANDLERS.splitlines(), 1) if marker in line)


@pytest.fixture(scope="module")
def handler_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_plugin(tmp_path_factory.mktemp("attempts-plugin"), MODULE, HANDLERS, ENTRY_POINTS)


@pytest.fixture
def spawn(
    database_url: str, handler_path: str, tmp_path: Path
) -> Iterator[Callable[..., WorkerProc]]:
    defaults = {"TASK_RETRY_BACKOFF": "100ms", "WORKER_LEASE": "3s"}
    with worker_spawner(database_url, handler_path, tmp_path, **defaults) as start:
        yield start


def _insert(db: psycopg.Connection, type_: str, payload: dict | None = None, **cols: object) -> int:
    return add_task(db, type_, payload, title=f"t-{type_}", request_id=None, notify=True, **cols)


def _final(db: psycopg.Connection, task_id: int, timeout: float = 30) -> dict:
    return final_row(db, task_id, timeout)


def _attempts(client, task_id: int) -> list[dict]:
    response = client.get(f"/v1/tasks/{task_id}/attempts")
    assert response.status_code == 200, response.text
    attempts = response.json()["data"]
    for a in attempts:
        assert set(a) == FIELDS
    return attempts


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _where(handler_path: str, marker: str, function: str) -> str:
    """How a traceback names the line of HANDLERS that holds ``marker``."""
    path = os.path.join(handler_path, f"{MODULE}.py")
    return f'File "{path}", line {_line_of(marker)}, in {function}'


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_retries_then_a_success_keep_every_attempt_with_its_traceback(
    db, client, read_client, spawn, handler_path, tmp_path, isolation
) -> None:
    w = spawn(WORKER_ISOLATION=isolation)
    runs = tmp_path / "runs"
    task_id = _insert(db, "flaky", {"file": str(runs), "succeed_on": 3}, max_attempts=5)
    row = _final(db, task_id)
    assert (row["status"], row["attempts"]) == ("completed", 3)
    assert row["last_error"] == "RuntimeError: flaky failure on attempt 2"  # as before
    attempts = _attempts(read_client, task_id)  # a read token may
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [
        (1, "retried"), (2, "retried"), (3, "completed"),
    ]  # fmt: skip
    where = _where(handler_path, 'raise RuntimeError(f"flaky failure', "flaky")
    for n, a in enumerate(attempts[:2], 1):
        assert a["error"] == f"RuntimeError: flaky failure on attempt {n}"
        assert a["traceback"].startswith("Traceback (most recent call last):")
        assert where in a["traceback"]
        assert a["traceback"].rstrip().endswith(a["error"])
    done = attempts[2]
    assert done["error"] is None and done["traceback"] is None
    for a in attempts:
        assert a["worker"] == row["worker"]
        assert _time(a["started_at"]) <= _time(a["finished_at"])
        assert a["exit_signal"] is None
        if isolation == "process":
            assert a["cpu_seconds"] >= 0 and a["max_rss_bytes"] > 2**20
        else:
            assert a["cpu_seconds"] is None and a["max_rss_bytes"] is None
    assert _time(attempts[0]["finished_at"]) <= _time(attempts[1]["started_at"])
    # The log: the traceback in one record under the task, not a record per line.
    wait_until(lambda: any(line.get("traceback") for line in w.lines()), 10, "the retry's log line")
    logged = [line for line in w.lines() if line.get("traceback")]
    assert [line["task_id"] for line in logged] == [task_id, task_id]
    assert [line["outcome"] for line in logged] == ["retried", "retried"]
    assert logged[0]["traceback"] == attempts[0]["traceback"]
    assert not any(where in line.get("message", "") for line in w.lines())


def test_an_unknown_task_has_no_attempts_and_a_new_one_none_yet(db, client) -> None:
    assert_error(client.get("/v1/tasks/999999/attempts"), 404, "not_found")
    task_id = _insert(db, "flaky", {"succeed_on": 1})  # no worker runs here
    assert _attempts(client, task_id) == []


def test_a_snooze_moves_run_at_and_does_not_count_the_attempt(db, client, spawn, tmp_path) -> None:
    spawn()
    runs = tmp_path / "runs"
    # One attempt allowed: a snooze that counted would leave none for the run after it.
    task_id = _insert(db, "snoozer", {"file": str(runs), "seconds": 3600}, max_attempts=1)
    wait_until(lambda: _attempts(client, task_id), 30, "the snoozed attempt")
    row = task_row(db, task_id)
    (snoozed,) = _attempts(client, task_id)
    assert (row["status"], row["attempts"], row["last_error"]) == ("pending", 0, None)
    assert (snoozed["attempt"], snoozed["outcome"], snoozed["error"]) == (1, "snoozed", None)
    assert snoozed["traceback"] is None
    # run_at moved by the snooze's seconds, from the moment its outcome was written.
    finished = db.execute(
        "SELECT (attempt_log->0->>'finished_at')::timestamptz FROM tasks WHERE id = %s",
        (task_id,),
    ).fetchone()[0]
    assert row["run_at"] - finished == timedelta(seconds=3600)
    db.execute("UPDATE tasks SET run_at = now() WHERE id = %s", (task_id,))
    db.execute(common_sql.NOTIFY)
    row = _final(db, task_id)
    assert (row["status"], row["attempts"]) == ("completed", 1)
    assert [(a["attempt"], a["outcome"]) for a in _attempts(client, task_id)] == [
        (1, "snoozed"), (1, "completed"),
    ]  # fmt: skip
    assert len(handler_runs(runs, "start")) == 2


def test_a_discard_fails_the_task_at_once_with_attempts_left(
    db, client, spawn, handler_path, tmp_path
) -> None:
    spawn()
    runs = tmp_path / "runs"
    task_id = _insert(db, "discarder", {"file": str(runs)}, max_attempts=5)
    row = _final(db, task_id)
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert row["last_error"] == "Discard: bad input: no text"
    (discarded,) = _attempts(client, task_id)
    assert (discarded["outcome"], discarded["error"]) == ("discarded", row["last_error"])
    assert _where(handler_path, "DISCARD-RAISE", "discarder") in discarded["traceback"]
    assert len(handler_runs(runs, "start")) == 1


def test_attempts_and_tracebacks_survive_a_worker_sigkill(
    db, client, spawn, handler_path, tmp_path
) -> None:
    runs = tmp_path / "runs"
    first = spawn("first", WORKER_LEASE="2s")
    task_id = _insert(db, "fail_hang_succeed", {"file": str(runs)}, max_attempts=5)
    wait_until(lambda: len(handler_runs(runs, "start")) == 2, 30, "attempt 2 to start")
    killed_worker = task_row(db, task_id)["worker"]
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    spawn("second", WORKER_LEASE="2s")  # its reaper takes the expired lease back
    row = _final(db, task_id, timeout=60)
    assert (row["status"], row["attempts"]) == ("completed", 3)
    attempts = _attempts(client, task_id)
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [
        (1, "retried"), (2, "lease_lost"), (3, "completed"),
    ]  # fmt: skip
    assert attempts[0]["error"] == "KeyError: 'text'"
    assert _where(handler_path, "KEYERROR-RAISE", "fail_hang_succeed") in attempts[0]["traceback"]
    lost = attempts[1]
    assert lost["worker"] == killed_worker and killed_worker in lost["error"]
    assert "lease expired" in lost["error"] and lost["traceback"] is None
    assert attempts[2]["worker"] == row["worker"] != killed_worker


def test_task_attempts_kept_drops_the_oldest(db, client, spawn, tmp_path) -> None:
    spawn(TASK_ATTEMPTS_KEPT="2")
    runs = tmp_path / "runs"
    task_id = _insert(db, "flaky", {"file": str(runs), "succeed_on": 4}, max_attempts=4)
    assert _final(db, task_id)["status"] == "completed"
    attempts = _attempts(client, task_id)
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(3, "retried"), (4, "completed")]
    assert attempts[0]["error"] == "RuntimeError: flaky failure on attempt 3"


def test_a_crash_and_a_timeout_say_so_with_the_signal(db, client, spawn, tmp_path) -> None:
    spawn(WORKER_CONCURRENCY="2", WORKER_KILL_GRACE="1s")
    runs = tmp_path / "runs"
    crashed = _insert(db, "suicide", {"file": str(runs)}, max_attempts=1)
    timed_out = _insert(db, "hang", {"file": str(runs)}, max_attempts=1, timeout=1)
    assert _final(db, crashed)["status"] == "failed"
    assert _final(db, timed_out)["status"] == "failed"
    (death,) = _attempts(client, crashed)
    assert (death["outcome"], death["exit_signal"]) == ("crashed", signal.SIGKILL)
    assert death["error"] == "worker child died: signal 9 (SIGKILL)"
    (late,) = _attempts(client, timed_out)
    assert (late["outcome"], late["exit_signal"]) == ("timed_out", signal.SIGTERM)
    assert late["error"] == "timed out after 1 s"
    assert late["cpu_seconds"] >= 0 and late["max_rss_bytes"] > 2**20


def test_cpu_seconds_and_peak_memory_are_the_childs(db, client, spawn, tmp_path) -> None:
    spawn(WORKER_MAX_TASKS_PER_CHILD="1")  # a fresh child: its peak is this task's
    runs = tmp_path / "runs"
    task_id = _insert(db, "burn", {"file": str(runs), "cpu": 0.3, "mib": 64})
    assert _final(db, task_id)["status"] == "completed"
    (a,) = _attempts(client, task_id)
    assert a["cpu_seconds"] >= 0.3
    assert a["max_rss_bytes"] >= 64 * 2**20


def test_a_traceback_is_kept_to_16_kib_with_a_marker(db, client, spawn) -> None:
    spawn()
    task_id = _insert(db, "wordy", max_attempts=1)
    assert _final(db, task_id)["status"] == "failed"
    (a,) = _attempts(client, task_id)
    text = a["traceback"]
    assert len(text.encode()) <= 16 * 1024
    assert text.startswith("Traceback (most recent call last):")
    assert "bytes of the traceback cut ...]" in text
    assert text.rstrip().endswith("x" * 100)  # the end (the exception) is kept


def test_the_attempt_that_ends_a_task_survives_a_retry_and_a_requeue(
    db, client, spawn, tmp_path
) -> None:
    spawn()
    task_id = _insert(db, "discarder", {"file": str(tmp_path / "runs")})
    assert _final(db, task_id)["status"] == "failed"
    # The ending attempt is in the row's columns, not appended to the log (the cheap path
    # a first-attempt end takes: stores/attempts_sql.py).
    log, outcome = db.execute(
        "SELECT attempt_log, last_attempt_outcome FROM tasks WHERE id = %s", (task_id,)
    ).fetchone()
    assert (log, outcome) == ([], "discarded")
    (first,) = _attempts(client, task_id)
    assert first["error"] == "Discard: bad input: no text"
    assert "DISCARD-RAISE" in first["traceback"]
    # A retry folds it into the log before the task starts over...
    assert client.post(f"/v1/tasks/{task_id}/retry").status_code == 200
    assert _final(db, task_id)["status"] == "failed"
    # ...and so does a PUT that re-queues it (failed -> pending).
    response = client.put(f"/v1/tasks/{task_id}", json={"status": "pending"})
    assert response.status_code == 200, response.text
    assert _final(db, task_id)["status"] == "failed"
    attempts = _attempts(client, task_id)
    assert [(a["attempt"], a["outcome"]) for a in attempts] == [(1, "discarded")] * 3
    assert attempts[0] == first
    assert all("DISCARD-RAISE" in a["traceback"] for a in attempts)
    assert len({a["started_at"] for a in attempts}) == 3
