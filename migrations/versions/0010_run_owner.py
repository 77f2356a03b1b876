"""Who drives a run and whether it is still alive: ``runs.owner`` and ``runs.heartbeat_at``.

- ``owner``: ``PID@HOST`` of the process that registered the run and, for
  an in-process run, processes it (for a Celery run, queues it).
- ``heartbeat_at``: when that process last said it was alive; cleared
  once a Celery run is fully queued (the workers own it from then on).

A run still ``running`` whose owner is dead (same host, no such process)
or silent for several heartbeats is shown as interrupted by ``status``.

Revision ID: 0010
Revises: 0009 (batch deliveries)
Create Date: 2026-12-03 06:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("owner")
