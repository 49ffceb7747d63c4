"""openapi.yaml agrees with the field tables (flowforge.domain.fields) and the state list:
limits, patterns, enums, defaults and required fields are compared, not copied."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from flowforge.domain import fields
from flowforge.domain.fields import Field
from flowforge.domain.states import STATUSES
from flowforge.domain.tasks import TASK_COLUMNS

from ..support import ROOT

SPEC = yaml.safe_load((ROOT / "openapi.yaml").read_text())
SCHEMAS = SPEC["components"]["schemas"]
# Defaults the spec leaves unsaid on purpose: a null description is "" (the schema says
# nullable), and Swagger UI would prefill a stated default into every try.
UNSTATED_DEFAULTS = {"description"}


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = SCHEMAS[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _compare(field: Field, schema: dict[str, Any]) -> None:
    if field.kind in ("string", "enum"):
        assert schema["type"] == "string"
    if field.kind == "enum":
        assert tuple(schema["enum"]) == field.enum
    if field.kind == "integer":
        assert schema["type"] == "integer"
        assert (schema["minimum"], schema["maximum"]) == (field.minimum, field.maximum)
    if field.kind == "object":
        assert schema["type"] == "object"
    if field.kind == "boolean":
        assert schema["type"] == "boolean"
    if field.max_length is not None and "enum" not in schema:  # type: the handlers' names
        assert schema["maxLength"] == field.max_length
    if not field.blank_ok and "enum" not in schema and field.kind == "string":
        assert schema.get("minLength") == 1
    if field.pattern is not None:
        assert schema["pattern"] == field.pattern
    if (field.default is not None and field.name not in UNSTATED_DEFAULTS) or "default" in schema:
        assert schema["default"] == field.default


@pytest.mark.parametrize(
    ("name", "table", "writable"),
    [
        ("TaskCreate", fields.TASK_FIELDS, fields.POST_FIELDS),
        ("TaskUpdate", fields.TASK_FIELDS, fields.PUT_FIELDS),
        ("ScheduleCreate", fields.SCHEDULE_FIELDS, frozenset(fields.SCHEDULE_FIELDS)),
        ("ScheduleUpdate", fields.SCHEDULE_FIELDS, frozenset(fields.SCHEDULE_FIELDS)),
    ],
)
def test_request_bodies_are_the_field_table(name: str, table: dict, writable: frozenset) -> None:
    body = SCHEMAS[name]
    assert set(body["properties"]) == writable
    if name.endswith("Create"):
        assert body["required"] == [n for n, f in table.items() if f.required and n in writable]
    for prop, schema in body["properties"].items():
        try:
            _compare(table[prop], _resolve(schema))
        except (AssertionError, KeyError) as exc:
            raise AssertionError(f"{name}.{prop} disagrees with the field table: {exc!r}") from exc


@pytest.mark.parametrize("name", ["Task", "TaskFields"])
def test_the_task_shown_has_the_rows_columns_and_limits(name: str) -> None:
    props = SCHEMAS[name]["properties"]
    assert list(props) == list(TASK_COLUMNS) or set(props) == set(TASK_COLUMNS)
    assert props["title"]["maxLength"] == fields.TITLE_MAX
    assert props["description"]["maxLength"] == fields.DESCRIPTION_MAX
    assert (props["max_attempts"]["minimum"], props["max_attempts"]["maximum"]) == (
        1,
        fields.ATTEMPTS_MAX,
    )
    for prop in ("queue", "priority", "timeout", "status"):
        _compare(fields.TASK_FIELDS[prop], _resolve(props[prop]))


def test_statuses_and_the_queue_filter_are_the_domains() -> None:
    assert tuple(SCHEMAS["Status"]["enum"]) == STATUSES
    assert tuple(SCHEMAS["StatusCounts"]["required"]) == STATUSES
    parameters = SPEC["components"]["parameters"]
    assert parameters["QueueFilter"]["schema"]["pattern"] == fields.QUEUE_REGEX
    assert tuple(_resolve(parameters["StatusFilter"]["schema"])["enum"]) == STATUSES
    assert parameters["TypeFilter"]["schema"]["maxLength"] == fields.TYPE_MAX
