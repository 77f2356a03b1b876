"""Which runs wrote or confirmed each result: the provenance of reruns.

Adds ``result_runs`` (run, cutout, stage, stage version, model): a second
run of the same cutouts updates their result rows in place, and this
table keeps that the first run wrote them too, so ``query --run 1`` still
answers what run 1 did. Filled on upgrade from the ``run_id`` each result
and error row holds; dropped on downgrade.

Revision ID: 0011
Revises: 0010 (run owner)
Create Date: 2026-12-03 07:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

#: Tables whose rows carry the run that last wrote them.
_WRITTEN = ("measurements", "classifications", "som_placements", "anomaly_scores", "errors")


def upgrade() -> None:
    op.create_table(
        "result_runs",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("cutout_id", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(length=64), nullable=False),
        sa.Column("stage_version", sa.String(length=32), nullable=False),
        sa.Column("model_ref", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(["cutout_id"], ["cutouts.id"], name=op.f("fk_result_runs_cutout_id_cutouts"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_result_runs_run_id_runs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "cutout_id", "stage", "stage_version", "model_ref",
                                name=op.f("pk_result_runs")),
    )
    for table in _WRITTEN:
        op.execute(
            f"INSERT INTO result_runs (run_id, cutout_id, stage, stage_version, model_ref) "
            f"SELECT DISTINCT run_id, cutout_id, stage, stage_version, model_ref FROM {table} "
            f"WHERE run_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM result_runs r WHERE r.run_id = {table}.run_id "
            f"AND r.cutout_id = {table}.cutout_id AND r.stage = {table}.stage "
            f"AND r.stage_version = {table}.stage_version AND r.model_ref = {table}.model_ref)"
        )


def downgrade() -> None:
    op.drop_table("result_runs")
