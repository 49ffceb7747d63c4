"""The one RFC 3339 parser (flowforge.timestamps) and the cursor decoder built on it:
strict, with openapi.yaml's RunAt pattern saying the same."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
import yaml

from flowforge import pagination, timestamps

from ..support import ROOT

ACCEPTED = {
    "2026-01-31T12:00:00Z": datetime(2026, 1, 31, 12, tzinfo=UTC),
    "2026-01-31t12:00:00z": datetime(2026, 1, 31, 12, tzinfo=UTC),
    "2026-01-31T12:00:00-00:00": datetime(2026, 1, 31, 12, tzinfo=UTC),
    "2026-01-31T14:30:00+02:30": datetime(2026, 1, 31, 12, tzinfo=UTC),
    "2026-01-31T00:00:00-23:59": datetime(2026, 1, 31, 23, 59, tzinfo=UTC),
    "2026-01-31T12:00:00.5Z": datetime(2026, 1, 31, 12, 0, 0, 500_000, tzinfo=UTC),
    "2026-01-31T12:00:00.123456Z": datetime(2026, 1, 31, 12, 0, 0, 123_456, tzinfo=UTC),
    "2026-01-31T12:00:00.1234567Z": datetime(2026, 1, 31, 12, 0, 0, 123_456, tzinfo=UTC),
    "2026-01-31T23:59:59.999999999Z": datetime(2026, 1, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    "2024-02-29T00:00:00Z": datetime(2024, 2, 29, tzinfo=UTC),
    "0002-01-01T00:00:00+23:59": datetime(1, 12, 31, 0, 1, tzinfo=UTC),
    "9998-12-31T23:59:59-23:59": datetime(9999, 1, 1, 23, 58, 59, tzinfo=UTC),
}

REFUSED = {
    "2026-01-31T12:00:00Z\x00junk": "NUL",
    "2026-01-31 12:00:00Z": "a T between",
    "2026-01-31T12:00:00": "time zone",
    "2026-01-31T12:00:00.5": "time zone",
    "2026-W05-6T12:00:00Z": "RFC 3339",
    "2026-031T12:00:00Z": "RFC 3339",
    "20260131T120000Z": "RFC 3339",
    "2026-01-31T1200Z": "RFC 3339",
    "2026-01-31T12:00Z": "RFC 3339",
    "2026-01-31": "RFC 3339",
    "2026-01-31T12:00:00.Z": "RFC 3339",
    "2026-01-31T12:00:00,5Z": "RFC 3339",
    "2026-01-31T12:00:00.1234567891Z": "RFC 3339",
    "2026-01-31T12:00:00+0200": "RFC 3339",
    "2026-01-31T12:00:00+02": "RFC 3339",
    "2026-01-31T12:00:00 +02:00": "RFC 3339",
    "2026-01-31T12:00:00UTC": "RFC 3339",
    "2026-01-31T12:00:00Z\n": "RFC 3339",
    " 2026-01-31T12:00:00Z": "RFC 3339",
    "+2026-01-31T12:00:00Z": "RFC 3339",
    "\u0662\u0660\u0662\u0666-01-31T12:00:00Z": "RFC 3339",  # Arabic-Indic digits
    "": "RFC 3339",
    "2026-12-31T23:59:60Z": "leap second",
    "2026-02-29T00:00:00Z": "real time",
    "2026-13-01T00:00:00Z": "real time",
    "2026-00-10T00:00:00Z": "real time",
    "2026-01-31T24:00:00Z": "real time",
    "2026-01-31T12:60:00Z": "real time",
    "2026-01-31T12:00:00+24:00": "offset",
    "2026-01-31T12:00:00+02:60": "offset",
    "0001-12-31T23:00:00Z": "years 2 and 9998",
    "9999-01-01T00:00:00Z": "years 2 and 9998",
    "0000-01-01T00:00:00Z": "years 2 and 9998",
}


@pytest.mark.parametrize(("text", "expected"), ACCEPTED.items())
def test_rfc_3339_is_read_in_utc(text: str, expected: datetime) -> None:
    parsed = timestamps.parse(text)
    assert parsed == expected and parsed.tzinfo is UTC


@pytest.mark.parametrize(("text", "problem"), REFUSED.items())
def test_anything_wider_than_rfc_3339_is_refused(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        timestamps.parse(text)


@pytest.mark.parametrize("value", [1767225600, 1.5, None, True, ["2026-01-31T12:00:00Z"]])
def test_a_timestamp_is_a_string(value: object) -> None:
    with pytest.raises(ValueError, match="timestamp string"):
        timestamps.parse(value)


def test_openapi_states_the_same_grammar() -> None:
    """RunAt's pattern is timestamps.PATTERN, and it agrees with the parser on every
    sample but those only the parser can tell (a day past the month's end; a trailing
    newline, which Python's `$` lets through and ECMA's does not)."""
    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    assert spec["components"]["schemas"]["RunAt"]["pattern"] == timestamps.PATTERN
    pattern = re.compile(timestamps.PATTERN)
    for text in ACCEPTED:
        assert pattern.search(text), text
    for text in REFUSED:
        if text in ("2026-02-29T00:00:00Z", "2026-01-31T12:00:00Z\n"):
            continue
        assert not pattern.search(text), text


def _cursor(raw: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(raw)).rstrip(b"=").decode()


def test_a_cursor_round_trips() -> None:
    when = datetime(2026, 1, 31, 12, 0, 0, 250, tzinfo=UTC)
    for key in (when, when.replace(microsecond=0), when.astimezone(timezone(timedelta(hours=3)))):
        cursor = pagination.Cursor(key, 2**63 - 1, ("failed", None, "mail"))
        assert pagination.decode(pagination.encode(cursor)) == cursor


@pytest.mark.parametrize(
    "raw",
    [
        [1, "2026-01-31T12:00:00+00:00", True, [None] * 3],
        [True, "2026-01-31T12:00:00+00:00", 1, [None] * 3],
        [1, "2026-01-31T12:00:00+00:00", 1.0, [None] * 3],
        [1, "2026-01-31T12:00:00+00:00", "1", [None] * 3],
        [1, "2026-01-31T12:00:00+00:00", 0, [None] * 3],
        [1, "2026-01-31T12:00:00+00:00", 2**63, [None] * 3],
        [1, "2026-01-31T12:00:00+00:00", 1, [None, 1, None]],
        [1, "2026-01-31T12:00:00+00:00", 1, [None] * 2],
        [1, "2026-01-31T12:00:00+00:00", 1, "xyz"],
        [1, "2026-01-31T12:00:00+00:00\x00", 1, [None] * 3],
        [1, "2026-01-31T12:00:00", 1, [None] * 3],
        [1, 1767182400, 1, [None] * 3],
        [1, "2026-01-31T12:00:00+00:00", 1],
        {"a": 1, "b": 2, "c": 3, "d": 4},  # unpacks into four keys
        "abcd",
    ],
)
def test_a_changed_cursor_is_refused(raw: object) -> None:
    with pytest.raises(pagination.CursorError):
        pagination.decode(_cursor(raw))


@pytest.mark.parametrize("text", ["", "a", "!!!!", "e30=", "e30 ", "x" * 1001, "\u00e9t\u00e9"])
def test_what_is_not_base64url_json_is_refused(text: str) -> None:
    with pytest.raises(pagination.CursorError):
        pagination.decode(text)
