#!/usr/bin/env python3
"""Scale benchmark (not a test): the same requests and the same claim on a table of 100,000
tasks and on one of 1,000,000, side by side in one run.

    .venv/bin/python bench/bench_scale.py [--small 100000] [--large 1000000] [--rounds 3]

Starts its own PostgreSQL (durable commits), makes one database per size and fills it with
the seeder (`scripts/seed-database.py --seed 1`: Faker titles, a mix of statuses and types,
30 days of created_at). The seeder's pending and processing rows are then cancelled, so
the table is history only and the claim below drains the benchmark's own tasks, not the
seeded ones (whose handlers sleep or fail on purpose). Each database gets its own
`flowforge api` (4 sync workers, every production feature on, as bench_api.py runs it).

Per size and round:
- GET /v1/tasks/{id} (a random id of the table), GET /v1/tasks?limit=20 (page 1) and a
  cursor page 4,000 deep (80,000 rows in, which both tables have), each with wrk at 32
  connections for --duration seconds, server CPU per request from /proc;
- the claim: a `flowforge worker` (concurrency 8, LOG_LEVEL=info) drains --tasks noop
  tasks inserted in one statement; tasks/s = tasks / (first start .. last completion).
  The tasks are deleted and the table vacuumed after each run, so every round sees the
  same table.

Rounds alternate the order of the sizes. Reported: medians, and the large table's figure
over the small one's paired per round (1.0: size costs nothing). Writes
bench/results/scale.json, .md and .png.
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
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_api
import bench_worker

from flowforge import migrate
from flowforge.config import load_settings
from flowforge.devdb import TempPostgres, free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
CURSOR_PAGE = 4000  # 80,000 rows deep: inside both tables
LIMIT = bench_api.LIMIT

GET = "GET /v1/tasks/{id}"
LIST = "GET /v1/tasks?limit=20 (page 1)"
CURSOR = f"GET /v1/tasks?limit=20&cursor= (page {CURSOR_PAGE})"
CLAIM = "worker: claim and run noop tasks"
MEASURES = (GET, LIST, CURSOR, CLAIM)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def lua_get(rows: int) -> str:
    return f"""
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/v1/tasks/" .. math.random(1, {rows}))
end
"""


def seed(url: str, rows: int) -> float:
    """The seeder's rows, then history only: its pending and processing tasks cancelled."""
    started = time.monotonic()
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "seed-database.py"), "--count", str(rows),
         "--seed", "1", "--quiet"],
        env={**os.environ, "DATABASE_URL": url}, check=True,
    )  # fmt: skip
    seconds = time.monotonic() - started
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE tasks SET status = 'cancelled', completed_at = now(), worker = NULL,"
            " lease_token = NULL, lease_expires_at = NULL"
            " WHERE status IN ('pending', 'processing')"
        )
        conn.execute("VACUUM ANALYZE tasks")
    return seconds


