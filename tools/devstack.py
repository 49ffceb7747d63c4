#!/usr/bin/env python3
"""`make dev`: FlowForge on this machine, against its own PostgreSQL.

The database is kept between runs (`make dev-reset` wipes it) on a fixed port
(DEV_DATABASE_PORT, 54329), so DATABASE_URL and the data stay the same. It lives in
`.dev/pg` (git-ignored), except as root: see cluster_dir. Checks that no other `make dev`
runs in this clone and that API_PORT (8080) is free, migrates, then runs `flowforge api`
and `flowforge worker` (readable lines: LOG_FORMAT=text unless set) and prints the banner
once the API answers. One Ctrl-C stops everything gracefully: the services run in a
session of their own, so the terminal's SIGINT reaches only this script, which sends each
one SIGTERM (running tasks get WORKER_SHUTDOWN_TIMEOUT to finish); a second Ctrl-C stops
them at once (the worker's second SIGTERM gives its running tasks back; gunicorn's SIGQUIT
is its quick shutdown). A failure to start is one line saying what to do. The variables
of docs/configuration.md are honoured.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from flowforge.devdb import PostgresError, TempPostgres

BIN = Path(sys.executable).parent  # the virtualenv's bin: `flowforge`, its pip
FLOWFORGE = str(BIN / "flowforge")
ROOT = Path(__file__).resolve().parent.parent
DEV_DIR = Path(os.environ.get("FLOWFORGE_DEV_DIR") or ROOT / ".dev")
# As root, where the kept clusters live: one per clone, named by a hash of its .dev path.
ROOT_CLUSTERS = Path("/var/lib/flowforge-dev")
EXIT_FAILURE = 1
EXIT_USAGE = 2


class StartError(Exception):
    """make dev cannot start; the message is the one line saying why and what to do."""


def _say(message: str) -> None:
    # OSError: the terminal is gone (its window closed: SIGHUP); stopping goes on.
    with contextlib.suppress(OSError):
        print(f"make dev: {message}", file=sys.stderr, flush=True)


def _port_free(host: str, port: int) -> bool:
    """False if something listens there; a StartError if ``host`` cannot be bound at all
    (not an address of this machine, a name that does not resolve): no port would do, so
    advice to change the port would send the user round in circles."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            reason = exc.strerror or str(exc)
            raise StartError(
                f"cannot listen on API_HOST={host!r} ({reason}): set it to an address of "
                "this machine, e.g. 127.0.0.1"
            ) from None
    return True


def _a_free_port(host: str, start: int) -> int | str:
    """A free port above ``start`` to suggest, or what to put instead when none is."""
    return next((p for p in range(start + 1, start + 100) if _port_free(host, p)), "<a free port>")


def _port_setting(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name) or str(default)
    port = int(raw) if raw.isdigit() else -1
    if not 0 < port < 65536:
        raise StartError(f"{name}={raw!r} is not a TCP port: set a number from 1 to 65535")
    return port


def cluster_dir(dev_dir: Path) -> Path:
    """Where make dev keeps its PostgreSQL cluster: ``dev_dir/pg``, except as root.

    PostgreSQL refuses to run as root, so as root the cluster runs as the postgres user,
    who must reach its data directory: a clone in /root (mode 700) or in a `mktemp -d`
    directory is closed to it. Opening the way (a chmod or an ACL on the user's home and
    every directory above the clone) would change who may look into the user's files, and
    /tmp would not keep the data. So as root the cluster lives in
    /var/lib/flowforge-dev/<hash of the clone's .dev path>, beside Debian's own clusters
    in /var/lib/postgresql, and ``.dev/pg`` links to it (make dev-reset removes both). A
    ``.dev/pg`` cluster made earlier, where postgres could reach it, stays in use.
    """
    local = dev_dir / "pg"
    if os.geteuid() != 0 or (not local.is_symlink() and (local / "data" / "PG_VERSION").exists()):
        return local
    key = hashlib.sha256(str(dev_dir.resolve()).encode()).hexdigest()[:16]
    return ROOT_CLUSTERS / key


