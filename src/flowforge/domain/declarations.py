"""What handlers declare (``flowforge.handlers.handler``), applied to a new task by the
API: the payload checked against the type's JSON Schema (draft 2020-12), and the type's
``max_attempts`` filled in when the request gives none.

Precedence of ``max_attempts``: the task's own field, then the handler's declaration, then
TASK_MAX_ATTEMPTS. It is decided here, at creation, so the task shows what it got. (The
handler's ``backoff`` is the worker's: worker/recording.py.)

Validators are compiled once per process and handler (``_compiled``), from the handlers
``load_handlers`` gave: the same ones the worker runs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..handlers import spec_of
from .fields import DEFAULT_TYPE
from .validation import ValidationError

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

# Problems reported per payload: a batch of 1,000 bad payloads keeps a bounded answer.
PROBLEMS_MAX = 10
PROBLEM_TEXT_MAX = 200  # one problem's text (a schema's message may quote the value)

_TYPE_NAMES = {
    "number": "a number",
    "integer": "an integer",
    "string": "a string",
    "object": "an object",
    "array": "an array",
    "boolean": "a boolean",
    "null": "null",
}
_BOUNDS = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}


@functools.cache
def _compiled(function: object) -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(spec_of(function).schema)


def _where(path: Iterable[Any]) -> str:
    """A payload field as the API names fields: ``payload.items[2].id``."""
    name = "payload"
    for part in path:
        name += f"[{part}]" if isinstance(part, int) else f".{part}"
    return name


def _problems(error: ValidationError) -> list[tuple[str, str]]:
    """One schema error as (field, problem) pairs, worded as the API's own checks are."""
    where = _where(error.absolute_path)
    keyword, value = error.validator, error.validator_value
    if keyword == "required" and isinstance(error.instance, dict):
        return [(f"{where}.{name}", "is required") for name in value if name not in error.instance]
    if keyword == "type":
        kinds = [value] if isinstance(value, str) else list(value)
        return [(where, "must be " + " or ".join(_TYPE_NAMES.get(k, k) for k in kinds))]
    if keyword in _BOUNDS:
        return [(where, f"must be {_BOUNDS[keyword]} {value}")]
    return [(where, error.message[:PROBLEM_TEXT_MAX])]


def payload_problems(validator: Draft202012Validator, payload: Any) -> dict[str, str]:
    """What the schema refuses in ``payload``, keyed by field (at most PROBLEMS_MAX)."""
    found: dict[str, str] = {}
    for error in validator.iter_errors(payload):
        for where, problem in _problems(error):
            found.setdefault(where, problem)
        if len(found) >= PROBLEMS_MAX:
            break
    return dict(list(found.items())[:PROBLEMS_MAX])


class Declarations:
    """The declarations of ``handlers`` (name -> handler), as a new task needs them;
    ``types``, their names."""

    __slots__ = ("_max_attempts", "_validators", "types")

    def __init__(self, handlers: Mapping[str, object]) -> None:
        self.types = frozenset(handlers)
        self._validators: dict[str, Draft202012Validator] = {}
        self._max_attempts: dict[str, int] = {}
        for name, function in handlers.items():
            spec = spec_of(function)
            if spec.schema is not None:
                self._validators[name] = _compiled(function)
            if spec.max_attempts is not None:
                self._max_attempts[name] = spec.max_attempts

    def apply(self, fields: dict[str, Any]) -> dict[str, str]:
        """Fill ``fields`` (a checked new task, or schedule) with its type's
        ``max_attempts`` if it has none; answer what the type's schema refuses in its
        payload (empty: nothing)."""
        kind = fields.get("type", DEFAULT_TYPE)
        if fields.get("max_attempts") is None and kind in self._max_attempts:
            fields["max_attempts"] = self._max_attempts[kind]
        return self.problems(kind, fields.get("payload") or {})

    def problems(self, kind: str, payload: Any) -> dict[str, str]:
        """What type ``kind``'s schema refuses in ``payload`` (empty: nothing, or no schema)."""
        validator = self._validators.get(kind)
        return {} if validator is None else payload_problems(validator, payload)

    def check_change(self, changes: dict[str, Any], current: Callable[[], Any]) -> None:
        """A PUT's checked ``changes`` (of a task or a schedule): when they change the type
        or the payload, the two as they would be must still match the type's schema.
        ``current()`` reads the row as it is (None: there is none; the PUT says 404), and
        only when the answer depends on it."""
        if "type" not in changes and "payload" not in changes:
            return
        if "type" in changes and changes["type"] not in self._validators:
            return  # no schema to meet, whatever the payload
        row = None if "type" in changes and "payload" in changes else current()
        kind = changes["type"] if "type" in changes else getattr(row, "type", None)
        payload = changes["payload"] if "payload" in changes else getattr(row, "payload", None)
        if kind is None or payload is None:
            return
        found = self.problems(kind, payload)
        if found:
            raise ValidationError("the change is not valid for its type", found)
