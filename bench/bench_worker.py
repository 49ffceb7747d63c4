#!/usr/bin/env python3
"""Worker benchmark (not a test): FlowForge's queue beside PgQueuer and procrastinate, and
pgbench running the claim + complete SQL, on one PostgreSQL in one run.

    .venv/bin/python bench/bench_worker.py [--tasks 50000] [--samples 200]

Starts its own PostgreSQL 15 with durable commits (fsync and synchronous_commit on, the
defaults), one database per system. Measures:

- enqueue: one task at a time through `flowforge api` (HTTP, one client), and in bulk in
  the database (one INSERT ... SELECT); pgbench at 8 clients creating tasks with the API's
  INSERT with and without its statement-level pg_notify (does the NOTIFY slow creation?)
- noop processing: `flowforge worker` at concurrency 1 and 8 and two processes at 8
  (LOG_LEVEL=info, one JSON line per task to a file, as in production; and once at
  warning), PgQueuer at batch 10 (its default) and 50, procrastinate at concurrency 8.
  Rate = tasks / (first start .. last completion); commits and WAL bytes per task from
  pg_stat_database and pg_current_wal_lsn around the run.
- pickup latency: enqueue -> handler start, one task at a time into an idle worker with a
  5 s poll interval (the handler sends a UDP datagram with its start time to this script).
- the ceiling: pgbench claiming and completing 50 (and 1) tasks per commit with the same
  claim statement.

Writes bench/results/worker.json, .md and .png. PgQueuer runs on asyncpg, its
recommended driver (the `bench` extra lists it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import platform
import random
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import requests

from flowforge import migrate
from flowforge.config import load_settings
from flowforge.devdb import TempPostgres, free_port
from flowforge.stores import common_sql, queue_sql, tasks_sql

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
PROCRASTINATE_TASKS = 3000  # it runs a few hundred per second: keep its run short

PLUGIN = '''
import socket, time
_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

def ping(task):
    """Tells the benchmark when it started (pickup latency)."""
    _sock.sendto(repr(time.time()).encode(), tuple(task.payload["addr"]))
'''


# --- helpers ------------------------------------------------------------------------------
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def settings_for(url: str, **extra: str):  # type: ignore[no-untyped-def]
    return load_settings({"DATABASE_URL": url, **extra})


def create_db(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


def counters(conn: psycopg.Connection, dbname: str) -> tuple[int, int]:
    """(commits in this database, WAL position in bytes)."""
    time.sleep(1.2)  # backends report their commit counts to the stats system lazily
    commits = conn.execute(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (dbname,)
    ).fetchone()[0]
    wal = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()[0]
    return int(commits), int(wal)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def latency_summary(samples: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    return {
        "samples": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2),
    }


class UdpSink:
    """Receives the handlers' start times."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(10)
        self.addr = self.sock.getsockname()

    def next(self) -> float:
        return float(self.sock.recv(64))


def worker_env(url: str, plugin: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("API_", "WORKER_"))}
    env.pop("JOURNAL_STREAM", None)
    env.pop("NOTIFY_SOCKET", None)
    env.update({"DATABASE_URL": url, "PYTHONPATH": plugin, "LOG_LEVEL": "info", **extra})
    return env


