"""The fields a client sets on a task or a schedule: one table each.

Each fact is written once here: the validation (``validation.py``) builds its checks
from these rows, the stores take their defaults from them, ``schema.py`` writes its CHECK
constraints and column defaults with these values, and tests/unit/test_fields.py holds
openapi.yaml and the Task dataclass to them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .states import STATUSES

# The queue-name rule, one regular expression: anchored for PostgreSQL's ``~`` and
# openapi.yaml's ``pattern``; Python code uses it with ``fullmatch`` only (``$`` also
# matches before a final newline, which the database's CHECK refuses).
QUEUE_REGEX = r"^[a-z0-9_-]{1,64}$"
QUEUE_PATTERN = re.compile(QUEUE_REGEX)
QUEUE_RULE = "must be 1-64 characters of a-z, 0-9, _ and -"
DEFAULT_QUEUE = "default"

SCHEDULE_NAME_REGEX = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
SCHEDULE_NAME_RULE = (
    "must be 1-100 characters of A-Z a-z 0-9 _ . - (starting with a letter or digit)"
)

TITLE_MAX = 200
DESCRIPTION_MAX = 10_000
TYPE_MAX = 100
DEFAULT_TYPE = "noop"
ATTEMPTS_MAX = 100
DEFAULT_MAX_ATTEMPTS = 3  # TASK_MAX_ATTEMPTS's default and the column's
PRIORITY_MIN, PRIORITY_MAX = -100, 100
DEFAULT_PRIORITY = 0
TIMEOUT_MAX = 86_400  # seconds (one day)
DEFAULT_TIMEOUT = 900  # seconds (TASK_TIMEOUT's 15m and the column's default)
PAYLOAD_DEPTH_MAX = 100
CRON_MAX = 200
TIMEZONE_MAX = 100
DEFAULT_TIMEZONE = "UTC"


@dataclass(frozen=True, slots=True)
class Field:
    """One field a client may send. ``kind``: string, integer, object, timestamp, enum,
    boolean.
    ``default`` None: required, or filled from the settings (max_attempts, timeout)."""

    name: str
    kind: str
    default: Any = None
    required: bool = False
    minimum: int | None = None
    maximum: int | None = None
    max_length: int | None = None
    blank_ok: bool = True
    strip: bool = False  # the value kept is stripped of surrounding blanks
    null_is_default: bool = False  # JSON null means the default
    pattern: str | None = None  # a regular expression (anchored), matched whole
    rule: str | None = None  # what the pattern asks for, in the error's words
    enum: tuple[str, ...] | None = None


TITLE = Field("title", "string", required=True, max_length=TITLE_MAX, blank_ok=False, strip=True)
DESCRIPTION = Field("description", "string", "", max_length=DESCRIPTION_MAX, null_is_default=True)
TYPE = Field("type", "string", DEFAULT_TYPE, max_length=TYPE_MAX, blank_ok=False, strip=True)
PAYLOAD = Field("payload", "object", {})
MAX_ATTEMPTS = Field("max_attempts", "integer", minimum=1, maximum=ATTEMPTS_MAX)
RUN_AT = Field("run_at", "timestamp")
STATUS = Field("status", "enum", enum=STATUSES)
QUEUE = Field("queue", "string", DEFAULT_QUEUE, pattern=QUEUE_REGEX, rule=QUEUE_RULE)
PRIORITY = Field(
    "priority", "integer", DEFAULT_PRIORITY, minimum=PRIORITY_MIN, maximum=PRIORITY_MAX
)
TIMEOUT = Field("timeout", "integer", minimum=1, maximum=TIMEOUT_MAX)

# In the order their problems are reported (a batch names the first).
TASK_FIELDS: dict[str, Field] = {
    f.name: f
    for f in (TITLE, DESCRIPTION, TYPE, PAYLOAD, MAX_ATTEMPTS, RUN_AT, STATUS, QUEUE, PRIORITY,
              TIMEOUT)
}  # fmt: skip
# POST takes every field but status; PUT every one.
POST_FIELDS = frozenset(name for name in TASK_FIELDS if name != "status")
PUT_FIELDS = frozenset(TASK_FIELDS)

SCHEDULE_FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        Field("name", "string", required=True, pattern=SCHEDULE_NAME_REGEX,
              rule=SCHEDULE_NAME_RULE),
        Field("cron", "string", required=True, max_length=CRON_MAX, blank_ok=False),
        Field("timezone", "string", DEFAULT_TIMEZONE, max_length=TIMEZONE_MAX, blank_ok=False),
        TITLE, TYPE, PAYLOAD, QUEUE, PRIORITY, MAX_ATTEMPTS, TIMEOUT,
        Field("paused", "boolean", False),  # a paused schedule does not fire
    )
}  # fmt: skip


def defaults(table: dict[str, Field]) -> dict[str, Any]:
    """The fields of ``table`` that have a default, with it (a fresh copy of mutable ones)."""
    return {
        name: (dict(f.default) if isinstance(f.default, dict) else f.default)
        for name, f in table.items()
        if f.default is not None
    }
