"""Files registered with a model: ``models.companions``.

A list of ``{"filename", "sha256", "store", "details"}``, one per file the
stage declares as travelling with its artefact (``Stage.model_companions``:
a SOM map's ``neurons.json``), kept where the artefact is kept (the
``artefacts`` table or the same object store) and verified by its sha256
when fetched. Null for the models registered before (they keep only their
artefact).

Revision ID: 0012
Revises: 0011 (result runs)
Create Date: 2026-12-03 16:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("companions", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("models", schema=None) as batch_op:
        batch_op.drop_column("companions")
