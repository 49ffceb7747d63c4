"""The operator scripts, run as files (as operators run them) against the real PostgreSQL
and the real API of the harness, failure paths included: every failure must be one line on
stderr and a documented exit code, never a traceback."""

from __future__ import annotations

import functools
import http.server
import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
import requests

from flowforge.devdb import free_port

from ..support import (
    SCRIPTS,
    assert_one_line_error,
    closed_port_db,
    create_database,
    make_settings,
    script,
    serve,
)
from ..support import service_env as _service_env


def on_a_terminal(name: str, *args: str, env: dict[str, str], answer: str = "") -> tuple[int, str]:
    """Run a script with stdin, stdout and stderr on a pseudo-terminal; type ``answer``."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPTS / name), *args],
        env={**env, "TERM": "xterm", "COLUMNS": "100"},
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    if answer:
        os.write(master, answer.encode())
    output = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            output += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=30), output.decode(errors="replace")


@pytest.fixture
def env(database_url: str, db: psycopg.Connection) -> dict[str, str]:
    """The services' environment, on an emptied database."""
    return _service_env(database_url)


def statuses(db: psycopg.Connection) -> dict[str, int]:
    return dict(db.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall())


# --- seed-database.py ----------------------------------------------------------------------


def test_seed_makes_consistent_rows_of_every_status(
    env: dict[str, str], db: psycopg.Connection
) -> None:
    proc = script(
        "seed-database.py", "--count", "2000", "--seed", "7", "--period", "2d", "--quiet", env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == proc.stderr == ""
    counts = statuses(db)
    assert sum(counts.values()) == 2000
    assert set(counts) == {"pending", "processing", "completed", "failed"}
    assert counts["completed"] > counts["pending"] > counts["failed"] > 0
    assert counts["processing"] > 0

    def bad(where: str) -> int:
        return db.execute(f"SELECT count(*) FROM tasks WHERE {where}").fetchone()[0]

    # What the worker would have written, status by status.
    assert not bad(
        "status IN ('completed', 'failed') AND (started_at IS NULL OR completed_at IS NULL "
        "OR completed_at < started_at OR started_at < created_at OR attempts < 1 "
        "OR worker IS NULL OR lease_token IS NOT NULL OR updated_at <> completed_at)"
    )
    assert not bad("status = 'failed' AND (last_error IS NULL OR attempts <> max_attempts)")
    assert not bad(
        "status = 'processing' AND (worker IS NULL OR lease_token IS NULL OR started_at IS NULL "
        "OR lease_expires_at > now() OR lease_expires_at < now() - interval '2 minutes' "
        "OR attempts < 1 OR completed_at IS NOT NULL)"
    )
    assert not bad(
        "status = 'pending' AND (worker IS NOT NULL OR lease_expires_at IS NOT NULL "
        "OR started_at IS NOT NULL OR run_at <= now())"
    )
    assert not bad("attempts > max_attempts OR request_id IS NULL OR title = ''")
    assert not bad("type NOT IN ('noop', 'sleep') OR NOT payload ? 'seeded'")
    assert not bad("created_at > now() OR created_at < now() - interval '2 days 1 minute'")
    # Ids grow with created_at, as they do when the API creates tasks.
    assert not bad(
        "id IN (SELECT id FROM (SELECT id, created_at, lag(created_at) OVER (ORDER BY id) AS p "
        "FROM tasks) s WHERE created_at < p)"
    )
    assert db.execute("SELECT count(DISTINCT title) FROM tasks").fetchone()[0] > 1500


def test_seed_is_reproducible_with_a_seed(env: dict[str, str], db: psycopg.Connection) -> None:
    def seeded(seed: str) -> list[tuple]:
        db.execute("TRUNCATE tasks RESTART IDENTITY")
        assert script("seed-database.py", "-c", "300", "--seed", seed, env=env).returncode == 0
        return db.execute(
            "SELECT id, title, description, status, type, payload, attempts, last_error, "
            "worker, request_id FROM tasks ORDER BY id"
        ).fetchall()

    first = seeded("42")
    assert seeded("42") == first
    assert seeded("43") != first


def test_seed_batches_and_reports_one_line_off_a_terminal(
    env: dict[str, str], db: psycopg.Connection
) -> None:
    proc = script("seed-database.py", "--count", "25", "--batch-size", "10", env=env)
    assert proc.returncode == 0
    assert proc.stderr == ""  # no progress bar into a pipe
    assert proc.stdout.startswith("seeded 25 tasks into 127.0.0.1:")
    assert proc.stdout.count("\n") == 1
    assert sum(statuses(db).values()) == 25


def test_seed_draws_a_progress_bar_on_a_terminal(
    env: dict[str, str], db: psycopg.Connection
) -> None:
    code, output = on_a_terminal("seed-database.py", "--count", "3000", env=env)
    assert code == 0, output
    assert "seeding" in output  # rich's bar, on stderr
    assert "seeded 3000 tasks" in output
    code, output = on_a_terminal("seed-database.py", "--count", "10", "--quiet", env=env)
    assert (code, output) == (0, "")


def test_seeded_tasks_are_served_by_the_api(
    env: dict[str, str], db: psycopg.Connection, api_url: str, auth_headers: dict[str, str]
) -> None:
    assert script("seed-database.py", "--count", "150", "--seed", "3", env=env).returncode == 0
    api = requests.Session()
    api.headers.update(auth_headers)
    for status, n in statuses(db).items():
        body = api.get(f"{api_url}/v1/tasks?status={status}&limit=100", timeout=10).json()
        assert body["meta"]["total"] == n
        for task in body["data"]:
            assert task["status"] == status
            assert task["request_id"]
    task = api.get(f"{api_url}/v1/tasks?limit=1", timeout=10).json()["data"][0]
    assert api.get(f"{api_url}/v1/tasks/{task['id']}", timeout=10).json()["data"] == task


def test_seed_interrupted_keeps_whole_batches_only(
    env: dict[str, str], db: psycopg.Connection
) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "seed-database.py"), "-c", "1000000", "--batch-size",
         "1000"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not db.execute("SELECT count(*) FROM tasks").fetchone()[0]:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert (out, err) == ("", "seed-database.py: interrupted (SIGINT)\n")
    seeded = db.execute("SELECT count(*) FROM tasks").fetchone()[0]
    assert 0 < seeded < 1_000_000
    assert seeded % 1000 == 0  # the batch being copied was rolled back whole


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--count", "0"), ("--count", "at least 1")),
        (("--count", "many"), ("--count", "whole number")),
        (("--period", "3x"), ("--period", "duration")),
        (("--batch-size", "-5"), ("--batch-size",)),
        (("--colour",), ("unrecognized arguments",)),
    ],
)
def test_seed_refuses_bad_options(env: dict[str, str], args: tuple[str, ...], words) -> None:
    assert_one_line_error(script("seed-database.py", *args, env=env), 2, *words)


