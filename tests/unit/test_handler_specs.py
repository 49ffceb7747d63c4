"""What a handler declares (``flowforge.handlers.handler``) and how a new task meets it:
the spec and its checks, schema errors named by payload field, max_attempts filled in."""

from __future__ import annotations

import math

import pytest

from flowforge.domain import validation
from flowforge.domain.declarations import PROBLEMS_MAX, Declarations
from flowforge.domain.fields import ATTEMPTS_MAX
from flowforge.handlers import (
    BUILTINS,
    LONGEST_WAIT,
    NO_SPEC,
    HandlerSpec,
    HandlerSpecError,
    check_schema,
    handler,
    noop,
    spec_of,
)

MAIL_SCHEMA = {
    "type": "object",
    "required": ["to"],
    "properties": {
        "to": {"type": "array", "items": {"type": "string", "pattern": "@"}},
        "count": {"type": "integer", "minimum": 1, "maximum": 5},
        "mode": {"enum": ["plain", "html"]},
    },
}


@handler(schema=MAIL_SCHEMA, max_attempts=5, backoff=lambda attempt: 10.0 * attempt)
def mail(task: object) -> None:
    """A declared handler, as a plug-in writes one."""


def test_the_decorator_attaches_a_frozen_spec_and_keeps_the_function() -> None:
    spec = spec_of(mail)
    assert spec.schema == MAIL_SCHEMA and spec.max_attempts == 5
    assert spec.delay_after(3) == 30.0
    with pytest.raises(AttributeError):
        spec.max_attempts = 2  # type: ignore[misc]
    assert mail(None) is None and mail.__name__ == "mail"
    # A plain function declares nothing, as before.
    assert spec_of(noop) is NO_SPEC and spec_of(noop).delay_after(1) is None
    assert spec_of(lambda task: None) is NO_SPEC


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"max_attempts": 0}, "max_attempts must be an integer from 1"),
        ({"max_attempts": ATTEMPTS_MAX + 1}, "max_attempts"),
        ({"max_attempts": True}, "max_attempts"),
        ({"max_attempts": 2.0}, "max_attempts"),
        ({"backoff": 5}, "backoff must be a function"),
        ({"schema": "object"}, "schema must be a JSON Schema"),
    ],
)
def test_a_bad_declaration_is_refused_where_it_is_written(kwargs: dict, words: str) -> None:
    with pytest.raises(HandlerSpecError, match=words):
        handler(**kwargs)


@pytest.mark.parametrize("answer", [-1, LONGEST_WAIT + 1, math.nan, math.inf, "10", None, True])
def test_a_backoff_answering_no_usable_wait_is_an_error_the_worker_can_catch(answer) -> None:
    spec = HandlerSpec(backoff=lambda attempt: answer)
    with pytest.raises(HandlerSpecError, match=r"backoff\(2\) answered"):
        spec.delay_after(2)


def test_a_backoff_that_raises_is_an_error_the_worker_can_catch() -> None:
    spec = HandlerSpec(backoff=lambda attempt: 1 / 0)
    with pytest.raises(HandlerSpecError, match=r"backoff\(1\) raised ZeroDivisionError"):
        spec.delay_after(1)


@pytest.mark.parametrize(
    ("schema", "where", "words"),
    [
        ({"type": "nonsense"}, "at type:", "is not valid"),
        ({"properties": {"a": {"minimum": "zero"}}}, "at properties/a/minimum:", "'zero'"),
        ({"required": "to"}, "at required:", "is not of type 'array'"),
    ],
)
def test_a_bad_schema_is_named_with_its_handler_and_where(schema, where, words) -> None:
    with pytest.raises(HandlerSpecError) as caught:
        check_schema("mail", schema)
    message = str(caught.value)
    assert message.startswith("handler mail: its payload schema is not valid JSON Schema")
    assert where in message and words in message


def test_every_builtin_schema_is_valid() -> None:
    for name, function in BUILTINS.items():
        schema = spec_of(function).schema
        if schema is not None:
            check_schema(name, schema)  # raises if not
    assert spec_of(BUILTINS["sleep"]).schema is not None


DECLARED = Declarations({"mail": mail, **BUILTINS})


