"""flowforge.client's Task and errors without a server: the Task's fields are the API's,
a newer server's extra fields are kept, an envelope's code picks the exception."""

from __future__ import annotations

import dataclasses

import yaml

from flowforge.client import (
    Conflict,
    FlowForgeError,
    NotFound,
    ServerError,
    Task,
    TooManyRequests,
    ValidationFailed,
)
from flowforge.client.errors import error_from
from flowforge.domain.tasks import TASK_COLUMNS

from ..support import ROOT

TASK_SCHEMA = yaml.safe_load((ROOT / "openapi.yaml").read_text())["components"]["schemas"]["Task"]
FIELDS = [f.name for f in dataclasses.fields(Task) if f.name != "extra"]


def test_task_fields_are_the_apis() -> None:
    # A subset, so a column added to the API later is not a failure here (it lands in
    # ``extra`` until the client names it).
    assert set(FIELDS) <= set(TASK_SCHEMA["properties"])
    assert set(FIELDS) <= set(TASK_COLUMNS)
    assert {"id", "title", "status", "payload", "result", "created_at"} <= set(FIELDS)


def _answer(**extra: object) -> dict:
    body: dict = {name: None for name in FIELDS}
    body.update(id=1, title="t", status="completed", created_at="2026-12-08T01:00:00.5Z")
    body.update(extra)
    return body


def test_from_json_parses_times_and_keeps_unknown_fields() -> None:
    task = Task.from_json(_answer(progress={"fraction": 0.5}))
    assert task.created_at.isoformat() == "2026-12-08T01:00:00.500000+00:00"
    assert task.extra == {"progress": {"fraction": 0.5}} and task.final


def test_the_code_picks_the_exception() -> None:
    def envelope(code: str) -> dict:
        return {"data": None, "error": {"code": code, "message": "m", "details": {"f": "x"}}}

    assert type(error_from(404, envelope("not_found"), "r", "")) is NotFound
    assert type(error_from(409, envelope("conflict"), "r", "")) is Conflict
    assert type(error_from(429, envelope("queue_full"), "r", "")) is TooManyRequests
    invalid = error_from(400, envelope("validation_failed"), "rid-1", "")
    assert isinstance(invalid, ValidationFailed) and invalid.errors == {"f": "x"}
    assert (invalid.status, invalid.request_id, invalid.message) == (400, "rid-1", "m")
    assert "f: x" in str(invalid)
    html = error_from(504, None, None, "Gateway Timeout")
    assert isinstance(html, ServerError) and html.code == "http_504"
    odd = error_from(418, envelope("teapot"), None, "")
    assert type(odd) is FlowForgeError and odd.code == "teapot"


def test_the_docs_state_the_codes_figures() -> None:
    from flowforge.client import client, transport

    page = (ROOT / "docs" / "client.md").read_text()
    defaults = (
        f"timeout={transport.DEFAULT_TIMEOUT}, retries={transport.DEFAULT_RETRIES}, "
        f"backoff={transport.DEFAULT_BACKOFF})  # the defaults"
    )
    assert defaults in page
    assert f"(up to\n{transport.BACKOFF_MAX:g} s, with jitter)" in page
    assert f"first after {client.WAIT_POLL_FIRST * 1000:g} ms" in page
    assert f"doubling up to\n  {client.WAIT_POLL_MAX:g} s)" in page
    assert ", ".join(str(s) for s in sorted(transport.RETRY_STATUSES)[:-1]) in page
