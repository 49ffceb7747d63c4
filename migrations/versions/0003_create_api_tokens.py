"""Create api_tokens: bearer tokens, stored only as a hash, with a scope and a revocation time.

A new table, so it can be applied while an older API is still serving (which ignores it).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        # SHA-256 of the token: the token itself has >= 32 random bytes, so a plain hash
        # cannot be brute-forced and needs no salt or slow KDF (which would cost every
        # request a CPU-heavy check).
        sa.Column("token_hash", sa.LargeBinary, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
        sa.UniqueConstraint("name", name="api_tokens_name_key"),
        sa.UniqueConstraint("token_hash", name="api_tokens_token_hash_key"),
        sa.CheckConstraint("scope IN ('read', 'write')", name="api_tokens_scope_check"),
        sa.CheckConstraint("char_length(name) BETWEEN 1 AND 100", name="api_tokens_name_check"),
        sa.CheckConstraint("octet_length(token_hash) = 32", name="api_tokens_hash_check"),
    )


def downgrade() -> None:
    op.drop_table("api_tokens")
