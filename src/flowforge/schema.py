"""The code's definition of the schema. Migrations must produce exactly this.

``tests/test_migrations.py`` compares it with the migrated database (Alembic's
``compare_metadata``), so a migration and this file cannot drift apart unnoticed.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

tasks = Table(
    "tasks",
    metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("title", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=text("''")),
    Column("status", Text, nullable=False, server_default=text("'pending'")),
    Column("type", Text, nullable=False, server_default=text("'noop'")),
    Column("payload", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("max_attempts", Integer, nullable=False, server_default=text("3")),
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
    CheckConstraint(
        "status IN ('pending', 'processing', 'completed', 'failed')", name="tasks_status_check"
    ),
    CheckConstraint("char_length(btrim(title)) BETWEEN 1 AND 200", name="tasks_title_check"),
    CheckConstraint("char_length(description) <= 10000", name="tasks_description_check"),
    CheckConstraint("max_attempts >= 1", name="tasks_max_attempts_check"),
    CheckConstraint("jsonb_typeof(payload) = 'object'", name="tasks_payload_check"),
)

# Newest first, whole list and filtered by status (GET /v1/tasks).
Index("tasks_created_idx", tasks.c.created_at.desc(), tasks.c.id.desc())
Index("tasks_status_created_idx", tasks.c.status, tasks.c.created_at.desc(), tasks.c.id.desc())
# The claim: due pending tasks in run_at order, a small partial index the queue walks.
Index(
    "tasks_claim_idx",
    tasks.c.run_at,
    tasks.c.id,
    postgresql_where=text("status = 'pending'"),
)
# The reaper: processing tasks by lease expiry.
Index(
    "tasks_lease_idx",
    tasks.c.lease_expires_at,
    postgresql_where=text("status = 'processing'"),
)