def test_seed_into_an_unmigrated_database_says_migrate(admin_url: str) -> None:
    url = create_database(admin_url, "flowforge_scripts_empty")
    proc = script("seed-database.py", "--count", "5", env=_service_env(url))
    assert_one_line_error(proc, 1, "no tasks table", "flowforge migrate")


# --- healthcheck.py ------------------------------------------------------------------------


def test_healthcheck_healthy_api_database_and_queue(env: dict[str, str], api_url: str) -> None:
    proc = script("healthcheck.py", "--api-url", api_url, "--database", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"ok    api       {api_url}/health answered 200")
    assert lines[1].startswith("ok    database  127.0.0.1:")
    assert lines[2].startswith("ok    queue     0 due pending")
    assert lines[-1] == "healthy"
    assert proc.stderr == ""


def test_healthcheck_reads_api_url_from_the_environment(env: dict[str, str], api_url: str) -> None:
    proc = script("healthcheck.py", "--json", env={**env, "API_URL": api_url})
    assert proc.returncode == 0
    doc = json.loads(proc.stdout)
    assert doc["healthy"] is True
    assert [c["name"] for c in doc["checks"]] == ["api"]
    assert doc["checks"][0]["details"]["status"] == 200


def test_healthcheck_quiet_says_nothing_when_healthy(env: dict[str, str], api_url: str) -> None:
    proc = script("healthcheck.py", "-q", "--api-url", api_url, env=env)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_healthcheck_api_down(env: dict[str, str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    proc = script("healthcheck.py", "--quiet", "--api-url", url, env=env)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stdout.splitlines() == [
        f"FAIL  api       {url}/health: connection refused (is flowforge-api running?)",
        "UNHEALTHY",
    ]


def test_healthcheck_api_that_does_not_answer_times_out(env: dict[str, str]) -> None:
    # A socket that accepts connections (the kernel's backlog) but never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        proc = script("healthcheck.py", "--json", "--timeout", "300ms", "--api-url", url, env=env)
        assert time.monotonic() - started < 10
    assert proc.returncode == 1
    check = json.loads(proc.stdout)["checks"][0]
    assert check["ok"] is False
    assert check["message"] == f"{url}/health: no answer within 0.3s"


@pytest.fixture
def api_without_database() -> Iterator[str]:
    """The real app whose database is down: its /health answers 503."""
    from flowforge.api import create_app

    app = create_app(make_settings(closed_port_db(), DATABASE_CONNECT_TIMEOUT="1s"))
    with serve(app) as url:
        yield url


def test_healthcheck_api_up_but_its_database_down(
    env: dict[str, str], api_without_database: str
) -> None:
    proc = script("healthcheck.py", "--api-url", api_without_database, env=env)
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[0].endswith("answered 503: the database is unreachable")


@pytest.fixture
def not_flowforge(tmp_path) -> Iterator[str]:
    """Some other web server (stdlib's file server): /health is an HTML 404."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_healthcheck_something_else_at_the_api_url(env: dict[str, str], not_flowforge: str) -> None:
    proc = script("healthcheck.py", "--api-url", not_flowforge, env=env)
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[0] == (
        f"FAIL  api       {not_flowforge}/health answered 404 without JSON"
    )


def test_healthcheck_database_down(env: dict[str, str]) -> None:
    down = {**env, "DATABASE_URL": closed_port_db()}
    proc = script("healthcheck.py", "--database", "--no-api", env=down)
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[0].startswith(
        "FAIL  database  cannot reach the database at 127.0.0.1:"
    )
    assert "secret" not in proc.stdout
    proc = script("healthcheck.py", "--database", "--no-api", "--json", env=down)
    doc = json.loads(proc.stdout)
    assert (proc.returncode, doc["healthy"], len(doc["checks"])) == (1, False, 1)


def test_healthcheck_database_that_does_not_answer_times_out(env: dict[str, str]) -> None:
    with socket.socket() as silent:  # accepts (the kernel's backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"postgresql://u:p@127.0.0.1:{silent.getsockname()[1]}/flowforge"
        started = time.monotonic()
        proc = script(
            "healthcheck.py", "--database", "--no-api", "--timeout", "1s",
            env={**env, "DATABASE_URL": url},
        )  # fmt: skip
        # libpq waits once for the SSL answer and once more without SSL.
        assert time.monotonic() - started < 10
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[0].endswith(
        f"127.0.0.1:{url.split(':')[3]}: connection timeout expired"
    )


def test_healthcheck_queue_thresholds(
    env: dict[str, str], db: psycopg.Connection, api_url: str
) -> None:
    db.execute(
        "INSERT INTO tasks (title, run_at) VALUES ('late', now() - interval '10 minutes'), "
        "('scheduled', now() + interval '1 day')"
    )
    db.execute(
        "INSERT INTO tasks (title, status, worker, attempts, started_at, lease_expires_at) "
        "VALUES ('stuck', 'processing', 'gone:1', 1, now() - interval '10 minutes', "
        "now() - interval '5 minutes'), ('running', 'processing', 'up:2', 1, now(), "
        "now() + interval '30 seconds')"
    )
    base = ("--database", "--no-api", "--json")
    doc = json.loads(script("healthcheck.py", *base, env=env).stdout)
    queue = doc["checks"][1]
    assert doc["healthy"] is False
    assert queue["details"]["due_pending"] == 1
    assert 590 < queue["details"]["oldest_pending_seconds"] < 700
    assert (queue["details"]["processing"], queue["details"]["stuck"]) == (2, 1)
    assert "oldest due pending task has waited 10m" in queue["message"]
    assert "1 processing tasks past their lease" in queue["message"]

    relaxed = ("--max-pending-age", "1h", "--max-stuck", "1")
    db.execute("DELETE FROM workers")
    db.execute(  # a live worker for every queue (else the workers check fails)
        "INSERT INTO workers (id, host, pid, version, queues, capacity, isolation, expires_at) "
        "VALUES ('w:1', 'w', 1, '0', '{*}', 8, 'process', now() + interval '1 minute')"
    )
    proc = script("healthcheck.py", *base, *relaxed, env=env)
    assert proc.returncode == 0, proc.stdout
    # The lease expired 5 minutes ago: within a 10 minute grace it is not stuck yet.
    proc = script(
        "healthcheck.py", *base, "--max-pending-age", "1h", "--stuck-grace", "10m", env=env
    )
    assert proc.returncode == 0, proc.stdout


def test_healthcheck_fails_when_no_live_worker_serves_a_queue_with_due_tasks(
    env: dict[str, str], db: psycopg.Connection
) -> None:
    db.execute("DELETE FROM workers")
    db.execute("INSERT INTO tasks (title, queue) VALUES ('a', 'alpha'), ('b', 'beta')")
    db.execute("INSERT INTO tasks (title, queue, run_at) VALUES ('c', 'gamma', now() + '1h')")
    args = ("healthcheck.py", "--database", "--no-api", "--json")
    proc = script(*args, env=env)
    assert proc.returncode == 1
    workers = json.loads(proc.stdout)["checks"][2]
    assert workers["name"] == "workers" and workers["ok"] is False
    assert workers["message"] == (
        "no live worker serves queue(s) with due pending tasks: alpha (1 due), beta (1 due)"
    )
    # A live worker on alpha; a dead one (its row expired) on beta.
    db.execute(
        "INSERT INTO workers (id, host, pid, version, queues, capacity, isolation, expires_at) "
        "VALUES ('h:1', 'h', 1, '0', '{alpha}', 4, 'process', now() + interval '30 seconds'), "
        "('h:2', 'h', 2, '0', '{beta}', 4, 'process', now() - interval '1 second')"
    )
    workers = json.loads(script(*args, env=env).stdout)["checks"][2]
    assert workers["message"].endswith(": beta (1 due)")
    assert [w["id"] for w in workers["details"]["workers"]] == ["h:1"]
    db.execute("UPDATE workers SET queues = '{alpha,beta}' WHERE id = 'h:1'")
    proc = script(*args, env=env)
    assert proc.returncode == 0, proc.stdout
    workers = json.loads(proc.stdout)["checks"][2]
    assert workers["message"] == "1 live worker(s), 0 of 4 slots busy"


@pytest.mark.parametrize(
    ("args", "extra_env", "words"),
    [
        (("--api-url", "ftp://example"), {}, ("API_URL", "http://")),
        ((), {"API_URL": "not a url"}, ("API_URL",)),
        (("--api-url", "http://127.0.0.1:99999"), {}, ("API_URL", "port")),
        (("--database",), {"DATABASE_URL": ""}, ("DATABASE_URL", "required")),
        (("--database", "--no-api"), {"DATABASE_URL": "sqlite:///x"}, ("DATABASE_URL",)),
        (("--no-api",), {}, ("--no-api", "--database")),
        (("--timeout", "soon"), {}, ("--timeout",)),
        (("--max-stuck", "-1"), {}, ("--max-stuck",)),
        (("--json", "--quiet"), {}, ("not allowed",)),
    ],
)
def test_healthcheck_usage_and_configuration_errors_exit_2(
    env: dict[str, str], args: tuple[str, ...], extra_env: dict[str, str], words
) -> None:
    proc = script("healthcheck.py", *args, env={**env, **extra_env})
    assert_one_line_error(proc, 2, *words)
    assert proc.stdout == ""


# --- cleanup.py ----------------------------------------------------------------------------


@pytest.fixture
def aged(db: psycopg.Connection) -> psycopg.Connection:
    """Two tasks of every status: one that last changed 10 days ago, one an hour ago."""
    for status in ("pending", "processing", "completed", "failed"):
        for title, ago in (("old", "10 days"), ("new", "1 hour")):
            finished = status in ("completed", "failed")
            db.execute(
                "INSERT INTO tasks (title, status, attempts, created_at, updated_at, started_at,"
                " completed_at, worker, lease_expires_at) VALUES (%(title)s, %(status)s, "
                "%(attempts)s, now() - %(ago)s::interval - interval '1 minute', "
                "now() - %(ago)s::interval, CASE WHEN %(status)s <> 'pending' THEN "
                "now() - %(ago)s::interval END, CASE WHEN %(finished)s "
                "THEN now() - %(ago)s::interval END, CASE WHEN %(status)s <> 'pending' "
                "THEN 'w:1' END, CASE WHEN %(status)s = 'processing' "
                "THEN now() + interval '30 seconds' END)",
                {
                    "title": f"{title} {status}",
                    "status": status,
                    "attempts": 0 if status == "pending" else 1,
                    "ago": ago,
                    "finished": finished,
                },
            )
    return db


def titles(db: psycopg.Connection) -> set[str]:
    return {title for (title,) in db.execute("SELECT title FROM tasks").fetchall()}


EVERY = {f"{age} {status}" for age in ("old", "new") for status in
         ("pending", "processing", "completed", "failed")}  # fmt: skip


def test_cleanup_deletes_old_finished_tasks_only(
    env: dict[str, str], aged: psycopg.Connection
) -> None:
    proc = script("cleanup.py", "--older-than", "7d", env=env)  # no terminal: no question
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(
        "deleted 2 tasks (completed 1, failed 1) older than 7d from 127.0.0.1:"
    )
    assert titles(aged) == EVERY - {"old completed", "old failed"}


def test_cleanup_dry_run_deletes_nothing(env: dict[str, str], aged: psycopg.Connection) -> None:
    proc = script("cleanup.py", "--older-than", "30m", "--dry-run", env=env)
    assert proc.returncode == 0
    assert proc.stdout.startswith("would delete 4 tasks (completed 2, failed 2) older than 30m")
    assert titles(aged) == EVERY


def test_cleanup_by_status_and_pending_only_when_told(
    env: dict[str, str], aged: psycopg.Connection
) -> None:
    assert script("cleanup.py", "--older-than", "7d", "--status", "failed", env=env).returncode == 0
    assert titles(aged) == EVERY - {"old failed"}
    proc = script(
        "cleanup.py", "--older-than", "7d", "--status", "pending", "--status", "processing",
        "-q", env=env,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (0, "")
    assert titles(aged) == EVERY - {"old failed", "old pending", "old processing"}


def test_cleanup_all_resets_in_batches(env: dict[str, str], db: psycopg.Connection) -> None:
    db.execute(
        "INSERT INTO tasks (title, status) SELECT 't' || i, (ARRAY['pending', 'completed', "
        "'failed'])[1 + i % 3] FROM generate_series(1, 25) AS i"
    )
    proc = script("cleanup.py", "--all", "--yes", "--batch-size", "10", env=env)
    assert proc.returncode == 0
    assert "deleted 25 tasks (pending 8, completed 9, failed 8) of any age" in proc.stdout
    assert "in 3 batches" in proc.stdout
    assert titles(db) == set()


def test_cleanup_on_a_terminal_asks_first(env: dict[str, str], aged: psycopg.Connection) -> None:
    code, output = on_a_terminal("cleanup.py", "--older-than", "7d", env=env, answer="n\n")
    assert code == 1
    assert "Delete 2 tasks (completed 1, failed 1) older than 7d from 127.0.0.1:" in output
    assert "not confirmed, nothing deleted" in output
    assert titles(aged) == EVERY

    code, output = on_a_terminal("cleanup.py", "--older-than", "7d", env=env, answer="y\n")
    assert code == 0, output
    assert "deleted 2 tasks" in output
    assert titles(aged) == EVERY - {"old completed", "old failed"}

    code, output = on_a_terminal("cleanup.py", "--older-than", "7d", env=env)
    assert code == 0
    assert "nothing to delete" in output

    code, output = on_a_terminal("cleanup.py", "--all", "--yes", "-q", env=env)
    assert (code, output) == (0, "")
    assert titles(aged) == set()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((), ("one of the arguments --older-than --all is required",)),
        (("--older-than", "7d", "--all"), ("not allowed with",)),
        (("--older-than", "3x"), ("--older-than", "duration")),
        (("--older-than", "0d"), ("--older-than", "above zero")),
        (("--older-than", "7d", "--status", "done"), ("--status", "invalid choice")),
        (("--older-than", "7d", "--batch-size", "0"), ("--batch-size",)),
    ],
)
def test_cleanup_refuses_bad_options(
    env: dict[str, str], aged: psycopg.Connection, args: tuple[str, ...], words
) -> None:
    assert_one_line_error(script("cleanup.py", *args, env=env), 2, *words)
    assert titles(aged) == EVERY


def test_cleanup_takes_cancelled_tasks_as_finished(
    env: dict[str, str], db: psycopg.Connection
) -> None:
    db.execute(
        "INSERT INTO tasks (title, status, updated_at, completed_at) VALUES "
        "('old cancelled', 'cancelled', now() - interval '10 days', now() - interval '10 days'),"
        "('new cancelled', 'cancelled', now(), now())"
    )
    proc = script("cleanup.py", "--older-than", "7d", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "(cancelled 1)" in proc.stdout
    assert titles(db) == {"new cancelled"}
