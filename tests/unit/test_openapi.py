"""openapi.yaml read as a document: the served spec lists the installed handlers, every
route and error is described, task routes say 401 and 403, the payload's NUL rule."""

from __future__ import annotations

import yaml

from flowforge.api.routes.service import served_spec

from ..support import ROOT

SPEC_PATH = ROOT / "openapi.yaml"


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
    assert {"200", "201", "204", "400", "401", "403", "404", "408", "409", "413", "415", "429",
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


def _resolved(spec: dict, node: dict) -> dict:
    while "$ref" in node:
        target: dict = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def test_the_docs_try_it_out_prefills_nothing_the_caller_did_not_choose() -> None:
    """Swagger UI's "Try it out" fills a parameter with its default or example and sends it:
    a default on a list filter narrows the answer (the queue filter reused Queue's
    `default`, so tasks of other queues vanished), a default page contradicts a cursor,
    and an example X-Request-ID or Idempotency-Key would go out with every try."""
    spec = yaml.safe_load(SPEC_PATH.read_text())
    checked = set()
    for item in spec["paths"].values():
        for method, op in item.items():
            if method == "parameters" or not isinstance(op, dict):
                continue
            for param in item.get("parameters", []) + op.get("parameters", []):
                param = _resolved(spec, param)
                schema = _resolved(spec, param.get("schema", {}))
                if param["in"] == "query" and param["name"] != "limit":  # limit: same answer
                    assert "default" not in schema, param["name"]
                if param["in"] == "header":
                    assert "example" not in param and "examples" not in param, param["name"]
                    assert "example" not in schema and "default" not in schema, param["name"]
                checked.add(param["name"])
    assert {
        "queue",
        "status",
        "type",
        "page",
        "cursor",
        "X-Request-ID",
        "Idempotency-Key",
    } <= checked
    # The body's queue keeps its default: a new task goes to `default`.
    assert spec["components"]["schemas"]["Queue"]["default"] == "default"
