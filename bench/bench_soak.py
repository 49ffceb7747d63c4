#!/usr/bin/env python3
"""Soak benchmark (not a test): what hours of traffic do to the tasks table.

    .venv/bin/python bench/bench_soak.py [--minutes 10] [--rate 800] [--base-rows 1000000]

Starts its own PostgreSQL 15 (durable commits; autovacuum_naptime as the deploy sets it,
AUTOVACUUM_NAPTIME below), then runs the same load twice, one after the other, each for
half of --minutes, on a fresh database holding --base-rows tasks of history (failed ones,
which the soak's cleanup keeps, as an operator keeps dead letters longer):

1. the tasks table with PostgreSQL's default autovacuum settings (the migration's per-table
   settings reset), and
2. the table as `flowforge migrate` leaves it (per-table autovacuum settings).

The load, in both: a producer inserts --rate tasks a second (batches every 100 ms, the
API's batch path), one `flowforge worker` (concurrency 8) drains them, and a cleanup runs
every minute (`scripts/cleanup.py --older-than 1m --status completed`, compressed from an
operator's daily cron). Every --interval seconds it samples dead and live tuples,
autovacuum runs, the table's and its indexes' sizes, the pending backlog and how long a
claim-shaped read takes. Writes bench/results/soak.json, soak.md and soak.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_worker import create_db, log, settings_for, start_worker, stop
from plots import plot_soak

from flowforge import migrate
from flowforge.devdb import TempPostgres
from flowforge.stores import common_sql

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
# deploy/ansible/roles/postgresql/defaults/main.yml: postgresql_autovacuum_naptime
AUTOVACUUM_NAPTIME = "15s"

# The per-table settings the migration sets; reset for the "defaults" run.
AUTOVACUUM_OPTIONS = (
    "autovacuum_vacuum_scale_factor",
    "autovacuum_vacuum_threshold",
    "autovacuum_vacuum_insert_scale_factor",
    "autovacuum_analyze_scale_factor",
    "autovacuum_vacuum_cost_limit",
)

SAMPLE = """
SELECT n_live_tup, n_dead_tup, autovacuum_count, autoanalyze_count,
       pg_relation_size('tasks'), pg_indexes_size('tasks'),
       (SELECT count(*) FROM tasks WHERE status = 'pending')
FROM pg_stat_user_tables WHERE relname = 'tasks'
"""
# A claim-shaped read (what the worker's claim walks), timed from here.
CLAIM_PROBE = """
SELECT id FROM tasks WHERE status = 'pending' AND run_at <= now()
ORDER BY run_at, id LIMIT 50
"""


def produce(url: str, rate: int, stop_at: float, counter: list[int]) -> None:
    """Insert `rate` tasks a second in 10 batches, each one statement and a wake-up."""
    per_batch = max(1, rate // 10)
    with psycopg.connect(url, autocommit=True) as conn:
        next_tick = time.monotonic()
        while time.monotonic() < stop_at:
            with conn.transaction():
                conn.execute(
                    "INSERT INTO tasks (title, payload) "
                    "SELECT 'soak ' || g, jsonb_build_object('n', g) "
                    "FROM generate_series(1, %s) g",
                    (per_batch,),
                )
                conn.execute(common_sql.NOTIFY_IF_WAITING)
            counter[0] += per_batch
            next_tick += 0.1
            time.sleep(max(0.0, next_tick - time.monotonic()))


def cleanup(url: str, env: dict[str, str]) -> None:
    subprocess.run(
        [str(BIN / "python"), str(ROOT / "scripts" / "cleanup.py"), "--older-than", "1m",
         "--status", "completed", "--yes", "--quiet"],
        env={**env, "DATABASE_URL": url}, check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def seed_history(url: str, rows: int) -> None:
    """A table with a past: `rows` failed tasks, then vacuumed and analysed."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO tasks (title, status, attempts, last_error, payload, completed_at) "
            "SELECT 'history ' || g, 'failed', 3, 'boom', jsonb_build_object('n', g), now() "
            "FROM generate_series(1, %s) g",
            (rows,),
        )
        conn.execute("VACUUM ANALYZE tasks")


