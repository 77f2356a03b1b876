"""Labels users give to sources and SOM neurons; fits that re-rank the anomalies by them.

- ``source_labels``: a class, interesting / not interesting and a note
  about one cutout, with its author, origin and time (rows are only added;
  the newest is the current label).
- ``neuron_labels``: a class and a note about one neuron (``node_x``,
  ``node_y``) of one SOM map (``model_ref``), likewise.
- ``label_rankings``: each fit of the anomaly ranking to the interesting /
  not interesting labels (method, blend, features, labels used); its
  scores are ``anomaly_scores`` rows.

Self-contained: creates three tables and drops them on downgrade.

Revision ID: 0008
Revises: 0007 (mosaic tiles)
Create Date: 2026-12-04 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "source_labels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("cutout_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=True),
        sa.Column("interesting", sa.Boolean(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("author", sa.String(length=128), nullable=False),
        sa.Column("origin", sa.String(length=512), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["cutout_id"], ["cutouts.id"], name=op.f("fk_source_labels_cutout_id_cutouts"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_source_labels")),
    )
    op.create_index(op.f("ix_source_labels_cutout_id"), "source_labels", ["cutout_id"], unique=False)
    op.create_table(
        "neuron_labels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_ref", sa.String(length=256), nullable=False),
        sa.Column("node_x", sa.Integer(), nullable=False),
        sa.Column("node_y", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("author", sa.String(length=128), nullable=False),
        sa.Column("origin", sa.String(length=512), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_neuron_labels")),
    )
    op.create_index("ix_neuron_labels_neuron", "neuron_labels", ["model_ref", "node_x", "node_y"], unique=False)
    op.create_table(
        "label_rankings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=64), nullable=False),
        sa.Column("model_ref", sa.String(length=256), nullable=False),
        sa.Column("unsupervised", sa.JSON(), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("blend", sa.JSON(), nullable=False),
        sa.Column("n_labels", sa.Integer(), nullable=False),
        sa.Column("n_interesting", sa.Integer(), nullable=False),
        sa.Column("last_label_id", sa.Integer(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("author", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_label_rankings")),
    )


def downgrade() -> None:
    op.drop_table("label_rankings")
    op.drop_index("ix_neuron_labels_neuron", table_name="neuron_labels")
    op.drop_table("neuron_labels")
    op.drop_index(op.f("ix_source_labels_cutout_id"), table_name="source_labels")
    op.drop_table("source_labels")
