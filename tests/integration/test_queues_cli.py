"""`flowforge queues ...` as an operator runs it: the real command, the service's
environment, a real PostgreSQL, and the API seeing what it set."""

from __future__ import annotations

import json
import subprocess

from ..support import FLOWFORGE, ApiClient, add_tasks, service_env


def ff(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FLOWFORGE, "queues", *args],
        env=service_env(database_url),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_pause_resume_set_and_list(client: ApiClient, db, database_url: str) -> None:
    add_tasks(db, 3, queue="mail")
    paused = ff(database_url, "pause", "mail")
    assert paused.returncode == 0, paused.stderr
    assert "mail: paused" in paused.stdout
    seen = client.get("/v1/queues/mail").json()["data"]
    assert seen["paused"] is True and seen["paused_by"] == "operator"
    out = ff(database_url, "set", "mail", "--concurrency", "5", "--rate", "10/1m")
    assert out.returncode == 0, out.stderr
    seen = client.get("/v1/queues/mail").json()["data"]
    assert seen["concurrency"] == 5 and seen["rate"] == {"limit": 10, "per": 60}
    assert seen["paused"] is True  # set keeps the pause
    lines = ff(database_url, "list").stdout.splitlines()
    assert lines[0].split()[:3] == ["QUEUE", "STATE", "CONC"]
    assert lines[1].split()[:6] == ["mail", "paused", "(operator)", "5", "10/1m", "3"]
    resumed = json.loads(ff(database_url, "resume", "mail", "--json").stdout)
    assert resumed["paused"] is False and resumed["counts"]["pending"] == 3
    ff(database_url, "set", "mail", "--concurrency", "none", "--rate", "none")
    listed = json.loads(ff(database_url, "list", "--json").stdout)["queues"]
    assert [(q["name"], q["concurrency"], q["rate"]) for q in listed] == [("mail", None, None)]


def test_bad_arguments_are_one_line_and_exit_2(db, database_url: str) -> None:
    for args in (
        ("set", "mail"),
        ("set", "mail", "--concurrency", "0"),
        ("set", "mail", "--rate", "10"),
        ("set", "mail", "--rate", "0/1"),
        ("pause", "Mail"),
    ):
        out = ff(database_url, *args)
        assert out.returncode == 2, (args, out.stdout)
        assert out.stderr.strip().count("\n") <= 1 or "usage" in out.stderr, out.stderr
    assert json.loads(ff(database_url, "list", "--json").stdout) == {"queues": []}
    assert "no queues" in ff(database_url, "list").stdout
