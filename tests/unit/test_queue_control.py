"""The list statement is built only from known filters."""

from __future__ import annotations

import pytest

from flowforge.stores import tasks_sql


def test_list_sql_refuses_unknown_filters() -> None:
    with pytest.raises(ValueError, match="no such list filter"):
        tasks_sql.list_tasks(("status; DROP TABLE tasks",))
