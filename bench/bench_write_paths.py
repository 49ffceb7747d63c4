#!/usr/bin/env python3
"""Write-path benchmark (not a test): how many noop tasks a second PostgreSQL itself can
claim and finish on this machine, by the shape of the writes, with pgbench. What the
worker's SQL could reach if the worker cost nothing; a guide for changing the queue's
schema, not a figure of FlowForge's.

    .venv/bin/python bench/bench_write_paths.py [--seconds 5] [--rounds 3]

Each path claims 50 due tasks per statement (priority, run_at, id order, SKIP LOCKED) at 2
clients, on a migrated database refilled with 750,000 pending noop tasks before every run:

- current: the worker's claim statement (status -> processing, lease, attempt) and, in
  the same transaction, the completion update: two updates of the wide `tasks` row, each
  writing every index (status is indexed, so neither is HOT);
- one write: a row lock to claim (SELECT ... FOR UPDATE SKIP LOCKED), then one update to
  the final state: what running a short task inside its claim's transaction would cost;
- narrow queue: the lease on a narrow `task_queue` table (its own partial index), claim
  committed, then the queue row deleted and the `tasks` row updated once.

Rounds alternate the order of the paths. Writes bench/results/write-paths.json, .md and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_api
import bench_worker

from flowforge import migrate
from flowforge.devdb import TempPostgres
from flowforge.stores import queue_sql

RESULTS = Path(__file__).resolve().parent / "results"
BATCH = 50
CLIENTS = 2
TOKEN = "md5(':client_id-:r')::uuid"

QUEUE_TABLE = """
CREATE TABLE task_queue (
    id bigint PRIMARY KEY, priority int NOT NULL DEFAULT 0,
    run_at timestamptz NOT NULL DEFAULT now(), lease_token uuid, lease_expires_at timestamptz,
    worker text);
CREATE INDEX task_queue_claim_idx ON task_queue (priority DESC, run_at, id)
    WHERE lease_token IS NULL;
