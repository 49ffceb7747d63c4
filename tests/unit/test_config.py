"""Configuration from the environment: defaults, parsing, one clear error."""

from __future__ import annotations

import dataclasses
import json
import subprocess

import pytest

from flowforge.config import (
    VARIABLES,
    ConfigError,
    Settings,
    address_allowed,
    load_settings,
    parse_duration,
    redact_url,
)

from ..support import FLOWFORGE, service_env

URL = "postgresql://flowforge:s3cret@db.example:5432/flowforge"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("5s", 5.0), ("2m", 120.0), ("1h", 3600.0), (" 1.5s ", 1.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5", "five", "5 minutes", "-1s", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_defaults() -> None:
    s = load_settings({"DATABASE_URL": URL})
    assert (s.api_host, s.api_port, s.log_level, s.api_url) == (
        "127.0.0.1",  # loopback: gunicorn itself is not exposed unless asked
        8080,
        "info",
        "http://127.0.0.1:8080",
    )
    assert s.worker_poll_interval == 5.0
    assert s.api_max_body == 1024 * 1024


def test_every_variable_is_a_setting() -> None:
    assert {f.name for f in dataclasses.fields(Settings)} == {v.field for v in VARIABLES}
    assert len({v.name for v in VARIABLES}) == len(VARIABLES)


def test_values_are_parsed() -> None:
    s = load_settings(
        {
            "DATABASE_URL": URL,
            "API_PORT": "9000",
            "WORKER_LEASE": "500ms",
            "LOG_LEVEL": "DEBUG",
            "API_URL": "http://api.internal:81/",
        }
    )
    assert (s.api_port, s.worker_lease, s.log_level, s.api_url) == (
        9000,
        0.5,
        "debug",
        "http://api.internal:81",
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "mysql://x@y/z"),
        ("DATABASE_URL", "postgresql://host-without-db"),
        ("API_PORT", "70000"),
        ("API_PORT", "http"),
        ("WORKER_CONCURRENCY", "0"),
        ("WORKER_POLL_INTERVAL", "soon"),
        ("WORKER_LEASE", "0s"),
        ("LOG_LEVEL", "loud"),
        ("API_URL", "ftp://x"),
        ("API_URL", "http://host:port"),
        ("LOG_FORMAT", "xml"),
        ("METRICS_ALLOW", "10.0.0.0/8,example.com"),
        ("METRICS_ALLOW", "10.0.0.300"),
        ("WORKER_METRICS_PORT", "-1"),
        ("WORKER_METRICS_PORT", "65536"),
        ("WORKER_INSTANCE", "0"),
    ],
)
def test_malformed_variable_is_named(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({"DATABASE_URL": URL, name: value})
    assert err.value.variable == name
    assert str(err.value).startswith(f"{name}: ")


def test_metrics_settings() -> None:
    s = load_settings({"DATABASE_URL": URL})
    assert s.worker_metrics_address == ("0.0.0.0", 9464)
    assert [str(n) for n in s.metrics_allow] == ["127.0.0.0/8", "::1/128"]
    assert (s.log_format, s.api_metrics_dir) == ("json", "")
    s = load_settings(
        {
            "DATABASE_URL": URL,
            "WORKER_METRICS_PORT": "9500",
            "WORKER_INSTANCE": "3",
            "METRICS_ALLOW": " 10.0.9.5 , 192.168.0.0/16,, ::1",
            "LOG_FORMAT": "TEXT",
        }
    )
    assert s.worker_metrics_address == ("0.0.0.0", 9502)  # instance 3: base + 2
    assert [str(n) for n in s.metrics_allow] == ["10.0.9.5/32", "192.168.0.0/16", "::1/128"]
    assert s.log_format == "text"
    assert s.redacted()["METRICS_ALLOW"] == "10.0.9.5/32,192.168.0.0/16,::1/128"
    off = load_settings({"DATABASE_URL": URL, "WORKER_METRICS_PORT": "0", "WORKER_INSTANCE": "2"})
    assert off.worker_metrics_address is None


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("10.0.9.5", True),
        ("::ffff:10.0.9.5", True),  # an IPv4 peer on a dual-stack socket
        ("10.0.9.6", False),
        ("2001:db8::1", False),
        ("", False),
        (None, False),
        ("not-an-address", False),
    ],
)
def test_address_allowed(address: str | None, allowed: bool) -> None:
    networks = load_settings({"DATABASE_URL": URL, "METRICS_ALLOW": "127.0.0.0/8,::1,10.0.9.5"})
    assert address_allowed(address, networks.metrics_allow) is allowed


