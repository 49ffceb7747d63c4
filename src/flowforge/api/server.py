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

Slow clients: gunicorn's sync worker reads a request with blocking calls and no timeout of
its own, so a client that stops mid-request holds the worker until ``API_TIMEOUT`` kills it
(a 500). ``ReadingWorker`` gives each connection ``API_READ_TIMEOUT`` from its accept to
deliver the whole request (408 after that) and answers a first byte no HTTP request starts
with (a TLS ClientHello on this plain port) with a 400 at once.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gunicorn import util as gunicorn_util
from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger
from gunicorn.http.body import ChunkedReader
from gunicorn.http.errors import ParseException
from gunicorn.workers.sync import SyncWorker

from ..config import (
    ConfigError,
    Settings,
    check_api_timeouts,
    format_duration,
    load_settings,
    read_env_file,
)
from .envelope import ERROR_CODES, REQUEST_ID_HEADER, error_body, request_id_from

log = logging.getLogger("flowforge.api")


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's answer to a request it cannot parse (bad request line, oversized headers,
    broken chunking), in FlowForge's JSON envelope with a request ID instead of gunicorn's
    HTML page: such requests never reach the app, so this is the only place to fix them."""
    rid = request_id_from(None)
    code = ERROR_CODES.get(status_int, "internal_error" if status_int >= 500 else "bad_request")
    body = error_body(code, mesg or reason)
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{REQUEST_ID_HEADER}: {rid}\r\n\r\n"
    )
    log.warning("malformed request: %s %s", status_int, mesg, extra={"request_id": rid})
    gunicorn_util.write_nonblock(sock, head.encode("latin-1") + body)


class ClientFault(ParseException):
    """A request FlowForge refuses while gunicorn reads it: ``status`` and ``reason`` are the
    answer's. A ``ParseException``, so the app's body reader (``inputs.read_json``) takes it
    as the body's failure; it answers with ``status``, found by attribute (the worker's
    classes are the arbiter's copy of this module, the app's a fresh import)."""

    status = 400
    reason = "Bad Request"


class RequestTimeout(ClientFault):
    status = 408
    reason = "Request Timeout"


class ChunkTooLarge(ClientFault):
    status = 413
    reason = "Payload Too Large"


# A request starts with its method, a token (RFC 9110 5.6.2), or with the CR of the one
# empty line RFC 9112 2.2 allows before it. gunicorn waits for the line's CRLF before it
# looks: a TLS ClientHello (first byte 0x16) has none, so it waited for API_TIMEOUT.
_REQUEST_START = frozenset(
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz\r"
)
_TLS_HANDSHAKE = 0x16
_LAST_LOOK = 0.001  # seconds a read past the deadline waits for bytes already sent


class DeadlineSocket(socket.socket):
    """An accepted connection whose request must have arrived by a deadline: each read
    waits at most until then, and raises ``RequestTimeout`` after it. A whole-request bound,
    not one per read, so a client trickling a byte a second is cut off too.

    Only reads have the deadline, and only until gunicorn starts closing (``shutdown``):
    its own drain after the answer has a timeout of its own. Sends block as before."""

    __slots__ = ("_deadline", "_limit", "_started")

    @classmethod
    def adopt(cls, sock: socket.socket, read_timeout: float) -> DeadlineSocket:
        """``sock``'s connection (its descriptor) as a ``DeadlineSocket``; ``sock`` is left
        detached."""
        new = cls(sock.family, sock.type, sock.proto, fileno=sock.detach())
        new._deadline = time.monotonic() + read_timeout
        new._limit = read_timeout
        new._started = False
        return new

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if self._deadline is None:
            return super().recv(bufsize, flags)
        # Past the deadline a read still takes what has already arrived: the time the app
        # spent before it read the body (a slow token check), or the connection waited in
        # the backlog, is not the client's.
        self.settimeout(max(self._deadline - time.monotonic(), _LAST_LOOK))
        try:
            data = super().recv(bufsize, flags)
        except TimeoutError:
            raise self._timeout() from None
        finally:
            self.settimeout(None)  # blocking again, as gunicorn made it
        if not self._started and data:
            self._started = True
            if data[0] not in _REQUEST_START:
                raise ClientFault(
                    "a TLS handshake on a plain HTTP port (use https:// through the proxy, or "
                    "http:// here)"
                    if data[0] == _TLS_HANDSHAKE
                    else f"not an HTTP request (it starts with byte 0x{data[0]:02x})"
                )
        return data

    def _timeout(self) -> RequestTimeout:
        return RequestTimeout(
            f"the request did not arrive within {format_duration(self._limit)} (API_READ_TIMEOUT)"
        )

    def shutdown(self, how: int) -> None:
        self._deadline = None
        super().shutdown(how)


class ReadingWorker(SyncWorker):
    """gunicorn's sync worker (measured fastest here) with the request read under
    ``API_READ_TIMEOUT`` (``DeadlineSocket``) and FlowForge's refusals (``ClientFault``)
    answered in the envelope. ``read_timeout`` and ``max_body`` are set on the class by
    ``ApiServer.load_config`` in the arbiter, before it forks the workers."""

    read_timeout = 5.0
    max_body = 1024 * 1024

    def handle(self, listener: Any, client: socket.socket, addr: Any) -> None:
        super().handle(listener, DeadlineSocket.adopt(client, self.read_timeout), addr)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        if isinstance(exc, ClientFault):  # gunicorn would answer an exception of ours 500
            with contextlib.suppress(OSError):
                write_json_error(client, exc.status, exc.reason, str(exc))
            return
        super().handle_error(req, client, addr, exc)


_parse_chunk_size = ChunkedReader.parse_chunk_size


def _bounded_parse_chunk_size(self: ChunkedReader, *args: Any, **kwargs: Any) -> Any:
    """gunicorn's chunk-size parser, refusing a chunk larger than the largest body at its
    size line: gunicorn would otherwise wait for all of a 2**80-byte chunk."""
    size, rest = _parse_chunk_size(self, *args, **kwargs)
    if size > ReadingWorker.max_body:
        raise ChunkTooLarge(
            f"a chunk of {size} bytes is larger than the largest body, "
            f"{ReadingWorker.max_body} bytes (API_MAX_BODY)"
        )
    return size, rest


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
            "worker_class": ReadingWorker,
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
        # gunicorn's workers call util.write_error for requests they cannot parse.
        gunicorn_util.write_error = write_json_error
        ReadingWorker.read_timeout = s.api_read_timeout
        ReadingWorker.max_body = s.api_max_body
        ChunkedReader.parse_chunk_size = _bounded_parse_chunk_size

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
