"""The schema exists only through Alembic, and matches the ORM models."""

import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from survey_classifier.db import downgrade, make_engine, upgrade
from survey_classifier.db.engine import current_revision
from survey_classifier.db.models import Base

TABLES = {
    "cutouts", "runs", "run_batches", "models", "artefacts", "stage_settings", "measurements", "classifications",
    "som_placements", "anomaly_scores", "errors", "source_labels", "neuron_labels", "label_rankings",
}


def _roundtrip(url):
    engine = make_engine(url)
    assert current_revision(engine) is None
    upgrade(url)
    assert TABLES <= set(inspect(engine).get_table_names())
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == [], f"ORM models and migrations disagree: {diff}"
    downgrade(url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(url)
    assert current_revision(engine) is not None
    engine.dispose()


def test_upgrade_downgrade_sqlite(sqlite_url):
    _roundtrip(sqlite_url)


@pytest.mark.postgres
def test_upgrade_downgrade_postgres(postgres_url):
    _roundtrip(postgres_url)


def test_alembic_command_line_uses_x_db(tmp_path, sqlite_url):
    """`alembic -x db=URL upgrade head` / `downgrade base` from the repository root."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    for step in (["upgrade", "head"], ["downgrade", "base"]):
        done = subprocess.run(
            [sys.executable, "-m", "alembic", "-x", f"db={sqlite_url}", *step],
            cwd=repo,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
    assert all(f"Running downgrade {r}" in done.stderr for r in ("0001", "0002", "0003", "0004"))
