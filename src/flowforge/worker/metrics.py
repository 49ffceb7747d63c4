"""A worker process's Prometheus metrics, served on its own port (``WORKER_METRICS_PORT``,
plus ``WORKER_INSTANCE`` - 1 for instance N of ``flowforge-worker@N``; 0 = off).

The runner calls ``task_finished`` where an outcome is decided (once the database has
accepted it or not) and ``task_claimed`` for each task a claim hands out, the retention
duty ``tasks_pruned`` for what it deleted; ``busy`` is read
at scrape time, so the hot path pays for two counter/histogram updates per task and
nothing else. With metrics off every call is a no-op.

A worker is one process: prometheus_client's ordinary (in-process) values, never its
multiprocess files, whatever the environment says.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ..config import Settings, address_allowed
from ..stores.ops_sql import PRUNABLE

log = logging.getLogger("flowforge.worker")

OUTCOMES = ("completed", "retried", "failed", "cancelled", "lease_lost", "snoozed", "discarded")
# Seconds: tasks run from a millisecond (noop) to TASK_TIMEOUT (15 minutes by default).
DURATION_BUCKETS = (0.001, 0.005, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0, 30.0, 60.0, 300.0, 900.0)
# Seconds from due (run_at) to claimed: milliseconds while workers keep up.
PICKUP_BUCKETS = (0.005, 0.025, 0.1, 0.25, 1.0, 2.5, 10.0, 30.0, 60.0, 300.0, 1800.0)


class NullMetrics:
    """Metrics off (``WORKER_METRICS_PORT=0``): every call does nothing."""

    address: tuple[str, int] | None = None

    def start(self, busy: Callable[[], float], capacity: int) -> None:
        pass

    def stop(self) -> None:
        pass

    def task_claimed(self, queue: str, waited: float) -> None:
        pass

    def task_finished(self, queue: str, task_type: str, outcome: str, seconds: float) -> None:
        pass

    def tasks_pruned(self, status: str, count: int) -> None:
        pass


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scraper holds only its own thread


class WorkerMetrics(NullMetrics):
    """The worker's metrics and the HTTP server that exposes them."""

    def __init__(self, settings: Settings, address: tuple[str, int]) -> None:
        # Imported here: a process that never serves worker metrics never loads the client.
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)  # this process has one set of values
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.address = address
        self.allow = settings.metrics_allow
        self.registry = CollectorRegistry(auto_describe=True)
        self.processed = Counter(
            "flowforge_tasks_processed_total",
            "Task runs this worker finished, by how they ended (completed, retried, failed, "
            "cancelled, lease_lost: the outcome was discarded because the lease had expired)",
            ["queue", "type", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "flowforge_task_duration_seconds",
            "How long a task's handler ran, by queue and type",
            ["queue", "type"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.pickup = Histogram(
            "flowforge_task_pickup_delay_seconds",
            "From when a task was due (run_at) until a worker claimed it, by queue",
            ["queue"],
            buckets=PICKUP_BUCKETS,
            registry=self.registry,
        )
        self.busy = Gauge(
            "flowforge_worker_busy",
            "Tasks this worker process is running right now",
            registry=self.registry,
        )
        self.capacity = Gauge(
            "flowforge_worker_capacity",
            "Tasks this worker process runs at most at once (WORKER_CONCURRENCY)",
            registry=self.registry,
        )
        self.pruned = Counter(
            "flowforge_tasks_pruned_total",
            "Finished tasks this worker deleted as older than TASK_RETENTION, by status",
            ["status"],
            registry=self.registry,
        )
        for status in PRUNABLE:  # every series from the start: rate() needs a zero
            self.pruned.labels(status)
        # The children of a label set, looked up once (labels() costs more than inc()).
        self._finished: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._pickup: dict[str, Any] = {}
        self._server: _Server | None = None

    # --- recording (the dispatcher's hot path) ------------------------------------------
    def task_claimed(self, queue: str, waited: float) -> None:
        child = self._pickup.get(queue)
        if child is None:
            child = self._pickup[queue] = self.pickup.labels(queue)
        child.observe(waited if waited > 0 else 0.0)

    def task_finished(self, queue: str, task_type: str, outcome: str, seconds: float) -> None:
        key = (queue, task_type, outcome)
        children = self._finished.get(key)
        if children is None:
            children = self._finished[key] = (
                self.processed.labels(queue, task_type, outcome),
                self.duration.labels(queue, task_type),
            )
        children[0].inc()
        children[1].observe(seconds)

    def tasks_pruned(self, status: str, count: int) -> None:
        self.pruned.labels(status).inc(count)

    # --- serving ------------------------------------------------------------------------
    def app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        from prometheus_client.exposition import choose_encoder

        if not address_allowed(environ.get("REMOTE_ADDR"), self.allow):
            start_response("403 Forbidden", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"forbidden: this address may not read metrics (METRICS_ALLOW)\n"]
        if environ.get("PATH_INFO", "/") not in ("/", "/metrics"):
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found: metrics are at /metrics\n"]
        encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT"))
        body = encoder(self.registry)
        start_response("200 OK", [("Content-Type", content_type)])
        return [body]

    def start(self, busy: Callable[[], float], capacity: int) -> None:
        """Listen on ``address`` in a daemon thread. A port that cannot be bound (in use)
        is logged and the worker runs on without metrics: tasks matter more."""
        self.busy.set_function(busy)
        self.capacity.set(capacity)
        host, port = self.address  # type: ignore[misc]
        try:
            self._server = make_server(
                host, port, self.app, server_class=_Server, handler_class=_QuietHandler
            )
        except OSError as exc:
            log.error(
                "worker metrics disabled: cannot listen on %s:%s: %s",
                host,
                port,
                exc.strerror or exc,
                extra={"metrics_port": port},
            )
            return
        thread = threading.Thread(
            target=self._server.serve_forever, name="flowforge-metrics", daemon=True
        )
        thread.start()
        log.info("worker metrics on http://%s:%s/metrics", host, port, extra={"metrics_port": port})

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def make_metrics(settings: Settings) -> NullMetrics:
    """The worker's metrics as configured: served, or a no-op when the port is 0."""
    address = settings.worker_metrics_address
    if address is None:
        return NullMetrics()
    return WorkerMetrics(settings, address)
