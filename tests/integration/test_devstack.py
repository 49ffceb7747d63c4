"""`make dev` (tools/devstack.py): API and worker on a PostgreSQL kept between runs, the
banner once the API answers, one Ctrl-C (SIGINT to the whole foreground process group, as
a terminal sends it) stops everything gracefully."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests

from flowforge.devdb import free_port

from ..support import ROOT

DEVSTACK = str(ROOT / "tools" / "devstack.py")


@pytest.fixture
def dev_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path: as root, the cluster belongs to `postgres`, who must be
    # able to reach it.
    path = Path(tempfile.mkdtemp(prefix="flowforge-dev-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env(dev_dir: Path, api_port: int, db_port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "API_"))}
    env.update(
        API_PORT=str(api_port), WORKER_POLL_INTERVAL="1s", API_WORKERS="1",
        WORKER_SHUTDOWN_TIMEOUT="20s", FLOWFORGE_DEV_DIR=str(dev_dir),
        DEV_DATABASE_PORT=str(db_port),
    )  # fmt: skip
    env.pop("LOG_FORMAT", None)
    return env


def _start(env: dict[str, str], out_path: Path) -> subprocess.Popen[bytes]:
    with open(out_path, "w") as out:
        # A session of its own, like a shell's foreground job: Ctrl-C is killpg(SIGINT).
        return subprocess.Popen(
            [sys.executable, DEVSTACK], env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def _banner(proc: subprocess.Popen[bytes], out_path: Path) -> str:
    deadline = time.monotonic() + 120
    while "FlowForge is up" not in (text := out_path.read_text()):
        assert proc.poll() is None, text[-3000:]
        assert time.monotonic() < deadline, text[-3000:]
        time.sleep(0.2)
    return text


def _ctrl_c(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    return proc.wait(timeout=90)


def test_make_dev_keeps_its_database_and_stops_gracefully_on_one_ctrl_c(dev_dir: Path) -> None:
    port, db_port = free_port(), free_port()
    env = _env(dev_dir, port, db_port)
    out_path = dev_dir / "out-1"
    proc = _start(env, out_path)
    try:
        text = _banner(proc, out_path)
        # The banner comes once the API answers (its access line for /health is earlier),
        # with readable lines (LOG_FORMAT=text), not JSON.
        assert text.index("GET /health") < text.index("FlowForge is up"), text[-3000:]
        assert '{"message"' not in text
        assert f"export API_URL=http://127.0.0.1:{port}" in text
        database_url = re.search(r"export DATABASE_URL=(\S+)", text).group(1)  # type: ignore[union-attr]
        assert f":{db_port}/" in database_url
        token = re.search(r"export API_TOKEN=(\S+)", text).group(1)  # type: ignore[union-attr]
        auth = {"Authorization": f"Bearer {token}"}
        tasks_url = f"http://127.0.0.1:{port}/v1/tasks"
        assert requests.get(tasks_url, timeout=5).status_code == 401
        created = requests.post(tasks_url, json={"title": "from make dev"}, headers=auth, timeout=5)
        assert created.status_code == 201
        task_url = f"{tasks_url}/{created.json()['data']['id']}"
        deadline = time.monotonic() + 20
        while (
            requests.get(task_url, headers=auth, timeout=5).json()["data"]["status"] != "completed"
        ):
            assert time.monotonic() < deadline, "the worker did not run the task"
            time.sleep(0.1)
        # A task running when Ctrl-C comes finishes (within WORKER_SHUTDOWN_TIMEOUT).
        body = {"title": "running at Ctrl-C", "type": "sleep", "payload": {"seconds": 3}}
        sleeper = requests.post(tasks_url, json=body, headers=auth, timeout=5).json()["data"]
        sleeper_url = f"{tasks_url}/{sleeper['id']}"
        deadline = time.monotonic() + 20
        while requests.get(sleeper_url, headers=auth, timeout=5).json()["data"]["status"] != (
            "processing"
        ):
            assert time.monotonic() < deadline, "the sleep task did not start"
            time.sleep(0.05)
    finally:
        code = _ctrl_c(proc)
    output = out_path.read_text()
    assert code == 0, output[-3000:]
    assert "second stop signal" not in output and "given back" not in output, output[-3000:]
    with pytest.raises(psycopg.OperationalError):  # stopped with make dev...
        psycopg.connect(database_url, connect_timeout=2)

    # ...and kept: the next run has the same URL, token and tasks.
    out_path = dev_dir / "out-2"
    proc = _start(env, out_path)
    try:
        text = _banner(proc, out_path)
        assert f"export DATABASE_URL={database_url}" in text
        assert f"export API_TOKEN={token}" in text
        task = requests.get(sleeper_url, headers=auth, timeout=5).json()["data"]
        assert task["status"] == "completed", task
        assert task["attempts"] == 1 and task["last_error"] is None, task
    finally:
        assert _ctrl_c(proc) == 0


def test_make_dev_says_which_port_to_set_when_the_api_port_is_taken(dev_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run(
            [sys.executable, DEVSTACK], env=_env(dev_dir, port, free_port()),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert out.returncode == 2
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and f"port {port}" in lines[0] and "API_PORT=" in lines[0], lines
    assert "FlowForge is up" not in out.stdout + out.stderr
    assert not (dev_dir / "pg").exists()  # nothing started
