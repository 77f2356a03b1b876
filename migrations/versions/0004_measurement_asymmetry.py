"""Rotational asymmetry of each measured source (measure stage version 2).

Adds ``measurements.asymmetry``; rows written by measure stage version 1
keep it NULL.

Revision ID: 0004
Revises: 0003 (HEALPix pixel, top-N indexes)
Create Date: 2026-11-29 19:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("measurements", schema=None) as batch_op:
        batch_op.add_column(sa.Column("asymmetry", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("measurements", schema=None) as batch_op:
        batch_op.drop_column("asymmetry")
