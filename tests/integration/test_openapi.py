"""openapi.yaml is true: schemathesis drives the live API (real HTTP, real PostgreSQL) with
requests generated from the spec the API serves, valid and invalid, and fails on any server
error or any response the spec does not describe (status, headers, content type, body)."""

from __future__ import annotations

import uuid

import requests
import schemathesis
import yaml
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from flowforge.api.routes.service import served_spec
from flowforge.handlers import load_handlers

from ..support import ROOT

SPEC_PATH = ROOT / "openapi.yaml"


# The document the API serves: the file, with this installation's handlers as the task
# ``type`` enum (the app does the same at start-up). Loaded at collection time so every
# operation is a test of its own (schemathesis' lazy fixture loader fails on pytest 9).
schema = schemathesis.openapi.from_dict(
    yaml.safe_load(served_spec(SPEC_PATH.read_bytes(), frozenset(load_handlers())))
)
# Bounded for CI: a fixed number of examples per operation and mode, the same ones on every
# run (derandomized, no example database), so a failure reproduces. NUL characters are
# generated too: the spec refuses them in the text fields and, through `patternProperties`,
# in a payload's keys and strings at any depth, as the API does. Every request
# carries the session's write token (the bearer scheme's header is not generated: a
# mutated one would be replaced by the real token; test_auth covers 401 and 403).
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    with_security_parameters=False,
    max_examples=100,
    deterministic=True,
    database="none",
)


@schema.parametrize()
def test_the_api_keeps_its_openapi_contract(
    case: schemathesis.Case, api_url: str, auth_headers: dict[str, str]
) -> None:
    # A list cursor is state the API made (the spec can only say "a base64url string"): a
    # made-up one is rightly a 400, not a schema-valid request wrongly refused.
    # tests/test_api_lists.py covers cursors.
    # Likewise a cron expression and a time zone name: their grammar is beyond a JSON
    # schema (tests/test_schedules.py covers both), so a generated one is rightly refused.
    semantic = "cursor" in (case.query or {}) or (
        case.operation.path.startswith("/v1/schedules") and case.method in ("POST", "PUT")
    )
    excluded = [positive_data_acceptance] if semantic else []
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and case.meta and case.meta.generation.mode.is_positive:
        # A fresh key per example: one reused with another body is a 422 by design
        # (test_idempotency covers it), which schemathesis would call a rejected valid case.
        case.headers["Idempotency-Key"] = uuid.uuid4().hex + key.strip()[:160]
    case.call_and_validate(base_url=api_url, headers=auth_headers, excluded_checks=excluded)


def test_the_api_serves_the_spec_with_its_handlers(api_url: str) -> None:
    response = requests.get(f"{api_url}/openapi.yaml", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/yaml")
    served = yaml.safe_load(response.content)
    assert served == yaml.safe_load(SPEC_PATH.read_bytes())  # only noop and sleep here
    assert served["openapi"].startswith("3.")
