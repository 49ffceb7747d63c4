"""The HTTP API (``flowforge api``): a Bottle app served by gunicorn.

    app.py         create_app(settings): the app wired from the parts below
    plugin.py      EnvelopePlugin: request IDs, the envelope, error mapping, access log
    envelope.py    the JSON envelope's bodies and ApiError
    inputs.py      reading a request: JSON body, query string, Idempotency-Key, ids
    auth.py        bearer tokens: TokenCheck (the hook) and TokenCache
    admission.py   API_MAX_PENDING (429 queue_full)
    routes/        tasks.py, schedules.py, service.py (/health, /metrics, /openapi.yaml,
                   /v1/stats); /docs and /dashboard are flowforge.web's
    store.py       TaskStore: the API's database access, thin over queries.py
    metrics.py     the API's Prometheus metrics
    server.py      gunicorn, configured from the environment (reload, metrics directory)
    reading.py     ReadingWorker: the request read under API_READ_TIMEOUT and API_MAX_BODY

Nothing is imported here: ``flowforge api`` must set prometheus-client's multiprocess
directory before ``metrics`` is first imported.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "create_app":  # flowforge.api.create_app, imported when first asked for
        from .app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