def start_worker(url: str, plugin: str, logfile: Path, **extra: str) -> subprocess.Popen:
    """A `flowforge worker`, started once it sent READY=1 (sd_notify, as systemd sees it)."""
    ready = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tempfile.mktemp(prefix="ff-notify-", suffix=".sock")
    ready.bind(path)
    ready.settimeout(30)
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(
            [str(BIN / "flowforge"), "worker"],
            env=worker_env(url, plugin, NOTIFY_SOCKET=path, **extra),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        while not ready.recv(4096).startswith(b"READY=1"):
            pass
    except TimeoutError:
        raise RuntimeError(f"worker did not start: {logfile.read_text()[-2000:]}") from None
    finally:
        ready.close()
        os.unlink(path)
    return proc


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# --- FlowForge ----------------------------------------------------------------------------
def enqueue_api(url: str, tmp: Path, seconds: float) -> float:
    port = free_port()
    env = worker_env(url, "", API_HOST="127.0.0.1", API_PORT=str(port), API_WORKERS="2")
    with open(tmp / "api.log", "ab") as out:
        api = subprocess.Popen(
            [str(BIN / "flowforge"), "api"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(base + "/health", timeout=1)
                break
            except (requests.ConnectionError, requests.Timeout):  # booting, or a busy machine
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        token = subprocess.run(
            [str(BIN / "flowforge"), "token", "create", f"bench-{port}", "--scope", "write"],
            env=env, check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        n = 0
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {token}"
            started = time.perf_counter()
            while time.perf_counter() - started < seconds:
                r = session.post(base + "/v1/tasks", json={"title": "bench"})
                assert r.status_code == 201, r.text
                n += 1
            return n / (time.perf_counter() - started)
    finally:
        api.terminate()
        api.wait(timeout=30)


def bulk_insert(conn: psycopg.Connection, n: int, type_: str = "noop") -> float:
    started = time.perf_counter()
    with conn.transaction():
        conn.execute(
            "INSERT INTO tasks (title, type) SELECT 'task ' || g, %s FROM generate_series(1, %s) g",
            (type_, n),
        )
        conn.execute(common_sql.NOTIFY)
    return n / (time.perf_counter() - started)


def reset(conn: psycopg.Connection, table: str) -> None:
    conn.execute(f"TRUNCATE {table} RESTART IDENTITY")
    conn.execute(f"VACUUM ANALYZE {table}")
    conn.execute("CHECKPOINT")


def ours_throughput(
    url: str,
    plugin: str,
    tmp: Path,
    n: int,
    concurrency: int,
    processes: int,
    level: str,
    metrics: bool = True,
    **extra: str,
) -> dict:
    dbname = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as conn:
        reset(conn, "tasks")
        logfile = tmp / f"worker-c{concurrency}-p{processes}-{level}-m{int(metrics)}.log"
        procs: list[subprocess.Popen] = []
        try:
            for _ in range(processes):
                procs.append(
                    start_worker(
                        url,
                        plugin,
                        logfile,
                        WORKER_CONCURRENCY=str(concurrency),
                        LOG_LEVEL=level,
                        # its own /metrics port each (the default), or 0: metrics off
                        WORKER_METRICS_PORT=str(free_port() if metrics else 0),
                        **extra,
                    )
                )
            commits0, wal0 = counters(conn, dbname)
            bulk_insert(conn, n)
            done = "SELECT count(*) FROM tasks WHERE status = 'completed'"
            while conn.execute(done).fetchone()[0] < n:
                time.sleep(0.1)
            (seconds,) = conn.execute(
                "SELECT extract(epoch FROM max(completed_at) - min(started_at)) FROM tasks"
            ).fetchone()
            commits1, wal1 = counters(conn, dbname)
        finally:
            stop(procs)
    return {
        "tasks": n,
        "seconds": round(float(seconds), 3),
        "tasks_per_s": round(n / float(seconds)),
        # includes the one bulk INSERT and this script's progress polls (10 a second)
        "commits_per_task": round((commits1 - commits0) / n, 4),
        "wal_bytes_per_task": round((wal1 - wal0) / n),
    }


def ours_latency(url: str, plugin: str, tmp: Path, samples: int, insert: str, **extra: str) -> dict:
    sink = UdpSink()
    with psycopg.connect(url, autocommit=True) as conn:
        reset(conn, "tasks")
        proc = start_worker(
            url, plugin, tmp / "worker-latency.log", WORKER_POLL_INTERVAL="5s", **extra
        )
        try:
            params = {
                "title": "ping",
                "description": "",
                "type": "ping",
                "payload": json.dumps({"addr": list(sink.addr)}),
                "max_attempts": 3,
                "run_at": None,
                "request_id": "bench",
                "queue": "default",
                "priority": 0,
                "timeout": 900,
            }
            out = []
            for i in range(samples + 10):
                time.sleep(random.uniform(0.01, 0.03))
                started = time.time()
                conn.execute(insert, params)  # the API's statement (or the proposed one)
                latency = sink.next() - started
                if i >= 10:  # warm-up: prepared statements, first connections
                    out.append(latency)
        finally:
            stop([proc])
    return latency_summary(out)


def _literal(sql: str) -> str:
    """An INSERT of stores/tasks_sql.py with constants for its parameters, for pgbench."""
    return " ".join(
        sql.replace("%(title)s", "'bench'")
        .replace("%(description)s", "''")
        .replace("%(type)s", "'noop'")
        .replace("%(payload)s", "'{}'")
        .replace("%(max_attempts)s", "3")
        .replace("%(run_at)s", "NULL::timestamptz")
        .replace("%(request_id)s", "'bench'")
        .replace("%(queue)s", "'default'")
        .replace("%(priority)s", "0")
        .replace("%(timeout)s", "900")
        .split()
    )


def notify_cost(pg: TempPostgres, url: str, seconds: int) -> dict:
    """Task creation at 8 clients: the API's INSERT without NOTIFY, with its NOTIFY, and
    with the conditional NOTIFY (no worker waiting, and one worker waiting)."""
    conditional = _literal(tasks_sql.INSERT_TASK)  # what the API runs
    without = re.sub(r"LEFT JOIN LATERAL .*", "", conditional)
    with_notify = re.sub(
        r"LEFT JOIN LATERAL .*",
        f"CROSS JOIN LATERAL (SELECT pg_notify('{common_sql.NOTIFY_CHANNEL}', '')) AS n",
        conditional,
    )
    with psycopg.connect(url, autocommit=True) as conn:
        reset(conn, "tasks")
    result = {}
    for name, sql in (
        ("without_notify", without),
        ("with_notify", with_notify),
        ("notify_if_waiting_none_waits", conditional),
    ):
        result[name] = round(pgbench(pg, url, sql + ";\n", seconds, clients=8))
    with psycopg.connect(url, autocommit=True) as idle:
        idle.execute(common_sql.IDLE_LOCK)  # as an idle worker holds it
        result["notify_if_waiting_one_waits"] = round(
            pgbench(pg, url, conditional + ";\n", seconds, clients=8)
        )
    return result


def pgbench(pg: TempPostgres, url: str, script: str, seconds: int, clients: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as fh:
        fh.write(script)
    os.chmod(fh.name, 0o644)
    env = {**os.environ, "PGPASSWORD": pg.password}
    cmd = [
        str(pg.bindir / "pgbench"), "-n", "-M", "simple", "-c", str(clients), "-j", "2",
        "-T", str(seconds), "-f", fh.name, "-h", "127.0.0.1", "-p", str(pg.port),
        "-U", "postgres", url.rsplit("/", 1)[1],
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    os.unlink(fh.name)
    if out.returncode:
        raise RuntimeError(out.stderr + out.stdout)
    return float(re.search(r"tps = ([\d.]+)", out.stdout).group(1))  # type: ignore[union-attr]


def ceiling(pg: TempPostgres, url: str, per_commit: int, seconds: int, clients: int) -> dict:
    """pgbench: claim (the worker's claim statement) and complete, per_commit per commit."""
    claim = " ".join(
        queue_sql._CLAIM_CTE.format(due=queue_sql._DUE_ANY_QUEUE)
        .replace("%(worker)s", "'pgbench'")
        .replace("%(token)s", "md5(':client_id-:r')::uuid")
        .replace("%(lease)s", "30")
        .replace("%(limit)s", str(per_commit))
        .split()
    )
    script = (
        "\\set r random(1, 2000000000)\n"
        "BEGIN;\n"
        f"WITH {claim} SELECT coalesce(array_agg(id), '{{}}') AS ids FROM claimed \\gset\n"
        "UPDATE tasks t SET status = 'completed', completed_at = now(), lease_token = NULL, "
        "lease_expires_at = NULL, updated_at = now() WHERE t.id = ANY(':ids'::bigint[]) "
        "AND t.lease_token = md5(':client_id-:r')::uuid AND t.status = 'processing';\n"
        "COMMIT;\n"
    )
    dbname = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as conn:
        reset(conn, "tasks")
        bulk_insert(conn, 60_000 * seconds if per_commit > 1 else 8_000 * seconds)
        conn.execute("ANALYZE tasks")  # fresh statistics, as autovacuum soon gives a worker
        conn.execute("CHECKPOINT")
        commits0, wal0 = counters(conn, dbname)
        pgbench(pg, url, script, seconds, clients)
        commits1, wal1 = counters(conn, dbname)
        (done,) = conn.execute("SELECT count(*) FROM tasks WHERE status = 'completed'").fetchone()
        (left,) = conn.execute("SELECT count(*) FROM tasks WHERE status = 'pending'").fetchone()
    assert left > 0, "pgbench ran out of tasks: raise the row count"
    return {
        "per_commit": per_commit,
        "clients": clients,
        "tasks_per_s": round(done / seconds),
        "commits_per_task": round((commits1 - commits0) / done, 4),
        "wal_bytes_per_task": round((wal1 - wal0) / done),
    }


# --- peers (each in a process of its own: `bench_worker.py peer ...`) ---------------------
async def _pgqueuer_worker(url: str, mode: str, n: int, batch: int, udp: str | None) -> None:
    import asyncpg
    from pgqueuer import PgQueuer
    from pgqueuer.db import AsyncpgDriver

    conn = await asyncpg.connect(url)  # its recommended driver
    pgq = PgQueuer(AsyncpgDriver(conn))
    state = {"count": 0, "first": 0.0}
    done = asyncio.Event()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    addr = (udp.split(":")[0], int(udp.split(":")[1])) if udp else None

    @pgq.entrypoint("noop")
    async def noop(job) -> None:  # type: ignore[no-untyped-def]
        if state["count"] == 0:
            state["first"] = time.perf_counter()
        state["count"] += 1
        if state["count"] == n:
            done.set()

    @pgq.entrypoint("ping")
    async def ping(job) -> None:  # type: ignore[no-untyped-def]
        sock.sendto(repr(time.time()).encode(), addr)  # type: ignore[arg-type]

    async def watch() -> None:
        if mode != "throughput":
            return
        await done.wait()
        poll = await psycopg.AsyncConnection.connect(url, autocommit=True)
        while (
            await (
                await poll.execute(
                    "SELECT count(*) FROM pgqueuer WHERE status IN ('queued', 'picked')"
                )
            ).fetchone()
        )[0]:
            await asyncio.sleep(0.005)
        rate = n / (time.perf_counter() - state["first"])
        print(json.dumps({"tasks_per_s": round(rate)}), flush=True)
        pgq.shutdown.set()

    print(json.dumps({"ready": True}), flush=True)
    watcher = asyncio.create_task(watch())
    await pgq.run(batch_size=batch, dequeue_timeout=__import__("datetime").timedelta(seconds=5))
    await watcher


async def _procrastinate_worker(url: str, mode: str, n: int, concurrency: int, udp: str | None):  # type: ignore[no-untyped-def]
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))
    state = {"count": 0, "first": 0.0}
    done = asyncio.Event()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    addr = (udp.split(":")[0], int(udp.split(":")[1])) if udp else None

    @app.task(name="noop")
    async def noop() -> None:
        if state["count"] == 0:
            state["first"] = time.perf_counter()
        state["count"] += 1
        if state["count"] == n:
            done.set()

    @app.task(name="ping")
    async def ping() -> None:
        sock.sendto(repr(time.time()).encode(), addr)  # type: ignore[arg-type]

    async with app.open_async():
        worker = asyncio.create_task(
            app.run_worker_async(concurrency=concurrency, wait=True, fetch_job_polling_interval=5.0)
        )
        print(json.dumps({"ready": True}), flush=True)
        if mode == "throughput":
            await done.wait()
            poll = await psycopg.AsyncConnection.connect(url, autocommit=True)
            while (
                await (
                    await poll.execute(
                        "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
                    )
                ).fetchone()
            )[0]:
                await asyncio.sleep(0.005)
            rate = n / (time.perf_counter() - state["first"])
            print(json.dumps({"tasks_per_s": round(rate)}), flush=True)
            worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker


def peer_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("system", choices=["pgqueuer", "procrastinate"])
    p.add_argument("--url", required=True)
    p.add_argument("--mode", choices=["throughput", "latency"], required=True)
    p.add_argument("--n", type=int, default=0)
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--udp")
    a = p.parse_args(argv)
    if a.system == "pgqueuer":
        asyncio.run(_pgqueuer_worker(a.url, a.mode, a.n, a.batch, a.udp))
    else:
        asyncio.run(_procrastinate_worker(a.url, a.mode, a.n, a.concurrency, a.udp))
    return 0


def start_peer(args: list[str], logfile: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, __file__, "peer", *args],
        stdout=subprocess.PIPE,
        stderr=open(logfile, "ab"),  # noqa: SIM115 - the child keeps it
        text=True,
    )
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if '"ready"' not in line:
        raise RuntimeError(f"peer did not start: {logfile.read_text()[-2000:]}")
    time.sleep(1.0)  # let it reach its first dequeue / LISTEN
    return proc


async def _enqueue_pgqueuer(url: str, entrypoint: str, n: int) -> None:
    import asyncpg
    from pgqueuer import Queries
    from pgqueuer.db import AsyncpgDriver

    conn = await asyncpg.connect(url)
    q = Queries(AsyncpgDriver(conn))
    for start in range(0, n, 10_000):
        k = min(10_000, n - start)
        await q.enqueue([entrypoint] * k, [None] * k, [0] * k)
    await conn.close()


async def _enqueue_procrastinate(url: str, task: str, n: int) -> None:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))
    async with app.open_async():
        deferrer = app.configure_task(task)
        for start in range(0, n, 1000):
            await deferrer.batch_defer_async(*({} for _ in range(min(1000, n - start))))


def peer_throughput(system: str, url: str, tmp: Path, n: int, **opts: int) -> dict:
    dbname = url.rsplit("/", 1)[1]
    table = "pgqueuer" if system == "pgqueuer" else "procrastinate_jobs"
    args = ["--url", url, "--mode", "throughput", "--n", str(n)]
    for key, value in opts.items():
        args += [f"--{key}", str(value)]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {table} CASCADE")
        conn.execute("CHECKPOINT")
        proc = start_peer([system, *args], tmp / f"{system}.log")
        commits0, wal0 = counters(conn, dbname)
        try:
            enqueue = _enqueue_pgqueuer if system == "pgqueuer" else _enqueue_procrastinate
            asyncio.run(enqueue(url, "noop", n))
            result = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
            commits1, wal1 = counters(conn, dbname)
        finally:
            stop([proc])
    enqueue_commits = -(-n // (10_000 if system == "pgqueuer" else 1000))
    return {
        "tasks": n,
        **opts,
        "tasks_per_s": result["tasks_per_s"],
        "commits_per_task": round((commits1 - commits0 - enqueue_commits) / n, 4),
        "wal_bytes_per_task": round((wal1 - wal0) / n),
    }


def peer_latency(system: str, url: str, tmp: Path, samples: int) -> dict:
    sink = UdpSink()
    udp = f"{sink.addr[0]}:{sink.addr[1]}"
    proc = start_peer(
        [system, "--url", url, "--mode", "latency", "--udp", udp], tmp / f"{system}-lat.log"
    )

    async def run() -> list[float]:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        out = []
        if system == "pgqueuer":
            from pgqueuer import Queries

            q = Queries.from_psycopg_connection(conn)

            async def enqueue() -> None:
                await q.enqueue("ping", None)
        else:
            import procrastinate

            app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))
            await app.open_async()
            deferrer = app.configure_task("ping")

            async def enqueue() -> None:
                await deferrer.defer_async()

        loop = asyncio.get_running_loop()
        for i in range(samples + 10):
            await asyncio.sleep(random.uniform(0.01, 0.03))
            started = time.time()
            await enqueue()
            latency = await loop.run_in_executor(None, sink.next) - started
            if i >= 10:
                out.append(latency)
        return out

    try:
        return latency_summary(asyncio.run(run()))
    finally:
        stop([proc])


