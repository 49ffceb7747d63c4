"""The API's metrics without a server: route labels are templates, and the queue gauges
are cached and survive a database error (a fake store)."""

from __future__ import annotations

import pytest

from flowforge.api.metrics import QueueCollector, route_label
from flowforge.stores.stats import QueueMetrics


@pytest.mark.parametrize(
    ("rule", "label"),
    [
        ("/v1/tasks/<task_id:int>", "/v1/tasks/{id}"),
        ("/tasks/<task_id:int>/cancel", "/tasks/{id}/cancel"),
        ("/v1/schedules/<name>", "/v1/schedules/{name}"),
        ("/v1/tasks", "/v1/tasks"),
        (None, "unmatched"),
    ],
)
def test_route_labels_are_templates(rule: str | None, label: str) -> None:
    assert route_label(rule) == label


def test_gauges_are_cached_and_a_database_error_is_a_gauge_not_a_failure() -> None:
    now = [100.0]
    reads: list[int] = []

    def read() -> QueueMetrics:
        reads.append(1)
        if len(reads) == 3:
            raise RuntimeError("connection refused")
        return QueueMetrics([("default", "pending", len(reads))], [("default", 2.5)], 0.0, [])

    collector = QueueCollector(read, ttl=5.0, clock=lambda: now[0])

    def pending() -> float | None:
        families = {f.name: f for f in collector.collect()}
        up = families["flowforge_database_up"].samples[0].value
        if "flowforge_tasks" not in families:
            return None if up == 0 else -1
        return families["flowforge_tasks"].samples[0].value

    assert pending() == 1
    now[0] += 4.9
    assert pending() == 1 and len(reads) == 1  # cached
    now[0] += 0.2
    assert pending() == 2 and len(reads) == 2
    now[0] += 5
    assert pending() is None  # database_up 0, no stale counts
    now[0] += 5
    assert pending() == 4
