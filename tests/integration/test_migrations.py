"""Migrations on a real database: up, down to base, up again, and no drift from schema.py."""

from __future__ import annotations

import re
import subprocess

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import CheckConstraint, create_engine

from flowforge import migrate
from flowforge.db import sqlalchemy_url
from flowforge.schema import metadata

from ..support import FLOWFORGE, ROOT, create_database, make_settings, service_env


@pytest.fixture
def empty_db(admin_url: str) -> str:
    return create_database(admin_url, "flowforge_migrations")


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {r[0] for r in rows}


def _columns(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'tasks'"
        ).fetchall()
    return {r[0] for r in rows}


def _drift(url: str) -> list:
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_server_default": True})
            return compare_metadata(ctx, metadata)
    finally:
        engine.dispose()


def _all_revisions() -> list[str]:
    """Every revision in migrations/versions, oldest first (the chain is linear)."""
    names = sorted(p.name for p in (ROOT / "migrations" / "versions").glob("[0-9]*.py"))
    return [name.split("_", 1)[0] for name in names]


REVISIONS = _all_revisions()
HEAD = REVISIONS[-1]


def test_up_down_up_keeps_schema_and_code_in_step(empty_db: str) -> None:
    settings = make_settings(empty_db)
    migrate.upgrade(settings)
    assert {"tasks", "api_tokens", "alembic_version"} <= _tables(empty_db)
    assert _drift(empty_db) == []
    assert migrate.status(settings) == {"current": HEAD, "head": HEAD, "pending": []}

    # Every step down and back up works, one revision at a time.
    for rev in reversed(REVISIONS[:-1]):
        migrate.downgrade(settings, rev)
        assert migrate.status(settings)["current"] == rev
    assert "worker" not in _columns(empty_db)
    assert "lease_token" not in _columns(empty_db)
    assert migrate.status(settings)["pending"] == REVISIONS[1:]

    migrate.downgrade(settings, "base")
    assert _tables(empty_db) == {"alembic_version"}
    assert migrate.status(settings)["current"] is None

    migrate.upgrade(settings)
    assert _drift(empty_db) == []


def _check_values(definition: str) -> list[str]:
    """The literals of a CHECK: its quoted strings and its numbers. PostgreSQL rewrites a
    CHECK (IN becomes = ANY (ARRAY[...]), BETWEEN two comparisons, -100 a quoted
    '-100'::integer) but keeps these."""
    quoted = re.findall(r"'((?:[^']|'')*)'", definition)
    bare = re.findall(r"-?\b\d+\b", re.sub(r"'(?:[^']|'')*'", "", definition))
    return sorted(quoted + bare)


def test_check_constraints_hold_the_field_tables_values(empty_db: str) -> None:
    """compare_metadata does not compare CHECKs: schema.py's (made from the domain's field
    table and state list) are compared with the migrated database's by their values."""
    migrate.upgrade(make_settings(empty_db))
    with psycopg.connect(empty_db) as conn:
        stored = dict(
            conn.execute(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE contype = 'c' AND conrelid <> 0 AND connamespace = 'public'::regnamespace"
            ).fetchall()
        )
    checks = [
        c for table in metadata.tables.values() for c in table.constraints
        if isinstance(c, CheckConstraint)
    ]  # fmt: skip
    assert {c.name for c in checks} == set(stored)
    for check in checks:
        assert _check_values(str(check.sqltext)) == _check_values(stored[check.name]), check.name


def test_drift_is_detected(empty_db: str) -> None:
    """The comparison can fail: a column the code does not know is reported."""
    settings = make_settings(empty_db)
    migrate.upgrade(settings)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE tasks ADD COLUMN stray text")
    assert any("stray" in str(diff) for diff in _drift(empty_db))


def test_downgrade_keeps_existing_rows(empty_db: str) -> None:
    settings = make_settings(empty_db)
    migrate.upgrade(settings)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("INSERT INTO tasks (title) VALUES ('survives')")
    migrate.downgrade(settings, "0001")
    migrate.upgrade(settings)
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT title, lease_expiries FROM tasks").fetchall() == [
            ("survives", 0)
        ]


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLOWFORGE, "migrate", *args],
        env=service_env(url),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_migrate_up_status_down(empty_db: str) -> None:
    status = _cli(empty_db, "status")
    assert status.returncode == 0, status.stderr
    assert "current: base" in status.stdout
    assert f"pending: {', '.join(REVISIONS)}" in status.stdout

    assert _cli(empty_db).returncode == 0  # `flowforge migrate` = up
    status = _cli(empty_db, "status")
    assert f"current: {HEAD}" in status.stdout and "up to date" in status.stdout

    down = _cli(empty_db, "down", "base", "--yes")
    assert down.returncode == 0, down.stderr
    assert _tables(empty_db) == {"alembic_version"}
    assert _cli(empty_db, "up").returncode == 0
    assert "tasks" in _tables(empty_db)


