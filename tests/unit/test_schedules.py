"""Cron expressions: only valid five-field ones pass, and the next run is later, in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flowforge.domain.schedules import check_cron, next_after

T0 = datetime(2026, 11, 25, 12, 0, 30, tzinfo=UTC)


# -- cron --------------------------------------------------------------------------------


def test_next_after_is_strictly_later_and_in_utc() -> None:
    assert next_after("* * * * *", "UTC", T0) == datetime(2026, 11, 25, 12, 1, tzinfo=UTC)
    on_the_minute = datetime(2026, 11, 25, 12, 1, tzinfo=UTC)
    assert next_after("* * * * *", "UTC", on_the_minute) == on_the_minute + timedelta(minutes=1)
    # 09:00 in Riga is 07:00 UTC in winter.
    assert next_after("0 9 * * *", "Europe/Riga", T0) == datetime(2026, 11, 26, 7, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["* * * *", "* * * * * *", "@daily", "61 * * * *", "a b c d e"])
def test_only_valid_five_field_crons_pass(bad: str) -> None:
    with pytest.raises(ValueError):
        check_cron(bad)
    assert check_cron(" */5   * * * 1-5 ") == "*/5 * * * 1-5"
