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

from .conftest import ROOT

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


def test_plug_in_handlers_appear_in_the_served_spec() -> None:
    spec = served_spec(SPEC_PATH.read_bytes(), frozenset({"noop", "sleep", "mail.send"}))
    task_type = yaml.safe_load(spec)["components"]["schemas"]["TaskType"]
    assert task_type["enum"] == ["mail.send", "noop", "sleep"]


def test_the_spec_describes_every_route_and_error() -> None:
    spec = yaml.safe_load(SPEC_PATH.read_text())
    paths = spec["paths"]
    for prefix in ("/v1", ""):
        assert set(paths[f"{prefix}/tasks"]) >= {"get", "post"}
        assert set(paths[f"{prefix}/tasks/{{id}}"]) >= {"get", "put", "delete", "parameters"}
    assert {"/health", "/openapi.yaml"} <= set(paths)
    statuses = {
        status
        for item in paths.values()
        for op in item.values()
        if isinstance(op, dict)
        for status in op.get("responses", {})
    }
    assert {"200", "201", "204", "400", "401", "403", "404", "409", "411", "413", "415", "429",
            "500", "503"} <= statuses  # fmt: skip
    assert "Allow" in spec["components"]["responses"]["MethodNotAllowed"]["headers"]
    assert spec["components"]["schemas"]["TaskUpdate"]["additionalProperties"] is False
    created = paths["/v1/tasks"]["post"]["responses"]["201"]["headers"]
    assert {"Location", "X-Request-ID"} <= set(created)


def test_every_task_route_needs_a_bearer_token_and_says_401_and_403() -> None:
    spec = yaml.safe_load(SPEC_PATH.read_text())
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": spec["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    assert spec["security"] == [{"bearerAuth": []}]
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            if path.startswith(("/v1/", "/tasks")):
                assert "security" not in op, (method, path)  # the global one applies
                assert {"401", "403"} <= set(op["responses"]), (method, path)
            else:
                assert op["security"] == [], (method, path)  # open: /health, the spec
    unauthorized = spec["components"]["responses"]["Unauthorized"]
    assert "WWW-Authenticate" in unauthorized["headers"]
    assert "Retry-After" in spec["components"]["responses"]["QueueFull"]["headers"]


def test_the_payload_rule_on_nul_is_in_the_spec() -> None:
    """Keys and strings without NUL at any depth, and run_at's years, as the API checks
    them: a schema-valid request is never refused for them (schemathesis' ST202)."""
    import jsonschema

    def as_json_schema(node):  # OpenAPI 3.0's `nullable` is JSON Schema's null type
        if isinstance(node, list):
            return [as_json_schema(item) for item in node]
        if not isinstance(node, dict):
            return node
        node = {k: as_json_schema(v) for k, v in node.items()}
        if node.pop("nullable", False):
            return {"anyOf": [node, {"type": "null"}]}
        return node

    components = as_json_schema(yaml.safe_load(SPEC_PATH.read_text())["components"])
    validator = jsonschema.Draft7Validator(
        {"$ref": "#/components/schemas/TaskCreate", "components": components}
    )
    ok = {"title": "t", "payload": {"a": [{"b": {"c": "d"}}, 1, None, True]}}
    assert validator.is_valid(ok)
    for payload in ({"a\x00": 1}, {"a": [{"b": {"c\x00": 1}}]}, {"a": {"b": ["x\x00"]}}):
        assert not validator.is_valid({"title": "t", "payload": payload}), payload
    for year, valid in (("0001", False), ("0002", True), ("9998", True), ("9999", False)):
        body = {"title": "t", "run_at": f"{year}-06-01T00:00:00Z"}
        assert validator.is_valid(body) is valid, year
