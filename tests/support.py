"""What the tests share besides fixtures (those are in conftest.py): paths, databases,
tokens, the API in this process or as ``flowforge api`` (one starter), workers with a
test plug-in, one task factory, and the assertions every HTTP test makes.

Test modules import from here, never from conftest.py or from each other.
"""

from __future__ import annotations

import json
import os
import signal
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import psycopg
import requests
from psycopg import sql
from psycopg.types.json import Jsonb

from flowforge import tokens
from flowforge.config import Settings, load_settings
from flowforge.devdb import free_port
from flowforge.stores import common_sql

ROOT = Path(__file__).resolve().parent.parent
FLOWFORGE = str(Path(sys.executable).parent / "flowforge")

# -- databases ---------------------------------------------------------------------------------


def with_db(url: str, dbname: str) -> str:
    """``url`` with another database name."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{dbname}"))


def create_database(admin_url: str, name: str) -> str:
    """A fresh, empty database; returns its URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_db(admin_url, name)


def make_settings(database_url: str, **overrides: str) -> Settings:
    env = {"DATABASE_URL": database_url, "LOG_LEVEL": "info", **overrides}
    return load_settings(env)


def add_tasks(
    conn: psycopg.Connection,
    n: int = 1,
    type: str = "noop",
    payload: dict[str, Any] | None = None,
    *,
    title: str = "task %s",
    request_id: str | None = "req-%s",
    notify: bool = False,
    **columns: Any,
) -> list[int]:
    """The task factory: ``n`` tasks written straight into the table (no API checks), in
    one statement; their ids in order. ``title`` and ``request_id`` are PostgreSQL
    ``format()`` patterns given the task's number (1..n); other columns as given, else
    the table's defaults. ``notify`` wakes idle workers, as the API does."""
    names = ["title", "type", "payload", "request_id", *columns]
    values = [
        sql.SQL("format({}::text, g)").format(sql.Literal(title)),
        sql.Literal(type),
        sql.Literal(Jsonb(payload or {})),
        sql.SQL("format({}::text, g)").format(sql.Literal(request_id)),
        *(sql.Literal(v) for v in columns.values()),
    ]
    statement = sql.SQL(
        "INSERT INTO tasks ({}) SELECT {} FROM generate_series(1, {}) g ORDER BY g RETURNING id"
    ).format(
        sql.SQL(", ").join(map(sql.Identifier, names)),
        sql.SQL(", ").join(values),
        sql.Literal(n),
    )
    ids = [row[0] for row in conn.execute(statement).fetchall()]
    if notify:
        conn.execute(common_sql.NOTIFY)
    return ids


def add_task(conn: psycopg.Connection, type: str = "noop", payload: Any = None, **kw: Any) -> int:
    """One task (``add_tasks``); its id."""
    return add_tasks(conn, 1, type, payload, **kw)[0]


def task_row(conn: psycopg.Connection, task_id: int) -> dict[str, Any]:
    """Every column of one task ({} if there is no such task)."""
    cur = conn.execute("SELECT * FROM tasks WHERE id = %s", (task_id,))
    names = [c.name for c in cur.description]  # type: ignore[union-attr]
    row = cur.fetchone()
    return dict(zip(names, row, strict=True)) if row else {}


def final_row(conn: psycopg.Connection, task_id: int, timeout: float = 15) -> dict[str, Any]:
    """The task's row once it has ended (completed, failed or cancelled)."""
    done = ("completed", "failed", "cancelled")
    wait_until(lambda: task_row(conn, task_id)["status"] in done, timeout, f"task {task_id} to end")
    return task_row(conn, task_id)


def statuses(conn: psycopg.Connection) -> dict[str, int]:
    """Tasks per status."""
    return dict(conn.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall())


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# -- tokens ------------------------------------------------------------------------------------

SESSION_TOKENS = {"write": "tests-write", "read": "tests-read"}


