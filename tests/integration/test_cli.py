"""The ``flowforge`` command as a newcomer reads it: secrets hidden, settings listed,
errors in one line."""

from __future__ import annotations

import os
import pty
import subprocess
import time

import psycopg
import pytest

from flowforge import migrate

from ..support import FLOWFORGE, create_database, make_settings, service_env


@pytest.fixture
def migrated(admin_url: str) -> str:
    url = create_database(admin_url, "flowforge_cli_down")
    migrate.upgrade(make_settings(url))
    return url


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {name for (name,) in rows}


def test_migrate_down_without_a_terminal_needs_yes(migrated: str) -> None:
    out = subprocess.run(
        [FLOWFORGE, "migrate", "down", "base"], env=service_env(migrated),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "--yes" in out.stderr
    assert "tasks" in _tables(migrated)


def _on_a_terminal(url: str, answer: str) -> tuple[int, str]:
    """`flowforge migrate down base` on a pseudo-terminal, answering ANSWER."""
    main, secondary = pty.openpty()
    proc = subprocess.Popen(
        [FLOWFORGE, "migrate", "down", "base"], env=service_env(url),
        stdin=secondary, stdout=secondary, stderr=secondary,
    )  # fmt: skip
    os.close(secondary)
    output = b""
    deadline = time.monotonic() + 30
    while b"Type 'yes'" not in output and time.monotonic() < deadline:
        output += os.read(main, 4096)
    os.write(main, answer.encode() + b"\n")
    code = proc.wait(timeout=60)
    try:
        while chunk := os.read(main, 4096):
            output += chunk
    except OSError:
        pass
    os.close(main)
    return code, output.decode(errors="replace")


def test_migrate_down_asks_on_a_terminal(migrated: str) -> None:
    code, output = _on_a_terminal(migrated, "no")
    assert code == 1 and "drop every table" in output and "not confirmed" in output
    assert "tasks" in _tables(migrated)
    code, output = _on_a_terminal(migrated, "yes")
    assert code == 0, output
    assert _tables(migrated) == {"alembic_version"}