"""
FINAL_STATE = (
    "status = 'completed', attempts = t.attempts + 1, worker = 'pgbench', "
    "started_at = now(), completed_at = now(), updated_at = now()"
)


def current() -> str:
    claim = " ".join(
        queue_sql._CLAIM_CTE.format(due=queue_sql._DUE_ANY_QUEUE)
        .replace("%(worker)s", "'pgbench'")
        .replace("%(token)s", TOKEN)
        .replace("%(lease)s", "30")
        .replace("%(limit)s", str(BATCH))
        .split()
    )
    return (
        "\\set r random(1, 2000000000)\nBEGIN;\n"
        f"WITH {claim} SELECT coalesce(array_agg(id), '{{}}') AS ids FROM claimed \\gset\n"
        "UPDATE tasks t SET status = 'completed', completed_at = now(), lease_token = NULL, "
        "lease_expires_at = NULL, updated_at = now() WHERE t.id = ANY(':ids'::bigint[]) "
        f"AND t.lease_token = {TOKEN} AND t.status = 'processing';\nCOMMIT;\n"
    )


def one_write() -> str:
    return (
        "BEGIN;\n"
        "SELECT coalesce(array_agg(id), '{}') AS ids FROM (SELECT id, type, payload FROM tasks "
        "WHERE status = 'pending' AND run_at <= now() AND attempts < max_attempts "
        f"ORDER BY priority DESC, run_at, id LIMIT {BATCH} FOR UPDATE SKIP LOCKED) d \\gset\n"
        f"UPDATE tasks t SET {FINAL_STATE} WHERE t.id = ANY(':ids'::bigint[]);\nCOMMIT;\n"
    )


def narrow_queue() -> str:
    return (
        "\\set r random(1, 2000000000)\nBEGIN;\n"
        f"WITH claimed AS (UPDATE task_queue q SET lease_token = {TOKEN}, worker = 'pgbench', "
        "lease_expires_at = now() + interval '30 s' FROM (SELECT id FROM task_queue "
        "WHERE lease_token IS NULL AND run_at <= now() ORDER BY priority DESC, run_at, id "
        f"LIMIT {BATCH} FOR UPDATE SKIP LOCKED) due WHERE q.id = due.id RETURNING q.id) "
        "SELECT coalesce(array_agg(t.id), '{}') AS ids, count(t.payload) "
        "FROM claimed c JOIN tasks t ON t.id = c.id \\gset\nCOMMIT;\nBEGIN;\n"
        "WITH d AS (DELETE FROM task_queue WHERE id = ANY(':ids'::bigint[]) "
        f"AND lease_token = {TOKEN} RETURNING id) "
        f"UPDATE tasks t SET {FINAL_STATE} FROM d WHERE t.id = d.id;\nCOMMIT;\n"
    )


PATHS = {
    "current: claim update + completion update, one commit": (current, False),
    "one write: row lock, then one update to the final state": (one_write, False),
    "narrow queue: lease on task_queue (commit), then delete + one update": (narrow_queue, True),
}


def fill(conn: psycopg.Connection, rows: int, queue_table: bool) -> None:
    conn.execute("TRUNCATE tasks, task_queue RESTART IDENTITY")
    conn.execute(
        "INSERT INTO tasks (title, type) SELECT 'task ' || g, 'noop' FROM generate_series(1, %s) g",
        (rows,),
    )
    if queue_table:
        conn.execute("INSERT INTO task_queue (id) SELECT id FROM tasks")
    conn.execute("VACUUM ANALYZE tasks")
    conn.execute("VACUUM ANALYZE task_queue")
    conn.execute("CHECKPOINT")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=int, default=5, help="length of each pgbench run")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    rows = 150_000 * a.seconds  # more than the fastest path takes in the run
    load_start = os.getloadavg()
    runs: dict[str, list[float]] = {name: [] for name in PATHS}
    pg = TempPostgres().start()
    try:
        url = bench_worker.create_db(pg.url(), "flowforge")
        migrate.upgrade(bench_worker.settings_for(url))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(QUEUE_TABLE)
            for rnd in range(a.rounds):
                order = list(PATHS.items())
                for name, (script, queue_table) in order if rnd % 2 == 0 else order[::-1]:
                    fill(conn, rows, queue_table)
                    bench_worker.pgbench(pg, url, script(), a.seconds, CLIENTS)
                    (done,) = conn.execute(
                        "SELECT count(*) FROM tasks WHERE status = 'completed'"
                    ).fetchone()
                    if done >= rows:
                        raise RuntimeError("pgbench ran out of tasks: raise the row count")
                    runs[name].append(done / a.seconds)
                    print(f"round {rnd + 1} {name}: {done / a.seconds:,.0f} tasks/s", flush=True)
    finally:
        pg.destroy()
    first = next(iter(PATHS))
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": bench_api.commit(),
        "command": "python bench/bench_write_paths.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in load_start],
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "setup": {"batch": BATCH, "clients": CLIENTS, "seconds": a.seconds, "rows": rows},
        "paths": {
            name: {
                "tasks_per_s_median": round(statistics.median(v)),
                "rounds": [round(x) for x in v],
                "over_current_paired": [
                    round(x / c, 3) for x, c in zip(v, runs[first], strict=True)
                ],
            }
            for name, v in runs.items()
        },
    }
    lines = [
        f"# Write paths: claim and finish in PostgreSQL alone ({result['when']})",
        "",
        f"Commit {result['commit']}; `{result['command']}`; {os.cpu_count()} cores, load "
        f"average {result['machine']['load_average_at_start']} at the start, "
        f"{result['machine']['load_average_at_end']} at the end. pgbench, {CLIENTS} clients, "
        f"{BATCH} tasks a statement, {a.seconds} s a run, {rows:,} pending noop tasks before "
        "each; medians of the rounds, which alternate the order of the paths.",
        "",
        "| path | tasks/s (median) | rounds | over current, paired per round |",
        "|---|---:|---|---|",
    ]
    for name, row in result["paths"].items():
        lines.append(
            f"| {name} | {row['tasks_per_s_median']:,} | "
            f"{', '.join(f'{x:,}' for x in row['rounds'])} | "
            f"{', '.join(f'{x:.2f}' for x in row['over_current_paired'])} |"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "write-paths.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "write-paths.md").write_text("\n".join(lines) + "\n")
    from plots import plot_write_paths

    plot_write_paths(result, RESULTS / "write-paths.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
