"""scripts/cleanup.py: delete finished tasks older than an age, or reset the table.

Deletes in batches, each its own short transaction, so no lock is held for long and
workers keep claiming meanwhile: finished tasks of an age by the statement the workers'
retention (TASK_RETENTION) prunes with, oldest first and never while a worker prunes;
the rest (--all, other statuses) walking the primary key. Only completed, failed and
cancelled tasks go unless --status names others: pending and processing tasks are work
not yet done.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

import psycopg

from ..domain.states import STATUSES, UNFINISHED, spoken
from ..stores.ops_sql import (
    AGE_CUTOFF,
    CLEANUP_COUNT,
    CLEANUP_DELETE_BATCH,
    PRUNABLE,
    PRUNE_BATCH,
    PRUNE_FINISHED,
    pruned,
)
from .scripting import (
    EXIT_FAILURE,
    EXIT_OK,
    GracefulStop,
    age,
    database,
    database_label,
    format_age,
    make_parser,
    positive_int,
    script_entry,
    settings_from_env,
)

PROG = "cleanup.py"
FINISHED = PRUNABLE  # the default selection: completed, failed, cancelled
ALL_STATUSES = STATUSES
PRUNE_RETRY = 0.05  # seconds: a worker's pruning statement holds the lock about this long

EXAMPLES = """\
  cleanup.py --older-than 7d --dry-run       what would go: counts by status
  cleanup.py --older-than 30d --yes          finished tasks (completed, failed, cancelled)
                                             older than 30 days
  cleanup.py --older-than 2d --status failed only dead letters
  cleanup.py --all --yes                     every task, whatever its status (a reset)
  0 3 * * * cleanup.py --older-than 7d --quiet   (cron: no terminal, so no question)
"""


def build_parser():  # type: ignore[no-untyped-def]
    parser = make_parser(
        PROG,
        "Delete FlowForge tasks from DATABASE_URL in batches: "
        f"{spoken(FINISHED, 'and')} tasks older than an age, or everything with --all. "
        f"{spoken(UNFINISHED, 'and').capitalize()} tasks are never touched unless --status "
        "or --all says so.\nOn a terminal it asks before deleting (--yes skips the question); "
        "from cron it does not ask.",
        EXAMPLES,
        failure="the database is unreachable or failed, or the prompt was not confirmed",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--older-than",
        type=age,
        metavar="AGE",
        help="tasks that last changed (finished, for finished ones) longer ago than "
        "AGE: 90m, 12h, 7d, 2w",
    )
    which.add_argument(
        "--all",
        action="store_true",
        help=f"any age; with no --status, every status too ({spoken(UNFINISHED, 'and')} included)",
    )
    parser.add_argument(
        "--status",
        action="append",
        choices=ALL_STATUSES,
        help=f"a status to delete, repeatable (default: {spoken(FINISHED, 'and')}; "
        "with --all: all)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=PRUNE_BATCH,
        metavar="N",
        help=f"rows per DELETE transaction (default {PRUNE_BATCH})",
    )
    parser.add_argument("-n", "--dry-run", action="store_true", help="count, delete nothing")
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print nothing unless something fails"
    )
    return parser


def _describe(counts: Counter[str]) -> str:
    total = sum(counts.values())
    parts = ", ".join(f"{status} {counts[status]}" for status in ALL_STATUSES if counts[status])
    return f"{total} task{'' if total == 1 else 's'}" + (f" ({parts})" if parts else "")


def count(conn: psycopg.Connection, statuses: list[str], cutoff: datetime | None) -> Counter:
    rows = conn.execute(CLEANUP_COUNT, {"statuses": statuses, "cutoff": cutoff}).fetchall()
    return Counter({status: n for status, n in rows})


def delete_in_batches(
    conn: psycopg.Connection, statuses: list[str], cutoff: datetime | None, batch_size: int
) -> tuple[Counter, int]:
    """Delete every match, ``batch_size`` rows per transaction; (counts, batches).

    Finished tasks of an age go as the workers' retention prunes them (the same statement,
    under the same lock); anything else by a walk of the primary key. Ctrl-C stops between
    two batches: the ones done stay deleted.
    """
    if cutoff is not None and set(statuses) <= set(FINISHED):
        return prune_in_batches(conn, statuses, cutoff, batch_size)
    deleted: Counter[str] = Counter()
    after, batches = 0, 0
    with GracefulStop() as stop:
        while True:
            stop.check()
            rows = conn.execute(
                CLEANUP_DELETE_BATCH,
                {"statuses": statuses, "cutoff": cutoff, "after": after, "limit": batch_size},
            ).fetchall()
            if not rows:
                return deleted, batches
            batches += 1
            for status, n, last_id in rows:
                deleted[status] += n
                after = max(after, last_id)


def prune_in_batches(
    conn: psycopg.Connection, statuses: list[str], cutoff: datetime, batch_size: int
) -> tuple[Counter, int]:
    """``ops_sql.PRUNE_FINISHED`` until nothing is left; a batch that finds a worker
    pruning (the lock taken, for one statement) is tried again shortly."""
    deleted: Counter[str] = Counter()
    batches = 0
    params = {"statuses": statuses, "cutoff": cutoff, "limit": batch_size}
    with GracefulStop() as stop:
        while True:
            stop.check()
            led, counts = pruned(conn.execute(PRUNE_FINISHED, params).fetchall())
            if not led:
                time.sleep(PRUNE_RETRY)
                continue
            if not counts:
                return deleted, batches
            batches += 1
            deleted.update(counts)


def confirm(question: str) -> bool:
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    try:
        answer = sys.stdin.readline()
    except KeyboardInterrupt:
        return False
    return answer.strip().lower() in ("y", "yes")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    statuses = sorted(set(args.status or (ALL_STATUSES if args.all else FINISHED)))
    settings = settings_from_env(require=("DATABASE_URL",))
    where = database_label(settings.database_url)
    scope = "of any age" if args.all else f"older than {format_age(args.older_than)}"
    interactive = sys.stdin.isatty() and sys.stderr.isatty()
    say = (lambda text: None) if args.quiet else print

    with database(settings) as conn:
        cutoff = None
        if not args.all:
            cutoff = conn.execute(AGE_CUTOFF, {"seconds": args.older_than}).fetchone()[0]  # type: ignore[index]
        if args.dry_run or (interactive and not args.yes):
            matching = count(conn, statuses, cutoff)
            if args.dry_run:
                say(f"would delete {_describe(matching)} {scope} from {where} (dry run)")
                return EXIT_OK
            if not matching:
                say(f"nothing to delete: no {'/'.join(statuses)} task {scope} in {where}")
                return EXIT_OK
            if not confirm(f"Delete {_describe(matching)} {scope} from {where}?"):
                print(f"{PROG}: not confirmed, nothing deleted", file=sys.stderr)
                return EXIT_FAILURE
        started = time.perf_counter()
        deleted, batches = delete_in_batches(conn, statuses, cutoff, args.batch_size)
    say(
        f"deleted {_describe(deleted)} {scope} from {where} in {batches} "
        f"batch{'' if batches == 1 else 'es'} ({time.perf_counter() - started:.2f}s)"
    )
    return EXIT_OK


entry = script_entry(PROG, main)  # what scripts/cleanup.py runs
