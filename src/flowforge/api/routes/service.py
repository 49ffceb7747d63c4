"""The service's own routes: ``/health``, ``/metrics``, ``/openapi.yaml`` and
``/v1/stats`` (the dashboard's numbers)."""

from __future__ import annotations

import logging
from typing import Any

import bottle
import orjson

from ... import __version__
from ...caching import TimedCache
from ...config import address_allowed
from ...db import DatabaseUnavailable
from ...stores.tasks import TaskStore
from ..envelope import error_body, ok

log = logging.getLogger("flowforge.api")

# /v1/stats is read at most this often per process, however many dashboards poll it.
STATS_CACHE_SECONDS = 2.0
_SPEC_HANDLERS = b"enum: [noop, sleep]"


def served_spec(spec: bytes, known_types: frozenset[str]) -> bytes:
    """openapi.yaml as this deployment serves it: the task ``type`` enum lists the handlers
    registered here (plug-ins included), so a client's validator accepts exactly those."""
    return spec.replace(_SPEC_HANDLERS, b"enum: " + orjson.dumps(sorted(known_types)), 1)


class ServiceRoutes:
    """``metrics`` is the process's ``RequestMetrics``, ``queue_gauges`` the collector of
    the queue's gauges (both from ``api.metrics``); ``metrics_allow`` the networks that may
    read /metrics besides loopback; ``openapi`` the served spec (``served_spec``);
    ``query_timeout_ms`` cuts the stats' statements off."""

    def __init__(
        self,
        store: TaskStore,
        *,
        metrics: Any,
        queue_gauges: Any,
        metrics_allow: Any,
        openapi: bytes,
        query_timeout_ms: int,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.queue_gauges = queue_gauges
        self.metrics_allow = metrics_allow
        self.openapi = openapi
        self.stats_cache = TimedCache(
            lambda: store.stats(query_timeout_ms), ttl=STATS_CACHE_SECONDS
        )

    def register_open(self, app: bottle.Bottle) -> None:
        """The routes open without a token (``auth.protected`` says which)."""
        app.route("/health", "GET", self.health)
        app.route("/metrics", "GET", self.metrics_page, skip=True)
        app.route("/openapi.yaml", "GET", self.openapi_spec, skip=True)

    def register_stats(self, app: bottle.Bottle) -> None:
        app.route("/v1/stats", "GET", self.stats)

    def health(self) -> bytes:
        try:
            self.store.ping()
        except DatabaseUnavailable as exc:
            log.warning("health check: database unreachable: %s", exc)
            bottle.response.status = 503
            return error_body(
                "service_unavailable", "the database is unreachable", {"database": "unreachable"}
            )
        return ok({"status": "ok", "database": "ok", "version": __version__})

    def metrics_page(self) -> bytes:
        """Prometheus text format, for loopback and METRICS_ALLOW only (a 403 envelope
        otherwise). Behind a proxy on this host every client is loopback: the proxy's own
        allow-list decides there."""
        from ..metrics import render  # prometheus-client: see api.metrics on import order

        response = bottle.response
        environ = bottle.request.environ
        if not address_allowed(environ.get("REMOTE_ADDR"), self.metrics_allow):
            response.status = 403
            response.content_type = "application/json"
            return error_body("forbidden", "this address may not read /metrics (METRICS_ALLOW)")
        body, content_type = render(
            self.metrics.registry, self.queue_gauges, environ.get("HTTP_ACCEPT")
        )
        response.content_type = content_type
        return body

    def openapi_spec(self) -> bytes:
        bottle.response.content_type = "application/yaml"
        return self.openapi

    def stats(self) -> bytes:
        """The dashboard's numbers (read scope), cached a couple of seconds per process so
        any number of open dashboards cost the database the same."""
        return ok(self.stats_cache.get())
