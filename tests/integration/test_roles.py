"""The deploy's two database roles, locally: the owner migrates, the runtime role (given
table writes through the owner's default privileges, as deploy/ansible does) runs the
services and cannot touch the migration history in alembic_version."""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from flowforge import migrate

from ..support import make_settings


def _as(url: str, user: str, password: str, dbname: str) -> str:
    parts = urlsplit(url)
    netloc = f"{user}:{password}@{parts.hostname}:{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{dbname}"))


@pytest.fixture
def roles(admin_url: str):
    tag = uuid.uuid4().hex[:8]
    owner, runtime, dbname, password = f"ff_owner_{tag}", f"ff_app_{tag}", f"ff_roles_{tag}", "pw"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for role in (owner, runtime):
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)))  # fmt: skip
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(dbname), sql.Identifier(owner)))  # fmt: skip
    admin = urlsplit(admin_url)
    with psycopg.connect(
        _as(admin_url, admin.username or "", admin.password or "", dbname), autocommit=True
    ) as conn:
        conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(owner)))
        conn.execute(
            sql.SQL(
                "ALTER DEFAULT PRIVILEGES FOR ROLE {o} IN SCHEMA public "
                "GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {r}; "
                "ALTER DEFAULT PRIVILEGES FOR ROLE {o} IN SCHEMA public "
                "GRANT USAGE, SELECT ON SEQUENCES TO {r}; "
                "GRANT USAGE ON SCHEMA public TO {r}"
            ).format(o=sql.Identifier(owner), r=sql.Identifier(runtime))
        )
    yield {
        "owner": _as(admin_url, owner, password, dbname),
        "runtime": _as(admin_url, runtime, password, dbname),
    }
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(dbname)))
        for role in (runtime, owner):
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_only_the_owner_writes_alembic_version(roles: dict[str, str]) -> None:
    for _ in range(2):  # a second migrate (nothing to do) leaves the same privileges
        migrate.upgrade(make_settings(roles["owner"]))
    with psycopg.connect(roles["runtime"], autocommit=True) as conn:
        version = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        assert version is not None  # the services may read it
        conn.execute("INSERT INTO tasks (title) VALUES ('runtime writes tasks')")
        for statement in (
            "UPDATE alembic_version SET version_num = 'x'",
            "DELETE FROM alembic_version",
            "INSERT INTO alembic_version VALUES ('x')",
            "TRUNCATE alembic_version",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    with psycopg.connect(roles["owner"], autocommit=True) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == version


def test_the_runtime_role_enqueues_in_its_transaction(roles: dict[str, str]) -> None:
    """flowforge_enqueue runs with its caller's privileges: the runtime role's table writes
    are enough (an application connecting as it, docs/enqueue.md)."""
    migrate.upgrade(make_settings(roles["owner"]))
    with psycopg.connect(roles["runtime"]) as conn:
        task_id = conn.execute("SELECT flowforge_enqueue('from the app')").fetchone()[0]
    with psycopg.connect(roles["owner"]) as conn:
        row = conn.execute("SELECT title, status FROM tasks WHERE id = %s", (task_id,))
        assert row.fetchone() == ("from the app", "pending")
