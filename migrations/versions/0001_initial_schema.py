"""Initial schema: cutouts, runs, models, per-kind results and errors.

Revision ID: 0001
Revises:
Create Date: 2026-11-29 13:42:39.073539
"""

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('cutouts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('path', sa.String(length=1024), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('hdu', sa.Integer(), nullable=True),
    sa.Column('ra_deg', sa.Float(), nullable=True),
    sa.Column('dec_deg', sa.Float(), nullable=True),
    sa.Column('pixel_scale_arcsec', sa.Float(), nullable=True),
    sa.Column('beam_major_arcsec', sa.Float(), nullable=True),
    sa.Column('beam_minor_arcsec', sa.Float(), nullable=True),
    sa.Column('shape_y', sa.Integer(), nullable=True),
    sa.Column('shape_x', sa.Integer(), nullable=True),
    sa.Column('catalogue_id', sa.String(length=256), nullable=True),
    sa.Column('catalogue', sa.JSON(), nullable=True),
    sa.Column('warnings', sa.JSON(), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cutouts')),
    sa.UniqueConstraint('path', name=op.f('uq_cutouts_path'))
    )
    with op.batch_alter_table('cutouts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cutouts_catalogue_id'), ['catalogue_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_cutouts_dec_deg'), ['dec_deg'], unique=False)
        batch_op.create_index('ix_cutouts_ra_dec', ['ra_deg', 'dec_deg'], unique=False)

    op.create_table('models',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('stage', sa.String(length=64), nullable=False),
    sa.Column('artefact_path', sa.String(length=1024), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=True),
    sa.Column('details', sa.JSON(), nullable=True),
    sa.Column('is_default', sa.Boolean(), nullable=False),
    sa.Column('retired', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_models')),
    sa.UniqueConstraint('name', 'version', name=op.f('uq_models_name'))
    )
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_models_stage'), ['stage'], unique=False)

    op.create_table('runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('executor', sa.String(length=32), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('stages', sa.JSON(), nullable=False),
    sa.Column('n_cutouts', sa.Integer(), nullable=False),
    sa.Column('n_processed', sa.Integer(), nullable=False),
    sa.Column('n_failed', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_runs'))
    )
    op.create_table('anomaly_scores',
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('components', sa.JSON(), nullable=False),
    sa.Column('partial', sa.Boolean(), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=True),
    sa.Column('percentile', sa.Float(), nullable=True),
    sa.Column('extra', sa.JSON(), nullable=True),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('stage', sa.String(length=64), nullable=False),
    sa.Column('stage_version', sa.String(length=32), nullable=False),
    sa.Column('model_ref', sa.String(length=256), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('cutout_id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['cutout_id'], ['cutouts.id'], name=op.f('fk_anomaly_scores_cutout_id_cutouts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_anomaly_scores_run_id_runs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_anomaly_scores')),
    sa.UniqueConstraint('cutout_id', 'stage', 'stage_version', 'model_ref', name=op.f('uq_anomaly_scores_cutout_id'))
    )
    with op.batch_alter_table('anomaly_scores', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_anomaly_scores_run_id'), ['run_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_anomaly_scores_score'), ['score'], unique=False)

    op.create_table('classifications',
    sa.Column('label', sa.String(length=128), nullable=False),
    sa.Column('probability', sa.Float(), nullable=True),
    sa.Column('probabilities', sa.JSON(), nullable=False),
    sa.Column('embedding', sa.LargeBinary(), nullable=True),
    sa.Column('embedding_dtype', sa.String(length=16), nullable=True),
    sa.Column('extra', sa.JSON(), nullable=True),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('stage', sa.String(length=64), nullable=False),
    sa.Column('stage_version', sa.String(length=32), nullable=False),
    sa.Column('model_ref', sa.String(length=256), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('cutout_id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['cutout_id'], ['cutouts.id'], name=op.f('fk_classifications_cutout_id_cutouts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_classifications_run_id_runs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_classifications')),
    sa.UniqueConstraint('cutout_id', 'stage', 'stage_version', 'model_ref', name=op.f('uq_classifications_cutout_id'))
    )
    with op.batch_alter_table('classifications', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_classifications_label'), ['label'], unique=False)
        batch_op.create_index(batch_op.f('ix_classifications_run_id'), ['run_id'], unique=False)

    op.create_table('errors',
    sa.Column('hdu', sa.Integer(), nullable=True),
    sa.Column('error_type', sa.String(length=128), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('stage', sa.String(length=64), nullable=False),
    sa.Column('stage_version', sa.String(length=32), nullable=False),
    sa.Column('model_ref', sa.String(length=256), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('cutout_id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['cutout_id'], ['cutouts.id'], name=op.f('fk_errors_cutout_id_cutouts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_errors_run_id_runs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_errors')),
    sa.UniqueConstraint('cutout_id', 'stage', 'stage_version', 'model_ref', name=op.f('uq_errors_cutout_id'))
    )
    with op.batch_alter_table('errors', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_errors_run_id'), ['run_id'], unique=False)

    op.create_table('measurements',
    sa.Column('peak_flux_jy', sa.Float(), nullable=True),
    sa.Column('integrated_flux_jy', sa.Float(), nullable=True),
    sa.Column('n_islands', sa.Integer(), nullable=True),
    sa.Column('las_arcsec', sa.Float(), nullable=True),
    sa.Column('centroid_offset_arcsec', sa.Float(), nullable=True),
    sa.Column('extra', sa.JSON(), nullable=True),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('stage', sa.String(length=64), nullable=False),
    sa.Column('stage_version', sa.String(length=32), nullable=False),
    sa.Column('model_ref', sa.String(length=256), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('cutout_id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['cutout_id'], ['cutouts.id'], name=op.f('fk_measurements_cutout_id_cutouts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_measurements_run_id_runs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_measurements')),
    sa.UniqueConstraint('cutout_id', 'stage', 'stage_version', 'model_ref', name=op.f('uq_measurements_cutout_id'))
    )
    with op.batch_alter_table('measurements', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_measurements_run_id'), ['run_id'], unique=False)

    op.create_table('som_placements',
    sa.Column('node_x', sa.Integer(), nullable=False),
    sa.Column('node_y', sa.Integer(), nullable=False),
    sa.Column('angle_deg', sa.Float(), nullable=False),
    sa.Column('flip', sa.Boolean(), nullable=False),
    sa.Column('distance', sa.Float(), nullable=False),
    sa.Column('extra', sa.JSON(), nullable=True),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('stage', sa.String(length=64), nullable=False),
    sa.Column('stage_version', sa.String(length=32), nullable=False),
    sa.Column('model_ref', sa.String(length=256), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('cutout_id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['cutout_id'], ['cutouts.id'], name=op.f('fk_som_placements_cutout_id_cutouts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_som_placements_run_id_runs'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_som_placements')),
    sa.UniqueConstraint('cutout_id', 'stage', 'stage_version', 'model_ref', name=op.f('uq_som_placements_cutout_id'))
    )
    with op.batch_alter_table('som_placements', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_som_placements_run_id'), ['run_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('som_placements', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_som_placements_run_id'))

    op.drop_table('som_placements')
    with op.batch_alter_table('measurements', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_measurements_run_id'))

    op.drop_table('measurements')
    with op.batch_alter_table('errors', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_errors_run_id'))

    op.drop_table('errors')
    with op.batch_alter_table('classifications', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_classifications_run_id'))
        batch_op.drop_index(batch_op.f('ix_classifications_label'))

    op.drop_table('classifications')
    with op.batch_alter_table('anomaly_scores', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_anomaly_scores_score'))
        batch_op.drop_index(batch_op.f('ix_anomaly_scores_run_id'))

    op.drop_table('anomaly_scores')
    op.drop_table('runs')
    with op.batch_alter_table('models', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_models_stage'))

    op.drop_table('models')
    with op.batch_alter_table('cutouts', schema=None) as batch_op:
        batch_op.drop_index('ix_cutouts_ra_dec')
        batch_op.drop_index(batch_op.f('ix_cutouts_dec_deg'))
        batch_op.drop_index(batch_op.f('ix_cutouts_catalogue_id'))

    op.drop_table('cutouts')
