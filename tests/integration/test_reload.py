"""`flowforge api --reload PID` (systemd's ExecReload): new workers with the env file's current
settings, under load, without one failed request; a broken env file keeps the running one."""

from __future__ import annotations

import json
import subprocess
import threading
from collections import Counter
from pathlib import Path

import requests

from flowforge.api.server import reload_status_path
from flowforge.devdb import free_port

from ..support import FLOWFORGE, children_of, service_env, wait_http


def _write_env(path: Path, values: dict[str, str]) -> None:
    path.write_text("# written by the test\n" + "".join(f"{k}={v}\n" for k, v in values.items()))


class Load:
    """Two clients creating a task and reading it back, in a loop, until stopped."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.stop = threading.Event()
        self.outcomes: Counter[str] = Counter()
        self.created: list[int] = []
        self.threads = [threading.Thread(target=self._run, args=(n,)) for n in range(2)]

    def _run(self, n: int) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                made = requests.post(
                    f"{self.base}/v1/tasks", json={"title": f"load {n}-{i}"}, timeout=10
                )
                if made.status_code != 201:
                    self.outcomes[f"POST {made.status_code}"] += 1
                    continue
                task_id = made.json()["data"]["id"]
                self.created.append(task_id)
                read = requests.get(f"{self.base}/v1/tasks/{task_id}", timeout=10)
                self.outcomes["ok" if read.status_code == 200 else f"GET {read.status_code}"] += 1
            except requests.RequestException as exc:
                self.outcomes[type(exc).__name__] += 1

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


def test_reload_swaps_workers_and_settings_under_load(database_url, db, tmp_path) -> None:
    port = free_port()
    env_file = tmp_path / "flowforge.env"
    settings = {
        "DATABASE_URL": database_url,
        "API_HOST": "127.0.0.1",
        "API_PORT": str(port),
        "API_WORKERS": "2",
        "API_GRACEFUL_TIMEOUT": "10s",
        "API_MAX_BODY": "1048576",
        "API_AUTH": "off",  # loopback only: these requests need no token
    }
    _write_env(env_file, settings)
    log_path = tmp_path / "api.log"
    # As systemd runs ExecStart and ExecReload: the file's variables set, and one
    # RUNTIME_DIRECTORY where the arbiter reports its reloads to `--reload`.
    runtime = tmp_path / "run"
    runtime.mkdir()
    env = service_env(database_url, **settings) | {"RUNTIME_DIRECTORY": str(runtime)}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [FLOWFORGE, "api", "--env-file", str(env_file)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    big = {"title": "big", "description": "x" * 5000}
    try:
        wait_http(f"{base}/health")
        assert requests.post(f"{base}/v1/tasks", json=big, timeout=10).status_code == 201
        before = children_of(proc.pid)
        assert len(before) == 2

        _write_env(env_file, settings | {"API_MAX_BODY": "2000", "API_WORKERS": "3"})
        with Load(base) as load:
            while sum(load.outcomes.values()) < 20:
                threading.Event().wait(0.05)
            done = subprocess.run(
                [FLOWFORGE, "api", "--reload", str(proc.pid)],
                capture_output=True,
                text=True,
                timeout=70,
                env=env,
            )
            assert done.returncode == 0, done.stderr
            assert "API reloaded in" in done.stderr
            served = sum(load.outcomes.values())
            while sum(load.outcomes.values()) < served + 20:
                threading.Event().wait(0.05)
        after = children_of(proc.pid)
        assert len(after) == 3 and not after & before, (before, after)
        assert set(load.outcomes) == {"ok"}, load.outcomes  # not one failed request
        stored = db.execute(
            "SELECT count(*) FROM tasks WHERE id = ANY(%s)", [load.created]
        ).fetchone()
        assert stored == (len(load.created),)
        # The new workers run with the file's new limit.
        assert requests.post(f"{base}/v1/tasks", json=big, timeout=10).status_code == 413

        # A broken file: the reload goes through with the running configuration.
        _write_env(env_file, settings | {"API_WORKERS": "none"})
        done = subprocess.run(
            [FLOWFORGE, "api", "--reload", str(proc.pid)], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, done.stderr
        assert len(children_of(proc.pid)) == 3
        status = json.loads((runtime / reload_status_path(proc.pid).name).read_text())
        assert status == {"arbiter": proc.pid, "generation": 2, "old_workers": []}
        assert requests.post(f"{base}/v1/tasks", json=big, timeout=10).status_code == 413

        # No such process: one line, exit 1.
        done = subprocess.run(
            [FLOWFORGE, "api", "--reload", "999999999"], capture_output=True, text=True, env=env
        )
        assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
        # A process that is no FlowForge API: one line, exit 1, and it gets no SIGHUP.
        other = subprocess.Popen(["sleep", "60"])
        try:
            done = subprocess.run(
                [FLOWFORGE, "api", "--reload", str(other.pid)],
                capture_output=True,
                text=True,
                env=env,
            )
            assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
            assert "no reload status" in done.stderr
            assert other.poll() is None
        finally:
            other.kill()
            other.wait()
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    assert list(runtime.iterdir()) == []  # the arbiter removed its status
    lines = [json.loads(line) for line in log_path.read_text().splitlines()]
    kept = [line for line in lines if "keeping the running configuration" in line["message"]]
    assert len(kept) == 1 and "API_WORKERS" in kept[0]["message"]
    assert any("configuration re-read" in line["message"] for line in lines)
