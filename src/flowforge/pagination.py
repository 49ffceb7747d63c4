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
import re
from dataclasses import dataclass
from datetime import datetime

import orjson

from . import timestamps

_VERSION = 1
_ALPHABET = re.compile(r"[A-Za-z0-9_-]{1,1000}", re.ASCII)
ID_MAX = 2**63 - 1  # tasks.id is a bigint
FILTERS = 3  # status, type, queue


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
    """The cursor a client sent back; ``CursorError`` if it is not one of ours.

    Every part is checked by type before any of it reaches SQL: a cursor is the client's
    to change, and one whose id was JSON ``true`` once made the list's query fail in
    PostgreSQL (``bigint < boolean``), a 500 instead of this 400. ``True`` is an ``int``
    in Python, so booleans are refused by name."""
    if not _ALPHABET.fullmatch(text):  # b64decode would skip what is not base64url
        raise CursorError("not URL-safe base64")
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, orjson.JSONDecodeError, ValueError) as exc:
        raise CursorError(str(exc)) from None
    if not isinstance(raw, list) or len(raw) != 4:
        raise CursorError("not a cursor of this release")
    version, created_at, task_id, filters = raw
    if not _whole(version) or version != _VERSION:
        raise CursorError("not a cursor of this release")
    if not _whole(task_id) or not 1 <= task_id <= ID_MAX:
        raise CursorError("the task id is not a task id")
    if (
        not isinstance(filters, list)
        or len(filters) != FILTERS
        or not all(f is None or isinstance(f, str) for f in filters)
    ):
        raise CursorError("the filters are not a cursor's")
    try:
        when = timestamps.parse(created_at)
    except ValueError as exc:
        raise CursorError(f"the time {exc}") from None
    return Cursor(when, task_id, tuple(filters))


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
