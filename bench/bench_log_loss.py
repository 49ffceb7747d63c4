#!/usr/bin/env python3
"""How many task outcome log lines a SIGKILL loses (not a test): the worker's outcome lines
are written by a logging thread after the outcomes are committed, so a SIGKILL can lose
the lines still queued. This measures that bound.

    .venv/bin/python bench/bench_log_loss.py [--tasks 20000] [--rounds 5]

Each round: one `flowforge worker` (concurrency 8, LOG_LEVEL=info, its lines to a file),
noop tasks, SIGKILL at a random moment mid-run; then count the tasks the database has
completed by that worker and the `task completed` lines its log holds for them. Writes
bench/results/worker-log-loss.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_worker import (
    RESULTS,
    _plugin_dir,
    bulk_insert,
    create_db,
    reset,
    settings_for,
    start_worker,
)

from flowforge import migrate
from flowforge.devdb import TempPostgres


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--isolation", default="process")
    a = p.parse_args(argv)
    pg = TempPostgres().start()
    tmp = Path(tempfile.mkdtemp(prefix="flowforge-bench-"))
    plugin = _plugin_dir(tmp)
    rng = random.Random(1)
    rows = []
    try:
        url = create_db(pg.url(), "flowforge")
        migrate.upgrade(settings_for(url))
        with psycopg.connect(url, autocommit=True) as conn:
            for round_ in range(a.rounds):
                reset(conn, "tasks")
                logfile = tmp / f"kill-{round_}.log"
                proc = start_worker(
                    url, str(plugin), logfile, WORKER_CONCURRENCY="8",
                    WORKER_METRICS_PORT="0", WORKER_ISOLATION=a.isolation,
                )  # fmt: skip
                bulk_insert(conn, a.tasks)
                target = rng.uniform(0.2, 0.8) * a.tasks
                done = "SELECT count(*) FROM tasks WHERE status = 'completed'"
                while conn.execute(done).fetchone()[0] < target:
                    time.sleep(0.002)
                proc.kill()
                proc.wait()
                name = f"{socket.gethostname()}:{proc.pid}"
                completed = {
                    r[0]
                    for r in conn.execute(
                        "SELECT id FROM tasks WHERE status = 'completed' AND worker = %s", (name,)
                    )
                }
                logged = set()
                for line in logfile.read_text().splitlines():
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue
                    if entry.get("message") == "task completed":
                        logged.add(entry["task_id"])
                lost = len(completed - logged)
                rows.append({"completed": len(completed), "without_line": lost})
                print(json.dumps(rows[-1]), flush=True)
        r = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": "python bench/bench_log_loss.py " + " ".join(argv),
            "machine": {
                "cpus": os.cpu_count(),
                "load_average": round(os.getloadavg()[0], 2),
                "python": platform.python_version(),
            },
            "isolation": a.isolation,
            "rounds": rows,
        }
        lines = [
            "# Outcome log lines lost to a SIGKILL",
            "",
            f"{r['date']}, {r['machine']['cpus']} CPUs (load average "
            f"{r['machine']['load_average']}), Python {r['machine']['python']}. Command: "
            f"`{r['command']}`. One worker (WORKER_ISOLATION={a.isolation}, concurrency 8, "
            "LOG_LEVEL=info), noop tasks, SIGKILL mid-run; tasks the database has as "
            "completed by that worker against its `task completed` lines.",
            "",
            "| round | completed | without a log line |",
            "|---|---|---|",
            *(
                f"| {i + 1} | {row['completed']} | {row['without_line']} |"
                for i, row in enumerate(rows)
            ),
            "",
            f"At most {max(row['without_line'] for row in rows)} lines lost per SIGKILL "
            "(the outcome lines still queued for the logging thread when the process died; "
            "the database has every outcome).",
        ]
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "worker-log-loss.json").write_text(json.dumps(r, indent=2) + "\n")
        (RESULTS / "worker-log-loss.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
    finally:
        pg.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