@pytest.mark.parametrize(
    ("text", "seconds", "shown"),
    [(None, 30 * 86400.0, "30d"), ("0", 0.0, "0s"), ("0d", 0.0, "0s"), ("12h", 43200.0, "12h")],
)
def test_task_retention(text: str | None, seconds: float, shown: str) -> None:
    """A duration, 30 days by default; 0 (with a unit or none) keeps finished tasks."""
    env = {"DATABASE_URL": URL} | ({} if text is None else {"TASK_RETENTION": text})
    s = load_settings(env)
    assert s.task_retention == seconds
    assert s.redacted()["TASK_RETENTION"] == shown
    assert load_settings({"DATABASE_URL": URL, "TASK_RETENTION": shown}).task_retention == seconds


@pytest.mark.parametrize("text", ["forever", "30", "-1d", "0x"])
def test_task_retention_refuses_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^TASK_RETENTION: .*duration"):
        load_settings({"DATABASE_URL": URL, "TASK_RETENTION": text})


def test_missing_database_url() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL: is required"):
        load_settings({})
    assert load_settings({}, require=()).database_url == ""


def test_redaction() -> None:
    assert redact_url(URL) == "postgresql://flowforge:***@db.example:5432/flowforge"
    assert redact_url("postgresql://h/db") == "postgresql://h/db"
    shown = load_settings({"DATABASE_URL": URL}).redacted()
    assert "s3cret" not in json.dumps(shown)


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = service_env(URL)
    base.update(env)
    return subprocess.run([FLOWFORGE, *args], env=base, capture_output=True, text=True)


def test_cli_config_redacts() -> None:
    out = _run("config")
    assert out.returncode == 0
    assert "DATABASE_URL" in out.stdout and "s3cret" not in out.stdout
    as_json = json.loads(_run("config", "--json").stdout)
    assert as_json["DATABASE_URL"] == redact_url(URL)
    assert as_json["API_PORT"] == 8080


@pytest.mark.parametrize("command", ["api", "worker", "migrate"])
def test_cli_refuses_bad_config_in_one_line(command: str) -> None:
    out = _run(command, WORKER_POLL_INTERVAL="often")
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr.splitlines() == [
        "flowforge: error: configuration: WORKER_POLL_INTERVAL: expected a duration such as "
        "500ms, 5s, 2m, 1h or 1d, got 'often'"
    ]


def test_cli_missing_database_url() -> None:
    env = service_env(URL)
    del env["DATABASE_URL"]
    out = subprocess.run([FLOWFORGE, "api"], env=env, capture_output=True, text=True)
    assert out.returncode == 2
    assert "DATABASE_URL: is required but not set" in out.stderr


def test_api_refuses_a_read_timeout_gunicorn_would_cut_short_in_one_line() -> None:
    # gunicorn kills a worker silent for API_TIMEOUT: a request read for longer would die
    # with it (a 500), not end in the 408 API_READ_TIMEOUT promises
    assert load_settings({"DATABASE_URL": URL}).api_read_timeout == 5.0
    out = _run("api", API_READ_TIMEOUT="30s", API_TIMEOUT="30s")
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "flowforge: error: configuration: API_READ_TIMEOUT: must be shorter than API_TIMEOUT "
        "(30s); it is 30s"
    ]
