"""A results database of real MiraBest cutouts run through every default stage, with their catalogue."""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pytest
from astropy.table import Table
from click.testing import CliRunner

from survey_classifier.cli import main
from survey_classifier.db import make_engine


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _subset(mirabest_dir) -> Table:
    """Every 9th row of MiraBest's labels.csv, and every hybrid or non-standard source among the first 250
    (so the simulated user has rare sources to find), with a catalogue id ``name``."""
    catalogue = Table.read(mirabest_dir / "labels.csv")
    rare = (catalogue["fr_class"] == "hybrid") | (catalogue["morphology"] != "standard")
    rows = np.arange(len(catalogue))
    keep = (rows % 9 == 0) | (rare & (rows < 250))
    subset = catalogue[keep]
    subset["name"] = [f"MB{row:04d}" for row in rows[keep]]
    return subset


@pytest.fixture(scope="session")
def cli():
    """``cli("labels", "list", ...)``: the command line, in-process."""
    return invoke


@pytest.fixture(scope="session")
def catalogue(tmp_path_factory, mirabest_dir) -> dict:
    """The subset catalogue as CSV (with a `name` id column), and its table."""
    folder = tmp_path_factory.mktemp("labels-catalogue")
    subset = _subset(mirabest_dir)
    path = folder / "subset.csv"
    subset.write(path, format="ascii.csv")
    return {"path": path, "table": subset, "fits_dir": mirabest_dir / "fits"}


@pytest.fixture(scope="session")
def classified(tmp_path_factory, catalogue) -> str:
    """A pristine database of the subset through measure, cnn, som and anomaly (default stages and models)."""
    folder = tmp_path_factory.mktemp("labels-db")
    url = f"sqlite:///{folder / 'classified.db'}"
    result = invoke("classify", catalogue["path"], "--base-dir", catalogue["fits_dir"], "--db", url, "--quiet")
    assert result.exit_code == 0, result.output
    with sqlite3.connect(folder / "classified.db") as connection:  # everything into the main file, to copy it
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return str(folder / "classified.db")


@pytest.fixture
def db_url(classified, tmp_path) -> str:
    """A copy of the classified database for one test to write labels into."""
    copy = tmp_path / "labels.db"
    shutil.copy(classified, copy)
    return f"sqlite:///{copy}"


@pytest.fixture
def db_engine(db_url):
    engine = make_engine(db_url)
    yield engine
    engine.dispose()
