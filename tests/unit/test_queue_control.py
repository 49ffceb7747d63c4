"""The list statement is built only from known filters."""

from __future__ import annotations

import pytest

from flowforge import queries


def test_list_sql_refuses_unknown_filters() -> None:
    with pytest.raises(ValueError, match="no such list filter"):
        queries.list_tasks(("status; DROP TABLE tasks",))
