#!/usr/bin/env python3
"""API benchmark (not a test): FlowForge over HTTP on a 100,000-task table (--rows), beside a
bare Bottle handler and pgbench running the same SQL on the same server.

    .venv/bin/python bench/bench_api.py [--rows 100000] [--duration 10] [--rounds 3]

List cases: page 1, an OFFSET page 4,000 deep, and a cursor (keyset) page about 5,000 pages
deep (its cursor built with flowforge.pagination.encode from the key of the row above it).
pgbench runs the statements the store sends for each (the rows and the planner's estimate;
the capped count too when the estimate is under tasks_sql.COUNT_WHEN_ESTIMATE_BELOW). The
results (bench/results/api.json, .md, .png) carry the commit, the load average and
EXPLAIN (ANALYZE, BUFFERS) of the list statements.

Starts its own PostgreSQL (durable commits: fsync and synchronous_commit on), seeds it,
runs `flowforge api` (gunicorn, API_WORKERS=4 sync workers, every production feature on:
bearer tokens, envelope, request IDs, validation, one JSON access line per request), and
loads it with wrk (Debian's package) at 32 connections. Every request carries a write
token (made with `flowforge token create`); the bare handler gets the same header and
ignores it, so the ratio between the two includes what checking a token costs. Rounds
alternate between the servers so noise hits all of them alike; medians are reported.
Writes bench/results/api.json and api.md.

    .venv/bin/python bench/bench_api.py --metrics-off-case --get-only

adds GET by id served by the same API with its per-request Prometheus metrics off
(bench/api_nometrics.py), side by side: bench/results/api-metrics.json and .md.

    .venv/bin/python bench/bench_api.py --baseline /tmp/old --get-only

adds the GET by id case served by another source tree (a checkout of an older commit: its
src/ first on PYTHONPATH, this venv otherwise), side by side in the same rounds, to see
what a change costs; that run writes bench/results/api-baseline.json and .md instead.
`--tree SRC` serves the main case from another tree too (the change on its own, applied
to the baseline's commit).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import requests

from flowforge import migrate, pagination
from flowforge.config import load_settings
from flowforge.devdb import TempPostgres, free_port
from flowforge.stores import tasks_sql

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
ROWS = 100_000  # --rows
LIMIT = 20
DEEP_PAGE = 4000  # offset 79,980
CURSOR_PAGE = 5000  # keyset; at most the last page of the table
BARE_GET = "GET /v1/tasks/{id} (bare Bottle+psycopg)"
BARE_POST = "POST /v1/tasks (bare Bottle+psycopg)"
BARE_LIST = "GET /v1/tasks?limit=20 (bare Bottle+psycopg, page 1, no total)"
# FlowForge's case beside the bare app's same route: the ratios the targets name.
SAME_ROUTE = {
    "GET /v1/tasks/{id}": BARE_GET,
    "POST /v1/tasks": BARE_POST,
    "GET /v1/tasks?limit=20 (page 1)": BARE_LIST,
}


def lua_get() -> str:
    return f"""
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/v1/tasks/" .. math.random(1, {ROWS}))
end
"""


BASELINE_GET = "GET /v1/tasks/{id} (baseline tree)"
NOMETRICS_GET = "GET /v1/tasks/{id} (request metrics off)"
LUA_POST = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"title": "benchmark task", "description": "load test", "payload": {"n": 1}}'
"""


