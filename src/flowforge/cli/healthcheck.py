"""scripts/healthcheck.py: is FlowForge healthy? For cron, monitoring systems and humans.

Checks the API's ``/health`` (which checks the database from the API's side) and, with
``--database``, PostgreSQL directly plus the queue: how long the oldest due pending task
has waited, how many processing tasks are past their lease (no worker is looking after
them), and whether every queue with due pending tasks has a live worker (the workers
registry). Exit 0 healthy, 1 unhealthy, 2 usage or configuration error.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..config import Settings
from ..db import HEALTH
from ..stores.ops_sql import LIVE_WORKERS, QUEUE_HEALTH, UNSERVED_QUEUES
from .scripting import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    add_age_option,
    database,
    database_label,
    format_age,
    make_parser,
    non_negative_int,
    script_entry,
    settings_from_env,
)

PROG = "healthcheck.py"

EXAMPLES = """\
  healthcheck.py                             the API at API_URL (default http://127.0.0.1:8080)
  healthcheck.py --api-url http://api.example.internal:8080 --timeout 2s
  healthcheck.py --database --max-pending-age 10m --max-stuck 5
  healthcheck.py --database --no-api --json  PostgreSQL and the queue only, for a monitor
  */5 * * * * healthcheck.py --quiet --database || notify-ops   (cron: silent when healthy)
"""


@dataclass
class Check:
    """One check's outcome; ``details`` holds the figures (for --json)."""

    name: str
    ok: bool
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def build_parser():  # type: ignore[no-untyped-def]
    parser = make_parser(
        PROG,
        "Check the FlowForge API (GET /health) and, with --database, PostgreSQL and the "
        "queue directly.\nConfiguration comes from API_URL and DATABASE_URL, as for the "
        "services.",
        EXAMPLES,
        success="healthy: every check passed",
        failure="unhealthy: the API, the database or the queue failed a check",
    )
    parser.add_argument("--api-url", metavar="URL", help="the API's base URL (default: API_URL)")
    parser.add_argument(
        "--no-api", action="store_true", help="skip the API check (use with --database)"
    )
    parser.add_argument(
        "--database",
        action="store_true",
        help="also connect to DATABASE_URL and check the queue",
    )
    add_age_option(
        parser,
        "--timeout",
        "5s",
        "longest wait for the API and for each database step",
    )
    add_age_option(
        parser,
        "--max-pending-age",
        "5m",
        "unhealthy when a due pending task has waited longer",
    )
    parser.add_argument(
        "--max-stuck",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="unhealthy when more processing tasks are past their lease (default 0)",
    )
    add_age_option(
        parser,
        "--stuck-grace",
        "1m",
        "a processing task counts as stuck once its lease expired this long ago; the "
        "worker's reaper gives such tasks back",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON document on stdout")
    output.add_argument(
        "-q", "--quiet", action="store_true", help="print only when unhealthy (for cron)"
    )
    return parser


def check_api(base_url: str, timeout: float) -> Check:
    url = f"{base_url}/health"
    started = time.perf_counter()
    status: int | None = None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:  # 503: the API is up, its database is not
        status, body = exc.code, exc.read()
    except urllib.error.URLError as exc:
        return Check("api", False, f"{url}: {_network_reason(exc.reason, timeout)}", {"url": url})
    except TimeoutError:
        return Check("api", False, f"{url}: no answer within {format_age(timeout)}", {"url": url})
    except (OSError, ValueError) as exc:  # connection reset mid-answer, malformed HTTP
        return Check("api", False, f"{url}: {exc}", {"url": url})
    took_ms = round((time.perf_counter() - started) * 1000, 1)
    details = {"url": url, "status": status, "duration_ms": took_ms}
    try:
        envelope = json.loads(body)
    except ValueError:
        return Check("api", False, f"{url} answered {status} without JSON", details)
    if status == 200 and isinstance(envelope, dict) and envelope.get("data"):
        return Check("api", True, f"{url} answered 200 in {took_ms:.0f} ms", details)
    error = envelope.get("error") if isinstance(envelope, dict) else None
    reason = error.get("message") if isinstance(error, dict) else "unexpected answer"
    return Check("api", False, f"{url} answered {status}: {reason}", details)


def _network_reason(reason: object, timeout: float) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (is flowforge-api running?)"
    if isinstance(reason, TimeoutError):
        return f"no answer within {format_age(timeout)}"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve the host ({reason.strerror})"
    return str(getattr(reason, "strerror", None) or reason)


def check_database(settings: Settings, args: Any) -> list[Check]:
    where = database_label(settings.database_url)
    started = time.perf_counter()
    try:
        with database(settings) as conn:
            conn.execute(HEALTH)
            took_ms = round((time.perf_counter() - started) * 1000, 1)
            row = conn.execute(QUEUE_HEALTH, {"grace": args.stuck_grace}).fetchone()
            workers = conn.execute(LIVE_WORKERS).fetchall()
            unserved = conn.execute(UNSERVED_QUEUES).fetchall()
    except CommandError as exc:
        if exc.code == EXIT_USAGE:
            raise
        return [Check("database", False, str(exc), {"database": where})]
    assert row is not None
    return [
        Check(
            "database",
            True,
            f"{where} answered in {took_ms:.0f} ms",
            {"database": where, "duration_ms": took_ms},
        ),
        _queue_check(row, args),
        _workers_check(workers, unserved),
    ]


def _queue_check(row: Sequence[Any], args: Any) -> Check:
    """How long due tasks wait and how many are stuck past their lease (QUEUE_HEALTH)."""
    oldest, due, processing, stuck = row
    oldest = float(oldest) if oldest is not None else 0.0
    figures = {
        "oldest_pending_seconds": round(oldest, 3),
        "due_pending": due,
        "processing": processing,
        "stuck": stuck,
        "max_pending_age_seconds": args.max_pending_age,
        "max_stuck": args.max_stuck,
    }
    problems = []
    if oldest > args.max_pending_age:
        problems.append(
            f"oldest due pending task has waited {format_age(oldest)} "
            f"(limit {format_age(args.max_pending_age)}): are workers running?"
        )
    if stuck > args.max_stuck:
        problems.append(
            f"{stuck} processing tasks past their lease by over {format_age(args.stuck_grace)} "
            f"(limit {args.max_stuck}): is the reaper (any worker) running?"
        )
    summary = (
        f"{due} due pending (oldest waited {format_age(oldest)}), "
        f"{processing} processing, {stuck} stuck"
    )
    return Check("queue", not problems, "; ".join(problems) or summary, figures)


def _workers_check(workers: Sequence[Any], unserved: Sequence[Any]) -> Check:
    """The live workers (LIVE_WORKERS) and the queues with due tasks none of them serves."""
    live = [
        {"id": w[0], "queues": list(w[1]), "capacity": w[2], "busy": w[3], "isolation": w[4],
         "version": w[5], "heartbeat_age_seconds": round(float(w[6]), 3)}
        for w in workers
    ]  # fmt: skip
    waiting = [
        {"queue": q, "due_pending": n, "waited_seconds": round(float(a), 3)} for q, n, a in unserved
    ]
    details = {"live": len(live), "workers": live, "unserved_queues": waiting}
    if waiting:
        names = ", ".join(f"{w['queue']} ({w['due_pending']} due)" for w in waiting)
        message = f"no live worker serves queue(s) with due pending tasks: {names}"
        return Check("workers", False, message, details)
    capacity = sum(w["capacity"] for w in live)
    busy = sum(w["busy"] for w in live)
    message = f"{len(live)} live worker(s), {busy} of {capacity} slots busy"
    return Check("workers", True, message, details)


def report(checks: list[Check], *, as_json: bool, quiet: bool) -> bool:
    healthy = all(check.ok for check in checks)
    if as_json:
        doc = {"healthy": healthy, "checks": [asdict(check) for check in checks]}
        print(json.dumps(doc, indent=2))
    elif not (quiet and healthy):
        for check in checks:
            print(f"{'ok' if check.ok else 'FAIL':<5} {check.name:<9} {check.message}")
        print("healthy" if healthy else "UNHEALTHY")
    sys.stdout.flush()
    return healthy


def main(argv: Sequence[str] | None = None) -> int:
    # Read-only: Ctrl-C may end it at once, mid-call (no clean-up that could hang on it).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.no_api and not args.database:
        parser.error("--no-api leaves nothing to check: add --database")
    timeout = f"{args.timeout}s"
    settings = settings_from_env(
        require=("DATABASE_URL",) if args.database else (),
        API_URL=args.api_url,
        # The database steps share --timeout: connecting and each statement.
        DATABASE_CONNECT_TIMEOUT=timeout,
        DATABASE_STATEMENT_TIMEOUT=timeout,
    )
    checks: list[Check] = []
    if not args.no_api:
        checks.append(check_api(settings.api_url, args.timeout))
    if args.database:
        checks.extend(check_database(settings, args))
    return EXIT_OK if report(checks, as_json=args.json, quiet=args.quiet) else EXIT_FAILURE


entry = script_entry(PROG, main)  # what scripts/healthcheck.py runs
