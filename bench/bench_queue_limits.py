#!/usr/bin/env python3
"""What a limited queue costs the queues beside it (not a test): one `flowforge worker`
(concurrency 8, process isolation) drains N noop tasks of the queue `default`, with no
queue settings anywhere (the claim FlowForge has always run), and beside a queue
`limited` that is kept busy under a concurrency limit of 2, or a rate of 200 a second.

    .venv/bin/python bench/bench_queue_limits.py [--tasks 20000] [--rounds 5]

`default`'s rate = its tasks / (its first start .. its last completion). The limited
queue is filled first with more noop tasks than it can run meanwhile, so its claims go on
through the whole measurement: each is the transaction that locks its settings row,
counts its running tasks or the window's starts, and claims what is left (queues_sql.py).
Rounds alternate between the cases; ratios are paired with the same round's run with no
settings. Writes bench/results/queue-limits.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_worker as bw

from flowforge import migrate
from flowforge.devdb import TempPostgres
from flowforge.stores import common_sql

RESULTS = bw.RESULTS
LIMITED_BACKLOG = 50_000  # more than the limited queue runs while `default` drains

# (settings of `limited`, the seconds each of its tasks sleeps: 0 = noop, the worst case,
# a limited claim for every task it runs)
CASES: dict[str, tuple[dict[str, float] | None, float]] = {
    "no queue settings": (None, 0),
    "beside a queue at concurrency 2 (noop tasks)": ({"concurrency": 2}, 0),
    "beside a queue at concurrency 2 (20 ms tasks)": ({"concurrency": 2}, 0.02),
    "beside a queue at 200 a second": ({"rate_limit": 200, "rate_per": 1.0}, 0),
}


def _fill(conn: psycopg.Connection, queue: str, n: int, sleep: float = 0) -> None:
    type_, payload = ("sleep", json.dumps({"seconds": sleep})) if sleep else ("noop", "{}")
    with conn.transaction():
        conn.execute(
            "INSERT INTO tasks (title, type, queue, payload) "
            "SELECT 'task ' || g, %s, %s, %s FROM generate_series(1, %s) g",
            (type_, queue, payload, n),
        )
        conn.execute(common_sql.NOTIFY)


def run_case(
    url: str, plugin: str, tmp: Path, n: int, limit: dict[str, float] | None, sleep: float
) -> dict:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE queue_settings")
        bw.reset(conn, "tasks")
        if limit is not None:
            cols = ", ".join(limit)
            marks = ", ".join(["%s"] * len(limit))
            conn.execute(
                f"INSERT INTO queue_settings (name, {cols}) VALUES ('limited', {marks})",
                list(limit.values()),
            )
            _fill(conn, "limited", LIMITED_BACKLOG, sleep)
        proc = bw.start_worker(
            url, plugin, tmp / "worker.log", WORKER_CONCURRENCY="8", WORKER_METRICS_PORT="0"
        )
        try:
            time.sleep(1.0 if limit is not None else 0.0)  # the limited queue's claims run
            _fill(conn, "default", n)
            done = "SELECT count(*) FROM tasks WHERE queue = 'default' AND status = 'completed'"
            while conn.execute(done).fetchone()[0] < n:
                time.sleep(0.1)
            (seconds, limited) = conn.execute(
                "SELECT extract(epoch FROM max(completed_at) FILTER (WHERE queue = 'default')"
                "                         - min(started_at) FILTER (WHERE queue = 'default')),"
                "       count(*) FILTER (WHERE queue = 'limited' AND status = 'completed')"
                " FROM tasks"
            ).fetchone()
        finally:
            bw.stop([proc])
    return {
        "tasks_per_s": round(n / float(seconds)),
        "seconds": round(float(seconds), 3),
        "limited_completed": limited,
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args(argv)
    pg = TempPostgres().start()
    tmp = Path(tempfile.mkdtemp(prefix="flowforge-bench-"))
    plugin = str(bw._plugin_dir(tmp))
    try:
        url = bw.create_db(pg.url(), "flowforge")
        migrate.upgrade(bw.settings_for(url))
        runs: dict[str, list[dict]] = {name: [] for name in CASES}
        load_start = round(os.getloadavg()[0], 2)
        for round_ in range(a.rounds):
            for name, (limit, sleep) in CASES.items():
                runs[name].append(run_case(url, plugin, tmp, a.tasks, limit, sleep))
                bw.log(f"round {round_ + 1}: {name}: {json.dumps(runs[name][-1])}")
        commit = subprocess.run(
            ["git", "-C", str(bw.ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=False,
        ).stdout.strip()  # fmt: skip
        base = runs["no queue settings"]
        rows = []
        for name in CASES:
            rates = sorted(x["tasks_per_s"] for x in runs[name])
            paired = sorted(
                x["tasks_per_s"] / b["tasks_per_s"] for x, b in zip(runs[name], base, strict=True)
            )
            rows.append(
                {
                    "case": name,
                    "median_tasks_per_s": rates[len(rates) // 2],
                    "rounds_tasks_per_s": [x["tasks_per_s"] for x in runs[name]],
                    "median_paired_ratio": round(paired[len(paired) // 2], 3),
                    "paired_ratios": [round(x, 3) for x in paired],
                    "limited_completed": [x["limited_completed"] for x in runs[name]],
                }
            )
        r = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": "python bench/bench_queue_limits.py " + " ".join(argv),
            "commit": commit,
            "machine": {
                "cpus": os.cpu_count(),
                "load_average_at_start": load_start,
                "load_average_at_end": round(os.getloadavg()[0], 2),
                "python": platform.python_version(),
            },
            "rows": rows,
        }
        lines = [
            "# A limited queue beside an unlimited one",
            "",
            f"{r['date']}, commit {commit}, {r['machine']['cpus']} CPUs (load average "
            f"{load_start} at the start, {r['machine']['load_average_at_end']} at the end). "
            f"Command: `{r['command']}`. One `flowforge worker`, concurrency 8, process "
            f"isolation, {a.tasks} noop tasks in `default`; beside it `limited` holds "
            f"{LIMITED_BACKLOG} tasks under its limit. Rounds alternate; ratios are "
            "paired with the same round's run with no settings.",
            "",
            "| case | default tasks/s (median) | rounds | vs no settings, paired (median; all) "
            "| limited tasks run meanwhile |",
            "|---|---|---|---|---|",
        ]
        for row in rows:
            lines.append(
                f"| {row['case']} | {row['median_tasks_per_s']} | "
                f"{', '.join(map(str, row['rounds_tasks_per_s']))} | "
                f"{row['median_paired_ratio']:.3f}; "
                f"{', '.join(f'{x:.2f}' for x in row['paired_ratios'])} | "
                f"{', '.join(map(str, row['limited_completed']))} |"
            )
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "queue-limits.json").write_text(json.dumps(r, indent=2) + "\n")
        (RESULTS / "queue-limits.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
    finally:
        pg.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
