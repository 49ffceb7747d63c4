"""The queue's gauges (GET /metrics, at scrape time) and what GET /v1/stats shows (the
dashboard): the SQL and the code that reads it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from psycopg.rows import dict_row

from ..db import ConnectionSource
from ..domain.states import FINISHED, STATUSES
from .common_sql import local_statement_timeout

# Every status a task can have (the schema's CHECK), counted whether present or not.
METRIC_STATUSES = STATUSES

# Counting a large table is what a scrape must not do (GROUP BY queue, status reads every
# row: about 1 s on 1,000,000 rows here). So each status is counted only up to a cap (an
# index-only walk of tasks_status_created_idx or the partial indexes); a status under the
# cap is then counted exactly by queue, one over it is PostgreSQL's estimate (reltuples x
# the status's frequency in pg_stats, fresh after autovacuum's ANALYZE), split by queue as
# a sample of its rows is. bench/bench_metrics.py measures a scrape.
METRICS_STATUS_CAPPED = """
SELECT s.status,
       (SELECT count(*) FROM (SELECT 1 FROM tasks t WHERE t.status = s.status
                              LIMIT %(cap)s + 1) AS c) AS capped,
       (SELECT round(c.reltuples * f.freq)::bigint
        FROM pg_class c, (SELECT v.freq FROM pg_stats p,
                          unnest(p.most_common_vals::text::text[], p.most_common_freqs)
                          AS v(value, freq)
                          WHERE p.schemaname = 'public' AND p.tablename = 'tasks'
                            AND p.attname = 'status' AND v.value = s.status) AS f
        WHERE c.oid = 'tasks'::regclass) AS estimate
FROM unnest(%(statuses)s::text[]) AS s(status)
"""
METRICS_COUNTS_EXACT = """
SELECT queue, status, count(*) FROM tasks WHERE status = ANY(%(statuses)s) GROUP BY queue, status
"""
# A large status's queue split: a sample of its rows, the newest ones (pending: the next
# due, in claim order); each walks its index.
METRICS_QUEUE_SPLIT = """
SELECT queue, count(*) FROM (
    SELECT queue FROM tasks WHERE status = %(status)s
    ORDER BY created_at DESC, id DESC LIMIT %(sample)s
) AS newest GROUP BY queue
"""
METRICS_QUEUE_SPLIT_PENDING = """
SELECT queue, count(*) FROM (
    SELECT queue FROM tasks WHERE status = 'pending' ORDER BY run_at, id LIMIT %(sample)s
) AS next_due GROUP BY queue
"""
# How long the oldest due pending task of each queue has waited (since its run_at): per
# queue, the first due row in run_at order (the claim index).
METRICS_OLDEST_PENDING = """
SELECT q.queue, extract(epoch FROM now() - (
    SELECT t.run_at FROM tasks t
    WHERE t.status = 'pending' AND t.queue = q.queue AND t.run_at <= now()
    ORDER BY t.run_at, t.id LIMIT 1))::float8
