#!/usr/bin/env python3
"""`make dev`: FlowForge on this machine, against its own PostgreSQL.

The database lives in `.dev/` (git-ignored; `make dev-reset` wipes it) on a fixed port
(DEV_DATABASE_PORT, 54329), so DATABASE_URL and the data stay the same between runs.
Checks that API_PORT (8080) is free, migrates, then runs `flowforge api` and `flowforge
worker` (readable lines: LOG_FORMAT=text unless set) and prints the banner once the API
answers. One Ctrl-C stops everything gracefully: the services run in a session of their
own, so the terminal's SIGINT reaches only this script, which sends each one SIGTERM
(running tasks get WORKER_SHUTDOWN_TIMEOUT to finish). The variables of
docs/configuration.md are honoured.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from flowforge.devdb import TempPostgres

FLOWFORGE = str(Path(sys.executable).parent / "flowforge")
ROOT = Path(__file__).resolve().parent.parent
DEV_DIR = Path(os.environ.get("FLOWFORGE_DEV_DIR") or ROOT / ".dev")
EXIT_USAGE = 2


def _say(message: str) -> None:
    print(f"make dev: {message}", file=sys.stderr, flush=True)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _a_free_port(host: str, start: int) -> int:
    return next(p for p in range(start + 1, start + 100) if _port_free(host, p))


def _wait_until_answering(url: str, procs: list[subprocess.Popen[bytes]], stop: list) -> bool:
    deadline = time.monotonic() + 90
    while not stop and time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            return False
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # it answers (a 503 while the database wakes is still an answer)
        except OSError:
            time.sleep(0.2)
    return False


def _token(env: dict[str, str]) -> str:
    """A write token for the developer, made once and kept with the database."""
    path = DEV_DIR / "token"
    if path.exists():
        return path.read_text().strip()
    token = subprocess.run(
        [FLOWFORGE, "token", "create", f"dev-{int(time.time())}", "--scope", "write"],
        env=env, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


def main() -> int:
    stop: list[bool] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(True))
    env = {**os.environ}
    env.setdefault("API_HOST", "127.0.0.1")
    env.setdefault("LOG_FORMAT", "text")  # readable lines at a terminal
    host, port = env["API_HOST"], int(env.get("API_PORT") or 8080)
    if not _port_free(host, port):
        _say(f"port {port} on {host} is taken by another program; "
             f"run: API_PORT={_a_free_port(host, port)} make dev")  # fmt: skip
        return EXIT_USAGE
    db_port = int(env.get("DEV_DATABASE_PORT") or 54329)
    if not (DEV_DIR / "pg" / "data" / "postmaster.pid").exists() and not _port_free(
        "127.0.0.1", db_port
    ):
        _say(f"PostgreSQL's port {db_port} is taken by another program; "
             f"run: DEV_DATABASE_PORT={_a_free_port('127.0.0.1', db_port)} make dev")  # fmt: skip
        return EXIT_USAGE
    DEV_DIR.mkdir(parents=True, exist_ok=True)
    pg = TempPostgres(port=db_port, directory=DEV_DIR / "pg").start()
    env["DATABASE_URL"] = pg.url()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        subprocess.run([FLOWFORGE, "migrate"], env=env, check=True)
        token = _token(env)
        # A session of their own: Ctrl-C's SIGINT is ours alone; each gets one SIGTERM.
        procs = [
            subprocess.Popen([FLOWFORGE, cmd], env=env, start_new_session=True)
            for cmd in ("api", "worker")
        ]
        api_url = f"http://{host}:{port}"
        if _wait_until_answering(api_url + "/health", procs, stop):
            print(
                f"\nFlowForge is up: API on {api_url}  (Ctrl-C stops everything; the data "
                f"stays in {DEV_DIR}, `make dev-reset` wipes it)\n"
                f"  export DATABASE_URL={pg.url()}\n"
                f"  export API_URL={api_url}\n"
                f"  export API_TOKEN={token}\n"
                f'  curl -H "Authorization: Bearer $API_TOKEN" $API_URL/v1/tasks\n',
                file=sys.stderr,
                flush=True,
            )
        elif not stop:
            _say("the API did not come up (its lines above say why)")
        while not stop and all(p.poll() is None for p in procs):
            time.sleep(0.2)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=float(env.get("DEV_STOP_TIMEOUT") or 60))
            except subprocess.TimeoutExpired:
                proc.kill()
        pg.stop()
    failed = [p for p in procs if p.returncode not in (0, -signal.SIGTERM)]
    return 1 if failed and not stop else 0


if __name__ == "__main__":
    sys.exit(main())
