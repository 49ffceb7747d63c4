"""Per-table autovacuum settings for tasks: vacuum after a small, fixed number of dead rows.

Every task is updated at least twice (claimed, finished) and cleanup deletes old ones, so
the table makes dead rows at the rate work flows through it. PostgreSQL's defaults vacuum
a table once 20 % of it is dead (200,000 rows of a 1,000,000-row table), and meanwhile the
claim's partial index and every list index scan past them. bench/bench_soak.py measures
both (see bench/results/soak.md):

- vacuum_scale_factor 0.01 + vacuum_threshold 1000: vacuum after 1 % (+1000) dead rows,
  whatever the table's size, instead of 20 %.
- vacuum_insert_scale_factor 0.05: insert-only stretches (a burst of creation) also get
  vacuumed, which keeps the visibility map fresh for the index-only scans of counts.
- analyze_scale_factor 0.02: the planner's row estimates (which `meta.total` above 10,000
  rows comes from) follow the table closely.
- vacuum_cost_limit 1000: each run does its work in fewer, longer steps (5x the default
  budget of 200 per 2 ms sleep); the runs are small and frequent, so this stays cheap.

Settings only (no rewrite, a brief lock): safe to apply under a running release.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SETTINGS = {
    "autovacuum_vacuum_scale_factor": "0.01",
    "autovacuum_vacuum_threshold": "1000",
    "autovacuum_vacuum_insert_scale_factor": "0.05",
    "autovacuum_analyze_scale_factor": "0.02",
    "autovacuum_vacuum_cost_limit": "1000",
}


def upgrade() -> None:
    options = ", ".join(f"{k} = {v}" for k, v in SETTINGS.items())
    op.execute(f"ALTER TABLE tasks SET ({options})")


def downgrade() -> None:
    op.execute(f"ALTER TABLE tasks RESET ({', '.join(SETTINGS)})")
