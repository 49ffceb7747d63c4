"""The field tables (flowforge.domain.fields) and what is made from them: the checks of a
request, the dataclasses' fields."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from flowforge.domain import fields, validation
from flowforge.domain.schedules import Schedule, schedule_body
from flowforge.domain.tasks import Task

KINDS = {"string": str, "integer": int, "object": dict, "timestamp": "datetime", "enum": str,
         "boolean": bool}  # fmt: skip


@pytest.mark.parametrize(
    ("row", "table"), [(Task, fields.TASK_FIELDS), (Schedule, fields.SCHEDULE_FIELDS)]
)
def test_every_field_of_the_table_is_a_column_of_its_row(row: type, table: dict) -> None:
    hints = typing.get_type_hints(row)
    names = {f.name for f in dataclasses.fields(row)}
    for name, field in table.items():
        assert name in names, name
        kind = KINDS[field.kind]
        shown = getattr(hints[name], "__origin__", hints[name])
        assert (shown.__name__ if kind == "datetime" else shown) == kind, name


def test_the_checks_take_their_limits_from_the_table() -> None:
    ok = {"title": "x" * fields.TITLE_MAX, "description": "d" * fields.DESCRIPTION_MAX}
    assert validation.task_body(ok, partial=False)["title"] == ok["title"]
    too_long = {"title": "x" * (fields.TITLE_MAX + 1), "priority": fields.PRIORITY_MAX + 1}
    with pytest.raises(validation.ValidationError) as caught:
        validation.task_body(too_long, partial=False)
    assert caught.value.details == {
        "title": f"must be at most {fields.TITLE_MAX} characters",
        "priority": f"must be between {fields.PRIORITY_MIN} and {fields.PRIORITY_MAX}",
    }
    for bad in ("mail\n", "Mail", "x" * 65, ""):
        with pytest.raises(validation.ValidationError):
            validation.task_body({"title": "t", "queue": bad}, partial=False)
    with pytest.raises(validation.ValidationError) as caught:
        schedule_body({"name": "a\n", "cron": "* * * * *", "title": "t"}, partial=False)
    assert caught.value.details == {"name": fields.SCHEDULE_NAME_RULE}


def test_defaults_come_from_the_table() -> None:
    assert fields.defaults(fields.SCHEDULE_FIELDS) == {
        "timezone": "UTC",
        "type": fields.DEFAULT_TYPE,
        "payload": {},
        "queue": fields.DEFAULT_QUEUE,
        "priority": 0,
        "paused": False,
    }
    assert fields.defaults(fields.SCHEDULE_FIELDS)["payload"] is not fields.PAYLOAD.default
