"""The ``flowforge`` command as a newcomer reads it: secrets hidden, settings listed,
errors in one line."""

from __future__ import annotations

import subprocess

import pytest

from flowforge.config import redact_url

from .conftest import FLOWFORGE, service_env


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
