"""``flowforge api``: gunicorn serving the app, configured from the environment.

Reload (``systemctl reload flowforge-api`` = ``flowforge api --reload MAINPID``): SIGHUP to
gunicorn's arbiter, which re-reads the env file (``--env-file``), starts new workers and lets
the old ones finish their requests. Each worker imports FlowForge afresh after the fork, so
new workers run the installed code and the current settings; the listening socket never
closes, so no request fails.

``--reload`` never looks at ``/proc`` (a hardened unit's ``ProtectProc=invisible`` hides the
arbiter from its own ExecReload): the arbiter reports instead. It keeps a small status file,
``reload_status_path(pid)`` in ``$RUNTIME_DIRECTORY`` (systemd's, shared by ExecStart and
ExecReload) or the temporary directory: a reload generation, bumped when a HUP is handled,
and the workers from before it that still run. ``--reload`` waits for a newer generation
with none of those left.

Slow clients and requests gunicorn cannot parse: ``reading`` (the worker class).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger

from ..config import (
    ConfigError,
    Settings,
    check_api_timeouts,
    load_settings,
    read_env_file,
)
from . import reading

log = logging.getLogger("flowforge.api")


def prepare_metrics_dir(directory: str) -> None:
    """Before any gunicorn worker starts (and before prometheus-client is imported, which
    picks its multiprocess mode from the environment at import): the workers' metrics
    files go to ``directory``, emptied of a previous run's, so counters start at zero with
    the service. A reload (HUP) keeps them: the sums go on across new workers."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.unlink(os.path.join(directory, name))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory


def reload_status_path(arbiter: int) -> Path:
    """Where the arbiter ``arbiter`` reports its reloads: ``$RUNTIME_DIRECTORY`` (the first
    one, as systemd sets it for every command of the unit), else the temporary directory."""
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(runtime or tempfile.gettempdir()) / f"flowforge-api-{arbiter}.reload.json"


class ReloadStatus:
    """The arbiter's account of its reloads, kept in ``reload_status_path``: the generation
    (reloads handled) and the workers from before the last one that still run. Written
    whole and renamed into place, so a reader never sees half a file."""

    def __init__(self, arbiter: int) -> None:
        self.path = reload_status_path(arbiter)
        self.arbiter = arbiter
        self.generation = 0
        self.old_workers: set[int] = set()

    def write(self) -> None:
        body = {
            "arbiter": self.arbiter,
            "generation": self.generation,
            "old_workers": sorted(self.old_workers),
        }
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".flowforge-api-reload-")
        with os.fdopen(fd, "w") as out:
            json.dump(body, out)
        os.replace(tmp, self.path)

    def on_reload(self, server: Any) -> None:
        """gunicorn's hook in the arbiter, on SIGHUP before it starts the new workers:
        every worker running now is old."""
        self.generation += 1
        self.old_workers = set(server.WORKERS)
        self.write()

    def child_exit(self, server: Any, worker: Any) -> None:
        """gunicorn's hook in the arbiter when a worker exits: its live gauges go, its
        counters stay in the sums; an old worker leaves the status."""
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid, os.environ["PROMETHEUS_MULTIPROC_DIR"])
        if worker.pid in self.old_workers:
            self.old_workers.discard(worker.pid)
            self.write()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class JsonGunicornLogger(GunicornLogger):
    """gunicorn's own messages go through our JSON (or journald) handler.

    The app logs one access line per request itself, with the request ID, so gunicorn's
    access log stays off.
    """

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for logger in (self.error_log, self.access_log):
            logger.handlers.clear()
            logger.propagate = True
        self.error_log.setLevel(logging.NOTSET)


