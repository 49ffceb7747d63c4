"""scripts/seed-database.py: fill the database with realistic tasks made by Faker.

Rows stream in with COPY, one transaction per batch, so 100,000 tasks take seconds and an
interrupted run leaves whole batches behind, never half a batch. Every status comes with
the queue columns the worker would have written (a completed task has started_at,
completed_at and attempts >= 1; a failed one its last_error; a processing one a worker,
a lease and a fencing token), so the API, the worker's reaper and the healthcheck see the
rows they would see in production.

Processing rows are held by made-up workers that do not exist, so their leases are seeded
already expired (a few seconds to a minute ago): the first worker's reaper takes them
back at once (back to pending, or failed on their last attempt), as after a crash. A live
lease would keep them hidden from every worker until it ran out, and then look like a
mass crash.
"""

from __future__ import annotations

import random
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from ..config import Settings
from ..stores.ops_sql import SEED_COPY
from .scripting import (
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    GracefulStop,
    add_age_option,
    database,
    database_label,
    make_parser,
    positive_int,
    script_entry,
    settings_from_env,
)

PROG = "seed-database.py"

EXAMPLES = """\
  seed-database.py                          1,000 tasks created over the last 30 days
  seed-database.py --count 100000 --seed 1  the same 100,000 tasks every time
  seed-database.py --count 5000 --period 2h --quiet
  DATABASE_URL=postgresql://flowforge:secret@db:5432/flowforge seed-database.py
"""

# Shares of each status, and of each handler type (the two built-in handlers, so workers
# can run every seeded task).
STATUS_WEIGHTS = {"completed": 70, "failed": 8, "pending": 17, "processing": 5}
TYPE_WEIGHTS = {"noop": 75, "sleep": 25}
POOL = 2000  # distinct Faker phrases per kind (see TaskFactory)
WORKER_HOSTS = ("worker-1", "worker-2", "worker-3")
ERRORS = (
    "TimeoutError: {host} did not answer within 30s",
    "ConnectionRefusedError: [Errno 111] Connection refused ({host}:443)",
    "HTTPError: 503 Service Unavailable from https://{host}/api",
    "ValueError: payload.seconds must be a non-negative number",
    "KeyError: 'customer_id'",
)


def build_parser():  # type: ignore[no-untyped-def]
    parser = make_parser(
        PROG,
        "Fill the FlowForge database (DATABASE_URL) with realistic tasks made by Faker: "
        "titles, descriptions, a mix of statuses and types, created_at spread over a period. "
        "Tasks are added to those already there.\n"
        "About 5 % are 'processing' rows held by made-up workers; their leases are seeded "
        "already expired (up to a minute ago), so no live lease is held by a worker that "
        "does not exist: a running worker's reaper takes them back at once (to pending, or "
        "failed on their last attempt), as after a worker crash.",
        EXAMPLES,
        failure="the database is unreachable or refused the rows",
    )
    parser.add_argument(
        "-c", "--count", type=positive_int, default=1000, help="tasks to add (default 1000)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="random seed: the same seed gives the same tasks (times relative to now)",
    )
    add_age_option(
        parser,
        "--period",
        "30d",
        "created_at is spread over this much of the past, e.g. 2h, 30d",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=10_000,
        metavar="N",
        help="tasks per COPY transaction (default 10000)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print nothing unless something fails"
    )
    return parser


