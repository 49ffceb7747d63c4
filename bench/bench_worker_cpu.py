#!/usr/bin/env python3
"""Where a noop task's CPU goes (not a test): one `flowforge worker` drains N noop tasks
on its own PostgreSQL, and the CPU time of each process kind (the worker's dispatcher
process, its handler processes and fork server, PostgreSQL's backends and background
processes) is read from /proc before and after, per task.

    .venv/bin/python bench/bench_worker_cpu.py [--tasks 60000] [--rounds 3] [--baseline REV]

Both isolation modes, rounds alternating; with ``--baseline``, process isolation of that
commit's worker (its source checked out on the side) beside this one's instead, paired per
round (writes worker-cpu-paired.*): CPU per task moves far less with the load of other
work on shared cores than tasks/s does. Every task's row is updated twice (claimed,
finished) and each non-HOT update writes every index of `tasks` whose predicate the new
row meets: that is PostgreSQL's share. Writes bench/results/worker-cpu.json, .md and .png.
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
import bench_worker as bw

from flowforge import migrate
from flowforge.devdb import TempPostgres

HZ = os.sysconf("SC_CLK_TCK")
MODES = ("process", "thread")


def cpu_by_kind(worker_pid: int, postmaster_pid: int) -> dict[str, float]:
    """CPU seconds (user + system, every thread) of the worker's and this PostgreSQL's
    processes, found by descent from the two (the machine may run other workers and
    servers meanwhile: names alone would count theirs)."""
    procs: dict[int, tuple[int, float, str]] = {}  # pid -> parent, CPU seconds, command
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # gone meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()
        procs[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / HZ, cmd)

    def root_of(pid: int) -> int | None:
        while pid in procs:
            if pid in (worker_pid, postmaster_pid):
                return pid
            pid = procs[pid][0]
        return None

    out: dict[str, float] = {}
    for pid, (_, seconds, cmd) in procs.items():
        root = root_of(pid)
        if root is None:
            continue
        if pid == worker_pid:
            kind = "worker dispatcher process"
        elif root == worker_pid:
            kind = "handler processes and fork server"
        elif " flowforge " in cmd:
            # "postgres: USER flowforge HOST(PORT) STATE": a backend of the benchmark's
            # database; the postmaster, checkpointer and the like are the others
            kind = "PostgreSQL backends"
        else:
            kind = "PostgreSQL background"
        out[kind] = out.get(kind, 0.0) + seconds
    return out


def _postmaster(pg: TempPostgres) -> int:
    return int((pg.data / "postmaster.pid").read_text().split()[0])


def one_run(
    url: str, postmaster: int, plugin: str, tmp: Path, n: int, mode: str, **env: str
) -> dict:
    with psycopg.connect(url, autocommit=True) as conn:
        bw.reset(conn, "tasks")
        proc = bw.start_worker(
            url, plugin, tmp / f"worker-{mode}.log", WORKER_ISOLATION=mode,
            WORKER_CONCURRENCY="8", WORKER_METRICS_PORT="0", **env,
        )  # fmt: skip
        try:
            time.sleep(1)
            before = cpu_by_kind(proc.pid, postmaster)
            started = time.perf_counter()
            bw.bulk_insert(conn, n)
            inserted = cpu_by_kind(proc.pid, postmaster)  # the worker starts claiming at its commit
            done = "SELECT count(*) FROM tasks WHERE status = 'completed'"
            while conn.execute(done).fetchone()[0] < n:
                time.sleep(0.05)
            seconds = time.perf_counter() - started
            after = cpu_by_kind(proc.pid, postmaster)
        finally:
            bw.stop([proc])
    per_task = {k: round((after[k] - before.get(k, 0.0)) * 1e6 / n, 1) for k in sorted(after)}
    backends = "PostgreSQL backends"
    insert = (inserted.get(backends, 0.0) - before.get(backends, 0.0)) * 1e6 / n
    return {
        "tasks_per_s": round(n / seconds),
        "cpu_us_per_task": per_task,
        # of the backends' share: the one INSERT ... SELECT of all n tasks (the API's
        # inserts cost more: one statement and commit each)
        "bulk_insert_backend_us_per_task": round(insert, 1),
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=60_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--baseline", help="compare process isolation with this commit's")
    a = p.parse_args(argv)
    if a.baseline:
        return paired_main(a, argv)
    pg = TempPostgres().start()
    tmp = Path(tempfile.mkdtemp(prefix="flowforge-bench-"))
    plugin = str(bw._plugin_dir(tmp))
    commit = subprocess.run(
        ["git", "-C", str(bw.ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    load0 = round(os.getloadavg()[0], 2)
    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    try:
        url = bw.create_db(pg.url(), "flowforge")
        migrate.upgrade(bw.settings_for(url))
        for round_ in range(a.rounds):
            for mode in MODES:
                runs[mode].append(one_run(url, _postmaster(pg), plugin, tmp, a.tasks, mode))
                bw.log(f"round {round_ + 1} {mode}: {json.dumps(runs[mode][-1])}")
    finally:
        pg.destroy()
    rows = []
    for mode in MODES:
        kinds = sorted({k for r in runs[mode] for k in r["cpu_us_per_task"]})
        medians = {
            k: statistics.median(r["cpu_us_per_task"].get(k, 0.0) for r in runs[mode])
            for k in kinds
        }
        rows.append(
            {
                "isolation": mode,
                "median_tasks_per_s": statistics.median(r["tasks_per_s"] for r in runs[mode]),
                "median_cpu_us_per_task": medians,
                "total_cpu_us_per_task": round(sum(medians.values()), 1),
                "median_bulk_insert_backend_us_per_task": statistics.median(
                    r["bulk_insert_backend_us_per_task"] for r in runs[mode]
                ),
                "rounds": runs[mode],
            }
        )
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python bench/bench_worker_cpu.py " + " ".join(argv),
        "commit": commit,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": load0,
            "load_average_at_end": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        },
        "rows": rows,
    }
    kinds = sorted({k for row in rows for k in row["median_cpu_us_per_task"]})
    lines = [
        "# Worker: CPU per noop task, by process",
        "",
        f"{result['date']}, {os.cpu_count()} CPUs (load average {load0} at the start, "
        f"{result['machine']['load_average_at_end']} at the end), commit {commit}. Command: "
        f"`{result['command']}`. One `flowforge worker`, concurrency 8, batch 50, "
        f"LOG_LEVEL=info, metrics off, {a.tasks} noop tasks bulk-inserted while it waits "
        "(the insert's own CPU is in the PostgreSQL backends' share); medians of the rounds.",
        "",
        "| isolation | tasks/s (wall, with the insert) | "
        + " | ".join(f"{k} (us/task)" for k in kinds)
        + " | total us/task | of the backends', the bulk insert |",
        "|---|---|" + "---|" * len(kinds) + "---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['isolation']} | {row['median_tasks_per_s']} | "
            + " | ".join(str(row["median_cpu_us_per_task"].get(k, 0.0)) for k in kinds)
            + f" | {row['total_cpu_us_per_task']} | "
            f"{row['median_bulk_insert_backend_us_per_task']} |"
        )
    bw.RESULTS.mkdir(parents=True, exist_ok=True)
    (bw.RESULTS / "worker-cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    (bw.RESULTS / "worker-cpu.md").write_text("\n".join(lines) + "\n")
    from plots import plot_worker_cpu

    plot_worker_cpu(result, bw.RESULTS / "worker-cpu.png")
    print("\n".join(lines))
    return 0


def paired_main(a: argparse.Namespace, argv: list[str]) -> int:
    """Process isolation: the baseline commit's worker beside this one's, rounds
    alternating, CPU per task by process kind paired per round."""
    pg = TempPostgres().start()
    tmp = Path(tempfile.mkdtemp(prefix="flowforge-bench-"))
    plugin = str(bw._plugin_dir(tmp))
    base_dir = tmp / "baseline"
    git = ["git", "-C", str(bw.ROOT)]
    rev = subprocess.run([*git, "rev-parse", "--short", a.baseline],
                         check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"],
                          check=True, capture_output=True, text=True).stdout.strip()  # fmt: skip
    subprocess.run([*git, "worktree", "add", "--detach", str(base_dir), rev],
                   check=True, capture_output=True)  # fmt: skip
    cases = {
        f"{rev} (before)": {"PYTHONPATH": f"{base_dir / 'src'}{os.pathsep}{plugin}"},
        f"{head} (after)": {},
    }
    load0 = round(os.getloadavg()[0], 2)
    runs: dict[str, list[dict]] = {name: [] for name in cases}
    try:
        url = bw.create_db(pg.url(), "flowforge")
        migrate.upgrade(bw.settings_for(url))
        for round_ in range(a.rounds):
            for name, env in cases.items():
                runs[name].append(
                    one_run(url, _postmaster(pg), plugin, tmp, a.tasks, "process", **env)
                )
                bw.log(f"round {round_ + 1} {name}: {json.dumps(runs[name][-1])}")
    finally:
        pg.destroy()
        subprocess.run([*git, "worktree", "remove", "--force", str(base_dir)],
                       capture_output=True)  # fmt: skip
    before, after = (runs[name] for name in cases)
    kinds = sorted({k for r in before + after for k in r["cpu_us_per_task"]})

    def total(run: dict) -> float:
        return sum(run["cpu_us_per_task"].values())

    rows = []
    for name, rounds in runs.items():
        rows.append(
            {
                "isolation": name,
                "median_tasks_per_s": statistics.median(r["tasks_per_s"] for r in rounds),
                "median_cpu_us_per_task": {
                    k: statistics.median(r["cpu_us_per_task"].get(k, 0.0) for r in rounds)
                    for k in kinds
                },
                "median_total_cpu_us_per_task": round(statistics.median(map(total, rounds)), 1),
                "paired_cpu_ratios": [
                    round(total(x) / total(b), 3) for x, b in zip(rounds, before, strict=True)
                ],
                "paired_rate_ratios": [
                    round(x["tasks_per_s"] / b["tasks_per_s"], 3)
                    for x, b in zip(rounds, before, strict=True)
                ],
                "rounds": rounds,
            }
        )
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python bench/bench_worker_cpu.py " + " ".join(argv),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_start": load0,
            "load_average_at_end": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        },
        "rows": rows,
    }
    lines = [
        f"# Worker: CPU per noop task, {rev} beside {head} (process isolation)",
        "",
        f"{result['date']}, {os.cpu_count()} CPUs (load average {load0} at the start, "
        f"{result['machine']['load_average_at_end']} at the end). Command: "
        f"`{result['command']}`. One `flowforge worker`, concurrency 8, batch 50, "
        f"LOG_LEVEL=info, metrics off, {a.tasks} noop tasks; rounds alternate, ratios are "
        "paired with the same round's run of the baseline.",
        "",
        "| worker | tasks/s (median) | "
        + " | ".join(f"{k} (us/task)" for k in kinds)
        + " | total us/task | total, paired ratio (median; all) | tasks/s, paired (median) |",
        "|---|---|" + "---|" * len(kinds) + "---|---|---|",
    ]
    for row in rows:
        cpu, rate = row["paired_cpu_ratios"], row["paired_rate_ratios"]
        lines.append(
            f"| {row['isolation']} | {row['median_tasks_per_s']} | "
            + " | ".join(str(row["median_cpu_us_per_task"][k]) for k in kinds)
            + f" | {row['median_total_cpu_us_per_task']} | {statistics.median(cpu):.3f}; "
            + ", ".join(f"{x:.2f}" for x in cpu)
            + f" | {statistics.median(rate):.3f} |"
        )
    bw.RESULTS.mkdir(parents=True, exist_ok=True)
    (bw.RESULTS / "worker-cpu-paired.json").write_text(json.dumps(result, indent=2) + "\n")
    (bw.RESULTS / "worker-cpu-paired.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
