"""The in-process pipeline on real cutouts and a real SQLite database."""

import shutil

import numpy as np
import pytest
from sqlalchemy import func, select

from survey_classifier.cutout import CutoutSource
from survey_classifier.db import make_engine, upgrade
from survey_classifier.db.models import ClassificationRow, CutoutRow, ErrorRow, MeasurementRow, RunRow
from survey_classifier.pipeline import run_pipeline
from survey_classifier.stages.base import CutoutFailure, Stage
from survey_classifier.stages.registry import load_stage


class Brightness(Stage):
    """A real (if simple) classifier: bright or faint by peak flux."""

    name = "brightness"
    version = "1"
    result_kind = "classification"
    requires = ("pixels", "stage:measure")

    def __init__(self, *, threshold_jy=0.01, fail_on=None):
        self.threshold_jy = threshold_jy
        self.fail_on = fail_on

    def process(self, batch):
        out = []
        for cutout in batch:
            if self.fail_on and cutout.path.endswith(self.fail_on):
                raise RuntimeError(f"cannot classify {cutout.path}")
            peak = cutout.results["measure"]["peak_flux_jy"]
            p_bright = float(1 / (1 + np.exp(-(peak - self.threshold_jy) / 1e-3)))
            probabilities = {"bright": p_bright, "faint": 1 - p_bright}
            out.append({"label": max(probabilities, key=probabilities.get), "probabilities": probabilities})
        return out


class PickyMeasure(Stage):
    name = "picky"
    version = "1"
    result_kind = "measurement"

    def __init__(self, *, refuse=""):
        self.refuse = refuse

    def process(self, batch):
        return [
            CutoutFailure(f"refused {c.path}") if self.refuse and c.path.endswith(self.refuse) else
            {"peak_flux_jy": float(np.nanmax(c.data)), "integrated_flux_jy": None, "n_islands": 0,
             "las_arcsec": None, "centroid_offset_arcsec": None}
            for c in batch
        ]


def _counts(engine):
    with engine.connect() as connection:
        return {
            table.__tablename__: connection.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (CutoutRow, MeasurementRow, ClassificationRow, ErrorRow)
        }


@pytest.fixture
def inputs(tmp_path, mirabest_files):
    """Twelve real cutouts plus three bad inputs."""
    folder = tmp_path / "in"
    folder.mkdir()
    for path in mirabest_files[:12]:
        shutil.copy(path, folder / path.name)
    (folder / "zero.fits").write_bytes(b"")
    (folder / "notfits.fits").write_text("this is a CSV file,really\n1,2\n")
    sources = [CutoutSource(str(p)) for p in sorted(folder.glob("*.fits"))]
    sources.append(CutoutSource(str(folder / "missing.fits"), catalogue_id="J0000+0000"))
    return sources


def test_bad_inputs_recorded_and_batch_goes_on(inputs, engine):
    stages = [load_stage("measure"), Brightness()]
    summary = run_pipeline(inputs, stages, engine, batch_size=5)
    assert (summary.n_cutouts, summary.n_processed, summary.n_failed) == (15, 12, 3)
    counts = _counts(engine)
    assert counts == {"cutouts": 15, "measurements": 12, "classifications": 12, "errors": 3}
    with engine.connect() as connection:
        errors = {
            row.path.rsplit("/", 1)[1]: (row.stage, row.message)
            for row in connection.execute(
                select(CutoutRow.path, ErrorRow.stage, ErrorRow.message)
                .join(ErrorRow, ErrorRow.cutout_id == CutoutRow.id)
            )
        }
        run = connection.execute(select(RunRow.__table__)).one()
    assert set(errors) == {"zero.fits", "notfits.fits", "missing.fits"}
    assert all(stage == "read" for stage, _ in errors.values())
    assert "empty" in errors["zero.fits"][1].lower() or "zero" in errors["zero.fits"][1].lower()
    assert "not" in errors["notfits.fits"][1].lower() and "fits" in errors["notfits.fits"][1].lower()
    assert "no such file" in errors["missing.fits"][1].lower() or "not found" in errors["missing.fits"][1].lower()
    assert (run.status, run.n_processed, run.n_failed) == ("finished", 12, 3)
    assert [s["name"] for s in run.stages] == ["measure", "brightness"]


