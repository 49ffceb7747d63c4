"""One duration syntax, read and written in one module (flowforge.durations): settings, the
scripts' reports and the tasks command's columns print through the same function."""

from __future__ import annotations

import pytest

from flowforge.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("seconds", "exact", "units", "decimal"),
    [
        (0.5, "500ms", "0.5s", "0.5s"),
        (5.25, "5250ms", "5.2s", "5.2s"),
        (90, "90s", "1m 30s", "1.5m"),
        (3600, "1h", "1h", "1.0h"),
        (7200.5, "7200500ms", "2h", "2.0h"),
        (93784, "93784s", "1d 2h", "1.1d"),
        (1209600, "2w", "14d", "14.0d"),
    ],
)
def test_three_styles_of_one_formatter(seconds: float, exact: str, units: str, decimal: str):
    assert format_duration(seconds) == exact
    assert parse_duration(exact) == pytest.approx(seconds)  # exact reads back
    assert format_duration(seconds, "units") == units
    assert format_duration(seconds, "decimal") == decimal


def test_a_negative_age_reads_as_zero() -> None:
    assert format_duration(-3, "units") == format_duration(-3, "decimal") == "0.0s"