def run(url: str, tmp: Path, label: str, seconds: int, rate: int, interval: int) -> dict:
    samples: list[dict] = []
    produced = [0]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "WORKER_"))}
    worker = start_worker(url, "", tmp / f"worker-{label}.log", WORKER_CONCURRENCY="8")
    started = time.monotonic()
    producer = threading.Thread(
        target=produce, args=(url, rate, started + seconds, produced), daemon=True
    )
    producer.start()
    next_cleanup = started + 60
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            while time.monotonic() - started < seconds:
                time.sleep(interval)
                t0 = time.perf_counter()
                conn.execute(CLAIM_PROBE).fetchall()
                probe_ms = (time.perf_counter() - t0) * 1000
                live, dead, av, aa, table, indexes, pending = conn.execute(SAMPLE).fetchone()
                samples.append(
                    {
                        "t": round(time.monotonic() - started, 1),
                        "live": live,
                        "dead": dead,
                        "autovacuums": av,
                        "autoanalyzes": aa,
                        "table_mb": round(table / 2**20, 2),
                        "indexes_mb": round(indexes / 2**20, 2),
                        "pending": pending,
                        "claim_probe_ms": round(probe_ms, 3),
                    }
                )
                if time.monotonic() >= next_cleanup:
                    cleanup(url, env)
                    next_cleanup += 60
            producer.join()
    finally:
        stop([worker])
    dead = [s["dead"] for s in samples]
    return {
        "label": label,
        "seconds": seconds,
        "tasks_created": produced[0],
        "max_dead": max(dead),
        "median_dead": statistics.median(dead),
        "final_table_mb": samples[-1]["table_mb"],
        "final_indexes_mb": samples[-1]["indexes_mb"],
        "autovacuums": samples[-1]["autovacuums"],
        "max_pending": max(s["pending"] for s in samples),
        "median_claim_probe_ms": statistics.median(s["claim_probe_ms"] for s in samples),
        "samples": samples,
    }


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Soak: create and drain for a while, watch the table",
        "",
        f"{r['date']}, commit {r['commit']}, {m['cpus']} CPUs (load average "
        f"{m['load_average_at_start']} at the start, {m['load_average_at_end']} at the end), "
        f"PostgreSQL {m['postgres']} (autovacuum_naptime {m['autovacuum_naptime']}, as "
        f"deployed). {r['base_rows']:,} rows of history, {r['rate']} tasks/s created and "
        f"drained. Command: `{r['command']}`.",
        "",
        f"Per-table settings of the migration: {r['table_options']}",
        "",
        "| run | tasks created | dead rows max / median | autovacuum runs | table MB | "
        "indexes MB | claim read ms (median) | backlog max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run_ in r["runs"]:
        lines.append(
            f"| {run_['label']} | {run_['tasks_created']} | {run_['max_dead']} / "
            f"{run_['median_dead']:.0f} | {run_['autovacuums']} | {run_['final_table_mb']} | "
            f"{run_['final_indexes_mb']} | {run_['median_claim_probe_ms']:.2f} | "
            f"{run_['max_pending']} |"
        )
    lines += ["", "![soak](soak.png)", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10, help="both runs together")
    p.add_argument("--rate", type=int, default=800, help="tasks created a second")
    p.add_argument("--interval", type=int, default=5, help="seconds between samples")
    p.add_argument("--base-rows", type=int, default=1_000_000, help="history in the table")
    a = p.parse_args(argv)
    seconds = int(a.minutes * 60 / 2)

    pg = TempPostgres().start()
    tmp = Path(tempfile.mkdtemp(prefix="flowforge-soak-"))
    try:
        with psycopg.connect(pg.url(), autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET autovacuum_naptime = '{AUTOVACUUM_NAPTIME}'")
            conn.execute("SELECT pg_reload_conf()")
            time.sleep(0.5)
            pg_version = conn.execute("SHOW server_version").fetchone()[0]
            naptime = conn.execute("SHOW autovacuum_naptime").fetchone()[0]
        result: dict = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "commit": subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip(),
            "command": "python bench/bench_soak.py " + " ".join(argv),
            "machine": {
                "cpus": os.cpu_count(),
                "load_average_at_start": round(os.getloadavg()[0], 2),
                "python": platform.python_version(),
                "postgres": pg_version,
                "autovacuum_naptime": naptime,
            },
            "base_rows": a.base_rows,
            "rate": a.rate,
            "runs": [],
        }
        for label in ("PostgreSQL defaults", "FlowForge table settings"):
            url = create_db(pg.url(), "soak_defaults" if "defaults" in label else "soak_ours")
            migrate.upgrade(settings_for(url))
            with psycopg.connect(url, autocommit=True) as conn:
                options = conn.execute(
                    "SELECT reloptions FROM pg_class WHERE relname = 'tasks'"
                ).fetchone()[0]
                if "defaults" in label:
                    conn.execute(f"ALTER TABLE tasks RESET ({', '.join(AUTOVACUUM_OPTIONS)})")
                else:
                    result["table_options"] = options
            seed_history(url, a.base_rows)
            log(f"soak: {label}, {seconds} s at {a.rate} tasks/s on {a.base_rows} rows")
            result["runs"].append(run(url, tmp, label, seconds, a.rate, a.interval))
        result["machine"]["load_average_at_end"] = round(os.getloadavg()[0], 2)
    finally:
        pg.destroy()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "soak.md").write_text(markdown(result))
    plot_soak(result, RESULTS / "soak.png")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
