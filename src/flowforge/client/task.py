"""``Task``: a task as the API answers it (its JSON), typed and frozen."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..domain.states import TERMINAL


@dataclass(frozen=True, slots=True)
class Task:
    """One task. Its fields are the API's (openapi.yaml's Task; a test holds them to it);
    a field a newer server adds is kept in ``extra``, not lost."""

    id: int
    title: str
    description: str
    status: str
    queue: str
    priority: int
    type: str
    payload: dict[str, Any]
    result: Any
    attempts: int
    max_attempts: int
    timeout: int
    last_error: str | None
    cancel_requested: bool
    run_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    worker: str | None
    schedule: str | None
    request_id: str | None
    created_at: datetime
    updated_at: datetime
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        """Completed, failed or cancelled: it moves again only if retried."""
        return self.status in TERMINAL

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Task:
        """The task in an answer's ``data`` (timestamps parsed, RFC 3339 with Z)."""
        known = {}
        for name in _FIELDS:
            value = data.get(name)
            if name in _TIMES and isinstance(value, str):
                value = datetime.fromisoformat(value)
            known[name] = value
        extra = {k: v for k, v in data.items() if k not in _FIELDS}
        return cls(**known, extra=extra)


_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Task) if f.name != "extra")
_TIMES = frozenset(
    f.name for f in dataclasses.fields(Task) if "datetime" in str(f.type)
)  # annotations are strings here (from __future__ import annotations)
