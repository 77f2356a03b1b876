"""HEALPix pixel of each cutout for cone searches; indexes for top-N anomalies and SOM nodes.

Adds ``cutouts.healpix`` (nested scheme, order 14) and fills it for the
cutouts already stored, with the index ``(healpix, ra_deg, dec_deg, id)``
that answers the candidates of a cone search by itself; adds ``(stage, stage_version, model_ref,
updated_at)`` on every result table (the newest variant of a stage by index
seeks), ``(stage, stage_version, model_ref, score)``
on ``anomaly_scores`` and ``(stage, stage_version, model_ref, node_x,
node_y)`` on ``som_placements``.

Revision ID: 0003
Revises: 0002 (run batches, written in parallel)
Create Date: 2026-11-29 14:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_FILL_CHUNK = 50_000


def _fill_healpix() -> None:
    from survey_classifier.db._healpix import healpix_of

    connection = op.get_bind()
    cutouts = sa.table(
        "cutouts", sa.column("id", sa.Integer), sa.column("ra_deg", sa.Float),
        sa.column("dec_deg", sa.Float), sa.column("healpix", sa.BigInteger),
    )
    last_id = 0
    while True:
        rows = connection.execute(
            sa.select(cutouts.c.id, cutouts.c.ra_deg, cutouts.c.dec_deg)
            .where(cutouts.c.id > last_id, cutouts.c.ra_deg.is_not(None), cutouts.c.dec_deg.is_not(None))
            .order_by(cutouts.c.id)
            .limit(_FILL_CHUNK)
        ).all()
        if not rows:
            return
        pixels = healpix_of([r.ra_deg for r in rows], [r.dec_deg for r in rows])
        updates = [{"row_id": r.id, "pixel": int(p)} for r, p in zip(rows, pixels) if p >= 0]
        if updates:
            connection.execute(
                cutouts.update().where(cutouts.c.id == sa.bindparam("row_id")).values(healpix=sa.bindparam("pixel")),
                updates,
            )
        last_id = rows[-1].id


_RESULT_TABLES = ('measurements', 'classifications', 'som_placements', 'anomaly_scores')
_VARIANT = ['stage', 'stage_version', 'model_ref']


def upgrade() -> None:
    with op.batch_alter_table('cutouts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('healpix', sa.BigInteger(), nullable=True))
        batch_op.create_index(
            'ix_cutouts_healpix_position', ['healpix', 'ra_deg', 'dec_deg', 'id'], unique=False
        )
    _fill_healpix()
    for table in _RESULT_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(f'ix_{table}_variant_updated', [*_VARIANT, 'updated_at'], unique=False)
    with op.batch_alter_table('anomaly_scores', schema=None) as batch_op:
        batch_op.create_index(
            'ix_anomaly_scores_variant_score', ['stage', 'stage_version', 'model_ref', 'score'], unique=False
        )
    with op.batch_alter_table('som_placements', schema=None) as batch_op:
        batch_op.create_index(
            'ix_som_placements_variant_node', ['stage', 'stage_version', 'model_ref', 'node_x', 'node_y'], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table('som_placements', schema=None) as batch_op:
        batch_op.drop_index('ix_som_placements_variant_node')
    with op.batch_alter_table('anomaly_scores', schema=None) as batch_op:
        batch_op.drop_index('ix_anomaly_scores_variant_score')
    for table in _RESULT_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(f'ix_{table}_variant_updated')
    with op.batch_alter_table('cutouts', schema=None) as batch_op:
        batch_op.drop_index('ix_cutouts_healpix_position')
        batch_op.drop_column('healpix')