def _link_cluster(dev_dir: Path, cluster: Path) -> None:
    """``.dev/pg`` -> the cluster, so make dev-reset (and a curious user) find it."""
    local = dev_dir / "pg"
    if local == cluster:
        return
    cluster.mkdir(parents=True, exist_ok=True)
    (cluster / "clone").write_text(f"{dev_dir.resolve()}\n")  # whose cluster this is
    if local.is_symlink():
        if local.resolve() == cluster.resolve():
            return
        local.unlink()
    elif local.exists():  # a failed first run's leftovers (no cluster: see cluster_dir)
        shutil.rmtree(local)
    local.symlink_to(cluster)


def _claim_clone(api_url: str) -> IO[str]:
    """Hold ``.dev/devstack.lock`` while this make dev runs (an flock: released however the
    process ends); a second make dev in the clone says where the first one is."""
    lock = open(DEV_DIR / "devstack.lock", "a+")  # noqa: SIM115 (held until we exit)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        try:
            other = json.loads(lock.read())
            where = f"API on {other['api_url']}, pid {other['pid']}"
            how = f"Ctrl-C in its terminal, or `kill {other['pid']}`"
        except (ValueError, KeyError, TypeError):
            where, how = "still starting", "Ctrl-C in its terminal"
        lock.close()
        raise StartError(
            f"make dev is already running in this clone ({where}): use that one, "
            f"or stop it first ({how})"
        ) from None
    lock.seek(0)
    lock.truncate()
    lock.write(json.dumps({"pid": os.getpid(), "api_url": api_url}))
    lock.flush()
    return lock


PR_SET_PDEATHSIG = 1  # prctl(2)


def _end_with_make_dev(parent: int) -> None:
    """Run in each service's process before its exec: SIGTERM when this script's process
    ends, however it ends. Killed (SIGKILL, the OOM killer) it could not stop them, and
    in their own sessions nothing else does: they held the API's port, and the next make
    dev said it was taken by another program."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: no such call
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it ended before the call above
        os.kill(os.getpid(), signal.SIGTERM)


def _flowforge(env: dict[str, str], *args: str) -> str:
    """``flowforge ARGS`` run to its end: its stdout, or a StartError with its error line."""
    done = subprocess.run([FLOWFORGE, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        raise StartError(
            f"`flowforge {' '.join(args[:2])}` failed: {lines[-1] if lines else 'no output'}"
        )
    return done.stdout


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
    name = f"dev-{int(time.time())}"
    token = _flowforge(env, "token", "create", name, "--scope", "write").strip()
    path.write_text(token + "\n")
    path.chmod(0o600)
    return token


def banner(api_url: str, database_url: str, token: str, cluster: Path) -> str:
    """What make dev prints once the API answers: where everything is, and the exports
    under the names the README's examples use (API_URL, API_TOKEN; PATH for `flowforge`)."""
    return (
        f"\nFlowForge is up: API on {api_url}  (make dev's pid {os.getpid()})\n"
        f"  dashboard  {api_url}/dashboard  (it asks for the API_TOKEN below)\n"
        f"  API docs   {api_url}/docs\n"
        f"  data       {cluster}  (kept between runs; `make dev-reset` wipes it)\n"
        f"Ctrl-C stops everything gracefully; a second Ctrl-C stops at once.\n"
        f"In another terminal (the `flowforge` command, the README's examples):\n"
        f"  export PATH={BIN}:$PATH\n"
        f"  export DATABASE_URL={database_url}\n"
        f"  export API_URL={api_url}\n"
        f"  export API_TOKEN={token}\n"
        f'  curl -H "Authorization: Bearer $API_TOKEN" $API_URL/v1/tasks\n'
    )


def _stop(procs: dict[str, subprocess.Popen[bytes]], stop: list[bool], env: dict[str, str]) -> None:
    """SIGTERM to each (graceful); a stop signal arriving meanwhile stops them at once."""
    asked = len(stop)
    running = {name: p for name, p in procs.items() if p.poll() is None}
    if not running:
        return
    grace = env.get("WORKER_SHUTDOWN_TIMEOUT") or "30s"
    _say(f"stopping: running tasks get up to {grace} (WORKER_SHUTDOWN_TIMEOUT) to finish; "
         "Ctrl-C again stops at once (they go back to pending)")  # fmt: skip
    for proc in running.values():
        proc.terminate()
    deadline = time.monotonic() + float(env.get("DEV_STOP_TIMEOUT") or 60)
    forced = False
    while any(p.poll() is None for p in running.values()):
        if not forced and len(stop) > asked:
            forced = True
            _say("stopping at once: running tasks go back to pending")
            for name, proc in running.items():
                if proc.poll() is None:
                    # The worker's second SIGTERM ends its runs and gives their tasks
                    # back; SIGQUIT is gunicorn's quick shutdown.
                    proc.send_signal(signal.SIGQUIT if name == "api" else signal.SIGTERM)
        if time.monotonic() > deadline:
            for proc in running.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            break
        time.sleep(0.05)


