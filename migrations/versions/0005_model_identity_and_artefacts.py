"""One model identity from registry to result row; artefacts every worker can reach.

- ``artefacts``: the bytes of registered models, keyed by sha256.
- ``models``: ``artefact_path`` (a file on the registering machine) gives way
  to ``filename`` and ``store`` (``database``, ``package:MODULE/RESOURCE`` or
  a URL). The files of models registered before are copied into
  ``artefacts`` (a file that is gone is kept as a ``file://`` store, and
  refused with a clear message when used).
- ``model_sha256`` beside ``model_ref`` on every result table and ``errors``.
- ``stage_settings``: stages made (or unmade) defaults of ``classify``.

Downgrading writes the database-held artefacts back to the model store
folder (``$SURVEY_CLASSIFIER_HOME/models`` or ``~/.survey-classifier/models``)
so that ``artefact_path`` points at real files again.

Revision ID: 0005
Revises: 0004 (measurement asymmetry)
Create Date: 2026-12-02 15:00:00
"""

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_RESULT_TABLES = ("measurements", "classifications", "som_placements", "anomaly_scores", "errors")


def _model_store() -> Path:
    home = os.environ.get("SURVEY_CLASSIFIER_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".survey-classifier") / "models"


def _models_table(*extra):
    return sa.table(
        "models",
        sa.column("id", sa.Integer),
        sa.column("name", sa.String),
        sa.column("version", sa.String),
        sa.column("stage", sa.String),
        sa.column("sha256", sa.String),
        *extra,
    )


def upgrade() -> None:
    artefacts = op.create_table(
        "artefacts",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_artefacts")),
    )
    op.create_table(
        "stage_settings",
        sa.Column("stage", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("stage", name=op.f("pk_stage_settings")),
    )
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("filename", sa.String(length=256), nullable=True))
        batch.add_column(sa.Column("store", sa.String(length=1024), nullable=True))
    _move_files_into_the_database(artefacts)
    with op.batch_alter_table("models") as batch:
        batch.alter_column("filename", existing_type=sa.String(length=256), nullable=False)
        batch.alter_column("store", existing_type=sa.String(length=1024), nullable=False)
        batch.drop_column("artefact_path")
        batch.create_index(batch.f("ix_models_sha256"), ["sha256"], unique=False)
    for table in _RESULT_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("model_sha256", sa.String(length=64), nullable=True))


def _move_files_into_the_database(artefacts) -> None:
    connection = op.get_bind()
    models = _models_table(
        sa.column("artefact_path", sa.String), sa.column("filename", sa.String), sa.column("store", sa.String)
    )
    stored = set(connection.execute(sa.select(artefacts.c.sha256)).scalars())
    for row in connection.execute(sa.select(models.c.id, models.c.sha256, models.c.artefact_path)).all():
        path = Path(row.artefact_path)
        store = f"file://{path}"
        if path.is_file():
            content = path.read_bytes()
            if hashlib.sha256(content).hexdigest() == row.sha256:
                store = "database"
                if row.sha256 not in stored:
                    connection.execute(
                        artefacts.insert().values(
                            sha256=row.sha256, size=len(content), content=content, created_at=datetime.now(UTC)
                        )
                    )
                    stored.add(row.sha256)
        connection.execute(
            models.update().where(models.c.id == row.id).values(filename=path.name, store=store)
        )


def downgrade() -> None:
    for table in _RESULT_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("model_sha256")
    with op.batch_alter_table("models") as batch:
        batch.drop_index(batch.f("ix_models_sha256"))
        batch.add_column(sa.Column("artefact_path", sa.String(length=1024), nullable=True))
    _write_files_back()
    with op.batch_alter_table("models") as batch:
        batch.alter_column("artefact_path", existing_type=sa.String(length=1024), nullable=False)
        batch.drop_column("store")
        batch.drop_column("filename")
    op.drop_table("stage_settings")
    op.drop_table("artefacts")


def _write_files_back() -> None:
    connection = op.get_bind()
    models = _models_table(
        sa.column("artefact_path", sa.String), sa.column("filename", sa.String), sa.column("store", sa.String)
    )
    artefacts = sa.table("artefacts", sa.column("sha256", sa.String), sa.column("content", sa.LargeBinary))
    rows = connection.execute(
        sa.select(models.c.id, models.c.name, models.c.version, models.c.stage, models.c.sha256,
                  models.c.filename, models.c.store)
    ).all()
    for row in rows:
        if row.store == "database":
            target = _model_store() / row.stage / row.name / row.version / row.filename
            content = connection.execute(
                sa.select(artefacts.c.content).where(artefacts.c.sha256 == row.sha256)
            ).scalar_one()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            path = str(target)
        elif row.store.startswith("file://"):
            path = row.store[len("file://"):]
        else:
            path = row.store
        connection.execute(models.update().where(models.c.id == row.id).values(artefact_path=path))
