#!/usr/bin/env python3
"""What the list's second round trip costs (not a test): GET /v1/tasks's statements as the
store sends them now (the rows, then the planner's estimate, then the capped count: three
trips) beside the pipeline they used to share (the rows and the estimate in one trip, then
the count), on one kept connection, paired in alternating rounds.

    .venv/bin/python bench/bench_list_trips.py [--rows 1000] [--lists 2000] [--rounds 7]

The pipeline was dropped (issue 22): a failing rows query in it left the estimate recorded
as prepared by psycopg but never prepared by PostgreSQL. This measures what that costs per
list in wall time and in this process's CPU, on a table small enough that every list counts
(the estimate is below tasks_sql.COUNT_WHEN_ESTIMATE_BELOW, so no estimate is kept: the path
every list of a small queue takes). A large table keeps its estimate ESTIMATE_SECONDS per
filter, and its lists are the rows alone either way. Starts its own PostgreSQL.
Writes bench/results/list-trips.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg

from flowforge import db, migrate
from flowforge.config import load_settings
from flowforge.devdb import TempPostgres
from flowforge.stores import tasks_sql
from flowforge.stores.task_types import task_row

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LIMIT = 20
CASES: dict[str, tuple[str, ...]] = {"page 1": (), "page 1, status=pending": ("status",)}


def _params(used: tuple[str, ...]) -> dict[str, Any]:
    params: dict[str, Any] = {"status": "pending"} if used else {}
    return {**params, "limit": LIMIT + 1, "offset": 0, "cap": tasks_sql.EXACT_TOTAL_MAX + 1}


def sequential(conn: psycopg.Connection, used: tuple[str, ...]) -> int:
    """The store now: three statements, three trips."""
    params = _params(used)
    rows = conn.cursor(row_factory=task_row).execute(tasks_sql.list_tasks(used), params).fetchall()
    (plan,) = conn.execute(tasks_sql.estimate_tasks(used), params).fetchone()  # type: ignore[misc]
    assert int(plan[0]["Plan"]["Plan Rows"]) < tasks_sql.COUNT_WHEN_ESTIMATE_BELOW
    (count,) = conn.execute(tasks_sql.count_tasks(used), params).fetchone()  # type: ignore[misc]
    return len(rows) + count


def pipelined(conn: psycopg.Connection, used: tuple[str, ...]) -> int:
    """The store before: the rows and the estimate in one pipeline, then the count."""
    params = _params(used)
    with conn.pipeline():
        rows_cur = conn.cursor(row_factory=task_row).execute(tasks_sql.list_tasks(used), params)
        plan_cur = conn.execute(tasks_sql.estimate_tasks(used), params)
    rows = rows_cur.fetchall()
    (plan,) = plan_cur.fetchone()  # type: ignore[misc]
    assert int(plan[0]["Plan"]["Plan Rows"]) < tasks_sql.COUNT_WHEN_ESTIMATE_BELOW
    (count,) = conn.execute(tasks_sql.count_tasks(used), params).fetchone()  # type: ignore[misc]
    return len(rows) + count


VARIANTS = {"rows, estimate (now)": sequential, "pipeline (before)": pipelined}


def run(
    conn: psycopg.Connection, variant: Any, used: tuple[str, ...], n: int
) -> tuple[float, float]:
    """Microseconds per list: wall, and this process's CPU."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        variant(conn, used)
    return (
        (time.perf_counter() - wall) / n * 1e6,
        (time.process_time() - cpu) / n * 1e6,
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1000, help="tasks in the table")
    p.add_argument("--lists", type=int, default=2000, help="lists per variant per round")
    p.add_argument("--rounds", type=int, default=7)
    a = p.parse_args()
    load_start = os.getloadavg()
    pg = TempPostgres().start()
    try:
        url = pg.url()
        settings = load_settings({"DATABASE_URL": url})
        migrate.upgrade(settings)
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                "INSERT INTO tasks (title, status) SELECT 't' || g, "
                "CASE WHEN g %% 4 = 0 THEN 'pending' ELSE 'completed' END "
                "FROM generate_series(1, %s) g",
                (a.rows,),
            )
            admin.execute("VACUUM ANALYZE tasks")
        conn = db.connect(settings, "bench-list-trips")
        for case in CASES.values():  # past psycopg's prepare threshold, caches warm
            for variant in VARIANTS.values():
                run(conn, variant, case, 50)
        samples: dict[str, dict[str, list[tuple[float, float]]]] = {
            c: {v: [] for v in VARIANTS} for c in CASES
        }
        for rnd in range(a.rounds):
            for case, used in CASES.items():
                order = list(VARIANTS) if rnd % 2 == 0 else list(reversed(VARIANTS))
                for name in order:
                    samples[case][name].append(run(conn, VARIANTS[name], used, a.lists))
        conn.close()
    finally:
        pg.stop()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    now, before = VARIANTS
    report: dict[str, Any] = {
        "commit": commit,
        "rows": a.rows,
        "lists_per_round": a.lists,
        "rounds": a.rounds,
        "loadavg_start": load_start,
        "loadavg_end": os.getloadavg(),
        "cases": {},
    }
    lines = [
        f"# List statements: three trips against a pipeline (commit {commit})",
        "",
        f"{a.rows:,} tasks, {a.lists:,} lists per variant per round, {a.rounds} rounds, "
        f"paired (alternating order); load {load_start[0]:.2f} -> {os.getloadavg()[0]:.2f}.",
        "",
        "| case | variant | wall us/list (median) | CPU us/list (median) |",
        "| --- | --- | ---: | ---: |",
    ]
    for case in CASES:
        entry: dict[str, Any] = {}
        for name in VARIANTS:
            walls = [w for w, _ in samples[case][name]]
            cpus = [c for _, c in samples[case][name]]
            entry[name] = {"wall_us": statistics.median(walls), "cpu_us": statistics.median(cpus)}
            lines.append(
                f"| {case} | {name} | {entry[name]['wall_us']:.1f} | {entry[name]['cpu_us']:.1f} |"
            )
        paired_wall = [
            n[0] - b[0] for n, b in zip(samples[case][now], samples[case][before], strict=True)
        ]
        paired_cpu = [
            n[1] - b[1] for n, b in zip(samples[case][now], samples[case][before], strict=True)
        ]
        entry["extra_wall_us_paired"] = [round(x, 1) for x in paired_wall]
        entry["extra_cpu_us_paired"] = [round(x, 1) for x in paired_cpu]
        entry["extra_wall_us_median"] = round(statistics.median(paired_wall), 1)
        entry["extra_cpu_us_median"] = round(statistics.median(paired_cpu), 1)
        report["cases"][case] = entry
    lines.append("")
    for case, entry in report["cases"].items():
        lines.append(
            f"- {case}: the extra trip costs {entry['extra_wall_us_median']:.1f} us of wall time "
            f"and {entry['extra_cpu_us_median']:.1f} us of this process's CPU per list "
            f"(paired medians; per round {', '.join(map(str, entry['extra_wall_us_paired']))})."
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "list-trips.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "list-trips.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
