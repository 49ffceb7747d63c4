"""The code's definition of the schema. Migrations must produce exactly this.

``tests/integration/test_migrations.py`` compares it with the migrated database (Alembic's
``compare_metadata``), so a migration and this file cannot drift apart unnoticed.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from .domain.fields import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_PRIORITY,
    DEFAULT_QUEUE,
    DEFAULT_TIMEOUT,
    DEFAULT_TIMEZONE,
    DEFAULT_TYPE,
    DESCRIPTION_MAX,
    PRIORITY_MAX,
    PRIORITY_MIN,
    QUEUE_REGEX,
    SCHEDULE_NAME_REGEX,
    TIMEOUT_MAX,
    TITLE_MAX,
)
from .domain.queues import (
    BREAKER_FAILURES_MAX,
    CONCURRENCY_MAX,
    PAUSED_BY,
    RATE_LIMIT_MAX,
    RATE_PER_MAX,
    RATE_PER_MIN,
)
from .domain.states import STATUSES, Status, sql_list

# The values of the CHECK constraints and column defaults come from the domain's field
# table (migrations write them as literals: test_migrations compares the two).
_QUEUE_CHECK = f"queue ~ '{QUEUE_REGEX}'"
_TITLE_CHECK = f"char_length(btrim(title)) BETWEEN 1 AND {TITLE_MAX}"
_PRIORITY_CHECK = f"priority BETWEEN {PRIORITY_MIN} AND {PRIORITY_MAX}"
_TIMEOUT_CHECK = f"timeout BETWEEN 1 AND {TIMEOUT_MAX}"

metadata = MetaData()

tasks = Table(
    "tasks",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("title", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=text("''")),
    Column("status", Text, nullable=False, server_default=text(f"'{Status.PENDING}'")),
    Column("type", Text, nullable=False, server_default=text(f"'{DEFAULT_TYPE}'")),
    Column("payload", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("max_attempts", Integer, nullable=False, server_default=text(str(DEFAULT_MAX_ATTEMPTS))),
    Column("last_error", Text),
    Column("run_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("started_at", DateTime(timezone=True)),
    Column("completed_at", DateTime(timezone=True)),
    Column("request_id", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    # Added by revision 0002: who holds the task, until when, and the fencing token.
    Column("worker", Text),
    Column("lease_expires_at", DateTime(timezone=True)),
    Column("lease_token", Uuid),
    Column("lease_expiries", Integer, nullable=False, server_default=text("0")),
    # Added by revision 0004: queue control.
    Column("queue", Text, nullable=False, server_default=text(f"'{DEFAULT_QUEUE}'")),
    Column("priority", Integer, nullable=False, server_default=text(str(DEFAULT_PRIORITY))),
    Column("result", JSONB),
    Column("cancel_requested", Boolean, nullable=False, server_default=text("false")),
    Column("timeout", Integer, nullable=False, server_default=text(str(DEFAULT_TIMEOUT))),
    Column("schedule", Text),
    # Every attempt, oldest first, at most TASK_ATTEMPTS_KEPT (migration 0010 says why here)
    Column("attempt_log", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    # The attempt that ended the task (revision 0014; stores/attempts_sql.py)
    Column("last_attempt_outcome", Text),
    Column("last_attempt_error", Text),
    Column("last_attempt_traceback", Text),
    Column("last_attempt_cpu_seconds", Float),
    Column("last_attempt_max_rss_bytes", BigInteger),
    Column("last_attempt_exit_signal", Integer),
    CheckConstraint(
        f"status IN ({sql_list(STATUSES)})",
        name="tasks_status_check",
    ),
    CheckConstraint(_QUEUE_CHECK, name="tasks_queue_check"),
    CheckConstraint(_PRIORITY_CHECK, name="tasks_priority_check"),
    CheckConstraint(_TIMEOUT_CHECK, name="tasks_timeout_check"),
    CheckConstraint(_TITLE_CHECK, name="tasks_title_check"),
    CheckConstraint(
        f"char_length(description) <= {DESCRIPTION_MAX}", name="tasks_description_check"
    ),
    CheckConstraint("max_attempts >= 1", name="tasks_max_attempts_check"),
    # Revision 0007: every start of a run is an attempt, and there are never more.
    CheckConstraint("attempts >= 0 AND attempts <= max_attempts", name="tasks_attempts_check"),
    CheckConstraint("jsonb_typeof(payload) = 'object'", name="tasks_payload_check"),
)

# Newest first, whole list and filtered by status (GET /v1/tasks).
Index("tasks_created_idx", tasks.c.created_at.desc(), tasks.c.id.desc())
Index("tasks_status_created_idx", tasks.c.status, tasks.c.created_at.desc(), tasks.c.id.desc())
# ... and by type or queue (revision 0008).
Index("tasks_type_created_idx", tasks.c.type, tasks.c.created_at.desc(), tasks.c.id.desc())
Index("tasks_queue_created_idx", tasks.c.queue, tasks.c.created_at.desc(), tasks.c.id.desc())
# Finished tasks by when they finished: the dashboard's throughput (revision 0009).
Index(
    "tasks_finished_idx",
    tasks.c.completed_at,
    postgresql_where=text("completed_at IS NOT NULL"),
)
# The claim: due pending tasks in run_at order, a small partial index the queue walks.
Index(
    "tasks_claim_idx",
    tasks.c.run_at,
    tasks.c.id,
    postgresql_where=text("status = 'pending'"),
)
# The claim (revision 0007): highest priority first, FIFO by run_at then id within one;
# from any queue (WORKER_QUEUES=*) or one ordered scan per named queue.
Index(
    "tasks_priority_claim_idx",
    tasks.c.priority.desc(),
    tasks.c.run_at,
    tasks.c.id,
    postgresql_where=text("status = 'pending'"),
)
# One queue's claim (revision 0017: keyed on -priority, so that no other index can serve
# a single queue's ordered scan).
Index(
    "tasks_queue_claim_idx",
    tasks.c.queue,
    text("(-priority)"),
    tasks.c.run_at,
    tasks.c.id,
    postgresql_where=text("status = 'pending'"),
)
# Pending rows whose attempts are used up (max_attempts lowered by an edit): the claim
# skips them, the reaper fails them. Empty in normal operation.
Index(
    "tasks_exhausted_idx",
    tasks.c.id,
    postgresql_where=text("status = 'pending' AND attempts >= max_attempts"),
)
# The reaper: processing tasks by lease expiry.
Index(
    "tasks_lease_idx",
    tasks.c.lease_expires_at,
    postgresql_where=text("status = 'processing'"),
)

# Bearer tokens (revision 0003): only a SHA-256 of each token is kept.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("name", Text, nullable=False),
    Column("token_hash", LargeBinary, nullable=False),
    Column("scope", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("revoked_at", DateTime(timezone=True)),
    UniqueConstraint("name", name="api_tokens_name_key"),
    UniqueConstraint("token_hash", name="api_tokens_token_hash_key"),
    CheckConstraint("scope IN ('read', 'write')", name="api_tokens_scope_check"),
    CheckConstraint("char_length(name) BETWEEN 1 AND 100", name="api_tokens_name_check"),
    CheckConstraint("octet_length(token_hash) = 32", name="api_tokens_hash_check"),
)

# Idempotency-Key on POST /v1/tasks (revision 0006): one row per token and key, 24 hours.
# task_ids (revision 0011): a batch's ids in its order; NULL for a single create's key.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("token_id", BigInteger, nullable=False, server_default=text("0")),
    Column("key", Text, nullable=False),
    Column("request_hash", LargeBinary, nullable=False),
    Column("task_id", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("task_ids", ARRAY(BigInteger)),
    PrimaryKeyConstraint("token_id", "key", name="idempotency_keys_pkey"),
    CheckConstraint("octet_length(key) BETWEEN 1 AND 200", name="idempotency_keys_key_check"),
    CheckConstraint("octet_length(request_hash) = 32", name="idempotency_keys_hash_check"),
)
Index("idempotency_keys_created_idx", idempotency_keys.c.created_at)

# Periodic tasks (revision 0006): next_run_at moves forward as each due time fires.
schedules = Table(
    "schedules",
    metadata,
    Column("name", Text, primary_key=True),
    Column("cron", Text, nullable=False),
    Column("timezone", Text, nullable=False, server_default=text(f"'{DEFAULT_TIMEZONE}'")),
    Column("title", Text, nullable=False),
    Column("type", Text, nullable=False, server_default=text(f"'{DEFAULT_TYPE}'")),
    Column("payload", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("queue", Text, nullable=False, server_default=text(f"'{DEFAULT_QUEUE}'")),
    Column("priority", Integer, nullable=False, server_default=text(str(DEFAULT_PRIORITY))),
    Column("max_attempts", Integer, nullable=False, server_default=text(str(DEFAULT_MAX_ATTEMPTS))),
    Column("timeout", Integer, nullable=False, server_default=text(str(DEFAULT_TIMEOUT))),
    Column("next_run_at", DateTime(timezone=True), nullable=False),
    Column("last_run_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    # Revision 0012: a paused schedule does not fire.
    Column("paused", Boolean, nullable=False, server_default=text("false")),
    CheckConstraint(f"name ~ '{SCHEDULE_NAME_REGEX}'", name="schedules_name_check"),
    CheckConstraint(_TITLE_CHECK, name="schedules_title_check"),
    CheckConstraint(_QUEUE_CHECK, name="schedules_queue_check"),
    CheckConstraint(_PRIORITY_CHECK, name="schedules_priority_check"),
    CheckConstraint("max_attempts >= 1", name="schedules_max_attempts_check"),
    CheckConstraint(_TIMEOUT_CHECK, name="schedules_timeout_check"),
    CheckConstraint("jsonb_typeof(payload) = 'object'", name="schedules_payload_check"),
)
Index("schedules_next_run_idx", schedules.c.next_run_at)


# Live workers (revision 0007): one row per worker process, refreshed with its heartbeat;
# alive while expires_at (last heartbeat + WORKER_LEASE) is in the future.
workers = Table(
    "workers",
    metadata,
    Column("id", Text, primary_key=True),
    Column("host", Text, nullable=False),
    Column("pid", Integer, nullable=False),
    Column("version", Text, nullable=False),
    Column("queues", ARRAY(Text), nullable=False),
    Column("capacity", Integer, nullable=False),
    Column("busy", Integer, nullable=False, server_default=text("0")),
    Column("isolation", Text, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("capacity >= 1 AND busy >= 0", name="workers_capacity_check"),
)
Index("workers_expires_idx", workers.c.expires_at)


# A queue's settings (revision 0013 says why so): pause, concurrency and rate limits the
# claim enforces; the rate's window log (when, how many) of the claims within the window.
queue_settings = Table(
    "queue_settings",
    metadata,
    Column("name", Text, primary_key=True),
    Column("paused", Boolean, nullable=False, server_default=text("false")),
    Column("paused_by", Text),
    Column("concurrency", Integer),
    Column("rate_limit", Integer),
    Column("rate_per", Float),
    Column(
        "window_starts", ARRAY(DateTime(timezone=True)), nullable=False, server_default=text("'{}'")
    ),
    Column("window_counts", ARRAY(Integer), nullable=False, server_default=text("'{}'")),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
    # Revision 0016: the circuit breaker (NULL: off), its failure log, its trip and probe.
    Column("breaker_failures", Integer),
    Column("breaker_window", Float),
    Column("breaker_cooldown", Float),
    Column("failures", ARRAY(DateTime(timezone=True)), nullable=False, server_default=text("'{}'")),
    Column("tripped_at", DateTime(timezone=True)),
    Column("probe_task", BigInteger),
    CheckConstraint(f"name ~ '{QUEUE_REGEX}'", name="queue_settings_name_check"),
    CheckConstraint(
        f"paused_by IS NULL OR paused AND paused_by IN ({', '.join(map(repr, PAUSED_BY))})",
        name="queue_settings_paused_by_check",
    ),
    CheckConstraint(
        f"concurrency BETWEEN 1 AND {CONCURRENCY_MAX}", name="queue_settings_concurrency_check"
    ),
    CheckConstraint(
        f"(rate_limit IS NULL) = (rate_per IS NULL) AND rate_limit BETWEEN 1 AND {RATE_LIMIT_MAX} "
        f"AND rate_per >= {RATE_PER_MIN} AND rate_per <= {RATE_PER_MAX}",
        name="queue_settings_rate_check",
    ),
    CheckConstraint(
        "(breaker_failures IS NULL) = (breaker_window IS NULL) "
        "AND (breaker_failures IS NULL) = (breaker_cooldown IS NULL) "
        f"AND breaker_failures BETWEEN 1 AND {BREAKER_FAILURES_MAX} "
        f"AND breaker_window >= {RATE_PER_MIN} AND breaker_window <= {RATE_PER_MAX} "
        f"AND breaker_cooldown >= {RATE_PER_MIN} AND breaker_cooldown <= {RATE_PER_MAX}",
        name="queue_settings_breaker_check",
    ),
)
