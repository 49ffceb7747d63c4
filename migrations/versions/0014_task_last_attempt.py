"""The attempt that ended a task in columns of its row: ``tasks.last_attempt_outcome``,
``_error``, ``_traceback``, ``_cpu_seconds``, ``_max_rss_bytes``, ``_exit_signal``.

Revision 0010 appended every attempt's entry to ``attempt_log``. Building and appending
that jsonb entry cost the finishing UPDATE about 6 us of backend CPU and 330 bytes of WAL
per task, and most tasks end on their first attempt. The attempt that ends a task now
goes to these columns (a success writes two numbers), and ``attempt_log`` keeps the
attempts after which the task went on; a retry or a PUT moving the task on folds the
columns into the log first (flowforge/stores/attempts_sql.py). Entries a 0010 worker
wrote stay in the log and read as before.

Nullable columns with no default: a catalogue change, no rewrite. During a rolling
upgrade an API of the previous release shows a task's history without the attempt that
ended it until it is upgraded too; nothing is lost. The downgrade folds the columns into
the log before it drops them.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ("last_attempt_outcome", sa.Text),
    ("last_attempt_error", sa.Text),
    ("last_attempt_traceback", sa.Text),
    ("last_attempt_cpu_seconds", sa.Float),
    ("last_attempt_max_rss_bytes", sa.BigInteger),
    ("last_attempt_exit_signal", sa.Integer),
)


def upgrade() -> None:
    for name, kind in COLUMNS:
        op.add_column("tasks", sa.Column(name, kind))


def downgrade() -> None:
    # As revision 0010's code reads the history: every attempt in attempt_log.
    op.execute(
        """
        UPDATE tasks SET attempt_log = attempt_log || jsonb_build_object(
            'attempt', attempts, 'worker', worker, 'started_at', started_at,
            'finished_at', completed_at, 'outcome', last_attempt_outcome,
            'error', last_attempt_error, 'traceback', last_attempt_traceback,
            'cpu_seconds', last_attempt_cpu_seconds,
            'max_rss_bytes', last_attempt_max_rss_bytes,
            'exit_signal', last_attempt_exit_signal)
        WHERE last_attempt_outcome IS NOT NULL
        """
    )
    for name, _ in reversed(COLUMNS):
        op.drop_column("tasks", name)
