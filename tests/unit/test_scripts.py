"""The operator scripts run as files without a database: ages, --help, a missing package or
DATABASE_URL, a bad URL and a server that is down are one line and a documented exit code."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from flowforge.cli.scripting import age, format_age

from ..support import ROOT, SCRIPTS, assert_one_line_error, closed_port_db, script
from ..support import service_env as _service_env

# --- shared argument types ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30), ("90m", 5400), ("2h", 7200), ("7d", 604800), ("2w", 1209600)],
)
def test_ages_read_days_and_weeks_besides_the_service_durations(text: str, seconds: float) -> None:
    assert age(text) == seconds


@pytest.mark.parametrize("text", ["", "7", "3x", "0s", "0d", "-1d", "1 fortnight"])
def test_bad_ages_are_refused(text: str) -> None:
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        age(text)


def test_ages_print_in_two_units() -> None:
    assert format_age(5.25) == "5.2s"
    assert format_age(93784) == "1d 2h"
    assert format_age(3600) == "1h"


@pytest.mark.parametrize("name", ["seed-database.py", "healthcheck.py", "cleanup.py"])
def test_help_shows_examples_and_exit_codes(name: str) -> None:
    proc = script(name, "--help", env=dict(os.environ))
    assert proc.returncode == 0
    assert "examples:" in proc.stdout
    assert "exit codes:" in proc.stdout
    assert "2    usage or configuration error" in proc.stdout
    if name == "seed-database.py":  # it says what it does with processing rows' leases
        assert "leases are seeded already expired" in " ".join(proc.stdout.split())


@pytest.mark.parametrize("name", ["seed-database.py", "healthcheck.py", "cleanup.py"])
def test_without_the_package_one_line_and_exit_2(name: str) -> None:
    # -S: no site-packages, as under a Python outside FlowForge's virtualenv.
    proc = subprocess.run(
        [sys.executable, "-S", str(SCRIPTS / name), "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    venv_python = ROOT / ".venv" / "bin" / "python"
    assert proc.stderr == (
        f"{name}: error: the flowforge package is not importable (No module named 'flowforge'); "
        f"run it with {venv_python}\n"
    )


@pytest.mark.parametrize("name", ["seed-database.py", "cleanup.py"])
def test_scripts_need_database_url(name: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    proc = script(name, "--older-than", "1d", env=env) if name == "cleanup.py" else None
    proc = proc or script(name, env=env)
    assert_one_line_error(proc, 2, "DATABASE_URL", "required")


@pytest.mark.parametrize("name", ["seed-database.py", "cleanup.py"])
@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("mysql://u:p@127.0.0.1/db", ("DATABASE_URL", "libpq URL")),
        ("postgresql://u:p@127.0.0.1:notaport/db", ("DATABASE_URL", "notaport")),
    ],
)
def test_a_bad_database_url_is_a_configuration_error(
    name: str, url: str, words: tuple[str, ...]
) -> None:
    args = ("--older-than", "1d", "--yes") if name == "cleanup.py" else ("--count", "5")
    proc = script(name, *args, env={**os.environ, "DATABASE_URL": url})
    assert_one_line_error(proc, 2, *words)
    assert "secret" not in proc.stderr


@pytest.mark.parametrize("name", ["seed-database.py", "cleanup.py"])
def test_database_down_is_one_line_and_exit_1(name: str) -> None:
    args = ("--older-than", "1d", "--yes") if name == "cleanup.py" else ("--count", "5")
    proc = script(name, *args, env=_service_env(closed_port_db()))
    assert_one_line_error(proc, 1, "cannot reach the database at 127.0.0.1:", "refused")
    assert "secret" not in proc.stderr  # the password never shows