def test_cli_migrate_status_prints_its_answer_alone(empty_db: str) -> None:
    # Not alembic's "Context impl PostgresqlImpl." and "Will assume transactional DDL."
    for _ in range(2):  # on an empty database, then a migrated one
        status = _cli(empty_db, "status")
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        assert [line.split(":")[0] for line in lines] == ["current", "head", "pending"], lines
        assert status.stderr == ""
        assert _cli(empty_db).returncode == 0


def test_cli_migrate_errors_are_one_line(empty_db: str) -> None:
    unknown = _cli(empty_db, "down", "nonsense")
    assert unknown.returncode == 2
    assert unknown.stderr.count("\n") == 1 and "unknown revision 'nonsense'" in unknown.stderr

    down = _cli("postgresql://nobody:secret@127.0.0.1:9/none", "status")
    assert down.returncode == 1
    assert down.stderr.startswith("flowforge: error: cannot reach the database")
    assert "secret" not in down.stderr and "Traceback" not in down.stderr


def test_concurrent_migrations_take_turns(empty_db: str) -> None:
    """A `flowforge migrate` waits while another holds the migration lock (two hosts
    deploying at once), then finds its work done or does it: never both at once."""
    with psycopg.connect(empty_db) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(hashtext('flowforge-migrate'))")
        proc = subprocess.Popen(
            [FLOWFORGE, "migrate"],
            env=service_env(empty_db),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=3)
        assert _tables(empty_db) == set()
    _, err = proc.communicate(timeout=60)  # the holder committed: the lock is free
    assert proc.returncode == 0, err
    assert _drift(empty_db) == []


def test_queue_control_downgrade_keeps_cancelled_rows(empty_db: str) -> None:
    """0004 down: a cancelled task has no older status; it survives as failed, with why."""
    settings = make_settings(empty_db)
    migrate.upgrade(settings, "0004")
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tasks (title, status, queue, priority) "
            "VALUES ('stopped', 'cancelled', 'mail', 5), ('kept', 'pending', 'default', 0)"
        )
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO tasks (title, queue) VALUES ('x', 'Bad Queue!')")
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute("INSERT INTO tasks (title, priority) VALUES ('x', 101)")
    migrate.downgrade(settings, "0003")
    with psycopg.connect(empty_db) as conn:
        rows = conn.execute("SELECT title, status, last_error FROM tasks ORDER BY id").fetchall()
    assert rows == [("stopped", "failed", "cancelled"), ("kept", "pending", None)]


def _table_options(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT reloptions FROM pg_class WHERE relname = 'tasks'").fetchone()
    return row[0] or []


def test_tasks_autovacuum_settings_up_and_down(empty_db: str) -> None:
    settings = make_settings(empty_db)
    migrate.upgrade(settings, "0005")
    options = _table_options(empty_db)
    assert "autovacuum_vacuum_scale_factor=0.01" in options
    assert "autovacuum_vacuum_threshold=1000" in options
    migrate.downgrade(settings, "0004")
    assert _table_options(empty_db) == []


def test_idempotency_keys_and_schedules_up_and_down(empty_db: str) -> None:
    settings = make_settings(empty_db)
    migrate.upgrade(settings, "0006")
    assert {"idempotency_keys", "schedules"} <= _tables(empty_db)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO schedules (name, cron, title, next_run_at) "
            "VALUES ('nightly', '0 3 * * *', 'x', now())"
        )
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO schedules (name, cron, title, next_run_at) "
                "VALUES ('../etc', '* * * * *', 'x', now())"
            )
        conn.execute(
            "INSERT INTO idempotency_keys (key, request_hash, task_id) "
            "VALUES ('k', decode(repeat('00', 32), 'hex'), 1)"
        )
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "INSERT INTO idempotency_keys (key, request_hash, task_id) "
                "VALUES ('k', decode(repeat('11', 32), 'hex'), 2)"
            )
    migrate.downgrade(settings, "0005")
    assert not {"idempotency_keys", "schedules"} & _tables(empty_db)
