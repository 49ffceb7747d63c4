"""SQL every store shares: the channels that wake workers, the advisory lock keys (the
lock idle workers hold, the pruning leader's) and a transaction's statement timeout."""

from __future__ import annotations

from psycopg import sql

# Idle workers LISTEN here; creating (or re-queueing) a task notifies it in the same
# transaction. The payload is constant so PostgreSQL folds the notifications of one
# transaction into one.
NOTIFY_CHANNEL = "flowforge_tasks"

# Idle workers hold this advisory lock (shared, session level) while they wait for work,
# so task creation can skip the NOTIFY when no worker waits: NOTIFY takes a global lock at
# commit and serializes concurrent committers, a busy worker does not need the wake-up.
# The key is above the int4 range, so it never meets a hashtext() key (migrations use one).
IDLE_LOCK_KEY = 0x466C6F77466F7267  # "FlowForg"
IDLE_LOCK = f"SELECT pg_advisory_lock_shared({IDLE_LOCK_KEY})"
IDLE_UNLOCK = f"SELECT pg_advisory_unlock_shared({IDLE_LOCK_KEY})"
# True when some worker holds the idle lock: the exclusive try-lock fails against a shared
# holder; when it succeeds it is released at once. Two creators that meet here both notify.
WORKER_WAITING = (
    f"CASE WHEN pg_try_advisory_lock({IDLE_LOCK_KEY}) "
    f"THEN NOT pg_advisory_unlock({IDLE_LOCK_KEY}) ELSE true END"
)

# Whoever deletes finished tasks (a worker's retention duty, cleanup.py) holds this one
# (exclusive, for one statement: pg_try_advisory_xact_lock), so only one prunes at a time
# and the others skip their turn instead of fighting over the same rows. Above int4 too.
PRUNE_LOCK_KEY = 0x466C6F7750727565  # "FlowPrue"


def local_statement_timeout(ms: int) -> str:
    """``SET LOCAL statement_timeout`` for the rest of a transaction (SET takes no
    parameters: ``ms`` is an int, formatted here)."""
    return f"SET LOCAL statement_timeout = {int(ms)}"


def listen(channel: str) -> sql.Composed:
    """``LISTEN channel``, the channel quoted as an identifier."""
    return sql.SQL("LISTEN {}").format(sql.Identifier(channel))


# A re-queue (PUT back to pending) wakes a waiting worker; NOTIFY wakes them regardless
# (bulk loads, which commit once).
NOTIFY_IF_WAITING = f"SELECT pg_notify('{NOTIFY_CHANNEL}', '') WHERE {WORKER_WAITING}"
NOTIFY = f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')"

# Workers LISTEN here for cancellations of tasks they run: the payload is the task's id.
CANCEL_CHANNEL = "flowforge_cancel"

# Workers LISTEN here for changed queue settings (a pause, a limit): the payload is the
# queue's name.
QUEUES_CHANNEL = "flowforge_queues"