def claim_run(url: str, tmp: Path, rows: int, n: int) -> dict:
    """Noop tasks/s of one worker draining ``n`` tasks added to the history."""
    with psycopg.connect(url, autocommit=True) as conn:
        proc = bench_worker.start_worker(
            url, "", tmp / f"worker-{rows}.log", WORKER_CONCURRENCY="8", WORKER_METRICS_PORT="0"
        )
        try:
            bench_worker.bulk_insert(conn, n)
            done = "SELECT count(*) FROM tasks WHERE id > %s AND status = 'completed'"
            while conn.execute(done, (rows,)).fetchone()[0] < n:
                time.sleep(0.1)
            (seconds,) = conn.execute(
                "SELECT extract(epoch FROM max(completed_at) - min(started_at)) FROM tasks"
                " WHERE id > %s",
                (rows,),
            ).fetchone()
        finally:
            bench_worker.stop([proc])
        conn.execute("DELETE FROM tasks WHERE id > %s", (rows,))
        conn.execute("VACUUM ANALYZE tasks")
        conn.execute("CHECKPOINT")
    return {"tasks": n, "seconds": round(float(seconds), 3), "rps": n / float(seconds)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", type=int, default=100_000, help="tasks in the small table")
    p.add_argument("--large", type=int, default=1_000_000, help="tasks in the large table")
    p.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tasks", type=int, default=30_000, help="noop tasks per claim run")
    p.add_argument("--connections", type=int, default=32)
    a = p.parse_args()
    if min(a.small, a.large) < CURSOR_PAGE * LIMIT:
        p.error(f"both tables need at least {CURSOR_PAGE * LIMIT} rows (the cursor page)")
    sizes = (a.small, a.large)
    load_start = os.getloadavg()
    pg = TempPostgres().start()
    tmp = Path(tempfile.mkdtemp(prefix="flowforge-scale-"))
    servers: dict[int, tuple[subprocess.Popen, str, str, str]] = {}
    runs: dict[int, dict[str, list[dict]]] = {n: {m: [] for m in MEASURES} for n in sizes}
    seeding: dict[int, float] = {}
    try:
        for rows in sizes:
            url = bench_worker.create_db(pg.url(), f"scale_{rows}")
            migrate.upgrade(load_settings({"DATABASE_URL": url}))
            log(f"seeding {rows:,} tasks")
            seeding[rows] = seed(url, rows)
            port = free_port()
            env = bench_worker.worker_env(
                url, "", API_HOST="127.0.0.1", API_PORT=str(port), API_WORKERS="4"
            )
            token = subprocess.run(
                [str(BIN / "flowforge"), "token", "create", "bench", "--scope", "write"],
                env=env, check=True, capture_output=True, text=True,
            ).stdout.strip()  # fmt: skip
            proc = bench_api.start_server(
                [str(BIN / "flowforge"), "api"], env, port, tmp / f"api-{rows}.log"
            )
            servers[rows] = (proc, url, f"http://127.0.0.1:{port}", token)
        for rnd in range(a.rounds):
            for rows in sizes if rnd % 2 == 0 else tuple(reversed(sizes)):
                proc, url, base, token = servers[rows]
                cursor, _ = bench_api.cursor_at(url, CURSOR_PAGE)
                cases = {
                    GET: (base + "/v1/tasks/1", lua_get(rows)),
                    LIST: (base + f"/v1/tasks?limit={LIMIT}", None),
                    CURSOR: (base + f"/v1/tasks?limit={LIMIT}&cursor={cursor}", None),
                }
                for name, (target, script) in cases.items():
                    time.sleep(2)
                    cpu0 = bench_api.server_cpu_seconds(proc.pid)
                    r = bench_api.wrk(target, a.duration, a.connections, script, token)
                    served = r["rps"] * a.duration
                    cpu = bench_api.server_cpu_seconds(proc.pid) - cpu0
                    r["server_cpu_us_per_request"] = round(cpu / served * 1e6, 1)
                    runs[rows][name].append(r)
                    log(f"round {rnd + 1} {rows:,} rows {name}: {r['rps']:,.0f}/s {r}")
                r = claim_run(url, tmp, rows, a.tasks)
                runs[rows][CLAIM].append(r)
                log(f"round {rnd + 1} {rows:,} rows {CLAIM}: {r['rps']:,.0f} tasks/s")
    finally:
        for proc, *_ in servers.values():
            proc.terminate()
        for proc, *_ in servers.values():
            proc.wait(timeout=30)
        pg.destroy()

    small, large = sizes
    table = {}
    for m in MEASURES:
        paired = [
            round(b["rps"] / s["rps"], 3)
            for s, b in zip(runs[small][m], runs[large][m], strict=True)
        ]
        table[m] = {
            str(rows): {
                "per_s_median": round(statistics.median(r["rps"] for r in runs[rows][m]), 1),
                "runs": runs[rows][m],
            }
            for rows in sizes
        }
        table[m]["large_over_small_paired"] = paired
        table[m]["large_over_small_median"] = statistics.median(paired)
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": bench_api.commit(),
        "command": "python bench/bench_scale.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": [round(x, 2) for x in load_start],
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "sizes": list(sizes),
        "seeding_seconds": {str(k): round(v, 1) for k, v in seeding.items()},
        "setup": {"duration_s": a.duration, "rounds": a.rounds, "claim_tasks": a.tasks,
                  "connections": a.connections, "api_workers": 4, "worker_concurrency": 8},
        "results": table,
    }  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "scale.md").write_text(markdown(result))
    from plots import plot_scale

    plot_scale(result, RESULTS / "scale.png")
    print(markdown(result))
    return 0


def markdown(r: dict) -> str:
    small, large = r["sizes"]
    m = r["machine"]
    lines = [
        f"# Scale benchmark ({r['when']}, {m['cpus']} cores)",
        "",
        f"Commit {r['commit']}; `{r['command']}`; load average (1, 5, 15 min) "
        f"{m['load_average_at_start']} at the start, {m['load_average_at_end']} at the end. "
        f"Tables filled by `seed-database.py --seed 1` ({small:,} rows in "
        f"{r['seeding_seconds'][str(small)]} s, {large:,} in "
        f"{r['seeding_seconds'][str(large)]} s), its pending and processing rows cancelled. "
        f"Medians of {r['setup']['rounds']} rounds, the sizes alternating; API: wrk at "
        f"{r['setup']['connections']} connections, {r['setup']['duration_s']} s a run, "
        f"`flowforge api` with 4 sync workers and every production feature on; claim: one "
        f"`flowforge worker` at concurrency 8, LOG_LEVEL=info, draining "
        f"{r['setup']['claim_tasks']:,} noop tasks.",
        "",
        f"| measure | {small:,} rows, per s | {large:,} rows, per s | {large:,} / {small:,}, "
        "paired per round (median; all) | server CPU us/request |",
        "|---|---:|---:|---|---|",
    ]
    for name, row in r["results"].items():
        s, b = row[str(small)], row[str(large)]
        cpu = ""
        if "server_cpu_us_per_request" in s["runs"][0]:
            cpu = " / ".join(
                str(statistics.median(x["server_cpu_us_per_request"] for x in side["runs"]))
                for side in (s, b)
            )
        lines.append(
            f"| {name} | {s['per_s_median']:,.0f} | {b['per_s_median']:,.0f} | "
            f"{row['large_over_small_median']:.2f}; "
            f"{', '.join(f'{x:.2f}' for x in row['large_over_small_paired'])} | {cpu} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
