"""Opaque list cursors: where the next page of GET /v1/tasks starts, and for which filters.

A cursor is the (created_at, id) of the last task of a page — the list's sort key — plus
the filters it was made for, in URL-safe base64 of a small JSON array. The next page walks
the index from that key (keyset pagination), so page 5,000 costs what page 1 does, where
OFFSET reads and throws away every row before it. Clients must treat it as opaque: its
layout may change between releases (a cursor from an older release is a clean 400).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

import orjson

_VERSION = 1


@dataclass(frozen=True, slots=True)
class Cursor:
    created_at: datetime
    id: int
    filters: tuple[str | None, ...]  # status, type, queue, as the request had them


class CursorError(ValueError):
    pass


def encode(cursor: Cursor) -> str:
    raw = orjson.dumps([_VERSION, cursor.created_at.isoformat(), cursor.id, cursor.filters])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode(text: str) -> Cursor:
    """The cursor a client sent back; ``CursorError`` if it is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        version, created_at, task_id, filters = orjson.loads(raw)
        if version != _VERSION or not isinstance(task_id, int) or not isinstance(filters, list):
            raise CursorError("not a cursor of this release")
        when = datetime.fromisoformat(created_at)
        if when.tzinfo is None:
            raise CursorError("no time zone")
        return Cursor(when, task_id, tuple(filters))
    except (binascii.Error, orjson.JSONDecodeError, TypeError, ValueError) as exc:
        raise CursorError(str(exc)) from None