def issue_token(
    database_url: str, name: str = SESSION_TOKENS["write"], scope: str = "write"
) -> str:
    """A valid token called ``name`` in that database (made anew if the name exists)."""
    token = tokens.new_token()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO api_tokens (name, token_hash, scope) VALUES (%s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET token_hash = excluded.token_hash, "
            "scope = excluded.scope, revoked_at = NULL",
            (name, tokens.token_hash(token), scope),
        )
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class Tokens:
    """The session's tokens (``tests-write``, ``tests-read``) in the test database."""

    write: str
    read: str

    def headers(self, scope: str = "write") -> dict[str, str]:
        return bearer(self.write if scope == "write" else self.read)


# -- HTTP --------------------------------------------------------------------------------------


class ApiClient(requests.Session):
    """requests, with the API's base URL prepended and, given one, a bearer token sent
    (a request may drop it with ``headers={"Authorization": None}``)."""

    def __init__(self, base: str, token: str | None = None) -> None:
        super().__init__()
        self.base = base
        if token is not None:
            self.headers.update(bearer(token))

    def request(self, method: str, url: str, *args, **kwargs):  # type: ignore[override]
        return super().request(method, self.base + url, *args, **kwargs)


def assert_error(response: requests.Response, status: int, code: str) -> dict:
    """The error envelope: JSON, the status, the code, a message, the request ID header."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["X-Request-ID"]
    body = response.json()
    assert body["data"] is None
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert "Traceback" not in response.text and "<html" not in response.text.lower()
    return body["error"]


def create(client: ApiClient, **fields: Any) -> dict:
    """A task made through the API (201); its ``data``."""
    response = client.post("/v1/tasks", json={"title": "a task", **fields})
    assert response.status_code == 201, response.text
    return response.json()["data"]


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """A WSGI app served in this process over real HTTP (threads, so requests overlap);
    its base URL."""
    server = make_server(
        "127.0.0.1", 0, app, server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


# -- processes ---------------------------------------------------------------------------------


def service_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a ``flowforge`` process: this one's, without API_* and WORKER_*
    (and not the journal), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "WORKER_"))}
    env.pop("JOURNAL_STREAM", None)
    # Worker metrics off unless a test asks: parallel test runs would share port 9464.
    env.update(
        {
            "DATABASE_URL": database_url,
            "LOG_LEVEL": "info",
            "LOG_FORMAT": "json",
            "WORKER_METRICS_PORT": "0",
            **extra,
        }
    )
    return env


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(url, timeout=1)
            return
        except (requests.ConnectionError, requests.Timeout):
            # a gunicorn booting under coverage may accept and answer late
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def start_api(database_url: str, log_path: Path, **env: str) -> tuple[subprocess.Popen, str]:
    """The one way the tests start ``flowforge api`` (gunicorn): on a free loopback port,
    with ``env`` (API_WORKERS and the like), its output in ``log_path``; (process, base URL).

    Ready once /health answers: a worker booting under coverage can take longer than one
    request's timeout, so timeouts are retried like refused connections.
    """
    port = free_port()
    environ = service_env(database_url, API_HOST="127.0.0.1", API_PORT=str(port), **env)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [FLOWFORGE, "api"], env=environ, stdout=log, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            requests.get(base + "/health", timeout=5)
            return proc, base
        except requests.RequestException:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.1)


def stop_api(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=30)


def closed_port_db() -> str:
    """A DATABASE_URL nothing listens on."""
    return f"postgresql://postgres:secret@127.0.0.1:{free_port()}/flowforge"


def token_cli(database_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``flowforge token ARGS`` against that database."""
    return subprocess.run([FLOWFORGE, "token", *args], env=service_env(database_url, **env),
                          capture_output=True, text=True, timeout=60)  # fmt: skip


# -- the operator scripts (scripts/*.py, run as files, as operators run them) -----------------

SCRIPTS = ROOT / "scripts"