def _run(stop: list[bool]) -> int:
    env = {**os.environ}
    env.setdefault("API_HOST", "127.0.0.1")
    env.setdefault("LOG_FORMAT", "text")  # readable lines at a terminal
    host = env["API_HOST"]
    port = _port_setting(env, "API_PORT", 8080)
    db_port = _port_setting(env, "DEV_DATABASE_PORT", 54329)
    api_url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    DEV_DIR.mkdir(parents=True, exist_ok=True)
    lock = _claim_clone(api_url)  # before the ports: a second make dev would hold them
    try:
        if not _port_free(host, port):
            _say(f"port {port} on {host} is taken by another program; "
                 f"run: API_PORT={_a_free_port(host, port)} make dev")  # fmt: skip
            return EXIT_USAGE
        cluster = cluster_dir(DEV_DIR)
        if not (cluster / "data" / "postmaster.pid").exists() and not _port_free(
            "127.0.0.1", db_port
        ):
            free = _a_free_port("127.0.0.1", db_port)
            _say(f"PostgreSQL's port {db_port} is taken by another program; "
                 f"run: DEV_DATABASE_PORT={free} make dev")  # fmt: skip
            return EXIT_USAGE
        _link_cluster(DEV_DIR, cluster)
        pg = TempPostgres(port=db_port, directory=cluster)
        if (cluster / "data" / "postmaster.pid").exists():
            # This clone's lock is ours, so no make dev runs here: a server left by one that
            # was killed (SIGKILL, a closed terminal). Stop it; this run starts its own.
            pg.stop()
        try:
            pg.start()
        except PostgresError as exc:
            raise StartError(f"{exc}; fix that, or start afresh with `make dev-reset` "
                             "(it wipes the data)") from None  # fmt: skip
        try:
            return _serve(env, api_url, pg, cluster, stop)
        finally:
            pg.stop()
    finally:
        lock.close()


def _serve(
    env: dict[str, str], api_url: str, pg: TempPostgres, cluster: Path, stop: list[bool]
) -> int:
    env["DATABASE_URL"] = pg.url()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        sys.stderr.write(_flowforge(env, "migrate"))
        token = _token(env)
        # A session of their own: Ctrl-C's SIGINT is ours alone; each gets one SIGTERM.
        for cmd in ("api", "worker"):
            if not stop:
                procs[cmd] = subprocess.Popen(
                    [FLOWFORGE, cmd], env=env, start_new_session=True,
                    preexec_fn=functools.partial(_end_with_make_dev, os.getpid()),
                )  # fmt: skip
        if procs and _wait_until_answering(api_url + "/health", list(procs.values()), stop):
            print(banner(api_url, pg.url(), token, cluster), file=sys.stderr, flush=True)
        elif not stop:
            dead = [f"`flowforge {name}` exited with {p.returncode}"
                    for name, p in procs.items() if p.poll() is not None]  # fmt: skip
            _say(f"the API did not come up ({', '.join(dead) or 'no answer in 90 s'}): "
                 "its lines above say why")  # fmt: skip
        while not stop and all(p.poll() is None for p in procs.values()):
            time.sleep(0.2)
    finally:
        _stop(procs, stop, env)
    failed = [p for p in procs.values() if p.returncode not in (0, -signal.SIGTERM)]
    return EXIT_FAILURE if failed and not stop else 0


def main() -> int:
    stop: list[bool] = []
    # SIGHUP too: a closed terminal window sends it to make and this script, never to the
    # services in their own sessions; left to kill this script, it left the API, the
    # worker and PostgreSQL running, and the next make dev found its port "taken by
    # another program". It stops them as one Ctrl-C does.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: stop.append(True))
    try:
        return _run(stop)
    except (StartError, PostgresError) as exc:
        if stop:  # Ctrl-C while starting: what it interrupted failed, as asked
            return 0
        _say(str(exc))
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
