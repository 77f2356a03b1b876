"""Run batches: the unit of work queued to workers, retried and tracked.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("batch_index", sa.Integer(), nullable=False),
        sa.Column("cutout_ids", sa.JSON(), nullable=False),
        sa.Column("n_cutouts", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("n_failed", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=256), nullable=True),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_batches_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_batches")),
        sa.UniqueConstraint("run_id", "batch_index", name=op.f("uq_run_batches_run_id")),
    )
    with op.batch_alter_table("run_batches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_run_batches_run_id"), ["run_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_run_batches_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("run_batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_run_batches_status"))
        batch_op.drop_index(batch_op.f("ix_run_batches_run_id"))
    op.drop_table("run_batches")