def test_rerun_updates_in_place(inputs, engine):
    stages = [load_stage("measure"), Brightness()]
    run_pipeline(inputs, stages, engine, batch_size=4)
    before = _counts(engine)
    second = run_pipeline(inputs, stages, engine, batch_size=7)
    assert _counts(engine) == before
    with engine.connect() as connection:
        run_ids = set(connection.execute(select(MeasurementRow.run_id)).scalars())
    assert run_ids == {second.run_id}


def test_new_stage_version_adds_rows_side_by_side(inputs, engine):
    run_pipeline(inputs, [load_stage("measure"), Brightness()], engine)

    class BrightnessV2(Brightness):
        version = "2"

    run_pipeline(inputs, [load_stage("measure"), BrightnessV2()], engine)
    with engine.connect() as connection:
        versions = connection.execute(
            select(ClassificationRow.stage_version, func.count()).group_by(ClassificationRow.stage_version)
        ).all()
    assert sorted(versions) == [("1", 12), ("2", 12)]
    assert _counts(engine)["measurements"] == 12


def test_exception_isolated_to_the_cutout_at_fault(inputs, engine):
    victim = inputs[3].path.rsplit("/", 1)[1]
    summary = run_pipeline(inputs, [load_stage("measure"), Brightness(fail_on=victim)], engine, batch_size=8)
    assert summary.n_failed == 4
    with engine.connect() as connection:
        rows = connection.execute(
            select(CutoutRow.path, ErrorRow.stage, ErrorRow.error_type, ErrorRow.message, ErrorRow.hdu).join(
                ErrorRow, ErrorRow.cutout_id == CutoutRow.id
            ).where(ErrorRow.stage == "brightness")
        ).all()
    assert len(rows) == 1
    path, stage, error_type, message, hdu = rows[0]
    assert path.endswith(victim) and error_type == "RuntimeError" and victim in message and hdu == 0
    assert _counts(engine)["classifications"] == 11


def test_failed_requirement_recorded_for_the_dependent_stage(inputs, engine):
    victim = inputs[0].path.rsplit("/", 1)[1]

    class NeedsPicky(Brightness):
        name = "needs_picky"
        requires = ("pixels", "stage:picky")

        def process(self, batch):
            return [{"label": "x", "probabilities": {"x": 1.0}} for _ in batch]

    run_pipeline(inputs, [PickyMeasure(refuse=victim), NeedsPicky()], engine)
    with engine.connect() as connection:
        rows = connection.execute(select(ErrorRow.stage, ErrorRow.error_type, ErrorRow.message)).all()
    by_stage = {stage: (kind, message) for stage, kind, message in rows if stage != "read"}
    assert by_stage["picky"][0] == "CutoutFailure" and victim in by_stage["picky"][1]
    assert by_stage["needs_picky"][0] == "MissingRequirement" and "picky" in by_stage["needs_picky"][1]


def test_error_cleared_when_the_file_is_fixed(inputs, engine, mirabest_files):
    stages = [load_stage("measure")]
    run_pipeline(inputs, stages, engine)
    assert _counts(engine)["errors"] == 3
    zero = next(s.path for s in inputs if s.path.endswith("zero.fits"))
    shutil.copy(mirabest_files[20], zero)
    run_pipeline(inputs, stages, engine)
    counts = _counts(engine)
    assert counts["errors"] == 2 and counts["measurements"] == 13 and counts["cutouts"] == 15


@pytest.mark.postgres
def test_same_results_on_postgres(inputs, engine, postgres_url):
    stages = [load_stage("measure"), Brightness()]
    upgrade(postgres_url)
    pg = make_engine(postgres_url)
    try:
        run_pipeline(inputs, stages, engine)
        run_pipeline(inputs, stages, pg)
        run_pipeline(inputs, stages, pg)

        def rows(e):
            with e.connect() as connection:
                return sorted(
                    connection.execute(
                        select(CutoutRow.path, CutoutRow.ra_deg, CutoutRow.dec_deg, MeasurementRow.peak_flux_jy,
                               MeasurementRow.n_islands, MeasurementRow.las_arcsec, ClassificationRow.label)
                        .join(MeasurementRow, MeasurementRow.cutout_id == CutoutRow.id)
                        .join(ClassificationRow, ClassificationRow.cutout_id == CutoutRow.id)
                    ).all()
                )

        assert rows(engine) == rows(pg)
        assert _counts(engine) == _counts(pg)
    finally:
        pg.dispose()
