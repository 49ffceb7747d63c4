"""Create idempotency_keys (Idempotency-Key on POST /v1/tasks) and schedules (periodic tasks).

Two new tables, so it can be applied while an older release still serves (which ignores
them).

- idempotency_keys: one row per (token, key) for 24 hours: the SHA-256 of the first
  request's body and the task it created. The primary key makes two concurrent requests
  with one key create one task (INSERT ... ON CONFLICT); expired rows are deleted lazily
  by the API (created_at index) and replaced when a key is used again.
- schedules: a cron expression in a time zone and the task to create. ``next_run_at`` is
  the next due time; firing a schedule moves it forward with a compare-and-set in the
  statement that inserts the task, so each due time creates exactly one task however
  many workers fire at once.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        # The token that sent the key (api_tokens.id); 0 without one (API_AUTH=off).
        sa.Column("token_id", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("request_hash", sa.LargeBinary, nullable=False),
        sa.Column("task_id", sa.BigInteger, nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.PrimaryKeyConstraint("token_id", "key", name="idempotency_keys_pkey"),
        sa.CheckConstraint(
            "octet_length(key) BETWEEN 1 AND 200", name="idempotency_keys_key_check"
        ),
        sa.CheckConstraint("octet_length(request_hash) = 32", name="idempotency_keys_hash_check"),
    )
    op.create_index("idempotency_keys_created_idx", "idempotency_keys", ["created_at"])
    op.create_table(
        "schedules",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("cron", sa.Text, nullable=False),
        sa.Column("timezone", sa.Text, nullable=False, server_default=sa.text("'UTC'")),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False, server_default=sa.text("'noop'")),
        sa.Column("payload", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("queue", sa.Text, nullable=False, server_default=sa.text("'default'")),
        sa.Column("priority", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("max_attempts", sa.Integer, nullable=False, server_default=sa.text("3")),
        sa.Column("timeout", sa.Integer, nullable=False, server_default=sa.text("900")),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True)),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.CheckConstraint(
            "name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$'", name="schedules_name_check"
        ),
        sa.CheckConstraint(
            "char_length(btrim(title)) BETWEEN 1 AND 200", name="schedules_title_check"
        ),
        sa.CheckConstraint("queue ~ '^[a-z0-9_-]{1,64}$'", name="schedules_queue_check"),
        sa.CheckConstraint("priority BETWEEN -100 AND 100", name="schedules_priority_check"),
        sa.CheckConstraint("max_attempts >= 1", name="schedules_max_attempts_check"),
        sa.CheckConstraint("timeout BETWEEN 1 AND 86400", name="schedules_timeout_check"),
        sa.CheckConstraint("jsonb_typeof(payload) = 'object'", name="schedules_payload_check"),
    )
    # Workers look for due schedules every second: an index scan of the few due rows.
    op.create_index("schedules_next_run_idx", "schedules", ["next_run_at"])


def downgrade() -> None:
    op.drop_table("schedules")
    op.drop_table("idempotency_keys")