FROM unnest(%(queues)s::text[]) AS q(queue)
"""
# The oldest transaction open in this database (it pins the vacuum horizon: dead rows
# pile up in the claim index). Other roles' sessions show only with pg_read_all_stats.
METRICS_OLDEST_TRANSACTION = """
SELECT coalesce(extract(epoch FROM now() - min(xact_start)), 0)::float8
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
"""

# Each queue's settings (queue_settings): paused, its concurrency limit, its rate as
# starts per second, whether its circuit breaker paused it.
METRICS_QUEUE_SETTINGS = """
SELECT name, paused, concurrency, rate_limit / rate_per, paused_by IS NOT DISTINCT FROM 'breaker'
FROM queue_settings ORDER BY name
"""

# The minute now is in, on the server's clock: the throughput's minutes count back from it.
STATS_THIS_MINUTE = "SELECT date_trunc('minute', now())"
# Tasks finished per minute over the last %(minutes)s minutes, by outcome; walks the partial
# index on completed_at (tasks_finished_idx), however large the table.
STATS_THROUGHPUT = """
SELECT date_trunc('minute', completed_at) AS minute, status, count(*)
FROM tasks
WHERE completed_at >= date_trunc('minute', now()) - make_interval(mins => %(minutes)s - 1)
GROUP BY 1, 2
ORDER BY 1
"""
# The newest failures (tasks_status_created_idx, newest first), with why they failed.
STATS_RECENT_FAILURES = """
SELECT id, title, type, queue, attempts, max_attempts, last_error, completed_at
FROM tasks WHERE status = 'failed'
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s
"""
# Workers whose heartbeat is fresh (the registry, revision 0007).
STATS_LIVE_WORKERS = """
SELECT id, host, pid, version, queues, capacity, busy, isolation, started_at, heartbeat_at
FROM workers WHERE expires_at > now()
ORDER BY host, pid
"""


@dataclass(frozen=True, slots=True)
class QueueMetrics:
    """What /metrics reports from the database."""

    counts: list[tuple[str, str, int]]  # queue, status, tasks
    oldest_pending: list[tuple[str, float]]  # queue, seconds the oldest due task waited
    oldest_transaction_seconds: float
    estimated: list[str]  # statuses whose counts are estimates (more than the cap)
    # queue, paused, concurrency limit, rate limit in starts per second (None: unlimited),
    # paused by its circuit breaker
    settings: list[tuple[str, bool, int | None, float | None, bool]] = field(default_factory=list)


def queue_metrics(
    source: ConnectionSource, timeout_ms: int, *, cap: int = 10_000, sample: int = 1_000
) -> QueueMetrics:
    """The queue's gauges for /metrics (see METRICS_STATUS_CAPPED): counts by
    queue and status, exact for a status with at most ``cap`` tasks, else estimated;
    each statement cut off after ``timeout_ms``."""
    statuses = list(METRIC_STATUSES)
    counts: dict[tuple[str, str], int] = {}
    estimated: list[str] = []
    with source.connection() as conn, conn.transaction():
        conn.execute(local_statement_timeout(timeout_ms))
        capped = conn.execute(METRICS_STATUS_CAPPED, {"cap": cap, "statuses": statuses}).fetchall()
        small = [status for status, n, _ in capped if n <= cap]
        for queue, status, n in conn.execute(METRICS_COUNTS_EXACT, {"statuses": small}).fetchall():
            counts[queue, status] = n
        for status, n, estimate in capped:
            if n <= cap:
                continue
            estimated.append(status)
            total = max(int(estimate or 0), n)  # never below what was counted
            split = conn.execute(
                METRICS_QUEUE_SPLIT_PENDING if status == "pending" else METRICS_QUEUE_SPLIT,
                {"status": status, "sample": sample},
            ).fetchall()
            seen = sum(k for _, k in split) or 1
            for queue, k in split:
                counts[queue, status] = round(total * k / seen)
        queues = sorted({q for q, s in counts if s == "pending"})
        oldest = conn.execute(METRICS_OLDEST_PENDING, {"queues": queues}).fetchall()
        (xact,) = conn.execute(METRICS_OLDEST_TRANSACTION).fetchone() or (0.0,)
        settings = conn.execute(METRICS_QUEUE_SETTINGS).fetchall()
    return QueueMetrics(
        [(q, s, n) for (q, s), n in sorted(counts.items())],
        [(q, age) for q, age in oldest if age is not None],
        float(xact),
        estimated,
        [(q, paused, limit, rate, tripped) for q, paused, limit, rate, tripped in settings],
    )


def stats(
    source: ConnectionSource, timeout_ms: int, *, minutes: int = 15, failures: int = 10
) -> dict[str, Any]:
    """What GET /v1/stats shows (the dashboard): tasks by status and queue (exact up to
    10,000 per status, as /metrics), the oldest due pending task's age per queue,
    tasks finished per minute over ``minutes``, the newest ``failures`` and the live
    workers. Each statement is cut off after ``timeout_ms``."""
    metrics = queue_metrics(source, timeout_ms)
    with source.connection() as conn, conn.transaction():
        conn.execute(local_statement_timeout(timeout_ms))
        per_minute = conn.execute(STATS_THROUGHPUT, {"minutes": minutes}).fetchall()
        cur = conn.cursor(row_factory=dict_row)
        recent = cur.execute(STATS_RECENT_FAILURES, {"limit": failures}).fetchall()
        workers = cur.execute(STATS_LIVE_WORKERS).fetchall()
        (now,) = conn.execute(STATS_THIS_MINUTE).fetchone() or (None,)
    by_status = dict.fromkeys(METRIC_STATUSES, 0)
    by_queue: dict[str, dict[str, int]] = {}
    for queue, status, n in metrics.counts:
        by_status[status] = by_status.get(status, 0) + n
        by_queue.setdefault(queue, dict.fromkeys(METRIC_STATUSES, 0))[status] = n
    finished: dict[datetime, dict[str, int]] = {}
    for minute, status, n in per_minute:
        finished.setdefault(minute, {})[status] = n
    throughput = []
    for back in range(minutes - 1, -1, -1):
        minute = now - timedelta(minutes=back)
        row = finished.get(minute, {})
        throughput.append(
            {
                "minute": minute,
                **{s.value: row.get(s, 0) for s in FINISHED},
            }
        )
    return {
        "tasks": {
            "by_status": by_status,
            "by_queue": by_queue,
            "exact": not metrics.estimated,
        },
        "oldest_pending_age_seconds": dict(metrics.oldest_pending),
        "throughput_per_minute": throughput,
        "recent_failures": recent,
        "workers": workers,
    }
