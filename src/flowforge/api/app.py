"""``create_app(settings)``: the Bottle app, wired from its parts.

Every response is the JSON envelope, errors included (Bottle's HTML error pages never
reach a client), and carries ``X-Request-ID``; one access line is logged per request
(``plugin.EnvelopePlugin``). Protected routes need a bearer token (``auth.TokenCheck``).
The routes are in ``routes/``.
"""

from __future__ import annotations

import bottle
from sqlalchemy import Engine

from .. import web
from ..config import Settings, check_api_auth
from ..db import make_engine
from ..domain.declarations import Declarations
from ..handlers import load_handlers
from ..resources import resource_path
from ..stores.queues import QueueStore
from ..stores.schedules import ScheduleStore
from ..stores.tasks import TaskStore
from ..stores.tokens import TokenStore
from .admission import Admission
from .auth import TokenCache, TokenCheck
from .plugin import EnvelopePlugin, Observe
from .routes.queues import QueueRoutes
from .routes.schedules import ScheduleRoutes
from .routes.service import ServiceRoutes, served_spec
from .routes.tasks import TaskRoutes


def create_app(
    settings: Settings,
    *,
    engine: Engine | None = None,
    keep_connection: bool = False,
    metrics: bool = True,
) -> bottle.Bottle:
    """Build the API. ``engine`` is made from ``settings`` unless given (tests share one);
    ``keep_connection`` suits a server that runs one request at a time per process;
    ``metrics=False`` counts nothing per request (the benchmark's side-by-side).
    Raises ``ConfigError`` for ``API_AUTH=off`` on an address others can reach."""
    # prometheus-client takes its multiprocess mode from the environment when first
    # imported: only here, after `flowforge api` has set it (api.server).
    from .metrics import QUERY_TIMEOUT_MS, QueueCollector, RequestMetrics

    check_api_auth(settings)
    store = TaskStore(
        engine or make_engine(settings),
        default_max_attempts=settings.task_max_attempts,
        lease_seconds=settings.worker_lease,
        default_timeout=settings.task_timeout,
        keep_connection=keep_connection,
        health_timeout=settings.database_connect_timeout,
    )
    schedules = ScheduleStore(
        store.source,
        default_max_attempts=settings.task_max_attempts,
        default_timeout=settings.task_timeout,
    )
    token_cache = TokenCache(TokenStore(store.source).grant_of)
    declarations = Declarations(load_handlers())  # the worker's loader, types and all
    request_metrics = RequestMetrics.for_process()
    admit = Admission(store.count_pending_upto, settings.api_max_pending)

    app = _bottle(settings, token_cache, request_metrics.observe if metrics else None)

    service = ServiceRoutes(
        store,
        metrics=request_metrics,
        queue_gauges=QueueCollector(lambda: store.queue_metrics(QUERY_TIMEOUT_MS)),
        metrics_allow=settings.metrics_allow,
        openapi=served_spec(resource_path("openapi.yaml").read_bytes(), declarations.types),
        query_timeout_ms=QUERY_TIMEOUT_MS,
    )
    service.register_open(app)
    ScheduleRoutes(schedules, declarations, max_body=settings.api_max_body, admit=admit).register(
        app
    )
    queues = QueueStore(store.source, timeout_ms=QUERY_TIMEOUT_MS)
    QueueRoutes(queues, max_body=settings.api_max_body).register(app)
    service.register_stats(app)
    web.add_routes(app)
    TaskRoutes(store, declarations, max_body=settings.api_max_body, admit=admit).register(app)

    app.config["flowforge.store"] = store
    app.config["flowforge.tokens"] = token_cache
    app.config["flowforge.admit"] = admit  # for routes that create tasks (a batch, say)
    return app


def _bottle(settings: Settings, token_cache: TokenCache, observe: Observe | None) -> bottle.Bottle:
    """A Bottle app with no routes yet: the envelope plugin and, under ``API_AUTH=token``,
    the token check."""
    app = bottle.Bottle(catchall=True)
    app.config["json.enable"] = False  # routes return the envelope's bytes themselves
    # Task ids are ASCII digits: Bottle's ``int`` filter (``\d``) also takes other
    # scripts' digits (``/v1/tasks/%D9%A3`` would be task 3).
    app.router.add_filter("id", lambda _conf: (r"[0-9]+", int, str))
    # The request ID is set first (the plugin's hook), then the token is checked.
    app.install(EnvelopePlugin(observe))
    if settings.api_auth == "token":
        app.add_hook("before_request", TokenCheck(token_cache))
    return app
