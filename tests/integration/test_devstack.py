"""`make dev` (tools/devstack.py): API and worker on a PostgreSQL kept between runs, the
banner once the API answers, one Ctrl-C (SIGINT to the whole foreground process group, as
a terminal sends it) stops everything gracefully."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests

from flowforge.devdb import TempPostgres, free_port

from ..support import COUNTING_HANDLERS, ROOT, handler_runs, write_plugin

DEVSTACK = str(ROOT / "tools" / "devstack.py")


@pytest.fixture
def dev_dir() -> Iterator[Path]:
    # As `mktemp -d` makes it (mode 700), like a clone in /root: as root, the cluster's
    # `postgres` user cannot enter it, so make dev must keep the cluster elsewhere.
    path = Path(tempfile.mkdtemp(prefix="flowforge-dev-"))
    assert path.stat().st_mode & 0o777 == 0o700
    yield path
    cluster = path / "pg"
    if cluster.is_symlink():  # as root: /var/lib/flowforge-dev/<hash>, as make dev-reset does
        shutil.rmtree(cluster.resolve(), ignore_errors=True)
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


def _with_counting_plugin(env: dict[str, str], dev_dir: Path) -> dict[str, str]:
    """``env`` with the test plug-in on PYTHONPATH: its ``count`` handler writes a line when
    it starts, so a test knows the handler runs (``processing`` is shown once claimed)."""
    (dev_dir / "counting").mkdir()
    plugin = write_plugin(dev_dir / "counting", "counting", COUNTING_HANDLERS, ["count"])
    return {**env, "PYTHONPATH": plugin}


def _wait_for_handler(runs: Path, task_id: int) -> None:
    deadline = time.monotonic() + 20
    while not any(int(run[0]) == task_id for run in handler_runs(runs, "start")):
        assert time.monotonic() < deadline, f"the handler of task {task_id} did not start"
        time.sleep(0.05)


def _ctrl_c(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    return proc.wait(timeout=90)


def test_make_dev_keeps_its_database_and_stops_gracefully_on_one_ctrl_c(dev_dir: Path) -> None:
    port, db_port = free_port(), free_port()
    env = _with_counting_plugin(_env(dev_dir, port, db_port), dev_dir)
    runs = dev_dir / "runs"
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
        payload = {"file": str(runs), "sleep": 3}
        body = {"title": "running at Ctrl-C", "type": "count", "payload": payload}
        sleeper = requests.post(tasks_url, json=body, headers=auth, timeout=5).json()["data"]
        sleeper_url = f"{tasks_url}/{sleeper['id']}"
        _wait_for_handler(runs, sleeper["id"])
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


def test_a_closed_terminal_stops_make_dev_and_everything_it_started(dev_dir: Path) -> None:
    # The bug: SIGHUP (the terminal's window closed) killed this script alone; the API,
    # the worker and PostgreSQL ran on, and the next make dev said its port was "taken by
    # another program".
    port, db_port = free_port(), free_port()
    env = _env(dev_dir, port, db_port)
    out_path = dev_dir / "out-1"
    proc = _start(env, out_path)
    try:
        text = _banner(proc, out_path)
        database_url = re.search(r"export DATABASE_URL=(\S+)", text).group(1)  # type: ignore[union-attr]
        os.killpg(proc.pid, signal.SIGHUP)  # what a closed terminal sends its foreground job
        code = proc.wait(timeout=90)
    finally:
        _ctrl_c(proc)
    assert code == 0, out_path.read_text()[-3000:]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(database_url, connect_timeout=2)
    # The next make dev starts where the last one was, on the same port.
    proc = _start(env, dev_dir / "out-2")
    try:
        assert f"export API_URL=http://127.0.0.1:{port}" in _banner(proc, dev_dir / "out-2")
    finally:
        assert _ctrl_c(proc) == 0


def test_make_dev_killed_leaves_nothing_holding_its_port(dev_dir: Path) -> None:
    # The bug: SIGKILL (or the OOM killer) ended this script alone; the API and the worker,
    # in their own sessions, ran on and held the port: the next make dev said it was taken
    # by another program.
    port = free_port()
    env = _env(dev_dir, port, free_port())
    proc = _start(env, dev_dir / "out-1")
    try:
        _banner(proc, dev_dir / "out-1")
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 40  # the worker's graceful stop is WORKER_SHUTDOWN_TIMEOUT
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
            except requests.ConnectionError:
                break
            assert time.monotonic() < deadline, "the API outlived make dev"
            time.sleep(0.2)
    finally:
        _ctrl_c(proc)
    # The next make dev stops the PostgreSQL left behind and starts on the same port.
    proc = _start(env, dev_dir / "out-2")
    try:
        assert f"export API_URL=http://127.0.0.1:{port}" in _banner(proc, dev_dir / "out-2")
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


@pytest.mark.parametrize("host", ["192.0.2.1", "no-such-host.invalid"])
def test_make_dev_says_in_one_line_when_api_host_is_not_of_this_machine(
    dev_dir: Path, host: str
) -> None:
    # The bug: every port failed to bind, the search for a free one to suggest ran dry,
    # and make dev ended in a StopIteration traceback.
    out = subprocess.run(
        [sys.executable, DEVSTACK], env={**_env(dev_dir, free_port(), free_port()),
                                         "API_HOST": host},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("make dev: "), out.stderr
    assert f"API_HOST={host!r}" in lines[0] and "127.0.0.1" in lines[0], lines
    assert not (dev_dir / "pg").exists()  # nothing started


def _exports(banner: str) -> dict[str, str]:
    """The banner's `export NAME=VALUE` lines, as a shell that pastes them would have them
    (`$PATH` expanded)."""
    found = dict(re.findall(r"^\s*export (\w+)=(\S+)$", banner, re.MULTILINE))
    if "PATH" in found:
        found["PATH"] = found["PATH"].replace("$PATH", os.environ["PATH"])
    return found


def _pending_after(cluster: Path, task_id: int) -> dict:
    """The task's row in make dev's kept cluster, read with make dev stopped."""
    server = TempPostgres(port=free_port(), directory=cluster).start()
    try:
        with psycopg.connect(server.url(), row_factory=psycopg.rows.dict_row) as conn:
            row = conn.execute("SELECT * FROM tasks WHERE id = %s", (task_id,)).fetchone()
    finally:
        server.stop()
    assert row is not None
    return row


def test_make_dev_runs_from_a_closed_directory_and_a_second_one_says_where_the_first_is(
    dev_dir: Path,
) -> None:
    port, db_port = free_port(), free_port()
    env = _env(dev_dir, port, db_port)
    proc = _start(env, dev_dir / "out-1")
    try:
        text = _banner(proc, dev_dir / "out-1")
        assert "Traceback" not in text, text[-3000:]
        cluster = (dev_dir / "pg").resolve()
        if os.geteuid() == 0:
            # The postgres user cannot enter the mode-700 directory: the cluster lives where
            # it can, and .dev/pg links to it (make dev-reset removes both).
            assert (dev_dir / "pg").is_symlink(), text[-3000:]
            assert cluster.parent == Path("/var/lib/flowforge-dev")
            assert (cluster / "data").stat().st_uid == pwd.getpwnam("postgres").pw_uid
            assert (cluster / "clone").read_text().strip() == str(dev_dir.resolve())
        assert f"data       {cluster}" in text
        # What a newcomer needs next: the dashboard, the docs, the CLI on PATH.
        exports = _exports(text)
        api_url = f"http://127.0.0.1:{port}"
        assert f"dashboard  {api_url}/dashboard" in text and f"API docs   {api_url}/docs" in text
        assert exports["API_URL"] == api_url
        assert Path(exports["PATH"].split(":")[0], "flowforge").exists()
        for page in ("/dashboard", "/docs"):
            assert requests.get(api_url + page, timeout=5).status_code == 200

        # A second make dev in the same clone: one line saying where the first one is.
        second = subprocess.run(
            [sys.executable, DEVSTACK], env={**env, "API_PORT": str(free_port())},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 1, second.stderr
        lines = second.stderr.splitlines()
        assert len(lines) == 1, lines
        assert "already running in this clone" in lines[0], lines
        assert api_url in lines[0] and f"pid {proc.pid}" in lines[0], lines
        assert requests.get(api_url + "/health", timeout=5).status_code == 200  # untouched
    finally:
        assert _ctrl_c(proc) == 0


def test_a_second_ctrl_c_stops_at_once_and_gives_running_tasks_back(dev_dir: Path) -> None:
    env = {**_env(dev_dir, free_port(), free_port()), "WORKER_SHUTDOWN_TIMEOUT": "60s"}
    env = _with_counting_plugin(env, dev_dir)
    out_path = dev_dir / "out"
    proc = _start(env, out_path)
    try:
        exports = _exports(_banner(proc, out_path))
        auth = {"Authorization": f"Bearer {exports['API_TOKEN']}"}
        tasks_url = exports["API_URL"] + "/v1/tasks"
        runs = dev_dir / "runs"
        body = {"title": "long", "type": "count", "payload": {"file": str(runs), "sleep": 120}}
        task = requests.post(tasks_url, json=body, headers=auth, timeout=5).json()["data"]
        _wait_for_handler(runs, task["id"])
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(1.5)
        assert proc.poll() is None  # the first Ctrl-C waits for the running task
        assert "Ctrl-C again stops at once" in out_path.read_text()
        os.killpg(proc.pid, signal.SIGINT)
        started = time.monotonic()
        code = proc.wait(timeout=90)
        took = time.monotonic() - started
    finally:
        _ctrl_c(proc)
    output = out_path.read_text()
    assert code == 0, output[-3000:]
    assert took < 15, f"the second Ctrl-C took {took:.1f} s to stop make dev\n{output[-3000:]}"
    assert "task still running when told to stop at once: given back" in output
    row = _pending_after((dev_dir / "pg").resolve(), task["id"])
    assert row["status"] == "pending" and row["attempts"] == 1, row
    assert "told to stop at once" in row["last_error"], row


def test_make_dev_says_in_one_line_why_postgresql_does_not_start(dev_dir: Path) -> None:
    env = _env(dev_dir, free_port(), free_port())
    out = subprocess.run(
        [sys.executable, DEVSTACK], env={**env, "PG_BINDIR": "/nonexistent/bin"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("make dev: "), out.stderr
    assert "postgresql-15" in lines[0] and "PG_BINDIR" in lines[0], lines

    # A kept cluster that cannot start (here: its data directory is not one).
    data = dev_dir / "pg" / "data"
    data.mkdir(parents=True)
    (data / "PG_VERSION").write_text("15\n")
    if os.geteuid() == 0:
        shutil.chown(data.parent, "postgres")
        shutil.chown(data, "postgres")
    out = subprocess.run(
        [sys.executable, DEVSTACK], env=env, capture_output=True, text=True, timeout=90
    )
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("make dev: "), out.stderr
    assert "PostgreSQL did not start" in lines[0] and "make dev-reset" in lines[0], lines


def test_make_dev_says_in_one_line_why_the_api_does_not_start(dev_dir: Path) -> None:
    out = subprocess.run(
        [sys.executable, DEVSTACK], env={**_env(dev_dir, free_port(), free_port()),
                                         "API_WORKERS": "many"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 1
    assert "Traceback" not in out.stderr, out.stderr
    last = out.stderr.splitlines()[-1]
    assert last.startswith("make dev: ") and "API_WORKERS" in last, out.stderr


def _fenced(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def test_the_readme_examples_work_as_written_against_make_dev(dev_dir: Path) -> None:
    """Every shell block of README.md that calls curl or flowforge, taken from README.md
    itself and run in order with the banner's exports pasted, each answer a 2xx (each
    command exit 0); the handler of the tour installed from the README's own pyproject and
    module."""
    readme = (ROOT / "README.md").read_text()
    [pyproject] = [b for b in _fenced(readme, "toml") if "flowforge.handlers" in b]
    [module_source] = [b for b in _fenced(readme, "python") if "flowforge.handlers" in b]
    entry_points = tomllib.loads(pyproject)["project"]["entry-points"]["flowforge.handlers"]
    module = next(iter(entry_points.values())).split(":")[0]
    assert entry_points == {name: f"{module}:{name}" for name in entry_points}
    (dev_dir / "plugin").mkdir()
    plugin = write_plugin(dev_dir / "plugin", module, module_source, entry_points)
    blocks = [b for b in _fenced(readme, "sh") if "curl " in b or re.search("^flowforge ", b, re.M)]
    assert len(blocks) >= 5, blocks  # create, watch, cancel, the handler's type, the CLI

    env = {**_env(dev_dir, free_port(), free_port()), "WORKER_SHUTDOWN_TIMEOUT": "2s"}
    proc = _start({**env, "PYTHONPATH": plugin}, dev_dir / "out")
    try:
        text = _banner(proc, dev_dir / "out")
        exports = "\n".join(re.findall(r"^\s*(export \w+=\S+)$", text, re.MULTILINE))
        assert {"PATH", "API_URL", "API_TOKEN"} <= set(_exports(text)), exports
        # As a user pastes them; curl fails on any answer but a 2xx, and so does the script.
        script = "\n".join([
            "set -euo pipefail",
            'curl() { command curl --fail-with-body --show-error --max-time 20 "$@"; }',
            exports, *blocks,
        ])  # fmt: skip
        # `flowforge` only through the banner's PATH, as in a new terminal.
        shell_env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "DATABASE_"))}
        shell_env["PATH"] = ":".join(
            d for d in os.environ["PATH"].split(":") if not Path(d, "flowforge").exists()
        )
        run = subprocess.run(
            ["bash", "-c", script], cwd=dev_dir, capture_output=True, text=True, timeout=120,
            env=shell_env,
        )  # fmt: skip
        assert run.returncode == 0, f"{run.stdout[-2000:]}\n{run.stderr[-2000:]}"

        found = _exports(text)
        auth = {"Authorization": f"Bearer {found['API_TOKEN']}"}
        tasks_url = found["API_URL"] + "/v1/tasks"

        def only(**query: str) -> dict:
            [task] = requests.get(tasks_url, params=query, headers=auth, timeout=5).json()["data"]
            return task

        deadline = time.monotonic() + 30
        while (
            only(type="send_email")["status"] != "completed"
            or requests.get(
                tasks_url, params={"status": "cancelled"}, headers=auth, timeout=5
            ).json()["meta"]["total"]
            != 1
        ):
            assert time.monotonic() < deadline, requests.get(tasks_url, headers=auth).text
            time.sleep(0.2)
        assert only(type="send_email")["result"] == {"sent": 1}
        assert only(status="cancelled")["request_id"] == "tour-1"
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 0
