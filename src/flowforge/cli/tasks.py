"""``flowforge tasks list|show|cancel|retry|attempts|stats``: the queue for operators on a host.

Straight over the database (DATABASE_URL, the services' own environment), through the
same store as the API: a cancel or retry here is the API's conditional statement, with
its notifications. Human output by default, ``--json`` for scripts; errors are one line
on stderr and a non-zero exit (1: refused or failed, 2: usage or configuration).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, TypeVar

from ..domain.states import Status
from ..durations import format_duration
from ..stores import tasks_sql
from .common import EXIT_CONFIG, CommandError, database_errors, settings

T = TypeVar("T")


HELP = "list, show, cancel, retry tasks and see queue stats (over the database)"
DESCRIPTION = (
    "Operate the queue straight over DATABASE_URL: `flowforge tasks list --status failed`, "
    "`flowforge tasks retry 42`, `flowforge tasks stats --json`."
)
EPILOG = None


def add_arguments(tasks: argparse.ArgumentParser) -> None:
    tsub = tasks.add_subparsers(dest="action", metavar="ACTION", required=True)
    lst = tsub.add_parser("list", help="tasks, newest first")
    lst.add_argument("--status", choices=[s.value for s in Status])
    lst.add_argument("--queue", help="a queue name")
    lst.add_argument("--type", help="a task type (handler name)")
    lst.add_argument("--limit", type=_limit, default=20, help="at most this many (1-1000)")
    show = tsub.add_parser("show", help="one task, every field")
    cancel = tsub.add_parser("cancel", help="cancel a task (a running one is told to stop)")
    retry = tsub.add_parser("retry", help="run a failed, cancelled or completed task again")
    attempts = tsub.add_parser("attempts", help="a task's attempts, oldest first, tracebacks too")
    for action in (show, cancel, retry, attempts):
        action.add_argument("id", type=_task_id, metavar="ID")
    tsub.add_parser("stats", help="counts by queue and status, oldest pending age")
    for parser in (lst, show, cancel, retry, attempts, tsub.choices["stats"]):
        parser.add_argument("--json", action="store_true", help="machine-readable output")


def _limit(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1000:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to 1000, got {text!r}")
    return int(text)


def _task_id(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 2**63 - 1:
        raise argparse.ArgumentTypeError(f"expected a task id (a positive integer), got {text!r}")
    return int(text)


def _json(value: Any) -> str:
    def default(obj: Any) -> Any:
        if isinstance(obj, datetime):
            return obj.astimezone(UTC).isoformat().replace("+00:00", "Z")
        raise TypeError(type(obj).__name__)

    return json.dumps(value, default=default, indent=2)


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds, "decimal")


def run(args: argparse.Namespace) -> int:
    from ..db import make_engine
    from ..domain.fields import QUEUE_PATTERN, QUEUE_RULE
    from ..stores.task_types import NotFound, TransitionRefused
    from ..stores.tasks import TaskStore

    config = settings()
    if args.action == "list" and args.queue is not None and not QUEUE_PATTERN.fullmatch(args.queue):
        raise CommandError(f"--queue {QUEUE_RULE}", EXIT_CONFIG)
    engine = make_engine(config, pool_size=1)
    store = TaskStore(
        engine,
        default_max_attempts=config.task_max_attempts,
        lease_seconds=config.worker_lease,
        default_timeout=config.task_timeout,
    )
    try:
        with database_errors("tasks"):
            return ACTIONS[args.action](args, store)
    except NotFound as exc:
        raise CommandError(f"task {exc.args[0]} not found") from None
    except TransitionRefused as exc:
        raise CommandError(str(exc)) from None
    finally:
        engine.dispose()


def _list(args: argparse.Namespace, store: Any) -> int:
    filters = {"status": args.status, "type": args.type, "queue": args.queue}
    page = store.list(limit=args.limit, offset=0, filters=filters)
    if args.json:
        print(_json({"tasks": [asdict(t) for t in page.tasks], "total": page.total}))
        return 0
    if not page.tasks:
        print("no tasks match")
        return 0
    print(f"{'ID':>8}  {'STATUS':<10} {'QUEUE':<12} {'PRI':>4}  {'TYPE':<12} "
          f"{'TRIES':<5}  {'CREATED (UTC)':<19}  TITLE")  # fmt: skip
    for t in page.tasks:
        print(
            f"{t.id:>8}  {t.status:<10} {t.queue[:12]:<12} {t.priority:>4}  "
            f"{t.type[:12]:<12} {t.attempts}/{t.max_attempts:<3}  {_when(t.created_at)}  "
            f"{t.title[:60]}"
        )
    print(f"({len(page.tasks)} of {page.total})")
    return 0


def _found(value: T | None, task_id: int) -> T:
    """``value``, or NotFound ("task N not found") when there is no such task."""
    from ..stores.task_types import NotFound

    if value is None:
        raise NotFound(task_id)
    return value


def _show(args: argparse.Namespace, store: Any) -> int:
    task = _found(store.get(args.id), args.id)
    if args.json:
        print(_json(asdict(task)))
        return 0
    for name, value in asdict(task).items():
        shown = _when(value) if isinstance(value, datetime) else value
        if isinstance(value, dict | list):
            shown = json.dumps(value)
        print(f"{name:<17} {'-' if shown is None else shown}")
    return 0


def _cancel(args: argparse.Namespace, store: Any) -> int:
    outcome = store.cancel(args.id)
    if args.json:
        print(_json({"task": asdict(outcome.task), "immediate": outcome.immediate}))
    elif outcome.immediate:
        print(f"task {args.id} cancelled")
    else:
        print(f"task {args.id} is running: its worker was told to stop it")
    return 0


def _retry(args: argparse.Namespace, store: Any) -> int:
    task = store.retry(args.id)
    if args.json:
        print(_json(asdict(task)))
    else:
        print(f"task {args.id} is pending again (attempts 0)")
    return 0


def _attempts(args: argparse.Namespace, store: Any) -> int:
    attempts = _found(store.attempts(args.id), args.id)
    if args.json:
        print(_json({"attempts": attempts}))
        return 0
    if not attempts:
        print(f"task {args.id} has no attempts yet")
    for a in attempts:
        took = a["finished_at"] - a["started_at"] if a["started_at"] else None
        usage = [
            f"{took.total_seconds():.3f}s" if took is not None else None,
            f"cpu {a['cpu_seconds']:.3f}s" if a["cpu_seconds"] is not None else None,
            f"peak rss {a['max_rss_bytes'] / 2**20:.1f} MiB" if a["max_rss_bytes"] else None,
            f"signal {a['exit_signal']}" if a["exit_signal"] is not None else None,
        ]
        print(f"#{a['attempt']} {a['outcome']:<10} {_when(a['started_at'])}  "
              f"{a['worker'] or '-'}  {', '.join(u for u in usage if u)}")  # fmt: skip
        if a["error"]:
            print(f"    {a['error']}")
        if a["traceback"]:
            print("\n".join(f"    | {line}" for line in a["traceback"].rstrip().splitlines()))
    return 0


def _stats(args: argparse.Namespace, store: Any) -> int:
    with store.source.connection() as conn:
        rows = conn.execute(tasks_sql.TASK_STATS).fetchall()
    queues: dict[str, dict[str, Any]] = {}
    for queue, status, count, oldest in rows:
        entry = queues.setdefault(queue, {"counts": {}, "oldest_pending_seconds": None})
        entry["counts"][status] = count
        if oldest is not None:
            entry["oldest_pending_seconds"] = round(float(oldest), 3)
    if args.json:
        print(_json({"queues": queues}))
        return 0
    if not queues:
        print("no tasks")
        return 0
    statuses = [s.value for s in Status]
    width = max(5, *(len(q) for q in queues))
    print(f"{'QUEUE':<{width}}  " + "  ".join(f"{s:>10}" for s in statuses) + "  OLDEST PENDING")
    for queue, entry in sorted(queues.items()):
        counts = "  ".join(f"{entry['counts'].get(s, 0):>10}" for s in statuses)
        print(f"{queue:<{width}}  {counts}  {_age(entry['oldest_pending_seconds'])}")
    return 0


ACTIONS = {
    "list": _list,
    "show": _show,
    "cancel": _cancel,
    "retry": _retry,
    "attempts": _attempts,
    "stats": _stats,
}
