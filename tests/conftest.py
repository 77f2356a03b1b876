"""Shared fixtures: the real data, real SQLite and real PostgreSQL databases."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("SURVEY_CLASSIFIER_DATA", REPO.parent / "shared" / "data"))
POSTGRES_ADMIN_URL = os.environ.get("SURVEY_CLASSIFIER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "mirabest" / "labels.csv").exists():
        pytest.fail(f"test data not found in {DATA_DIR}; set SURVEY_CLASSIFIER_DATA to the shared/data folder")
    return DATA_DIR


@pytest.fixture(scope="session")
def mirabest_dir(data_dir) -> Path:
    return data_dir / "mirabest"


@pytest.fixture(scope="session")
def mirabest_files(mirabest_dir) -> list[Path]:
    return sorted((mirabest_dir / "fits").glob("*.fits"))


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'results.db'}"


@pytest.fixture
def engine(sqlite_url):
    """An engine on a fresh SQLite database upgraded to the current schema."""
    from survey_classifier.db import make_engine, upgrade

    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


def _postgres_available() -> str | None:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(POSTGRES_ADMIN_URL)
        with engine.connect():
            pass
        engine.dispose()
        return None
    except Exception as exc:  # report why below
        return str(exc).splitlines()[0]


@pytest.fixture
def postgres_url():
    """A fresh, empty PostgreSQL database, dropped after the test."""
    import sqlalchemy

    problem = _postgres_available()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {POSTGRES_ADMIN_URL} is required in CI: {problem}")
        pytest.skip(f"PostgreSQL not reachable: {problem}")
    name = f"sc_test_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sqlalchemy.engine.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def s3_server(tmp_path, monkeypatch):
    """A local S3-compatible server (moto in server mode, a process of its own) for one test.

    The environment points s3fs (and worker processes started by the test) at it.
    """
    import s3fs
    from helpers.s3 import S3Server

    server = S3Server(tmp_path / "moto.log")
    for name, value in server.environment.items():
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    yield server
    s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


@pytest.fixture(scope="session")
def labelled_map(tmp_path_factory, mirabest_dir):
    """``train som --labels`` on every 40th MiraBest cutout: a hexagonal 5x5 map and its neurons.json."""
    from types import SimpleNamespace

    from astropy.table import Table
    from click.testing import CliRunner

    from survey_classifier.cli import main
    from survey_classifier.som.labels import NEURON_LABELS_FILE

    folder = tmp_path_factory.mktemp("labelled-map")
    catalogue = Table.read(mirabest_dir / "labels.csv")
    files = [str(mirabest_dir / "fits" / name) for name in catalogue["file"][::40]]
    result = CliRunner().invoke(main, [
        "train", "som", *files, "--out", str(folder), "--grid", "5x5", "--layout", "hexagonal", "--neuron-size", "32",
        "--size", "32", "--extent", "islands", "--islands-only", "--scaling", "peak", "--rotations", "16",
        "--epochs", "2", "--labels", str(mirabest_dir / "labels.csv"), "--no-pictures", "--no-progress",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.iterdir()) == [NEURON_LABELS_FILE, "som.npz"]
    return SimpleNamespace(folder=folder, map=folder / "som.npz", neurons=folder / NEURON_LABELS_FILE,
                           files=files, n=len(files))
