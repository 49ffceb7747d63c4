"""The ``flowforge`` command as a newcomer reads it: secrets hidden, settings listed,
errors in one line."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import time

import psycopg
import pytest

from flowforge import migrate
from flowforge.config import VARIABLES, format_duration, parse_duration, redact_url

from .conftest import FLOWFORGE, create_database, make_settings, service_env


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FLOWFORGE, *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://ff@db/ff?password=s3cret&sslmode=require",
            "postgresql://ff@db/ff?password=***&sslmode=require",
        ),
        (
            "postgresql://ff:s3cret@db/ff?sslpassword=s3cret&PASSWORD=s3cret",
            "postgresql://ff:***@db/ff?sslpassword=***&PASSWORD=***",
        ),
        (
            "postgresql://ff@db/ff?sslmode=require&x=a%20b",
            "postgresql://ff@db/ff?sslmode=require&x=a%20b",
        ),
    ],
)
def test_config_hides_every_password_in_the_database_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    out = _run("config", env=service_env(url))
    assert out.returncode == 0, out.stderr
    assert "s3cret" not in out.stdout and "s3cret" not in out.stderr
    assert shown in out.stdout


@pytest.mark.parametrize("service", ["api", "worker"])
def test_help_lists_every_variable_the_service_reads(service: str) -> None:
    out = _run(service, "--help")
    assert out.returncode == 0
    expected = {
        "api": ["DATABASE_URL", "API_PORT", "API_WORKERS", "API_AUTH", "LOG_FORMAT"],
        "worker": ["DATABASE_URL", "WORKER_CONCURRENCY", "WORKER_SHUTDOWN_TIMEOUT", "TASK_TIMEOUT"],
    }[service]
    for name in expected:
        variable = next(v for v in VARIABLES if v.name == name)
        default = "required" if variable.default is None else variable.default
        assert f"{name} [{default}]" in out.stdout, name
    absent = {"api": "WORKER_CONCURRENCY", "worker": "API_PORT"}[service]
    assert absent not in out.stdout


def test_config_marks_a_missing_required_variable_and_fails() -> None:
    env = {k: v for k, v in service_env("x").items() if k != "DATABASE_URL"}
    out = _run("config", env=env)
    assert out.returncode == 2
    assert "DATABASE_URL" in out.stdout and "(required, not set)" in out.stdout
    assert out.stderr.splitlines() == [
        "flowforge: error: configuration: DATABASE_URL: required but not set"
    ]
    as_json = _run("config", "--json", env=env)
    assert as_json.returncode == 2 and json.loads(as_json.stdout)["DATABASE_URL"] is None


def test_config_prints_durations_as_written() -> None:
    env = service_env(
        "postgresql://u@h/db", WORKER_SHUTDOWN_TIMEOUT="10m", WORKER_POLL_INTERVAL="500ms",
        TASK_TIMEOUT="1h", WORKER_LEASE="1d",
    )  # fmt: skip
    shown = json.loads(_run("config", "--json", env=env).stdout)
    assert shown["WORKER_SHUTDOWN_TIMEOUT"] == "10m"
    assert shown["WORKER_POLL_INTERVAL"] == "500ms"
    assert shown["TASK_TIMEOUT"] == "1h"
    assert shown["WORKER_LEASE"] == "1d"
    assert shown["API_TIMEOUT"] == "30s"  # a default reads as documented
    text = _run("config", env=env).stdout
    assert "600.0" not in text and "10m" in text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("5s", 5), ("2m", 120), ("1h", 3600), ("1d", 86400), ("2w", 1209600)],
)
def test_one_duration_syntax(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert format_duration(seconds) == text


def test_a_day_is_a_duration_for_the_services_too() -> None:
    out = _run("config", env=service_env("postgresql://u@h/db", WORKER_LEASE="1d"))
    assert out.returncode == 0, out.stderr


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


def test_short_options_mean_one_thing_across_the_scripts() -> None:
    """-n is --dry-run wherever it exists, -c --count, -q --quiet, -y --yes."""
    import re
    import sys

    from .conftest import ROOT

    meaning: dict[str, set[str]] = {}
    for name in ("seed-database.py", "healthcheck.py", "cleanup.py"):
        out = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / name), "--help"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        for short, long in re.findall(r"(-\w)(?: \S+)?, (--[\w-]+)", out.stdout):
            meaning.setdefault(short, set()).add(long)
    assert all(len(longs) == 1 for longs in meaning.values()), meaning
    assert meaning["-n"] == {"--dry-run"} and meaning["-c"] == {"--count"}
