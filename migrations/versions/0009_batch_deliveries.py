"""Deliveries of a batch, counted in the database; the reason a batch failed; one-cutout-at-a-time progress.

``run_batches`` gains:

- ``deliveries``: times a worker began the batch, counted before processing,
  so a delivery that killed its process (memory, a crash) still counts;
- ``last_worker`` and ``last_attempt_at``: who began it last, and when;
- ``failure``: why the batch failed, in words (status ``failed``);
- ``split``: progress of a batch delivered more often than the limit, then
  processed one cutout at a time to find the cutout(s) that kill a worker.

Revision ID: 0009
Revises: 0008 (labels)
Create Date: 2026-12-03 07:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run_batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deliveries", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("last_worker", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("failure", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("split", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("run_batches", schema=None) as batch_op:
        for name in ("split", "failure", "last_attempt_at", "last_worker", "deliveries"):
            batch_op.drop_column(name)