async def _install_peers(pgq_url: str, pro_url: str) -> None:
    import procrastinate
    from pgqueuer import Queries

    conn = await psycopg.AsyncConnection.connect(pgq_url, autocommit=True)
    await Queries.from_psycopg_connection(conn).install()
    await conn.close()
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=pro_url))
    async with app.open_async():
        await app.schema_manager.apply_schema_async()


# --- report -------------------------------------------------------------------------------
def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Worker benchmark",
        "",
        f"{r['date']}, {m['cpus']} CPUs (load average {m['load_average_at_start']} at the "
        f"start, {m['load_average_at_end']} at the end: other work shares them), "
        f"{m['python']}, PostgreSQL {m['postgres']}, durable "
        "commits (fsync and synchronous_commit on). Command: "
        f"`{r['command']}`, commit {r.get('commit', '?')}; FlowForge's workers at "
        f"WORKER_ISOLATION={r.get('worker_isolation', '?')} (the default).",
        "",
        "## Enqueue",
        "",
        "| how | tasks/s |",
        "|---|---|",
        f"| POST /v1/tasks, one client, one at a time | {r['enqueue']['api_one_at_a_time']:.0f} |",
        f"| bulk INSERT ... SELECT in the database | {r['enqueue']['bulk_in_db']:.0f} |",
        f"| pgbench 8 clients, API INSERT without NOTIFY | "
        f"{r['enqueue']['pgbench_8_clients']['without_notify']} |",
        f"| pgbench 8 clients, API INSERT with its NOTIFY | "
        f"{r['enqueue']['pgbench_8_clients']['with_notify']} |",
        f"| pgbench 8 clients, conditional NOTIFY, no worker waiting | "
        f"{r['enqueue']['pgbench_8_clients']['notify_if_waiting_none_waits']} |",
        f"| pgbench 8 clients, conditional NOTIFY, a worker waiting | "
        f"{r['enqueue']['pgbench_8_clients']['notify_if_waiting_one_waits']} |",
        "",
        "## Noop processing",
        "",
        "| system | setting | tasks/s (median) | rounds | commits/task | WAL bytes/task |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["processing"]:
        lines.append(
            f"| {row['system']} | {row['setting']} | {row['tasks_per_s']} | "
            f"{', '.join(map(str, row.get('rounds_tasks_per_s', [row['tasks_per_s']])))} | "
            f"{row['commits_per_task']} | {row['wal_bytes_per_task']} |"
        )
    lines += [
        "",
        "## Pickup latency (enqueue -> handler start, idle worker, 5 s poll interval)",
        "",
        "| system | p50 ms | p95 ms | p99 ms | max ms | samples |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in r["latency"].items():
        lines.append(
            f"| {name} | {s['p50_ms']} | {s['p95_ms']} | {s['p99_ms']} | {s['max_ms']} | "
            f"{s['samples']} |"
        )
    lines += ["", "Notes:", *(f"- {n}" for n in r["notes"]), ""]
    return "\n".join(lines)


def _plugin_dir(tmp: Path) -> Path:
    plugin = tmp / "plugin"
    plugin.mkdir()
    (plugin / "ff_bench_handlers.py").write_text(PLUGIN)
    info = plugin / "ff_bench_handlers-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ff-bench-handlers\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[flowforge.handlers]\nping = ff_bench_handlers:ping\n")
    return plugin


