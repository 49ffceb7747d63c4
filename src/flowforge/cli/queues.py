"""``flowforge queues list|pause|resume|set``: queues for operators on a host.

Straight over the database (DATABASE_URL, the services' own environment), through the
same store as the API's ``/v1/queues`` (``stores.queues``): a pause here notifies the
workers as a PUT does, and the settings are checked by the same rules
(``domain.queues``). Human output by default, ``--json`` for scripts; errors are one
line on stderr and a non-zero exit (1: refused or failed, 2: usage or configuration).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from ..durations import format_duration, parse_duration
from .common import EXIT_CONFIG, CommandError, database_errors, settings

UNLIMITED = "none"  # --concurrency none, --rate none: the limit is lifted


HELP = "list queues, pause and resume them, set their limits (over the database)"
DESCRIPTION = (
    "Operate queues straight over DATABASE_URL: `flowforge queues list`, `flowforge queues "
    "pause mail`, `flowforge queues set mail --concurrency 5 --rate 10/1`. Limits hold "
    "across all workers."
)
EPILOG = None


def add_arguments(queues: argparse.ArgumentParser) -> None:
    qsub = queues.add_subparsers(dest="action", metavar="ACTION", required=True)
    lst = qsub.add_parser("list", help="every queue with tasks or settings")
    pause = qsub.add_parser("pause", help="stop claiming a queue (running tasks finish)")
    resume = qsub.add_parser("resume", help="claim a paused queue again")
    put = qsub.add_parser("set", help="set a queue's concurrency or rate limit")
    for action in (pause, resume, put):
        action.add_argument("name", metavar="NAME", help="the queue's name")
    put.add_argument(
        "--concurrency",
        type=_concurrency,
        default=argparse.SUPPRESS,
        metavar="N",
        help=f"at most N running at once across all workers ({UNLIMITED}: unlimited)",
    )
    put.add_argument(
        "--rate",
        type=_rate,
        default=argparse.SUPPRESS,
        metavar="N/S",
        help="at most N started per S seconds across all workers (S a number or a "
        f"duration: 10/1, 100/1m; {UNLIMITED}: unlimited)",
    )
    for parser in (lst, pause, resume, put):
        parser.add_argument("--json", action="store_true", help="machine-readable output")


def _concurrency(text: str) -> int | None:
    if text == UNLIMITED:
        return None
    if not text.isascii() or not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number or {UNLIMITED}, got {text!r}")
    return int(text)


def _rate(text: str) -> dict[str, Any] | None:
    if text == UNLIMITED:
        return None
    limit, _, per = text.partition("/")
    try:
        seconds = float(per) if per.replace(".", "", 1).isdigit() else parse_duration(per)
    except ValueError:
        seconds = -1.0
    if not (limit.isascii() and limit.isdigit()) or seconds <= 0:
        raise argparse.ArgumentTypeError(
            f"expected N/S (N starts per S seconds: 10/1, 100/1m) or {UNLIMITED}, got {text!r}"
        )
    return {"limit": int(limit), "per": int(seconds) if seconds.is_integer() else seconds}


def run(args: argparse.Namespace) -> int:
    from ..db import ConnectionSource, make_engine
    from ..domain.queues import checked_name, settings_body
    from ..domain.validation import ValidationError
    from ..stores.queues import QueueStore

    config = settings()
    changes: dict[str, Any] = {}
    try:
        if args.action != "list":
            args.name = checked_name(args.name)
            changes = {k: getattr(args, k) for k in ("concurrency", "rate") if hasattr(args, k)}
            if args.action != "set":
                changes["paused"] = args.action == "pause"
            elif not changes:
                raise CommandError("set needs --concurrency or --rate", EXIT_CONFIG)
            changes = settings_body(changes)
    except ValidationError as exc:
        problems = "; ".join(f"{k} {v}" for k, v in exc.details.items())
        raise CommandError(problems, EXIT_CONFIG) from None
    engine = make_engine(config, pool_size=1)
    store = QueueStore(ConnectionSource(engine))
    try:
        with database_errors("queue_settings"):
            if args.action == "list":
                return _list(args, store)
            store.put(args.name, changes)
            return _show(args, store)
    finally:
        engine.dispose()


def _json(value: Any) -> str:
    def default(obj: Any) -> Any:
        if isinstance(obj, datetime):
            return obj.astimezone(UTC).isoformat().replace("+00:00", "Z")
        raise TypeError(type(obj).__name__)

    return json.dumps(value, default=default, indent=2)


def _limits(queue: Any) -> tuple[str, str]:
    rate = queue.rate
    per = rate and format_duration(rate["per"])
    return (
        "-" if queue.concurrency is None else str(queue.concurrency),
        "-" if rate is None else f"{rate['limit']}/{per}",
    )


def _list(args: argparse.Namespace, store: Any) -> int:
    queues = store.list()
    if args.json:
        print(_json({"queues": [asdict(q) for q in queues]}))
        return 0
    if not queues:
        print("no queues (no tasks and no settings)")
        return 0
    width = max(5, *(len(q.name) for q in queues))
    print(f"{'QUEUE':<{width}}  {'STATE':<16} {'CONC':>6} {'RATE':>10} {'PENDING':>9} "
          f"{'RUNNING':>8} {'FAILED':>8}  OLDEST PENDING")  # fmt: skip
    for q in queues:
        state = f"paused ({q.paused_by})" if q.paused else "active"
        concurrency, rate = _limits(q)
        age = q.oldest_pending_age_seconds
        print(f"{q.name:<{width}}  {state:<16} {concurrency:>6} {rate:>10} "
              f"{q.counts['pending']:>9} {q.counts['processing']:>8} {q.counts['failed']:>8}  "
              f"{'-' if age is None else format_duration(age, 'decimal')}")  # fmt: skip
    return 0


def _show(args: argparse.Namespace, store: Any) -> int:
    queue = store.get(args.name)
    if args.json:
        print(_json(asdict(queue)))
        return 0
    concurrency, rate = _limits(queue)
    state = "paused: workers stop claiming it within a second" if queue.paused else "active"
    print(f"queue {queue.name}: {state}; concurrency {concurrency}, rate {rate}")
    return 0
