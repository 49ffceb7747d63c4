"""Checks on what clients send; each problem is reported per field. The checks of a
task's and a schedule's fields are made from ``fields.py``'s tables."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from .. import pagination, timestamps
from ..pagination import Cursor
from .fields import (
    PAYLOAD_DEPTH_MAX,
    POST_FIELDS,
    PUT_FIELDS,
    QUEUE_PATTERN,
    QUEUE_RULE,
    TASK_FIELDS,
    TYPE_MAX,
    Field,
)
from .tasks import TASK_COLUMNS

PAGE_LIMIT_MAX = 100
PAGE_LIMIT_DEFAULT = 20
PAGE_MAX = 1_000_000
# The query parameters GET /v1/tasks knows; any other is a 400.
LIST_PARAMETERS = frozenset({"page", "limit", "status", "type", "queue", "cursor", "fields"})
ITEM_PARAMETERS = frozenset({"fields"})  # GET /v1/tasks/{id}


class ValidationError(Exception):
    """Bad input; ``details`` maps each offending field to what is wrong with it."""

    def __init__(self, message: str, details: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


def _text(value: Any, *, maximum: int, blank_ok: bool) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if not blank_ok and not value.strip():
        raise ValueError("must not be blank")
    if len(value) > maximum:
        raise ValueError(f"must be at most {maximum} characters")
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _bounded_int(value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer")
    if not low <= value <= high:
        raise ValueError(f"must be between {low} and {high}")
    return value


def queue_name(value: Any) -> str:
    # fullmatch: `$` also matches before a final newline, which the database's CHECK
    # (and every worker's WORKER_QUEUES) refuses.
    if not isinstance(value, str) or not QUEUE_PATTERN.fullmatch(value):
        raise ValueError(QUEUE_RULE)
    return value


_SCALARS = (str, int, float, type(None))


def _payload(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object")
    # The common case, a flat object of numbers, booleans and NUL-free strings: one pass.
    if not any("\x00" in key for key in value) and all(
        isinstance(v, _SCALARS) and not (isinstance(v, str) and "\x00" in v) for v in value.values()
    ):
        return value
    # PostgreSQL's jsonb cannot hold \u0000 (in keys or strings): refuse it here, as a 400.
    # The depth is bounded so the task can always be serialized again (orjson stops at 255
    # levels). A loop, not recursion: JSON nests deeper than Python's recursion limit.
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list) and depth > PAYLOAD_DEPTH_MAX:
            raise ValueError(f"must not nest deeper than {PAYLOAD_DEPTH_MAX} levels")
        if isinstance(item, dict):
            if any("\x00" in key for key in item):
                raise ValueError("must not contain NUL characters")
            pending.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            pending.extend((child, depth + 1) for child in item)
        elif isinstance(item, str) and "\x00" in item:
            raise ValueError("must not contain NUL characters")
    return value


def _enum(choices: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return str(value)

    return check


def _pattern(field: Field) -> Callable[[Any], str]:
    compiled = re.compile(field.pattern or "")
    rule = field.rule or f"must match {field.pattern}"

    def check(value: Any) -> str:
        if not isinstance(value, str) or not compiled.fullmatch(value):
            raise ValueError(rule)
        return value

    return check


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):  # JSON true or false, not 1 or "yes"
        raise ValueError("must be true or false")
    return value


def check_of(field: Field) -> Callable[[Any], Any]:
    """The check of one field of the table: made once, at import (a closure per field,
    as cheap per request as a hand-written one)."""
    if field.kind == "object":
        return _payload
    if field.kind == "timestamp":
        return timestamps.parse  # the one RFC 3339 parser (cursors use it too)
    if field.kind == "enum":
        return _enum(field.enum or ())
    if field.kind == "boolean":
        return _boolean
    if field.kind == "integer":
        low, high = field.minimum or 0, field.maximum or 0
        return lambda v: _bounded_int(v, low, high)
    if field.pattern is not None:
        if field.name == "queue":
            return queue_name
        return _pattern(field)
    maximum, blank_ok = field.max_length or 0, field.blank_ok
    if field.strip:
        return lambda v: _text(v, maximum=maximum, blank_ok=blank_ok).strip()
    return lambda v: _text(v, maximum=maximum, blank_ok=blank_ok)


def checks_of(table: dict[str, Field]) -> dict[str, Callable[[Any], Any]]:
    return {name: check_of(field) for name, field in table.items()}


_CHECKS = checks_of(TASK_FIELDS)
_status = _CHECKS["status"]
_type_filter = check_of(Field("type", "string", max_length=TYPE_MAX, blank_ok=False))


@dataclass(frozen=True, slots=True)
class BodyRules:
    """How the body of a POST or PUT of one aggregate (a task, a schedule) is checked:
    ``checks`` by field (from its field table), the fields a POST and a PUT may name, the
    ones a POST must; ``what`` names it in the error, ``empty`` says what a PUT with no
    field lacks."""

    what: str
    checks: dict[str, Callable[[Any], Any]]
    post: Collection[str]
    put: Collection[str]
    required: Collection[str]
    empty: str
    null_is_default: dict[str, Any] | None = None  # these fields' null means the default

    def check(
        self,
        body: Any,
        *,
        partial: bool,
        known_types: frozenset[str] | None = None,
        declared: Declared | None = None,
    ) -> dict[str, Any]:
        """A POST (``partial=False``) or PUT body checked field by field: the cleaned fields,
        or a ValidationError ("the task is not valid": ``what``) with every per-field
        error (unknown, invalid, missing, an unknown task type, a payload its type's schema
        refuses, none at all). Tasks and schedules share it."""
        if not isinstance(body, dict):
            raise ValidationError("the body must be a JSON object", {"body": "must be an object"})
        checks, null_is_default = self.checks, self.null_is_default or {}
        allowed = self.put if partial else self.post
        details = {name: "is not a known field" for name in body if name not in allowed}
        clean: dict[str, Any] = {}
        for name, check in checks.items():
            if name not in body or name not in allowed:
                continue
            if body[name] is None and name in null_is_default:
                clean[name] = null_is_default[name]
                continue
            try:
                clean[name] = check(body[name])
            except ValueError as exc:
                details[name] = str(exc)
        for name in () if partial else self.required:
            if name not in body:
                details[name] = "is required"
        if known_types is not None and "type" in clean and clean["type"] not in known_types:
            details["type"] = f"unknown task type; known: {', '.join(sorted(known_types))}"
        if (
            declared is not None
            and not partial
            and "type" not in details
            and "payload" not in details
        ):
            details.update(declared(clean))
        if partial and not body:
            details["body"] = self.empty
        if details:
            raise ValidationError(f"the {self.what} is not valid", details)
        return clean


_BODY = BodyRules(
    "task",
    _CHECKS,
    post=POST_FIELDS,
    put=PUT_FIELDS,
    required=tuple(name for name, f in TASK_FIELDS.items() if f.required),
    empty=f"must contain at least one of {', '.join(sorted(PUT_FIELDS))}",
    null_is_default={name: f.default for name, f in TASK_FIELDS.items() if f.null_is_default},
)


# A new task's fields checked against its type's declarations (domain/declarations.py):
# fills what the type declares, answers the per-field problems.
Declared = Callable[[dict[str, Any]], dict[str, str]]


# Validate a POST (``partial=False``) or PUT body of /v1/tasks; the cleaned fields.
task_body = _BODY.check


def _whole(text: str | None, low: int, high: int) -> int:
    """Plain ASCII digits only (``int()`` would also take " 5", "5_0" and other scripts'
    digits); ``None`` is a value that was not valid UTF-8."""
    if not text or not text.isascii() or not text.isdigit() or len(text) > 9:
        raise ValueError(text)
    value = int(text)
    if not low <= value <= high:
        raise ValueError(text)
    return value


@dataclass(frozen=True, slots=True)
class ListQuery:
    """What GET /v1/tasks asked for: a page and the filters (None: any)."""

    page: int = 1
    limit: int = PAGE_LIMIT_DEFAULT
    status: str | None = None
    type: str | None = None
    queue: str | None = None
    cursor: Cursor | None = None  # the page starts after this (keyset), instead of `page`
    fields: tuple[str, ...] | None = None  # only these task fields (id always), else all

    @property
    def filters(self) -> tuple[str | None, ...]:
        return (self.status, self.type, self.queue)


def _fields(value: str) -> tuple[str, ...]:
    names = [name.strip() for name in value.split(",")]
    unknown = [name for name in names if name not in TASK_COLUMNS]
    if unknown or not value:
        raise ValueError(
            f"must be a comma list of task fields (unknown: {', '.join(unknown) or '(empty)'})"
        )
    return tuple(dict.fromkeys(["id", *names]))  # id first and always, no repeats


def _unknown_parameters(query: dict[str, str | None], known: frozenset[str]) -> dict[str, str]:
    return {
        name: f"is not a known parameter (known: {', '.join(sorted(known))})"
        for name in query
        if name not in known
    }


def _fields_parameter(
    query: dict[str, str | None], details: dict[str, str]
) -> tuple[str, ...] | None:
    """``fields=`` (``_fields``), None when not given; a problem goes into ``details``."""
    if query.get("fields") is None:
        return None
    try:
        return _fields(query["fields"] or "")
    except ValueError as exc:
        details["fields"] = str(exc)
        return None


def item_query(query: dict[str, str | None]) -> tuple[str, ...] | None:
    """The query string of GET /v1/tasks/{id}: ``fields=`` as lists take it (None: every
    field); any other parameter is refused, as lists refuse theirs."""
    details = _unknown_parameters(query, ITEM_PARAMETERS)
    fields = _fields_parameter(query, details)
    if details:
        raise ValidationError("the query is not valid", details)
    return fields


def list_query(query: dict[str, str | None]) -> ListQuery:
    """The query string of GET /v1/tasks, checked: unknown parameters are refused too (a
    misspelt filter must not silently list everything)."""
    details = _unknown_parameters(query, LIST_PARAMETERS)
    page, limit = 1, PAGE_LIMIT_DEFAULT
    filters: dict[str, str | None] = {"status": None, "type": None, "queue": None}
    if "page" in query:
        try:
            page = _whole(query["page"], 1, PAGE_MAX)
        except ValueError:
            details["page"] = f"must be a whole number from 1 to {PAGE_MAX}"
    if "limit" in query:
        try:
            limit = _whole(query["limit"], 1, PAGE_LIMIT_MAX)
        except ValueError:
            details["limit"] = f"must be a whole number from 1 to {PAGE_LIMIT_MAX}"
    checks = {
        "status": _status,
        "type": _type_filter,
        "queue": queue_name,
    }
    for name, check in checks.items():
        if name not in query:
            continue
        value = query[name]
        if value is None:  # not valid UTF-8
            details[name] = "must be valid UTF-8"
            continue
        try:
            filters[name] = check(value)
        except ValueError as exc:
            details[name] = str(exc)
    cursor = None
    fields = _fields_parameter(query, details)
    if "cursor" in query:
        if "page" in query:
            details["cursor"] = "cannot be combined with page (a cursor says where to start)"
        else:
            try:
                cursor = pagination.decode(query["cursor"] or "")
            except pagination.CursorError:
                details["cursor"] = "is not a cursor this API gave (use meta.next_cursor)"
            else:
                if cursor.filters != (filters["status"], filters["type"], filters["queue"]):
                    details["cursor"] = "was made for other filters (status, type, queue)"
    if details:
        raise ValidationError("the query is not valid", details)
    return ListQuery(page, limit, **filters, cursor=cursor, fields=fields)


BATCH_MAX = 1000


def batch_body(
    body: Any, *, known_types: frozenset[str] | None = None, declared: Declared | None = None
) -> list[dict[str, Any]]:
    """Validate POST /v1/tasks/batch: ``{"tasks": [task, ...]}`` with 1..1000 tasks, each as
    POST /v1/tasks takes it. Every problem is reported, keyed ``tasks[i].field``."""
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object", {"body": "must be an object"})
    details = {name: "is not a known field" for name in body if name != "tasks"}
    items = body.get("tasks")
    if not isinstance(items, list) or not 1 <= len(items) <= BATCH_MAX:
        details["tasks"] = f"must be an array of 1 to {BATCH_MAX} tasks"
        raise ValidationError("the batch is not valid", details)
    clean: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        try:
            clean.append(task_body(item, partial=False, known_types=known_types, declared=declared))
        except ValidationError as exc:
            for field, problem in exc.details.items():
                where = f"tasks[{index}]" if field == "body" else f"tasks[{index}].{field}"
                details[where] = problem
    if details:
        first = next(iter(details))
        raise ValidationError(f"the batch is not valid (first problem: {first})", details)
    return clean
