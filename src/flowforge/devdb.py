"""A throwaway PostgreSQL server, for the test suite and ``make dev``.

Runs Debian's PostgreSQL binaries (``/usr/lib/postgresql/<v>/bin``) on a private data
directory and port. PostgreSQL refuses to run as root, so as root the cluster belongs to
the ``postgres`` user (created by Debian's postgresql-common package), who must be able to
reach the directory (``make dev`` picks one: tools/devstack.py, cluster_dir). A failure to
set it up or start it is a PostgresError whose message is one line.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

_INSTALL = "install Debian's postgresql-15 (make dev-deps) or set PG_BINDIR to its bin directory"


class PostgresError(RuntimeError):
    """The server could not be set up or started; the message is one line saying why."""


def _bindir() -> Path:
    override = os.environ.get("PG_BINDIR")
    if override:
        if not (Path(override) / "initdb").is_file():
            raise PostgresError(f"PG_BINDIR={override} has no initdb: {_INSTALL}")
        return Path(override)
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if not found:
        raise PostgresError(
            f"no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: {_INSTALL}"
        )
    return Path(found[-1]).parent


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _log_reason(log: Path, start: int) -> str | None:
    """The server's own last FATAL or ERROR line written since ``start`` (the log's size
    before): what pg_ctl's "could not start server" leaves to the log (the port taken, a
    data directory locked by another server)."""
    try:
        with open(log, "rb") as fh:
            fh.seek(start)
            lines = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        for level in ("FATAL:", "PANIC:", "ERROR:"):
            if level in line:
                return line[line.index(level) :].strip()
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TempPostgres:
    """initdb + pg_ctl start on a fresh directory; ``stop()`` removes everything."""

    def __init__(
        self, *, port: int | None = None, base: str | None = None, directory: Path | None = None
    ) -> None:
        """``directory``: keep the cluster there between runs (``start`` reuses it;
        ``make dev``) instead of a fresh temporary one."""
        self.port = port or free_port()
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            self.dir = directory.resolve()
        else:
            self.dir = Path(tempfile.mkdtemp(prefix="flowforge-pg-", dir=base))
        self.data = self.dir / "data"
        self.bindir = _bindir()
        self.password = "flowforge"
        self._user: str | None = "postgres" if os.geteuid() == 0 else None
        if self._user:
            try:
                pwd.getpwnam(self._user)
            except KeyError:
                raise PostgresError(
                    "as root PostgreSQL runs as the postgres user, and there is none: "
                    "install Debian's postgresql-15 (it makes the user)"
                ) from None

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self._user:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        # cwd "/": the postgres user may not be allowed into the caller's directory.
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, cwd="/" if self._user else None
            )
        except OSError as exc:  # no such program (a wrong PG_BINDIR), not executable
            raise PostgresError(f"cannot run {args[0]}: {exc.strerror}: {_INSTALL}") from None
        if check and done.returncode != 0:
            what = Path(args[0]).name + (f" {args[-1]}" if args[-1] in ("start", "stop") else "")
            reason = _last_line(done.stderr + done.stdout)
            raise PostgresError(f"{what} failed for {self.data}: {reason}")
        return done

    def start(self) -> TempPostgres:
        if (self.data / "PG_VERSION").exists():  # kept from an earlier run
            self.start_server()
            return self
        if self._user:
            pw = pwd.getpwnam(self._user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._user:
            os.chown(pwfile, pwd.getpwnam(self._user).pw_uid, -1)
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--pwfile",
            str(pwfile),
            "-A",
            "scram-sha-256",
            "-E",
            "UTF8",
            "--locale",
            "C.UTF-8",
        )
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.dir}'",
            "max_connections": "200",
            "shared_buffers": "256MB",
            "log_min_messages": "warning",
            "logging_collector": "off",
        }
        with open(self.data / "postgresql.conf", "a") as fh:
            fh.writelines(f"{k} = {v}\n" for k, v in conf.items())
        self.start_server()
        return self

    def start_server(self) -> None:
        """Start the (already initialised) cluster and wait until it accepts connections."""
        log = self.dir / "log"
        log_size = log.stat().st_size if log.exists() else 0
        try:
            # -p: a kept cluster listens on this run's port, whatever its file says.
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(log), "-w",
                      "-t", "60", "-o", f"-p {self.port}", "start")  # fmt: skip
        except PostgresError as exc:
            reason = _log_reason(log, log_size) or str(exc)
            raise PostgresError(f"PostgreSQL did not start on port {self.port}: {reason} "
                                f"(its log: {log})") from None  # fmt: skip

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def stop(self, mode: str = "fast") -> None:
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False
        )

    def restart_server(self) -> None:
        """Stop and start the same cluster (connections break, data stays)."""
        self.stop()
        self.start_server()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
