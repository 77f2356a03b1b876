"""Survey mosaics: the footprint index of mosaic tiles, and where a cutout was cut from.

Adds the table ``mosaic_tiles`` (one row per tile: its WCS footprint,
re-read only when the tile changes) and ``cutouts.origin`` (tile and pixel
position of a cutout cut from mosaics; NULL for cutouts read from files).

Revision ID: 0007
Revises: 0006 (positions and catalogue columns)
Create Date: 2026-12-02 15:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mosaic_tiles",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=1024), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.String(length=128), nullable=False),
        sa.Column("hdu", sa.Integer(), nullable=False),
        sa.Column("naxis1", sa.Integer(), nullable=False),
        sa.Column("naxis2", sa.Integer(), nullable=False),
        sa.Column("wcs_header", sa.Text(), nullable=False),
        sa.Column("ra_deg", sa.Float(), nullable=False),
        sa.Column("dec_deg", sa.Float(), nullable=False),
        sa.Column("radius_deg", sa.Float(), nullable=False),
        sa.Column("pixel_scale_arcsec", sa.Float(), nullable=False),
        sa.Column("beam_major_arcsec", sa.Float(), nullable=True),
        sa.Column("beam_minor_arcsec", sa.Float(), nullable=True),
        sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mosaic_tiles")),
        sa.UniqueConstraint("url", name=op.f("uq_mosaic_tiles_url")),
    )
    with op.batch_alter_table("cutouts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("origin", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("cutouts", schema=None) as batch_op:
        batch_op.drop_column("origin")
    op.drop_table("mosaic_tiles")
