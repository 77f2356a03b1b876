"""Catalogue and WCS positions side by side; units and descriptions of carried catalogue columns.

Adds ``cutouts.catalogue_ra_deg``/``catalogue_dec_deg`` (the position an
input catalogue gave) and ``cutouts.wcs_ra_deg``/``wcs_dec_deg`` (the WCS
centre of the cutout), and the table ``catalogue_columns`` (unit, UCD and
description of each column carried through from input catalogues).
``cutouts.ra_deg``/``dec_deg`` stay the position cone searches use: the
catalogue's when there is one, else the WCS centre. Rows written before
this revision keep the new columns NULL until their cutouts are classified
again.

Revision ID: 0006
Revises: 0005 (model identity and artefacts)
Create Date: 2026-12-02 16:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_POSITIONS = ("catalogue_ra_deg", "catalogue_dec_deg", "wcs_ra_deg", "wcs_dec_deg")


def upgrade() -> None:
    with op.batch_alter_table("cutouts", schema=None) as batch_op:
        for name in _POSITIONS:
            batch_op.add_column(sa.Column(name, sa.Float(), nullable=True))
    op.create_table(
        "catalogue_columns",
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("unit", sa.String(length=128), nullable=True),
        sa.Column("ucd", sa.String(length=256), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_catalogue_columns")),
    )


def downgrade() -> None:
    op.drop_table("catalogue_columns")
    with op.batch_alter_table("cutouts", schema=None) as batch_op:
        for name in reversed(_POSITIONS):
            batch_op.drop_column(name)
