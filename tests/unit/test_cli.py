"""The ``flowforge`` command as a newcomer reads it, no database needed: secrets hidden,
settings listed, one duration syntax, consistent short options, errors in one line."""

from __future__ import annotations

import json
import subprocess

import pytest

from flowforge.config import VARIABLES, format_duration, parse_duration, redact_url

from ..support import FLOWFORGE, service_env


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


def test_short_options_mean_one_thing_across_the_scripts() -> None:
    """-n is --dry-run wherever it exists, -c --count, -q --quiet, -y --yes."""
    import re
    import sys

    from ..support import ROOT

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
