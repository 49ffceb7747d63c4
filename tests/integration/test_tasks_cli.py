"""`flowforge tasks ...` as an operator runs it: the real command, the service's
environment, a real PostgreSQL."""

from __future__ import annotations

import json
import subprocess

import psycopg
import pytest

from flowforge.stores import common_sql

from ..support import FLOWFORGE, service_env


def ff(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLOWFORGE, "tasks", *args],
        env=service_env(database_url),
        capture_output=True,
        text=True,
        timeout=60,
    )


def add(db: psycopg.Connection, title: str, **cols: object) -> int:
    names = ["title", *cols]
    sql = f"INSERT INTO tasks ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))})"
    return db.execute(sql + " RETURNING id", [title, *cols.values()]).fetchone()[0]


def test_list_filters_and_json(db, database_url: str) -> None:
    a = add(db, "mail one", queue="mail", type="sleep")
    b = add(db, "mail two", queue="mail", status="failed")
    add(db, "other")
    out = ff(database_url, "list", "--queue", "mail")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "STATUS", "QUEUE"]
    assert [int(line.split()[0]) for line in lines[1:-1]] == [b, a]
    assert lines[-1] == "(2 of 2)"
    data = json.loads(ff(database_url, "list", "--status", "failed", "--json").stdout)
    assert [t["id"] for t in data["tasks"]] == [b] and data["total"] == 1
    data = json.loads(ff(database_url, "list", "--type", "sleep", "--limit", "1", "--json").stdout)
    assert [t["id"] for t in data["tasks"]] == [a]
    assert ff(database_url, "list", "--queue", "nowhere").stdout.strip() == "no tasks match"


def test_show_cancel_retry(db, database_url: str) -> None:
    task_id = add(db, "run me", payload='{"n": 1}')
    shown = ff(database_url, "show", str(task_id))
    assert shown.returncode == 0 and "run me" in shown.stdout and '{"n": 1}' in shown.stdout
    data = json.loads(ff(database_url, "show", str(task_id), "--json").stdout)
    assert data["id"] == task_id and data["payload"] == {"n": 1} and data["queue"] == "default"
    cancelled = ff(database_url, "cancel", str(task_id))
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout
    again = ff(database_url, "cancel", str(task_id))
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1 and "cannot be cancelled" in again.stderr
    retried = json.loads(ff(database_url, "retry", str(task_id), "--json").stdout)
    assert (retried["status"], retried["attempts"]) == ("pending", 0)
    refused = ff(database_url, "retry", str(task_id))
    assert refused.returncode == 1 and "cannot be retried" in refused.stderr


def test_cancel_of_a_running_task_tells_its_worker(db, database_url: str) -> None:
    task_id = add(db, "running", status="processing")
    with psycopg.connect(database_url, autocommit=True) as worker:
        worker.execute(f"LISTEN {common_sql.CANCEL_CHANNEL}")
        out = ff(database_url, "cancel", str(task_id), "--json")
        notes = list(worker.notifies(timeout=5, stop_after=1))
    assert json.loads(out.stdout)["immediate"] is False
    assert [n.payload for n in notes] == [str(task_id)]


def test_stats_by_queue_and_status(db, database_url: str) -> None:
    add(db, "a", queue="mail")
    add(db, "b", queue="mail", status="failed")
    db.execute("INSERT INTO tasks (title, run_at) VALUES ('old', now() - interval '2 hours')")
    data = json.loads(ff(database_url, "stats", "--json").stdout)["queues"]
    assert data["mail"]["counts"] == {"pending": 1, "failed": 1}
    assert data["default"]["counts"] == {"pending": 1}
    assert 7100 < data["default"]["oldest_pending_seconds"] < 7300
    human = ff(database_url, "stats").stdout.splitlines()
    assert human[0].split()[:3] == ["QUEUE", "pending", "processing"]
    assert any(line.startswith("default") and line.endswith("2.0h") for line in human)


def test_attempts_readable_and_json(db, database_url: str) -> None:
    # Two entries as the worker writes them (test_attempts.py holds the worker to that).
    log = [
        {"attempt": 1, "worker": "h:1", "started_at": "2026-12-07T10:00:00+00:00",
         "finished_at": "2026-12-07T10:00:01.5+00:00", "outcome": "retried",
         "error": "KeyError: 'text'", "cpu_seconds": 0.25, "max_rss_bytes": 31457280,
         "traceback": 'Traceback (most recent call last):\n  File "/h.py", line 7, in f\n'
                      "KeyError: 'text'\n", "exit_signal": None},
        {"attempt": 2, "worker": "h:1", "started_at": "2026-12-07T10:00:02+00:00",
         "finished_at": "2026-12-07T10:00:03+00:00", "outcome": "crashed",
         "error": "worker child died: signal 9 (SIGKILL)", "cpu_seconds": None,
         "max_rss_bytes": None, "traceback": None, "exit_signal": 9},
    ]  # fmt: skip
    task_id = add(db, "tried", attempt_log=json.dumps(log))
    out = ff(database_url, "attempts", str(task_id))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == [
        "#1", "retried", "2026-12-07", "10:00:00", "h:1", "1.500s,", "cpu", "0.250s,", "peak",
        "rss", "30.0", "MiB",
    ]  # fmt: skip
    assert lines[1] == "    KeyError: 'text'"
    assert lines[3] == '    |   File "/h.py", line 7, in f'
    assert lines[5].split()[:2] == ["#2", "crashed"] and lines[5].endswith("signal 9")
    data = json.loads(ff(database_url, "attempts", str(task_id), "--json").stdout)
    assert [a["outcome"] for a in data["attempts"]] == ["retried", "crashed"]
    assert data["attempts"][0]["started_at"] == "2026-12-07T10:00:00Z"
    new = add(db, "new")
    assert ff(database_url, "attempts", str(new)).stdout == f"task {new} has no attempts yet\n"
    missing = ff(database_url, "attempts", "424242")
    assert missing.returncode == 1 and "task 424242 not found" in missing.stderr


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("show", "424242"), 1, "task 424242 not found"),
        (("cancel", "424242"), 1, "not found"),
        (("show", "abc"), 2, "expected a task id"),
        (("list", "--limit", "0"), 2, "from 1 to 1000"),
        (("list", "--status", "done"), 2, "invalid choice"),
        (("list", "--queue", "Mail"), 2, "--queue must be"),
        (("list", "--queue", "mail\n"), 2, "--queue must be"),  # $ matches before a final \n
    ],
)
def test_errors_are_one_line_and_non_zero(db, database_url: str, args, code, words) -> None:
    out = ff(database_url, *args)
    assert out.returncode == code and words in out.stderr
    assert out.stdout == ""


def test_an_unreachable_database_is_one_line(db) -> None:
    out = ff("postgresql://nobody:x@127.0.0.1:1/none", "stats")
    assert out.returncode == 1
    assert out.stderr.startswith("flowforge: error: cannot reach the database")
    assert out.stderr.count("\n") == 1
