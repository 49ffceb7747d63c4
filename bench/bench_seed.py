#!/usr/bin/env python3
"""Operator scripts benchmark (not a test): seed-database.py and cleanup.py at 100,000 tasks.

    .venv/bin/python bench/bench_seed.py [--count 100000] [--rounds 3]

Starts its own PostgreSQL, migrates it, then per round: empties the table, times
`scripts/seed-database.py --count N --seed 1 --quiet` as a process (interpreter start
included, as an operator sees it), then times `scripts/cleanup.py --all --yes --quiet`
deleting them again in batches of 1,000. Medians reported. Writes bench/results/seed.json
and seed.md. Target: 100,000 tasks seeded in under 10 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg

from flowforge import migrate
from flowforge.config import load_settings
from flowforge.devdb import TempPostgres

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def timed(args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    opts = parser.parse_args()

    server = TempPostgres().start()
    try:
        url = server.url()
        env = {**os.environ, "DATABASE_URL": url}
        migrate.upgrade(load_settings(env))
        seed_s, cleanup_s = [], []
        for _ in range(opts.rounds):
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("TRUNCATE tasks RESTART IDENTITY")
                conn.execute("CHECKPOINT")
            seed_s.append(
                timed(["scripts/seed-database.py", "-c", str(opts.count), "--seed", "1", "-q"], env)
            )
            with psycopg.connect(url, autocommit=True) as conn:
                assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] == opts.count
            cleanup_s.append(timed(["scripts/cleanup.py", "--all", "--yes", "-q"], env))
    finally:
        server.destroy()

    result = {
        "when": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "count": opts.count,
        "seed_seconds": [round(s, 2) for s in seed_s],
        "seed_median_seconds": round(statistics.median(seed_s), 2),
        "cleanup_all_seconds": [round(s, 2) for s in cleanup_s],
        "cleanup_all_median_seconds": round(statistics.median(cleanup_s), 2),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "seed.json").write_text(json.dumps(result, indent=2) + "\n")
    median = result["seed_median_seconds"]
    md = (
        f"# Operator scripts benchmark ({result['when']}, {result['cpus']} cores, "
        f"{opts.count:,} tasks, median of {opts.rounds})\n\n"
        "| script | seconds (median) | rounds | tasks/s |\n|---|---:|---|---:|\n"
        f"| seed-database.py --count {opts.count} --seed 1 --quiet | {median} | "
        f"{result['seed_seconds']} | {opts.count / median:,.0f} |\n"
        f"| cleanup.py --all --yes (batches of 1,000) | {result['cleanup_all_median_seconds']} | "
        f"{result['cleanup_all_seconds']} | "
        f"{opts.count / result['cleanup_all_median_seconds']:,.0f} |\n"
    )
    (RESULTS / "seed.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