def script(
    name: str, *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / name), *args],
        env=env,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    """Exit ``code``, no traceback, and the last stderr line says what went wrong."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert lines, "expected an error line on stderr"
    last = lines[-1]
    assert "error:" in last, last
    for word in words:
        assert word in last, (word, last)
    if code != 2 or "configuration" in last:  # argparse adds its usage lines on 2
        assert len(lines) == 1, proc.stderr


# -- workers and handler plug-ins ---------------------------------------------------------------


def write_plugin(root: Path, module: str, source: str, handlers: Iterable[str]) -> str:
    """Install a handler plug-in under ``root`` as a package would be: ``module``.py and a
    ``*.dist-info`` whose ``entry_points.txt`` names ``handlers`` in the
    ``flowforge.handlers`` group. Returns the directory to put on PYTHONPATH."""
    (root / f"{module}.py").write_text(source)
    dist = module.replace("_", "-")
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    lines = "".join(f"{name} = {module}:{name}\n" for name in handlers)
    (info / "entry_points.txt").write_text(f"[flowforge.handlers]\n{lines}")
    return str(root)


# The test plug-in most worker tests use: each run appends one line to payload["file"].
COUNTING_HANDLERS = '''
import os, time

def _record(task, outcome):
    line = f"{task.id} {task.attempt} {os.getpid()} {time.time():.6f} {outcome}\\n"
    fd = os.open(task.payload["file"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one O_APPEND write: lines never interleave
    finally:
        os.close(fd)

def count(task):
    """Records the run, sleeps payload.sleep seconds."""
    _record(task, "start")
    time.sleep(task.payload.get("sleep", 0))
    _record(task, "run")

def nul(task):
    """Fails with a NUL byte in its message (PostgreSQL text cannot hold one)."""
    raise ValueError("before\\x00after")

def flaky(task):
    """Fails until attempt payload.succeed_on."""
    _record(task, "run")
    if task.attempt < task.payload.get("succeed_on", 10**9):
        raise RuntimeError(f"flaky failure on attempt {task.attempt}")
'''


def handler_runs(path: Path, outcome: str = "run") -> list[list[str]]:
    """The lines the counting handlers wrote with ``outcome``: id, attempt, pid, time."""
    if not path.exists():
        return []
    return [f for f in (line.split() for line in path.read_text().splitlines()) if f[4] == outcome]


class WorkerProc:
    """A ``flowforge worker`` with a plug-in directory on PYTHONPATH; its log in a file."""

    def __init__(self, database_url: str, log: Path, plugin: str, **env: str) -> None:
        self.log = log
        pythonpath = os.pathsep.join(p for p in (plugin, os.environ.get("PYTHONPATH")) if p)
        environ = service_env(database_url, PYTHONPATH=pythonpath, **env)
        with open(log, "a") as out:
            self.proc = subprocess.Popen(
                [FLOWFORGE, "worker"], env=environ, stdout=out, stderr=subprocess.STDOUT
            )

    def lines(self) -> list[dict]:
        out = []
        for line in self.log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"message": line})  # not JSON: kept, so a test can see it
        return out

    def wait_for(self, message: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines():
                if line.get("message", "").startswith(message):
                    return line
            assert self.proc.poll() is None, f"worker exited: {self.log.read_text()[-2000:]}"
            time.sleep(0.05)
        raise AssertionError(f"no {message!r} in {self.log}: {self.log.read_text()[-2000:]}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def worker_spawner(
    database_url: str, plugin: str, tmp_path: Path, **defaults: str
) -> Iterator[Callable[..., WorkerProc]]:
    """A ``spawn`` fixture's body: ``start(name, **env)`` starts a worker with the plug-in
    (``defaults`` under ``env``) and waits until it is ready; all are killed at the end."""
    procs: list[WorkerProc] = []

    def start(name: str = "worker", **env: str) -> WorkerProc:
        w = WorkerProc(database_url, tmp_path / f"{name}.log", plugin, **{**defaults, **env})
        procs.append(w)
        w.wait_for("worker ready")
        return w

    try:
        yield start
    finally:
        for w in procs:
            w.kill()


def children_of(pid: int) -> set[int]:
    """The processes whose parent is ``pid`` (a test's own view of gunicorn's workers; the
    reload itself never scans /proc)."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # ppid follows "(comm) state"
            found.add(int(entry.name))
    return found
