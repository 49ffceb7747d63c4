"""`make dev` (tools/devstack.py): API and worker on a throwaway PostgreSQL, gone on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import psycopg
import pytest
import requests

from flowforge.devdb import free_port

from .conftest import ROOT, wait_http


def test_make_dev_runs_api_and_worker_and_cleans_up(tmp_path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "API_"))}
    env.update(API_PORT=str(port), WORKER_POLL_INTERVAL="1s", API_WORKERS="1")
    err_path = tmp_path / "stderr"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tools" / "devstack.py")],
            env=env, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/health", timeout=60)
        # The banner's export lines give a working write token; auth is on.
        banner = err_path.read_text()
        assert f"export API_URL=http://127.0.0.1:{port}" in banner, banner
        token = re.search(r"export API_TOKEN=(\S+)", banner)
        assert token, banner
        auth = {"Authorization": f"Bearer {token.group(1)}"}
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
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    url = re.search(r"DATABASE_URL=(\S+)", err_path.read_text())
    assert url, err_path.read_text()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url.group(1), connect_timeout=2)