def seed(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO tasks (title, description, status, type, payload, created_at, run_at)
            SELECT 'task ' || g, repeat('x', 100),
                   (ARRAY['pending','completed','failed','completed'])[1 + g %% 4],
                   'noop', jsonb_build_object('n', g),
                   now() - make_interval(secs => %(rows)s - g),
                   now() + interval '1 day'
            FROM generate_series(1, %(rows)s) AS g
            """,
            {"rows": ROWS},
        )
        conn.execute("VACUUM ANALYZE tasks")


def cursor_at(url: str, page: int) -> tuple[str, tuple]:
    """The cursor a client walking the list would hold to fetch this page (unfiltered):
    the key of the last row of the page before it."""
    with psycopg.connect(url) as conn:
        key = conn.execute(
            "SELECT created_at, id FROM tasks ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET %s",
            ((page - 1) * LIMIT - 1,),
        ).fetchone()
    assert key is not None
    return pagination.encode(pagination.Cursor(key[0], key[1], (None, None, None))), key


def explain(url: str, sql: str, params: dict) -> str:
    with psycopg.connect(url) as conn:
        rows = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params).fetchall()
    return "\n".join(r[0] for r in rows)


def commit() -> str:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", "HEAD"]).returncode
    return out.stdout.strip() + ("+dirty" if dirty else "")


def start_server(argv: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    with open(log, "ab") as fh:
        proc = subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/v1/tasks/1", timeout=5)
            return proc
        except requests.RequestException:  # refused, or a worker still booting: a timeout
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{argv} did not start; see {log}")


_TICK = os.sysconf("SC_CLK_TCK")


def server_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a server: its master and every process below it. Under
    a loaded machine req/s swings with the neighbours; CPU per request much less."""
    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICK
            stack += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except (OSError, ValueError):
            continue  # a process that just exited
    return total


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    num, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(num) * _UNITS[unit]


def wrk(
    url: str, duration: int, connections: int, script: str | None, token: str
) -> dict[str, float]:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", url]
    cmd[1:1] = ["-H", f"Authorization: Bearer {token}"]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        if script:
            lua.write(script)
            lua.flush()
            cmd[1:1] = ["-s", lua.name]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    # the "Latency Distribution" lines; anchored, as "+/- Stdev" columns also end in "50%"
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


def pgbench(pg: TempPostgres, url: str, sql: str, duration: int, connections: int) -> float:
    script = f"\\set id random(1, {ROWS})\n{sql.strip()};\n"
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as fh:
        fh.write(script)
    os.chmod(fh.name, 0o644)
    env = {**os.environ, "PGPASSWORD": pg.password}
    cmd = [
        str(pg.bindir / "pgbench"), "-n", "-M", "prepared", "-c", str(connections), "-j", "2",
        "-T", str(duration), "-f", fh.name, "-h", "127.0.0.1", "-p", str(pg.port),
        "-U", "postgres", url.rsplit("/", 1)[1],
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    os.unlink(fh.name)
    return float(re.search(r"tps = ([\d.]+)", out).group(1))  # type: ignore[union-attr]


def _pg_sql(sql: str, **literals: object) -> str:
    """The stores' psycopg placeholders as pgbench variables (id) or literals."""
    sql = sql.replace("%(id)s", ":id").replace("%(limit)s", str(LIMIT + 1))
    for name, value in literals.items():
        sql = sql.replace(f"%({name})s", str(value))
    return " ".join(sql.split())


def list_statements(offset: int | None, key: tuple | None) -> list[str]:
    """What the store sends for one unfiltered page: the rows (one more than a page), the
    planner's estimate, and the capped count when the estimate is small enough."""
    if key is None:
        stmts = [_pg_sql(tasks_sql.list_tasks(()), offset=offset)]
    else:
        stmts = [
            _pg_sql(
                tasks_sql.list_tasks((), after=True),
                after_created_at=f"'{key[0].isoformat()}'::timestamptz",
                after_id=key[1],
            )
        ]
    stmts.append(tasks_sql.estimate_tasks(()))
    if ROWS < tasks_sql.COUNT_WHEN_ESTIMATE_BELOW:
        stmts.append(_pg_sql(tasks_sql.count_tasks(()), cap=tasks_sql.EXACT_TOTAL_MAX + 1))
    return stmts


def paired_to_bare(
    runs: dict[str, list[dict[str, float]]], pairs: dict[str, str] | None = None
) -> dict[str, dict[str, float]]:
    """Each case's req/s and server CPU per request over a bare case's in the same round,
    median over rounds (rounds alternate, so each pair met the same load). By default every
    case against the bare GET; ``pairs`` maps a case to its own bare reference."""
    if pairs is None:
        pairs = {name: BARE_GET for name in runs if "(bare " not in name}
    out = {}
    for name, ref in pairs.items():
        results, bare = runs.get(name, []), runs.get(ref, [])
        if not results or len(results) != len(bare):
            continue
        rps = [r["rps"] / b["rps"] for r, b in zip(results, bare, strict=True) if b["rps"]]
        cpu = [
            r["server_cpu_us_per_request"] / b["server_cpu_us_per_request"]
            for r, b in zip(results, bare, strict=True)
            if b["server_cpu_us_per_request"]
        ]
        out[name] = {
            "rps_ratio_median": round(statistics.median(rps), 3) if rps else 0.0,
            "cpu_ratio_median": round(statistics.median(cpu), 3) if cpu else 0.0,
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rows", type=int, default=100_000, help="tasks in the table")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="SRC",
        help="also serve GET by id from this source tree (an older commit)",
    )
    parser.add_argument(
        "--tree",
        type=Path,
        metavar="SRC",
        help="serve FlowForge from this source tree instead of the installed one (with "
        "--baseline: two commits side by side, e.g. a change applied to its parent)",
    )
    parser.add_argument("--get-only", action="store_true", help="only the GET by id cases")
    parser.add_argument(
        "--metrics-off-case",
        action="store_true",
        help="also serve GET by id from the same API with its per-request metrics off "
        "(bench/api_nometrics.py), side by side",
    )
    args = parser.parse_args()
    global ROWS
    ROWS = args.rows
    cursor_page = min(CURSOR_PAGE, ROWS // LIMIT)
    load_start = os.getloadavg()
    explains: dict[str, str] = {}

    pg = TempPostgres().start()
    work = Path(tempfile.mkdtemp(prefix="flowforge-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        with psycopg.connect(pg.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        url = pg.url("bench")
        migrate.upgrade(load_settings({"DATABASE_URL": url}))
        seed(url)
        ff_port, bare_port = free_port(), free_port()
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "API_HOST": "127.0.0.1",
            "API_PORT": str(ff_port),
            "API_WORKERS": "4",
            "LOG_LEVEL": "info",
        }
        env.pop("JOURNAL_STREAM", None)
        token = subprocess.run(
            [str(BIN / "flowforge"), "token", "create", "bench", "--scope", "write"],
            env=env, check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        if args.tree:
            ff_env = {**env, "PYTHONPATH": str(args.tree.resolve() / "src")}
            ff_cmd = [sys.executable, "-m", "flowforge", "api"]
        else:
            ff_env, ff_cmd = env, [str(BIN / "flowforge"), "api"]
        procs.append(start_server(ff_cmd, ff_env, ff_port, work / "ff.log"))
        bare_cmd = [
            str(BIN / "gunicorn"), "-w", "4", "-b", f"127.0.0.1:{bare_port}",
            "--chdir", str(ROOT / "bench"), "bare_app:app",
        ]  # fmt: skip
        procs.append(start_server(bare_cmd, env, bare_port, work / "bare.log"))

        ff = f"http://127.0.0.1:{ff_port}"
        ff_proc, bare_proc = procs
        cases = {"GET /v1/tasks/{id}": (ff + "/v1/tasks/1", lua_get())}
        if args.baseline:
            base_port = free_port()
            base_env = {**env, "API_PORT": str(base_port),
                        "PYTHONPATH": str(args.baseline.resolve() / "src")}  # fmt: skip
            procs.append(start_server([sys.executable, "-m", "flowforge", "api"], base_env,
                                      base_port, work / "baseline.log"))  # fmt: skip
            cases[BASELINE_GET] = (f"http://127.0.0.1:{base_port}/v1/tasks/1", lua_get())
            base_proc = procs[-1]
        if args.metrics_off_case:
            off_port = free_port()
            procs.append(start_server([sys.executable, str(ROOT / "bench" / "api_nometrics.py")],
                                      {**env, "API_PORT": str(off_port)}, off_port,
                                      work / "nometrics.log"))  # fmt: skip
            cases[NOMETRICS_GET] = (f"http://127.0.0.1:{off_port}/v1/tasks/1", lua_get())
            off_proc = procs[-1]
        cases |= {
            BARE_GET: (
                f"http://127.0.0.1:{bare_port}/v1/tasks/1",
                lua_get(),
            ),
        }
        if not args.get_only:
            cursor, key = cursor_at(url, cursor_page)
            page_cursor = f"GET /v1/tasks?limit=20&cursor= (page {cursor_page})"
            cases |= {
                "POST /v1/tasks": (ff + "/v1/tasks", LUA_POST),
                "GET /v1/tasks?limit=20 (page 1)": (ff + f"/v1/tasks?limit={LIMIT}", None),
                f"GET /v1/tasks?limit=20 (page {DEEP_PAGE})": (
                    ff + f"/v1/tasks?limit={LIMIT}&page={DEEP_PAGE}",
                    None,
                ),
                page_cursor: (ff + f"/v1/tasks?limit={LIMIT}&cursor={cursor}", None),
                BARE_POST: (f"http://127.0.0.1:{bare_port}/v1/tasks", LUA_POST),
                BARE_LIST: (f"http://127.0.0.1:{bare_port}/v1/tasks?limit={LIMIT}", None),
            }
            check = requests.get(
                cases[page_cursor][0], headers={"Authorization": f"Bearer {token}"}, timeout=60
            )
            check.raise_for_status()  # a cursor the API refuses would measure only a 400
            list_params = {"limit": LIMIT + 1, "offset": 0}
            explains["page 1"] = explain(url, tasks_sql.list_tasks(()), list_params)
            explains[f"OFFSET page {DEEP_PAGE}"] = explain(
                url, tasks_sql.list_tasks(()), {**list_params, "offset": (DEEP_PAGE - 1) * LIMIT}
            )
            explains[f"cursor page {cursor_page}"] = explain(
                url,
                tasks_sql.list_tasks((), after=True),
                {"limit": LIMIT + 1, "after_created_at": key[0], "after_id": key[1]},
            )
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
        for rnd in range(args.rounds):
            order = list(cases.items())
            if rnd % 2:
                order.reverse()  # no case always runs first or last in a round
            for name, (target, script) in order:
                time.sleep(2)  # let the previous case's backlog drain (deep pages queue up)
                server = (
                    bare_proc if "bare" in name else base_proc if name == BASELINE_GET
                    else off_proc if name == NOMETRICS_GET else ff_proc
                )  # fmt: skip
                cpu_before = server_cpu_seconds(server.pid)
                result = wrk(target, args.duration, args.connections, script, token)
                served = result["rps"] * args.duration
                cpu = server_cpu_seconds(server.pid) - cpu_before
                result["server_cpu_us_per_request"] = round(cpu / served * 1e6, 1) if served else 0
                runs[name].append(result)
                print(f"round {rnd + 1} {name}: {result}", flush=True)

        deep_offset = (DEEP_PAGE - 1) * LIMIT
        pg_sql = {"GET /v1/tasks/{id}": _pg_sql(tasks_sql.GET_TASK)}
        if not args.get_only:  # (built only when asked: a list query may have changed shape)
            pg_sql |= {
                "POST /v1/tasks": "INSERT INTO tasks (title, description, payload) VALUES "
                "('benchmark task', 'load test', '{\"n\": 1}') RETURNING *",
                "GET /v1/tasks?limit=20 (page 1)": ";\n".join(list_statements(0, None)),
                f"GET /v1/tasks?limit=20 (page {DEEP_PAGE})": ";\n".join(
                    list_statements(deep_offset, None)
                ),
                page_cursor: ";\n".join(list_statements(None, key)),
            }
        ceilings = {
            name: pgbench(pg, url, sql, args.duration, args.connections)
            for name, sql in pg_sql.items()
            if name in cases
        }
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
        pg.destroy()

    summary = {}
    for name, results in runs.items():
        summary[name] = {
            "rps_median": statistics.median(r["rps"] for r in results),
            "p50_ms_median": statistics.median(r["p50_ms"] for r in results),
            "p99_ms_median": statistics.median(r["p99_ms"] for r in results),
            "server_cpu_us_per_request_median": statistics.median(
                r["server_cpu_us_per_request"] for r in results
            ),
            "non_2xx": sum(r["non_2xx"] for r in results),
            "pgbench_tps": ceilings.get(name),
            "runs": results,
        }
    ff_get = summary["GET /v1/tasks/{id}"]["rps_median"]
    bare_get = summary[BARE_GET]["rps_median"]
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": commit(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": [round(x, 2) for x in load_start],
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "setup": {
            "rows": ROWS,
            "connections": args.connections,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "api_workers": 4,
            "wrk_threads": 2,
        },
        "ratio_flowforge_to_bare_get": round(ff_get / bare_get, 3),
        # Paired: each round's case beside that round's bare GET (the same load).
        "paired_to_bare_get": paired_to_bare(runs),
        # The targets: FlowForge over the bare app on the same route, paired.
        "paired_same_route": paired_to_bare(runs, SAME_ROUTE),
        "results": summary,
        "explain_analyze": explains,
    }
    stem = "api"
    if args.baseline:
        stem = "api-baseline"
        # Paired: each round's two runs met the same machine load.
        paired = [
            new["rps"] / old["rps"]
            for new, old in zip(runs["GET /v1/tasks/{id}"], runs[BASELINE_GET], strict=True)
        ]
        report["baseline"] = str(args.baseline)
        report["tree"] = str(args.tree or ROOT)
        report["ratio_new_to_baseline_get_paired_median"] = round(statistics.median(paired), 3)
        report["ratio_new_to_baseline_get_paired"] = [round(r, 3) for r in paired]
        cpu_paired = [
            new["server_cpu_us_per_request"] / old["server_cpu_us_per_request"]
            for new, old in zip(runs["GET /v1/tasks/{id}"], runs[BASELINE_GET], strict=True)
        ]
        report["cpu_per_request_new_to_baseline_paired"] = [round(r, 3) for r in cpu_paired]
        report["cpu_per_request_new_to_baseline_paired_median"] = round(
            statistics.median(cpu_paired), 3
        )
    if args.metrics_off_case:
        if not args.baseline:
            stem = "api-metrics"
        # Paired per round, like the baseline: metrics on / off.
        on, off = runs["GET /v1/tasks/{id}"], runs[NOMETRICS_GET]
        report["ratio_metrics_on_to_off_get_paired"] = [
            round(a["rps"] / b["rps"], 3) for a, b in zip(on, off, strict=True)
        ]
        report["cpu_per_request_metrics_on_to_off_paired"] = [
            round(a["server_cpu_us_per_request"] / b["server_cpu_us_per_request"], 3)
            for a, b in zip(on, off, strict=True)
            if b["server_cpu_us_per_request"]
        ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"# API benchmark ({report['when']}, {os.cpu_count()} cores, wrk -c{args.connections}, "
        f"{ROWS:,} rows, median of {args.rounds} x {args.duration}s)",
        "",
        f"Commit {report['commit']}; load average (1, 5, 15 min) at start "
        f"{report['machine']['load_average_at_start']}, at end "
        f"{report['machine']['load_average_at_end']} on {os.cpu_count()} cores: absolute "
        "figures are depressed by other work on the machine; the ratios, measured side by "
        "side in alternating rounds, are what count.",
        "",
        "| case | req/s | p50 ms | p99 ms | server CPU us/request | non-2xx "
        "| pgbench same SQL (tps) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in summary.items():
        tps = f"{s['pgbench_tps']:,.0f}" if s["pgbench_tps"] else ""
        lines.append(
            f"| {name} | {s['rps_median']:,.0f} | {s['p50_ms_median']:.2f} | "
            f"{s['p99_ms_median']:.2f} | {s['server_cpu_us_per_request_median']:.0f} | "
            f"{s['non_2xx']} | {tps} |"
        )
    lines += ["", f"FlowForge / bare GET by id: {report['ratio_flowforge_to_bare_get']:.2f}"]
    lines += [
        "",
        "Paired per round with the bare GET by id (median of the per-round ratios): "
        "req/s ratio; server CPU per request ratio (FlowForge / bare)",
        "",
        "| case | req/s / bare GET | CPU per request / bare GET |",
        "|---|---:|---:|",
    ]
    for name, p in report["paired_to_bare_get"].items():
        lines.append(f"| {name} | {p['rps_ratio_median']:.2f} | {p['cpu_ratio_median']:.2f} |")
    if report["paired_same_route"]:
        lines += [
            "",
            "FlowForge over the bare app on the same route, paired per round (targets: GET "
            "0.95, POST and list 0.9)",
            "",
            "| case | req/s / bare | CPU per request / bare |",
            "|---|---:|---:|",
        ]
        for name, p in report["paired_same_route"].items():
            lines.append(f"| {name} | {p['rps_ratio_median']:.2f} | {p['cpu_ratio_median']:.2f} |")
    lines.append("")
    for name, s in summary.items():
        if s["pgbench_tps"]:
            lines.append(f"{name} / pgbench same SQL: {s['rps_median'] / s['pgbench_tps']:.2f}")
    for name, plan in explains.items():
        lines += ["", f"## EXPLAIN (ANALYZE, BUFFERS), list {name}, {ROWS:,} rows", "", "```"]
        lines += [plan, "```"]
    if args.baseline:
        lines += [
            f"{args.tree or 'This tree'} / baseline ({args.baseline}) GET by id, per round: "
            f"{', '.join(f'{r:.3f}' for r in report['ratio_new_to_baseline_get_paired'])}; "
            f"median {report['ratio_new_to_baseline_get_paired_median']:.3f} (req/s)",
            f"Server CPU per GET by id, this tree / baseline, per round: "
            f"{', '.join(f'{r:.3f}' for r in report['cpu_per_request_new_to_baseline_paired'])}; "
            f"median {report['cpu_per_request_new_to_baseline_paired_median']:.3f}",
        ]
    if args.metrics_off_case:
        rps = report["ratio_metrics_on_to_off_get_paired"]
        cpu = report["cpu_per_request_metrics_on_to_off_paired"]
        lines += [
            f"Request metrics on / off (bench/api_nometrics.py), GET by id, per round: "
            f"{', '.join(f'{r:.3f}' for r in rps)}; median {statistics.median(rps):.3f} (req/s)",
            f"Server CPU per GET by id, metrics on / off, per round: "
            f"{', '.join(f'{r:.3f}' for r in cpu)}; median "
            f"{statistics.median(cpu) if cpu else float('nan'):.3f}",
        ]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")
    if stem == "api":
        sys.path.insert(0, str(ROOT / "bench"))
        from plots import plot_api

        plot_api(report, RESULTS / "api.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