@pytest.mark.parametrize(
    ("type_", "payload", "problems"),
    [
        ("sleep", {"seconds": "abc"}, {"payload.seconds": "must be a number"}),
        ("sleep", {"seconds": True}, {"payload.seconds": "must be a number"}),
        ("sleep", {"seconds": -0.5}, {"payload.seconds": "must be >= 0"}),
        ("sleep", {"seconds": 0}, {}),
        ("sleep", {"seconds": 2.5, "other": 1}, {}),
        ("sleep", {}, {}),
        ("noop", {"seconds": "abc"}, {}),
        ("mail", {}, {"payload.to": "is required"}),
        ("mail", {"to": "a@b"}, {"payload.to": "must be an array"}),
        ("mail", {"to": ["a@b", "nobody"]}, {"payload.to[1]": "'nobody' does not match '@'"}),
        (
            "mail",
            {"to": [], "count": 9, "mode": "rich"},
            {"payload.count": "must be <= 5", "payload.mode": "'rich' is not one of"},
        ),
    ],
)
def test_a_payload_is_checked_against_its_types_schema(type_, payload, problems) -> None:
    found = DECLARED.apply({"type": type_, "payload": payload})
    assert set(found) == set(problems)
    for field, words in problems.items():
        assert found[field].startswith(words), found


def test_problems_are_bounded_per_payload() -> None:
    @handler(schema={"additionalProperties": {"type": "string"}})
    def wide(task: object) -> None:
        pass

    found = Declarations({"wide": wide}).apply(
        {"type": "wide", "payload": {f"k{i}": i for i in range(50)}}
    )
    assert len(found) == PROBLEMS_MAX
    assert set(found.values()) == {"must be a string"}


def test_max_attempts_task_first_then_the_handler_then_the_default() -> None:
    fields: dict = {"type": "mail", "payload": {"to": []}}
    assert DECLARED.apply(fields) == {} and fields["max_attempts"] == 5
    own = {"type": "mail", "payload": {"to": []}, "max_attempts": 2}
    DECLARED.apply(own)
    assert own["max_attempts"] == 2
    plain: dict = {"type": "noop"}
    DECLARED.apply(plain)
    assert "max_attempts" not in plain  # the store fills TASK_MAX_ATTEMPTS


def test_a_body_reports_schema_problems_beside_its_other_fields() -> None:
    body = {"title": "", "type": "sleep", "payload": {"seconds": "abc"}}
    with pytest.raises(validation.ValidationError) as caught:
        validation.task_body(body, partial=False, declared=DECLARED.apply)
    assert caught.value.details == {
        "title": "must not be blank",
        "payload.seconds": "must be a number",
    }
    batch = {"tasks": [{"title": "ok"}, {"title": "ok", "type": "mail", "payload": {}}]}
    with pytest.raises(validation.ValidationError) as caught:
        validation.batch_body(batch, declared=DECLARED.apply)
    assert caught.value.details == {"tasks[1].payload.to": "is required"}
    # A payload that is not an object is refused as before, not handed to the schema.
    with pytest.raises(validation.ValidationError) as caught:
        validation.task_body(
            {"title": "t", "type": "sleep", "payload": [1]}, partial=False, declared=DECLARED.apply
        )
    assert set(caught.value.details) == {"payload"}


class _Row:
    def __init__(self, type_: str, payload: dict) -> None:
        self.type, self.payload = type_, payload


def test_a_change_is_checked_against_the_row_only_when_it_must_be() -> None:
    reads: list[int] = []

    def current() -> _Row:
        reads.append(1)
        return _Row("sleep", {"seconds": "abc"})

    DECLARED.check_change({"title": "x"}, current)  # neither type nor payload
    DECLARED.check_change({"type": "noop"}, current)  # a type with no schema
    DECLARED.check_change({"type": "sleep", "payload": {"seconds": 1}}, current)
    assert reads == []
    with pytest.raises(validation.ValidationError) as caught:
        DECLARED.check_change({"payload": {"seconds": -1}}, current)
    assert caught.value.details == {"payload.seconds": "must be >= 0"} and reads == [1]
    with pytest.raises(validation.ValidationError) as caught:
        DECLARED.check_change({"type": "sleep"}, lambda: _Row("noop", {"seconds": "abc"}))
    assert caught.value.details == {"payload.seconds": "must be a number"}
    DECLARED.check_change({"payload": {"seconds": -1}}, lambda: None)  # no row: the PUT's 404
