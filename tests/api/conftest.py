"""A results database filled by the real pipeline on real MiraBest cutouts, and the app over it."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from astropy.table import Table
from click.testing import CliRunner
from helpers.stages import peak_classifier
from sqlalchemy import select

from survey_classifier.cli import main
from survey_classifier.cutout import CutoutSource
from survey_classifier.db import make_engine, upgrade
from survey_classifier.db.models import MeasurementRow
from survey_classifier.db.store import store_results
from survey_classifier.pipeline import run_pipeline
from survey_classifier.stages.registry import load_stage


def _placements_and_scores(measured: dict[int, dict]) -> tuple[dict, dict]:
    """SOM node (peak-flux quartile, island count) and an anomaly score (size x islands) per cutout."""
    by_peak = sorted(measured, key=lambda i: (measured[i]["peak_flux_jy"], i))
    placements, scores = {}, {}
    for rank, cutout_id in enumerate(by_peak):
        m = measured[cutout_id]
        node = (rank * 4 // len(by_peak), min(int(m["n_islands"] or 0), 2))
        placements[cutout_id] = {"node_x": node[0], "node_y": node[1], "angle_deg": 0.0, "flip": False,
                                 "distance": float(abs(m["peak_flux_jy"]))}
        scores[cutout_id] = {"score": float((m["las_arcsec"] or 0.0) * (1 + (m["n_islands"] or 0))),
                             "components": {"size": float(m["las_arcsec"] or 0.0)}}
    return placements, scores


@pytest.fixture(scope="session")
def service_db(tmp_path_factory, mirabest_files):
    """30 real cutouts: measured, classified (two model versions), placed on a SOM and scored."""
    url = f"sqlite:///{tmp_path_factory.mktemp('service') / 'service.db'}"
    upgrade(url)
    engine = make_engine(url)
    files = mirabest_files[::34][:30]
    sources = [CutoutSource(str(p)) for p in files]
    folder = tmp_path_factory.mktemp("models")
    summary = run_pipeline(sources, [load_stage("measure"), peak_classifier(folder, 0.01)], engine)
    assert summary.n_processed == len(files)
    run_pipeline(sources[:20], [load_stage("measure"), peak_classifier(folder, 0.03)], engine)
    with engine.connect() as connection:
        rows = connection.execute(select(MeasurementRow.__table__)).all()
    measured = {r.cutout_id: dict(r._mapping) for r in rows}
    placements, scores = _placements_and_scores(measured)
    with engine.begin() as connection:
        store_results(connection, kind="som", stage="som", stage_version="1", model_ref="test-som:1",
                      run_id=summary.run_id, results=placements.items())
        store_results(connection, kind="anomaly", stage="anomaly", stage_version="1", model_ref="",
                      run_id=summary.run_id, results=scores.items())
    yield {"url": url, "engine": engine, "files": files, "run_id": summary.run_id, "measured": measured,
           "placements": placements, "scores": scores}
    engine.dispose()


@pytest.fixture(scope="session")
def app(service_db):
    from survey_classifier.api import create_app

    return create_app(service_db["url"], write_token="t0ken-for-the-tests-only")


@pytest.fixture(scope="session")
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        yield client


@pytest.fixture(scope="session")
def classified_db(tmp_path_factory, mirabest_dir):
    """36 real MiraBest sources (every 37th, the first 8 hybrids or non-standard ones) through every default stage.

    Read only: a test that writes labels works on a copy of ``path``.
    """
    folder = tmp_path_factory.mktemp("workbench")
    catalogue = Table.read(mirabest_dir / "labels.csv")
    rows = np.arange(len(catalogue))
    rare = np.flatnonzero((catalogue["fr_class"] == "hybrid") | (catalogue["morphology"] != "standard"))[:8]
    keep = (rows % 37 == 0) | np.isin(rows, rare)
    subset = catalogue[keep]
    subset["name"] = [f"MB{row:04d}" for row in rows[keep]]
    subset.write(folder / "subset.csv", format="ascii.csv")
    url = f"sqlite:///{folder / 'workbench.db'}"
    result = CliRunner().invoke(main, ["classify", str(folder / "subset.csv"), "--base-dir",
                                       str(mirabest_dir / "fits"), "--db", url, "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with sqlite3.connect(folder / "workbench.db") as connection:  # everything into the main file, to copy it
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    engine = make_engine(url)
    yield {"url": url, "engine": engine, "path": folder / "workbench.db", "n": len(subset)}
    engine.dispose()
