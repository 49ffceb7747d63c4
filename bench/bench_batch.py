#!/usr/bin/env python3
"""Bulk creation benchmark (not a test): POST /v1/tasks/batch with 1,000 tasks a request,
beside one-task POST /v1/tasks, and the batch's SQL alone (psycopg, no HTTP) as a ceiling.

    .venv/bin/python bench/bench_batch.py [--duration 10] [--rounds 3] [--connections 4]

Starts its own PostgreSQL (durable commits: fsync and synchronous_commit on), runs
`flowforge api` (gunicorn, API_WORKERS=4 sync workers, every production feature on,
bearer token included) and
loads it with wrk. The tasks table is emptied before each run so every run starts alike.
Rounds alternate between the cases; medians are reported. Writes bench/results/batch.json
and batch.md. The contract: at least 30,000 tasks/s with batches of 1,000.
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

import orjson
import psycopg
import requests

from flowforge import migrate
from flowforge.config import load_settings
from flowforge.devdb import TempPostgres, free_port
from flowforge.stores import tasks_sql

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_api import BIN, LUA_POST, wrk

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BATCH = 1000
TARGET = 30_000  # tasks/s, the contract


def start_server(argv: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    with open(log, "ab") as fh:
        proc = subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
            return proc
        except requests.RequestException:  # refused while booting, or slow under load
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{argv} did not start; see {log}")


def batch_body() -> bytes:
    tasks = [
        {"title": f"benchmark task {i}", "description": "load test", "payload": {"n": i}}
        for i in range(BATCH)
    ]
    return orjson.dumps({"tasks": tasks})


def lua_batch(body: bytes) -> str:
    return (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = [==[{body.decode()}]==]\n"
    )


def sql_only(url: str, duration: int, connections: int) -> float:
    """The batch statement straight through psycopg (prepared), ``connections`` threads:
    what PostgreSQL itself allows on this machine (tasks/s)."""
    rows = orjson.loads(batch_body())["tasks"]
    for row in rows:
        row.update(type="noop", max_attempts=3, run_at=None, queue="default", priority=0,
                   timeout=900)  # fmt: skip
    params = {"tasks": orjson.dumps(rows).decode(), "request_id": "bench"}
    counts = [0] * connections
    stop = time.monotonic() + duration

    def run(i: int) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            while time.monotonic() < stop:
                conn.execute(tasks_sql.INSERT_TASKS, params, prepare=True).fetchall()
                counts[i] += BATCH

    started = time.monotonic()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()

    pg = TempPostgres().start()
    work = Path(tempfile.mkdtemp(prefix="flowforge-bench-batch-"))
    proc = None
    runs: dict[str, list[dict[str, float]]] = {}
    try:
        with psycopg.connect(pg.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        url = pg.url("bench")
        migrate.upgrade(load_settings({"DATABASE_URL": url}))
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "API_HOST": "127.0.0.1",
            "API_PORT": str(port),
            "API_WORKERS": "4",
            "LOG_LEVEL": "info",
        }
        env.pop("JOURNAL_STREAM", None)
        token = subprocess.run(
            [str(BIN / "flowforge"), "token", "create", "bench", "--scope", "write"],
            env=env, check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        proc = start_server([str(BIN / "flowforge"), "api"], env, port, work / "api.log")
        base = f"http://127.0.0.1:{port}"
        batch = lua_batch(batch_body())
        cases = {
            f"POST /v1/tasks/batch ({BATCH} tasks)": (base + "/v1/tasks/batch", batch, BATCH),
            "POST /v1/tasks (1 task)": (base + "/v1/tasks", LUA_POST, 1),
        }
        runs = {name: [] for name in [*cases, "batch SQL alone (psycopg)"]}

        def empty() -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("TRUNCATE tasks")
                conn.execute("VACUUM ANALYZE tasks")
            time.sleep(1)

        for rnd in range(args.rounds):
            for name, (target, script, per_request) in cases.items():
                empty()
                result = wrk(target, args.duration, args.connections, script, token)
                result["tasks_per_s"] = result["rps"] * per_request
                runs[name].append(result)
                print(f"round {rnd + 1} {name}: {result}", flush=True)
            empty()
            ceiling = sql_only(url, args.duration, args.connections)
            runs["batch SQL alone (psycopg)"].append({"tasks_per_s": ceiling})
            print(f"round {rnd + 1} batch SQL alone: {ceiling:,.0f} tasks/s", flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        pg.destroy()

    summary = {}
    for name, results in runs.items():
        summary[name] = {
            "tasks_per_s_median": statistics.median(r["tasks_per_s"] for r in results),
            "rps_median": statistics.median(r.get("rps", 0) for r in results),
            "p50_ms_median": statistics.median(r.get("p50_ms", 0) for r in results),
            "p99_ms_median": statistics.median(r.get("p99_ms", 0) for r in results),
            "non_2xx": sum(r.get("non_2xx", 0) for r in results),
            "runs": results,
        }
    names = list(summary)
    batch_rate = summary[names[0]]["tasks_per_s_median"]
    single_rate = summary[names[1]]["tasks_per_s_median"]
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "setup": {
            "batch": BATCH,
            "connections": args.connections,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "api_workers": 4,
        },
        "target_tasks_per_s": TARGET,
        "meets_target": batch_rate >= TARGET,
        "ratio_batch_to_single": round(batch_rate / single_rate, 1),
        "results": summary,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "batch.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# Bulk creation benchmark ({report['when']}, {os.cpu_count()} cores, "
        f"wrk -c{args.connections}, median of {args.rounds} x {args.duration}s)",
        "",
        "| case | tasks/s | req/s | p50 ms | p99 ms | non-2xx |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['tasks_per_s_median']:,.0f} | {s['rps_median']:,.1f} | "
            f"{s['p50_ms_median']:.1f} | {s['p99_ms_median']:.1f} | {s['non_2xx']} |"
        )
    ceiling = summary["batch SQL alone (psycopg)"]["tasks_per_s_median"]
    report["ratio_http_to_sql"] = round(batch_rate / ceiling, 2)
    lines += [
        "",
        f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
        f"HTTP batch / SQL alone: {report['ratio_http_to_sql']:.2f}",
        f"batch / single: {report['ratio_batch_to_single']}x; target {TARGET:,} tasks/s: "
        f"{'met' if report['meets_target'] else 'NOT met'}",
    ]
    (RESULTS / "batch.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0  # the verdict is in the report: a loaded machine is not a failed build


if __name__ == "__main__":
    sys.exit(main())
