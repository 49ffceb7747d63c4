"""The worker's variables and the task defaults it applies (WORKER_*, TASK_*): the part of
``VARIABLES`` (variables.py) that ``flowforge worker`` reads, in the reference's order."""

from __future__ import annotations

from ..domain.fields import DEFAULT_MAX_ATTEMPTS, DEFAULT_TIMEOUT
from ..durations import format_duration
from .values import (
    _duration_or_zero,
    _isolation,
    _non_negative_int,
    _nonblank,
    _port_or_zero,
    _positive_duration,
    _positive_int,
    _queues,
    _size,
    _task_timeout,
)
from .variable import Variable

WORKER_VARIABLES: tuple[Variable, ...] = (
    Variable(
        "WORKER_POLL_INTERVAL",
        "worker_poll_interval",
        _positive_duration,
        "5s",
        "idle workers poll this often in case a notification was missed",
    ),
    Variable(
        "WORKER_CONCURRENCY",
        "worker_concurrency",
        _positive_int,
        "8",
        "tasks one worker process runs at a time",
        notes="With process isolation, that many handler processes",
    ),
    Variable(
        "WORKER_BATCH_SIZE",
        "worker_batch_size",
        _positive_int,
        "50",
        "most tasks one claim takes at once",
    ),
    Variable(
        "WORKER_LEASE",
        "worker_lease",
        _positive_duration,
        "30s",
        "how long a claim holds without a heartbeat before the task is given back",
    ),
    Variable(
        "WORKER_SHUTDOWN_TIMEOUT",
        "worker_shutdown_timeout",
        _positive_duration,
        "30s",
        "on SIGTERM, how long running tasks get to finish before they are given back",
        notes="Keep it below TimeoutStopSec= of the worker units (45s)",
    ),
    Variable(
        "WORKER_MAX_LEASE_EXPIRIES",
        "worker_max_lease_expiries",
        _positive_int,
        "5",
        "a task whose lease expired this often is failed (crash loop / poison task)",
    ),
    Variable(
        "WORKER_QUEUES",
        "worker_queues",
        _queues,
        "*",
        "the queues a worker claims from: * (every queue) or a comma list",
        notes='A list reads emails,reports; a task names its queue in "queue" (default: default)',
    ),
    Variable(
        "WORKER_ISOLATION",
        "worker_isolation",
        _isolation,
        "process",
        "process: handlers run in child processes (a crash, hang or leak costs only its "
        "own task); thread: in the worker's threads (trusted, short handlers only)",
        notes=(
            "With process, a timeout terminates the handler's process; with thread, a crash"
            " takes the worker down and a timeout only sets task.cancelled"
        ),
    ),
    Variable(
        "WORKER_MAX_TASKS_PER_CHILD",
        "worker_max_tasks_per_child",
        _non_negative_int,
        "0",
        "a handler process is replaced after this many tasks (0: never)",
    ),
    Variable(
        "WORKER_MAX_CHILD_MEMORY",
        "worker_max_child_memory",
        _size,
        "0",
        "a handler process whose peak memory (RSS) passed this is replaced after its task, "
        "e.g. 512MB (0: no limit)",
    ),
    Variable(
        "WORKER_CANCEL_GRACE",
        "worker_cancel_grace",
        _positive_duration,
        "5s",
        "how long a handler has to stop after task.cancelled is set before its process is "
        "terminated",
        notes="A cancel is POST /v1/tasks/{id}/cancel or `flowforge tasks cancel ID`",
    ),
    Variable(
        "WORKER_KILL_GRACE",
        "worker_kill_grace",
        _positive_duration,
        "5s",
        "a handler process that outlives its timeout or cancel grace gets SIGTERM, and "
        "SIGKILL this long after",
    ),
    Variable(
        "TASK_MAX_ATTEMPTS",
        "task_max_attempts",
        _positive_int,
        str(DEFAULT_MAX_ATTEMPTS),
        "attempts a task gets unless it says otherwise",
    ),
    Variable(
        "TASK_TIMEOUT",
        "task_timeout",
        _task_timeout,
        format_duration(DEFAULT_TIMEOUT),  # 15m
        "how long one attempt of a task may run unless it says otherwise (1s to 24h)",
        notes="Whole seconds (the tasks.timeout column)",
    ),
    Variable(
        "TASK_ATTEMPTS_KEPT",
        "task_attempts_kept",
        _positive_int,
        "25",
        "attempts kept per task in its history (GET /v1/tasks/{id}/attempts; oldest dropped)",
        notes="Each is a few hundred bytes in the task's row, a traceback up to 16 KiB more",
    ),
    Variable(
        "TASK_RETENTION",
        "task_retention",
        _duration_or_zero,
        "30d",
        "how long finished tasks (completed, failed, cancelled) are kept after they finish: "
        "workers delete older ones; 0 keeps them forever",
        notes=(
            "One worker at a time prunes (an advisory lock), 1,000 rows per statement, a "
            "few statements a minute and more while a backlog lasts; "
            "flowforge_tasks_pruned_total counts them. cleanup.py stays for ad-hoc deletes"
        ),
    ),
    Variable(
        "TASK_RETRY_BACKOFF",
        "task_retry_backoff",
        _positive_duration,
        "1s",
        "base of the exponential retry backoff (doubles each attempt, with jitter)",
    ),
    Variable(
        "TASK_RETRY_BACKOFF_MAX",
        "task_retry_backoff_max",
        _positive_duration,
        "10m",
        "longest wait between two attempts",
    ),
    Variable(
        "WORKER_METRICS_PORT",
        "worker_metrics_port",
        _port_or_zero,
        "9464",
        "TCP port of a worker's own /metrics; instance N of flowforge-worker@N adds N-1; "
        "0 turns worker metrics off",
        notes=(
            "flowforge-worker.service is instance 1. A port already in use is logged and "
            "the worker runs on without metrics"
        ),
    ),
    Variable(
        "WORKER_METRICS_HOST",
        "worker_metrics_host",
        _nonblank,
        "0.0.0.0",
        "address a worker's /metrics listens on (METRICS_ALLOW decides who may read it)",
    ),
    Variable(
        "WORKER_INSTANCE",
        "worker_instance",
        _positive_int,
        "1",
        "which worker process of this host this is (flowforge-worker@N sets N); "
        "offsets WORKER_METRICS_PORT",
        notes=(
            "The template unit sets it itself (Environment=WORKER_INSTANCE=%i): leave it "
            "out of the env file"
        ),
    ),
)
