"""RFC 3339 timestamps as the API takes them: the one parser of every time a client sends
(a task's ``run_at`` in POST, PUT and batches, the key inside a list cursor).

``datetime.fromisoformat`` is not that parser: it reads ISO 8601, which is wider (week
dates, the basic format, a space for the T, no seconds), and Python 3.11's stops at a NUL,
so ``"...Z\\u0000junk"`` parsed. Here the grammar is RFC 3339 section 5.6, checked whole:

    YYYY-MM-DD "T" hh:mm:ss [ "." 1*9DIGIT ] ( "Z" / ("+" / "-") hh:mm )

- ``t`` and ``z`` may be lower case (the RFC's note to 5.6 allows it, and JSON Schema's
  ``date-time`` takes them); the space the RFC lets applications use instead of the T is
  refused, as is anything ISO 8601 has beyond the RFC.
- 1 to 9 fractional digits (the RFC sets no bound; 9 is what Go, Java and .NET write).
  PostgreSQL keeps microseconds: digits past the sixth are dropped, not rounded (no carry
  into the next second).
- A leap second (``:60``) is refused: no datetime (and no timestamptz) can hold it.
- ``-00:00`` (the RFC's "offset unknown") is UTC, as ``Z``.
- Years 2 to 9998 as written: an offset could move 0001-01-01 into year 0 and 9999-12-31
  into year 10000, which no datetime holds.

``PATTERN`` is the same grammar with the ranges, as openapi.yaml states it (``RunAt``), so a
client's schema validator and the API agree.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

YEAR_MIN, YEAR_MAX = 2, 9998
FRACTION_DIGITS_MAX = 9
EXAMPLE = "2026-01-31T12:00:00Z"

# fullmatch and re.ASCII: `$` would let a trailing newline through, and \d other scripts'
# digits.
_GRAMMAR = re.compile(
    r"(?P<date>(\d{4})-(\d{2})-(\d{2}))[Tt](\d{2}):(\d{2}):(\d{2})"
    rf"(?:\.(\d{{1,{FRACTION_DIGITS_MAX}}}))?(?P<zone>[Zz]|([+-])(\d{{2}}):(\d{{2}}))?",
    re.ASCII,
)

# openapi.yaml's RunAt pattern: the grammar above, with the ranges of each field and the
# years' bounds (the day of the month is checked by the API alone: 2026-02-30 is refused).
PATTERN = (
    r"^(000[2-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])"
    r"-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)


def parse(value: Any) -> datetime:
    """``value`` as an aware datetime in UTC; ``ValueError`` saying what is wrong, worded to
    follow a field's name ("run_at must ...")."""
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 timestamp string")
    match = _GRAMMAR.fullmatch(value)
    if match is None:
        if "\x00" in value:
            raise ValueError("must not contain NUL characters")
        if value[10:11] == " ":
            raise ValueError(f"must have a T between the date and the time, e.g. {EXAMPLE}")
        raise ValueError(f"must be an RFC 3339 timestamp, e.g. {EXAMPLE}")
    if match["zone"] is None:
        raise ValueError(f"must carry a time zone (Z or an offset), e.g. {EXAMPLE}")
    year, month, day, hour, minute, second = (int(match[i]) for i in range(2, 8))
    fraction, sign, zone_hours, zone_minutes = match[8], match[10], match[11], match[12]
    if not YEAR_MIN <= year <= YEAR_MAX:
        raise ValueError(f"must be between years {YEAR_MIN} and {YEAR_MAX}")
    if second == 60:
        raise ValueError("must not be a leap second (:60): it cannot be stored")
    offset = UTC
    if sign is not None:
        if int(zone_hours) > 23 or int(zone_minutes) > 59:
            raise ValueError("must have an offset from -23:59 to +23:59")
        delta = timedelta(hours=int(zone_hours), minutes=int(zone_minutes))
        offset = timezone(-delta if sign == "-" else delta)
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        parsed = datetime(year, month, day, hour, minute, second, micro, tzinfo=offset)
    except ValueError as exc:  # month 13, February 30, hour 24 and the like
        raise ValueError(f"must be a real time ({exc}), e.g. {EXAMPLE}") from None
    return parsed.astimezone(UTC)