class TaskFactory:
    """Rows for SEED_COPY; reproducible from ``seed`` (Faker and ``random`` both seeded)."""

    def __init__(
        self, settings: Settings, *, seed: int | None, count: int, period: float, now: datetime
    ) -> None:
        try:
            from faker import Faker
        except ImportError:  # pragma: no cover - Faker comes with the scripts extra
            raise CommandError(
                "Faker is not installed: pip install 'flowforge[scripts]'", EXIT_USAGE
            ) from None
        fake = Faker()
        fake.seed_instance(seed)
        # Faker spends 10-150 us a call; pools made once and combined per row keep 100,000
        # tasks within seconds while every row still differs.
        self.actions = [fake.bs().capitalize() for _ in range(POOL)]
        self.companies = [fake.company() for _ in range(POOL // 4)]
        self.sentences = [fake.sentence(nb_words=10) for _ in range(POOL)]
        self.domains = [fake.domain_name() for _ in range(POOL // 10)]
        self.rng = random.Random(seed)
        self.count = count
        self.now = now
        self.start = now - timedelta(seconds=period)
        self.step = period / count
        self.max_attempts = settings.task_max_attempts
        self.statuses = self.rng.choices(
            list(STATUS_WEIGHTS), weights=list(STATUS_WEIGHTS.values()), k=count
        )
        self.types = self.rng.choices(
            list(TYPE_WEIGHTS), weights=list(TYPE_WEIGHTS.values()), k=count
        )

    def _uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    def _error(self) -> str:
        return self.rng.choice(ERRORS).format(host=self.rng.choice(self.domains))

    def _worker(self) -> str:
        return f"{self.rng.choice(WORKER_HOSTS)}:{self.rng.randint(300, 65000)}"

    def rows(self, first: int, last: int) -> Iterator[tuple[Any, ...]]:
        """Rows ``first`` to ``last - 1``: created_at grows with the index, as ids do."""
        rng, now = self.rng, self.now
        for i in range(first, last):
            status, kind = self.statuses[i], self.types[i]
            created = min(now, self.start + timedelta(seconds=(i + rng.random()) * self.step))
            payload: dict[str, Any] = {"seeded": True}
            if kind == "sleep":
                payload["seconds"] = round(rng.uniform(0.01, 2.0), 2)
            max_attempts = self.max_attempts if rng.random() < 0.9 else 5
            attempts, last_error = 0, None
            run_at, started, completed, worker = created, None, None, None
            lease_expires, token = None, None
            if status == "pending":
                # Scheduled or waiting out a retry's backoff: due within the next hour.
                run_at = now + timedelta(seconds=rng.uniform(60, 3600))
                if max_attempts > 1 and rng.random() < 0.2:  # failed once, retry waits
                    attempts, last_error = 1, self._error()
            elif status == "processing":
                attempts = rng.randint(1, max_attempts)
                started = max(created, now - timedelta(seconds=rng.uniform(0, 10)))
                worker, token = self._worker(), self._uuid()
                # Expired already: no live lease for a worker that does not exist.
                lease_expires = now - timedelta(seconds=rng.uniform(1, 60))
            else:
                started = created + timedelta(seconds=rng.uniform(0.01, 3.0))
                took = payload.get("seconds", 0) + rng.expovariate(20)
                completed = min(now, started + timedelta(seconds=took))
                started = min(started, completed)
                worker = self._worker()
                if status == "failed":
                    attempts, last_error = max_attempts, self._error()
                elif max_attempts > 1 and rng.random() < 0.1:  # succeeded at the 2nd try
                    attempts, last_error = 2, self._error()
                else:
                    attempts = 1
            yield (
                f"{rng.choice(self.actions)} for {rng.choice(self.companies)}",
                " ".join(rng.choices(self.sentences, k=rng.randint(1, 4)))
                if rng.random() < 0.8
                else "",
                status,
                kind,
                orjson.dumps(payload).decode(),
                attempts,
                max_attempts,
                last_error,
                run_at,
                started,
                completed,
                worker,
                self._uuid().hex,  # as the API makes request ids
                created,
                completed or started or created,
                lease_expires,
                token,
            )


class Progress:
    """A progress bar on stderr when it is a terminal (rich); nothing otherwise."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._bar: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import Progress as RichProgress

            # On stderr: stdout keeps the one summary line, for pipes and logs.
            self._bar = RichProgress(transient=True, console=Console(stderr=True))
            self._task = self._bar.add_task("seeding", total=total)
            self._bar.start()

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def seed(
    settings: Settings,
    *,
    count: int,
    seed: int | None,
    period: float,
    batch_size: int,
    progress: Progress,
) -> None:
    """Add ``count`` tasks, one COPY transaction per ``batch_size``."""
    factory = TaskFactory(settings, seed=seed, count=count, period=period, now=datetime.now(UTC))
    with database(settings) as conn, GracefulStop() as stop:
        for first in range(0, count, batch_size):
            last = min(count, first + batch_size)
            with conn.transaction(), conn.cursor() as cur, cur.copy(SEED_COPY) as copy:
                for row in factory.rows(first, last):
                    stop.check()  # Ctrl-C: this batch is rolled back, the others stay
                    copy.write_row(row)
            progress.advance(last - first)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from_env(require=("DATABASE_URL",))
    progress = Progress(args.count, enabled=not args.quiet and sys.stderr.isatty())
    started = time.perf_counter()
    try:
        seed(
            settings,
            count=args.count,
            seed=args.seed,
            period=args.period,
            batch_size=args.batch_size,
            progress=progress,
        )
    finally:
        progress.close()
    elapsed = time.perf_counter() - started
    if not args.quiet:
        print(
            f"seeded {args.count} tasks into {database_label(settings.database_url)} "
            f"in {elapsed:.2f}s ({args.count / elapsed:,.0f} tasks/s)"
        )
    return EXIT_OK


entry = script_entry(PROG, main)  # what scripts/seed-database.py runs