class ApiServer(BaseApplication):
    def __init__(self, settings: Settings, env_file: Path | None = None) -> None:
        self.settings = settings
        self.env_file = env_file
        self._file_keys: set[str] = set()
        if env_file is not None:
            try:  # systemd set these from the file at start; a reload may drop some
                self._file_keys = set(read_env_file(env_file))
            except (OSError, ValueError) as exc:
                log.warning("env file %s unreadable at start: %s", env_file, exc)
        self._configured = False
        self.status = ReloadStatus(os.getpid())
        super().__init__()

    def _reread_env_file(self) -> None:
        """On reload: take the env file's current variables, if they make a valid
        configuration; otherwise keep the running one and say why."""
        assert self.env_file is not None
        try:
            values = read_env_file(self.env_file)
            environ = {k: v for k, v in os.environ.items() if k not in self._file_keys}
            settings = load_settings(environ | values)
            check_api_timeouts(settings)
        except (OSError, ValueError, ConfigError) as exc:
            log.error("reload: keeping the running configuration: %s", exc)
            return
        for key in self._file_keys - values.keys():
            os.environ.pop(key, None)
        os.environ.update(values)
        self._file_keys = set(values)
        self.settings = settings
        log.info("reload: configuration re-read from %s", self.env_file)

    def load_config(self) -> None:
        if self._configured and self.env_file is not None:  # SIGHUP: gunicorn reloads
            self._reread_env_file()
        self._configured = True
        s = self.settings
        options = {
            "bind": [f"{s.api_host}:{s.api_port}"],
            "workers": s.api_workers,
            # Sync workers measured fastest (5-15 % more req/s than gthread 2x4); one
            # request at a time per process, so a pool of DATABASE_POOL_SIZE is plenty.
            # ReadingWorker is the sync worker with a bound on reading the request.
            "worker_class": reading.ReadingWorker,
            "timeout": int(s.api_timeout),
            "graceful_timeout": int(s.api_graceful_timeout),
            "keepalive": 5,
            "proc_name": "flowforge-api",
            "logger_class": JsonGunicornLogger,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": s.log_level,
            "limit_request_line": 8190,
            # Behind a proxy (Vagrant port forward, a load balancer), trust nobody's
            # X-Forwarded-* unless the operator sets FORWARDED_ALLOW_IPS.
            "forwarded_allow_ips": "127.0.0.1",
            # ... and no SCRIPT_NAME or PATH_INFO header from anyone (gunicorn takes them
            # from forwarded_allow_ips by default; a SCRIPT_NAME the path does not start
            # with was a 500). FlowForge is served at the root: with no forwarder headers,
            # header_map "drop" discards them as any header with an underscore.
            "forwarder_headers": "",
            "child_exit": self.status.child_exit,
            "on_reload": self.status.on_reload,
        }
        # gunicorn >= 25 opens a control socket under $HOME (or $XDG_RUNTIME_DIR) for its
        # gunicornc tool by default. FlowForge is driven by signals and systemd, and the
        # hardened unit's home is read-only: no socket, no stray file, no boot log line.
        if "control_socket_disable" in self.cfg.settings:
            options["control_socket_disable"] = True
        for key, value in options.items():
            self.cfg.set(key, value)
        reading.install(s.api_read_timeout, s.api_max_body)

    def load(self) -> Any:
        """In each worker after the fork: FlowForge imported afresh from disk (the arbiter
        holds the modules of the version it started with), configured from the current
        environment, which the arbiter updated on reload."""
        for name in [n for n in sys.modules if n == "flowforge" or n.startswith("flowforge.")]:
            del sys.modules[name]
        importlib.invalidate_caches()
        config = importlib.import_module("flowforge.config")
        logs = importlib.import_module("flowforge.logs")
        app = importlib.import_module("flowforge.api.app")
        settings = config.load_settings()
        logs.configure_logging("api", settings.log_level, log_format=settings.log_format)
        # A sync worker runs one request at a time: it keeps its database connection.
        return app.create_app(settings, keep_connection=True)


def serve(settings: Settings, env_file: Path | None = None) -> None:
    """Run gunicorn in the foreground until SIGTERM/SIGINT (graceful) or SIGQUIT;
    SIGHUP reloads (``env_file`` re-read, workers replaced)."""
    own_dir = None
    arbiter = os.getpid()
    if settings.api_metrics_dir:
        prepare_metrics_dir(settings.api_metrics_dir)
    else:  # a private directory of our own, gone when the API stops
        own_dir = tempfile.mkdtemp(prefix="flowforge-api-metrics-")
        prepare_metrics_dir(own_dir)
    server = ApiServer(settings, env_file)
    server.status.write()
    try:
        server.run()
    finally:
        # gunicorn's workers leave run() through here too (SystemExit): only the arbiter
        # removes the directory and the status, once every worker has gone.
        if os.getpid() == arbiter:
            server.status.remove()
            if own_dir is not None:
                shutil.rmtree(own_dir, ignore_errors=True)


class ReloadError(Exception):
    """The reload did not complete; the message says what happened."""


def _read_status(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ReloadError(f"unreadable status {path}: {exc}") from None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def reload(pid: int, timeout: float = 55.0) -> float:
    """SIGHUP to the arbiter ``pid``, then wait until it reports a newer reload generation
    with every worker from before it gone (they finish their requests first; new ones were
    started before the old ones were told to stop). Returns the seconds it took.

    This is ExecReload: ``systemctl reload`` returns once the new code serves, which a rolling
    upgrade needs before it puts the host back behind the balancer.
    """
    started = time.monotonic()
    path = reload_status_path(pid)
    status = _read_status(path)
    if status is None or status.get("arbiter") != pid:
        if not _alive(pid):
            raise ReloadError(f"no process {pid}")
        raise ReloadError(f"no reload status at {path}: is {pid} a FlowForge API's arbiter?")
    generation = status["generation"]
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise ReloadError(f"no process {pid}") from None
    while time.monotonic() - started < timeout:
        time.sleep(0.1)
        status = _read_status(path)
        if status is None or not _alive(pid):
            raise ReloadError(f"the API's main process {pid} exited during the reload")
        if status["generation"] > generation and not status["old_workers"]:
            return time.monotonic() - started
    raise ReloadError(f"workers from before the reload still run after {timeout:.0f}s")