def metrics_main(a: argparse.Namespace, argv: list[str]) -> int:
    """Worker metrics on and off, one process at concurrency 8 and 1, rounds alternating."""
    pg = TempPostgres().start()
    tmp = Path(tempfile.mkdtemp(prefix="flowforge-bench-"))
    plugin = _plugin_dir(tmp)
    try:
        url = create_db(pg.url(), "flowforge")
        migrate.upgrade(settings_for(url))
        r: dict = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": "python bench/bench_worker.py " + " ".join(argv),
            "commit": subprocess.run(
                ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip(),
            "worker_isolation": load_settings(
                {"DATABASE_URL": "postgresql://x/y"}
            ).worker_isolation,
            "machine": {
                "cpus": os.cpu_count(),
                "load_average_at_start": round(os.getloadavg()[0], 2),
                "python": platform.python_version(),
            },
            "rows": [],
        }
        cases = [
            (concurrency, metrics)
            for concurrency in (8, 1)
            for metrics in (False, True)
        ]  # fmt: skip
        runs: dict[tuple[int, bool], list[dict]] = {case: [] for case in cases}
        for round_ in range(a.rounds):
            for concurrency, metrics in cases:
                n = a.tasks if concurrency > 1 else a.tasks // 2
                log(f"round {round_ + 1}: concurrency {concurrency}, metrics {metrics}")
                runs[concurrency, metrics].append(
                    ours_throughput(url, str(plugin), tmp, n, concurrency, 1, "info", metrics)
                )
                log(json.dumps(runs[concurrency, metrics][-1]))
        for (concurrency, metrics), results in runs.items():
            rates = sorted(x["tasks_per_s"] for x in results)
            r["rows"].append(
                {
                    "concurrency": concurrency,
                    "metrics": "on" if metrics else "off",
                    "median_tasks_per_s": rates[len(rates) // 2],
                    "rounds_tasks_per_s": [x["tasks_per_s"] for x in results],
                }
            )
        r["machine"]["load_average_at_end"] = round(os.getloadavg()[0], 2)
        lines = [
            "# Worker metrics: on and off side by side",
            "",
            f"{r['date']}, {r['machine']['cpus']} CPUs (load average "
            f"{r['machine']['load_average_at_start']} at the start, "
            f"{r['machine']['load_average_at_end']} at the end), Python "
            f"{r['machine']['python']}. Command: `{r['command']}`. One `flowforge worker`, "
            "noop tasks, batch 50, LOG_LEVEL=info; rounds alternate between the settings.",
            "",
            "| concurrency | worker metrics | tasks/s (median) | rounds | on / off |",
            "|---|---|---|---|---|",
        ]
        for row in r["rows"]:
            off = next(
                x for x in r["rows"] if x["concurrency"] == row["concurrency"]
                and x["metrics"] == "off"
            )  # fmt: skip
            ratio = row["median_tasks_per_s"] / off["median_tasks_per_s"]
            lines.append(
                f"| {row['concurrency']} | {row['metrics']} | {row['median_tasks_per_s']} | "
                f"{', '.join(map(str, row['rounds_tasks_per_s']))} | {ratio:.3f} |"
            )
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "worker-metrics.json").write_text(json.dumps(r, indent=2) + "\n")
        (RESULTS / "worker-metrics.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
    finally:
        pg.destroy()
    return 0


def isolation_main(a: argparse.Namespace, argv: list[str]) -> int:
    """Noop throughput (one process, concurrency 8) and pickup latency of both isolation
    modes beside a baseline commit's worker (its source, checked out on the side, run
    against the same database), rounds alternating."""
    pg = TempPostgres().start()
    tmp = Path(tempfile.mkdtemp(prefix="flowforge-bench-"))
    plugin = _plugin_dir(tmp)
    base_dir = tmp / "baseline"
    rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", a.baseline],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base_dir), rev],
        check=True, capture_output=True,
    )  # fmt: skip
    cases = {
        f"{rev} (before, its default)": {"PYTHONPATH": f"{base_dir / 'src'}{os.pathsep}{plugin}"},
        "WORKER_ISOLATION=thread": {"WORKER_ISOLATION": "thread"},
        "WORKER_ISOLATION=process": {"WORKER_ISOLATION": "process"},
    }
    try:
        url = create_db(pg.url(), "flowforge")
        migrate.upgrade(settings_for(url))
        r: dict = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": "python bench/bench_worker.py " + " ".join(argv),
            "commit": subprocess.run(
                ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip(),
            "worker_isolation": load_settings(
                {"DATABASE_URL": "postgresql://x/y"}
            ).worker_isolation,
            "machine": {
                "cpus": os.cpu_count(),
                "load_average_at_start": round(os.getloadavg()[0], 2),
                "python": platform.python_version(),
            },
            "rows": [],
        }
        runs: dict[str, list[dict]] = {name: [] for name in cases}
        lat: dict[str, list[dict]] = {name: [] for name in cases}
        for round_ in range(a.rounds):
            for name, env in cases.items():
                log(f"round {round_ + 1}: {name}")
                runs[name].append(
                    ours_throughput(url, str(plugin), tmp, a.tasks, 8, 1, "info", False, **env)
                )
                lat[name].append(
                    ours_latency(url, str(plugin), tmp, a.samples, tasks_sql.INSERT_TASK, **env)
                )
                log(json.dumps([runs[name][-1], lat[name][-1]]))
        first = next(iter(cases))
        for name in cases:
            rates = sorted(x["tasks_per_s"] for x in runs[name])
            # Paired with the baseline's run of the same round: the load on these shared
            # cores drifts between rounds far more than between neighbouring runs.
            paired = sorted(
                x["tasks_per_s"] / b["tasks_per_s"]
                for x, b in zip(runs[name], runs[first], strict=True)
            )
            p50s = sorted(x["p50_ms"] for x in lat[name])
            p99s = sorted(x["p99_ms"] for x in lat[name])
            r["rows"].append(
                {
                    "worker": name,
                    "median_tasks_per_s": rates[len(rates) // 2],
                    "rounds_tasks_per_s": [x["tasks_per_s"] for x in runs[name]],
                    "median_paired_ratio": round(paired[len(paired) // 2], 3),
                    "paired_ratios": [round(x, 3) for x in paired],
                    "median_pickup_p50_ms": p50s[len(p50s) // 2],
                    "median_pickup_p99_ms": p99s[len(p99s) // 2],
                    "rounds_pickup_p50_ms": [x["p50_ms"] for x in lat[name]],
                }
            )
        r["machine"]["load_average_at_end"] = round(os.getloadavg()[0], 2)
        base = r["rows"][0]
        lines = [
            "# Worker isolation: threads and processes beside the previous commit",
            "",
            f"{r['date']}, {r['machine']['cpus']} CPUs (load average "
            f"{r['machine']['load_average_at_start']} at the start, "
            f"{r['machine']['load_average_at_end']} at the end: other work shares them), "
            f"Python {r['machine']['python']}. Command: `{r['command']}`. One `flowforge "
            f"worker`, {a.tasks} noop tasks, concurrency 8, batch 50, LOG_LEVEL=info, worker "
            "metrics off; pickup latency: enqueue -> handler start into an idle worker, "
            f"{a.samples} samples a round. Rounds alternate between the workers.",
            "",
            "| worker | tasks/s (median) | rounds | median vs before | vs before, paired per "
            "round (median; all) | pickup p50 ms | p99 ms |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in r["rows"]:
            ratio = row["median_tasks_per_s"] / base["median_tasks_per_s"]
            lines.append(
                f"| {row['worker']} | {row['median_tasks_per_s']} | "
                f"{', '.join(map(str, row['rounds_tasks_per_s']))} | {ratio:.3f} | "
                f"{row['median_paired_ratio']:.3f}; "
                f"{', '.join(f'{x:.2f}' for x in row['paired_ratios'])} | "
                f"{row['median_pickup_p50_ms']} | {row['median_pickup_p99_ms']} |"
            )
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "worker-isolation.json").write_text(json.dumps(r, indent=2) + "\n")
        (RESULTS / "worker-isolation.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
    finally:
        pg.destroy()
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_dir)],
            capture_output=True,
        )  # fmt: skip
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["peer"]:
        return peer_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=50_000)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--seconds", type=int, default=5, help="length of each pgbench/API run")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the processing runs")
    p.add_argument(
        "--metrics-only",
        action="store_true",
        help="only FlowForge with worker metrics on and off, side by side "
        "(writes worker-metrics.json/.md)",
    )
    p.add_argument(
        "--isolation-only",
        action="store_true",
        help="only FlowForge's isolation modes beside the --baseline commit's worker "
        "(writes worker-isolation.json/.md)",
    )
    p.add_argument("--baseline", default="HEAD~1", help="commit to compare with (default HEAD~1)")
    a = p.parse_args(argv)
    if a.metrics_only:
        return metrics_main(a, argv)
    if a.isolation_only:
        return isolation_main(a, argv)

    pg = TempPostgres().start()
    tmp = Path(tempfile.mkdtemp(prefix="flowforge-bench-"))
    plugin = _plugin_dir(tmp)
    try:
        url = create_db(pg.url(), "flowforge")
        migrate.upgrade(settings_for(url))
        pgq_url = create_db(pg.url(), "pgqueuer")
        pro_url = create_db(pg.url(), "procrastinate")
        asyncio.run(_install_peers(pgq_url, pro_url))
        with psycopg.connect(url, autocommit=True) as conn:
            pg_version = conn.execute("SHOW server_version").fetchone()[0]
            fsync = conn.execute("SHOW fsync").fetchone()[0]
            sync = conn.execute("SHOW synchronous_commit").fetchone()[0]
        assert (fsync, sync) == ("on", "on"), "durable commits expected"

        r: dict = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": "python bench/bench_worker.py " + " ".join(argv),
            "commit": subprocess.run(
                ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip(),
            "worker_isolation": load_settings(
                {"DATABASE_URL": "postgresql://x/y"}
            ).worker_isolation,
            "machine": {
                "cpus": os.cpu_count(),
                # the cores are shared: other work running meanwhile shows here
                "load_average_at_start": round(os.getloadavg()[0], 2),
                "python": platform.python_version(),
                "postgres": pg_version,
            },
            "notes": [
                "FlowForge rates: tasks / (min(started_at) .. max(completed_at)) of the run; "
                "peers: first handler call .. queue empty, timed inside their process.",
                "commits/task: pg_stat_database.xact_commit of that system's database over the "
                "run, including the bulk enqueue and the benchmark's progress polls; WAL "
                "bytes/task: pg_current_wal_lsn difference (a CHECKPOINT before each run, so "
                "full-page images are included, as in steady state).",
                "PgQueuer on asyncpg (its recommended driver), no per-entrypoint concurrency "
                "limit (its default); procrastinate async tasks, concurrency 8.",
                "FlowForge at LOG_LEVEL=info writes one JSON line per task (to a file here).",
            ],
        }
        log("enqueue")
        with psycopg.connect(url, autocommit=True) as conn:
            reset(conn, "tasks")
            bulk = bulk_insert(conn, 200_000)
        r["enqueue"] = {
            "api_one_at_a_time": round(enqueue_api(url, tmp, a.seconds)),
            "bulk_in_db": round(bulk),
            "pgbench_8_clients": notify_cost(pg, url, a.seconds),
        }
        log(json.dumps(r["enqueue"]))

        log("pgbench ceiling")
        r["ceiling"] = [
            ceiling(pg, url, 50, a.seconds, clients=2),
            ceiling(pg, url, 1, a.seconds, clients=8),
        ]
        log(json.dumps(r["ceiling"]))
        rows = r["processing"] = []
        for row in r["ceiling"]:
            rows.append(
                {
                    "system": "pgbench (ceiling)",
                    "setting": f"claim + complete {row['per_commit']}/commit, "
                    f"{row['clients']} clients",
                    **row,
                }
            )
        # Rounds alternate between the systems so the machine's noise (other processes on
        # these 2 cores) hits them alike; the median round is reported, every round kept.
        cases: list[tuple[str, str, Callable[[], dict]]] = []
        for concurrency, processes, level, metrics in [
            (1, 1, "info", True), (8, 1, "info", True), (8, 1, "info", False),
            (8, 2, "info", True), (8, 1, "warning", True),
        ]:  # fmt: skip
            n = a.tasks if concurrency > 1 else a.tasks // 2
            cases.append(
                (
                    "FlowForge",
                    f"{processes} process(es), concurrency {concurrency}, batch 50, "
                    f"LOG_LEVEL={level}" + ("" if metrics else ", worker metrics off"),
                    functools.partial(
                        ours_throughput, url, str(plugin), tmp, n, concurrency, processes, level,
                        metrics,
                    ),
                )
            )  # fmt: skip
        for batch in (10, 50):
            cases.append(
                (
                    "PgQueuer 1.6",
                    f"batch {batch}",
                    functools.partial(
                        peer_throughput, "pgqueuer", pgq_url, tmp, a.tasks, batch=batch
                    ),
                )
            )
        cases.append(
            (
                "procrastinate 3.10",
                "concurrency 8",
                functools.partial(
                    peer_throughput, "procrastinate", pro_url, tmp, PROCRASTINATE_TASKS,
                    concurrency=8,
                ),
            )
        )  # fmt: skip
        runs: dict[int, list[dict]] = {i: [] for i in range(len(cases))}
        for round_ in range(a.rounds):
            for i, (system, setting, run) in enumerate(cases):
                log(f"round {round_ + 1}: {system} {setting}")
                runs[i].append(run())
                log(json.dumps(runs[i][-1]))
        for i, (system, setting, _) in enumerate(cases):
            by_rate = sorted(runs[i], key=lambda x: x["tasks_per_s"])
            median = by_rate[len(by_rate) // 2]
            rows.append(
                {
                    "system": system,
                    "setting": setting,
                    **median,
                    "rounds_tasks_per_s": [x["tasks_per_s"] for x in runs[i]],
                }
            )

        log("latency")
        r["latency"] = {
            "FlowForge": ours_latency(url, str(plugin), tmp, a.samples, tasks_sql.INSERT_TASK),
            "PgQueuer 1.6": peer_latency("pgqueuer", pgq_url, tmp, a.samples),
            "procrastinate 3.10": peer_latency("procrastinate", pro_url, tmp, a.samples),
        }
        log(json.dumps(r["latency"]))
        r["machine"]["load_average_at_end"] = round(os.getloadavg()[0], 2)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "worker.json").write_text(json.dumps(r, indent=2) + "\n")
        (RESULTS / "worker.md").write_text(markdown(r))
        from plots import plot_worker

        plot_worker(r, RESULTS / "worker.png")
        print(markdown(r))
    finally:
        pg.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
