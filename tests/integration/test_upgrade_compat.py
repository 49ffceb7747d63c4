"""Expand, then contract: the previous release's code works on the newest schema.

During a rolling upgrade the migrations run first, while the previous release still serves
and works (on the other API hosts, in workers not yet restarted). So the previous release's
API and worker, taken from git history, run here against a database migrated to head, beside
the new API (as in the middle of a rolling upgrade): they create, read, list, update, run and
delete tasks, and read and change a task the new code wrote.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import requests

from flowforge import migrate
from flowforge.devdb import free_port

from ..support import FLOWFORGE, ROOT, create_database, make_settings, service_env, wait_http

REPO = ROOT
# The release deployed before this round's migrations (0003 onwards). Move it forward when a
# release ships: the test then guards the migrations added after that one.
PREVIOUS_RELEASE = "bcb1b01"


@pytest.fixture
def previous_release(tmp_path: Path) -> Path:
    """The previous release's package (src/, with the files it ships) from git history."""
    out = subprocess.run(
        [
            "git",
            "-C",
            str(REPO),
            "archive",
            "--format=tar",
            PREVIOUS_RELEASE,
            "src",
            "openapi.yaml",
            "migrations",
        ],
        capture_output=True,
        check=False,
    )
    assert out.returncode == 0, f"git archive {PREVIOUS_RELEASE}: {out.stderr.decode()}"
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / "src"


def _env(database_url: str, previous: Path, **extra: str) -> dict[str, str]:
    env = service_env(database_url, PYTHONPATH=str(previous), **extra)
    return {k: v for k, v in env.items() if not k.startswith("COVERAGE_")}  # not ours


def test_previous_release_runs_on_the_newest_schema(admin_url, previous_release, tmp_path):
    url = create_database(admin_url, "flowforge_compat")
    migrate.upgrade(make_settings(url))
    port, new_port = free_port(), free_port()
    env = _env(url, previous_release, API_HOST="127.0.0.1", API_PORT=str(port))
    env |= {"API_WORKERS": "1", "WORKER_POLL_INTERVAL": "200ms"}
    new_env = service_env(url, API_HOST="127.0.0.1", API_PORT=str(new_port), API_WORKERS="1")
    new_env["API_AUTH"] = "off"  # loopback only; the old release has no tokens
    where = subprocess.run(
        [sys.executable, "-c", "import flowforge; print(flowforge.__file__)"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert where.startswith(str(previous_release)), where  # the old code, not this checkout

    commands = {
        "api": ([sys.executable, "-m", "flowforge", "api"], env),
        "worker": ([sys.executable, "-m", "flowforge", "worker"], env),
        "new-api": ([FLOWFORGE, "api"], new_env),
    }
    procs = []
    for name, (argv, environ) in commands.items():
        with open(tmp_path / f"{name}.log", "w") as log:
            procs.append(subprocess.Popen(argv, env=environ, stdout=log, stderr=subprocess.STDOUT))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/health")
        wait_http(f"http://127.0.0.1:{new_port}/health")
        # A task the new code wrote, with whatever the new columns hold by default.
        new = requests.post(f"http://127.0.0.1:{new_port}/v1/tasks", json={"title": "by head"})
        assert new.status_code == 201, new.text
        new_id = new.json()["data"]["id"]
        made = requests.post(f"{base}/v1/tasks", json={"title": "old code", "type": "noop"})
        assert made.status_code == 201, made.text
        task_id = made.json()["data"]["id"]
        deadline = time.monotonic() + 30
        while (task := requests.get(f"{base}/v1/tasks/{task_id}").json()["data"])[
            "status"
        ] != "completed":
            assert time.monotonic() < deadline, task  # the old worker ran it
            time.sleep(0.2)
        assert requests.get(f"{base}/v1/tasks/{new_id}").status_code == 200
        listed = requests.get(f"{base}/v1/tasks?status=completed&limit=100").json()
        assert task_id in [t["id"] for t in listed["data"]], listed
        assert requests.get(f"{base}/v1/tasks?page=1").json()["meta"]["total"] >= 2
        put = requests.put(f"{base}/v1/tasks/{new_id}", json={"title": "renamed by old code"})
        assert put.status_code == 200, put.text
        assert requests.delete(f"{base}/v1/tasks/{task_id}").status_code == 204
        assert requests.get(f"{base}/v1/tasks/{task_id}").status_code == 404
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
    errors = [
        line
        for name in commands
        for line in (tmp_path / f"{name}.log").read_text().splitlines()
        if '"level": "error"' in line or "Traceback" in line
    ]
    assert errors == []
