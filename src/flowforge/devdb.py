"""A throwaway PostgreSQL server, for the test suite and ``make dev``.

Runs Debian's PostgreSQL binaries (``/usr/lib/postgresql/<v>/bin``) on a private data
directory and port. PostgreSQL refuses to run as root, so as root the cluster belongs to
the ``postgres`` user (created by Debian's postgresql-common package).
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


def _bindir() -> Path:
    override = os.environ.get("PG_BINDIR")
    if override:
        return Path(override)
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if not found:
        raise RuntimeError("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
    return Path(found[-1]).parent


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

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self._user:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True)

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
        log = str(self.dir / "log")
        # -p: a kept cluster listens on this run's port, whatever its file says.
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", log, "-w", "-t", "60",
                  "-o", f"-p {self.port}", "start")  # fmt: skip

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
