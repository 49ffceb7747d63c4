"""The API's Prometheus metrics: ``GET /metrics``, summed over every gunicorn worker.

- Request metrics (``flowforge_http_requests_total``, ``..._request_duration_seconds``) are
  counted in each gunicorn worker; under ``flowforge api`` prometheus-client's multiprocess
  mode keeps them in files of ``API_METRICS_DIR`` (``server.serve`` points
  ``PROMETHEUS_MULTIPROC_DIR`` there and wipes it before this module is first imported,
  and gunicorn's ``child_exit`` marks exited workers dead), so the worker that answers a
  scrape reports the sum of all of them, exited ones included.
- Queue gauges come from the database when scraped (``QueueCollector``), cached for
  ``CACHE_SECONDS`` so scrapes in quick succession do not repeat the counts.

Labels are bounded: a route is its template (``/v1/tasks/{id}``), never a raw path;
requests no route matched share ``unmatched``; unknown methods are ``other``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from ..domain.fields import DEFAULT_QUEUE
from ..stores.stats import METRIC_STATUSES

log = logging.getLogger("flowforge.api")

UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Seconds; the API answers in about a millisecond unless the database is slow.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CACHE_SECONDS = 5.0
# A scrape never waits long for the database: the gauges are left out instead.
QUERY_TIMEOUT_MS = 2000
_PARAM = re.compile(r"<(\w+)(?::[^>]*)?>")


def route_label(rule: str | None) -> str:
    """``/v1/tasks/<task_id:int>`` -> ``/v1/tasks/{id}`` (the OpenAPI spelling)."""
    if rule is None:
        return UNMATCHED

    def name(match: re.Match[str]) -> str:
        param = match.group(1)
        return "{id}" if param == "id" or param.endswith("_id") else "{" + param + "}"

    return _PARAM.sub(name, rule)


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class RequestMetrics:
    """Per-request counting; one per process (``for_process``)."""

    _instance: RequestMetrics | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "flowforge_http_requests_total",
            "HTTP requests the API answered, by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "flowforge_http_request_duration_seconds",
            "Time the API took to answer, by method and route template",
            ["method", "route"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self._routes: dict[str | None, str] = {}
        # The children of each label set, looked up once: labels() costs more than inc().
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._histograms: dict[tuple[str, str], Any] = {}

    @classmethod
    def for_process(cls) -> RequestMetrics:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def observe(self, method: str, rule: str | None, status: int, seconds: float) -> None:
        """Count one answered request (the hot path: two dict look-ups, three updates)."""
        route = self._routes.get(rule)
        if route is None:
            route = self._routes[rule] = route_label(rule)
        if method not in METHODS:
            method = "other"
        counter = self._counters.get((method, route, status))
        if counter is None:
            counter = self._counters[method, route, status] = self.requests.labels(
                method, route, str(status)
            )
        histogram = self._histograms.get((method, route))
        if histogram is None:
            histogram = self._histograms[method, route] = self.duration.labels(method, route)
        counter.inc()
        histogram.observe(seconds)


class QueueCollector(Collector):
    """Gauges read from PostgreSQL at scrape time: tasks by queue and status, the oldest
    due pending task's age per queue, the oldest open transaction's age. ``read`` returns
    the rows (``TaskStore.queue_metrics``); a failure is logged and reported as
    ``flowforge_database_up 0`` with the gauges left out, never as a failed scrape."""

    def __init__(
        self,
        read: Callable[[], Any],
        ttl: float = CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read = read
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def describe(self) -> list[Metric]:
        return []  # collected at scrape time only

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = self.clock()
            if self._cached is None or now - self._cached[0] >= self.ttl:
                self._cached = (now, self._families())
            return iter(self._cached[1])

    def _families(self) -> list[Metric]:
        up = GaugeMetricFamily(
            "flowforge_database_up", "1 if the API's last query for these metrics succeeded"
        )
        try:
            stats = self.read()
        except Exception as exc:  # the database is down or slow: say so, serve the rest
            log.warning("metrics: cannot read the queue from the database: %s", exc)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        tasks = GaugeMetricFamily(
            "flowforge_tasks",
            "Tasks in the database, by queue and status",
            labels=["queue", "status"],
        )
        counts = {(queue, status): count for queue, status, count in stats.counts}
        queues = sorted({q for q, _ in counts} | {DEFAULT_QUEUE})
        for queue in queues:  # every status of every queue: 0, not absent
            for status in METRIC_STATUSES:
                tasks.add_metric([queue, status], counts.get((queue, status), 0))
        estimated = GaugeMetricFamily(
            "flowforge_tasks_estimated",
            "1 if flowforge_tasks of this status is PostgreSQL's estimate (more tasks than "
            "are counted exactly at each scrape), 0 if exact",
            labels=["status"],
        )
        for status in METRIC_STATUSES:
            estimated.add_metric([status], 1 if status in stats.estimated else 0)
        oldest = GaugeMetricFamily(
            "flowforge_queue_oldest_pending_age_seconds",
            "How long the oldest due pending task of each queue has waited since its run_at "
            "(0 when none is due)",
            labels=["queue"],
        )
        waiting = dict(stats.oldest_pending)
        for queue in sorted(set(queues) | set(waiting)):
            oldest.add_metric([queue], max(0.0, waiting.get(queue) or 0.0))
        xact = GaugeMetricFamily(
            "flowforge_db_oldest_transaction_age_seconds",
            "Age of the oldest transaction open in FlowForge's database (it holds back vacuum)",
        )
        xact.add_metric([], max(0.0, stats.oldest_transaction_seconds))
        return [up, tasks, estimated, oldest, xact, *_queue_families(queues, counts, stats)]


def _queue_families(
    queues: list[str], counts: dict[tuple[str, str], int], stats: Any
) -> list[Metric]:
    """Per queue: paused, its limits (only where set) and its running tasks."""
    paused = GaugeMetricFamily(
        "flowforge_queue_paused",
        "1 if the queue is paused (by an operator or the breaker): its tasks are not claimed",
        labels=["queue"],
    )
    concurrency = GaugeMetricFamily(
        "flowforge_queue_concurrency_limit",
        "The queue's concurrency limit across all workers (absent: unlimited)",
        labels=["queue"],
    )
    rate = GaugeMetricFamily(
        "flowforge_queue_rate_limit_per_second",
        "The queue's rate limit in task starts per second across all workers (absent: unlimited)",
        labels=["queue"],
    )
    tripped = GaugeMetricFamily(
        "flowforge_queue_breaker_tripped",
        "1 if the queue's circuit breaker paused it (too many failed attempts in its window)",
        labels=["queue"],
    )
    running = GaugeMetricFamily(
        "flowforge_queue_running",
        "Tasks of the queue running now (processing), to set beside its concurrency limit",
        labels=["queue"],
    )
    settings = {row[0]: row for row in stats.settings}
    for queue in sorted(set(queues) | set(settings)):
        _, is_paused, limit, per_second, by_breaker = settings.get(
            queue, (queue, False, None, None, False)
        )
        paused.add_metric([queue], 1 if is_paused else 0)
        tripped.add_metric([queue], 1 if by_breaker else 0)
        running.add_metric([queue], counts.get((queue, "processing"), 0))
        if limit is not None:
            concurrency.add_metric([queue], limit)
        if per_second is not None:
            rate.add_metric([queue], per_second)
    return [paused, concurrency, rate, tripped, running]


def render(
    registry: CollectorRegistry, queue: QueueCollector | None, accept: str | None
) -> tuple[bytes, str]:
    """The text exposition of ``registry`` (or, in multiprocess mode, of every worker's
    files) plus the database gauges."""
    directory = multiprocess_dir()
    if directory:
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, directory)
    scrape = CollectorRegistry()
    scrape.register(_Chain(registry, queue))
    encoder, content_type = choose_encoder(accept)
    return encoder(scrape), content_type


class _Chain(Collector):
    """One collector over a registry and the database gauges (a registry cannot be
    registered in another, and the worker's own registry must stay as it is)."""

    def __init__(self, registry: CollectorRegistry, queue: QueueCollector | None) -> None:
        self.registry = registry
        self.queue = queue

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()
        if self.queue is not None:
            yield from self.queue.collect()
