"""A stage named without the stages it needs reads their stored results, exactly, or computes them."""

import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.plugins import install_example_plugin
from sqlalchemy import select

from survey_classifier.cli import main
from survey_classifier.db import make_engine, upgrade
from survey_classifier.db.models import AnomalyScoreRow, ClassificationRow, MeasurementRow
from survey_classifier.io.inputs import expand_inputs
from survey_classifier.pipeline import Pipeline
from survey_classifier.reuse import FILL, ONLY, StoredResults
from survey_classifier.stages.plan import plan_stages, upstream_modes
from survey_classifier.stages.registry import load_stage


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    return install_example_plugin(tmp_path / "site", monkeypatch)


@pytest.fixture
def folder(tmp_path, mirabest_files):
    folder = tmp_path / "cutouts"
    folder.mkdir()
    for path in mirabest_files[:8]:
        shutil.copy(path, folder)
    return folder


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def rows(url, row_class, stage):
    engine = make_engine(url)
    table = row_class.__table__
    with engine.connect() as connection:
        found = {r.cutout_id: r._asdict() for r in connection.execute(select(table).where(table.c.stage == stage))}
    engine.dispose()
    return found


def test_which_upstream_stages_come_along(plugin):
    assert upstream_modes(["compactness"]) == {"measure": FILL}
    assert upstream_modes(["measure", "compactness"]) == {}
    assert upstream_modes(["anomaly"]) == {"measure": ONLY, "som": ONLY, "cnn": ONLY}
    assert upstream_modes(["anomaly"], recompute=True) == {}
    assert upstream_modes(["cnn", "anomaly"]) == {"measure": ONLY, "som": ONLY}


def test_stored_measure_results_are_read_not_recomputed(plugin, folder, tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    files = sorted(folder.glob("*.fits"))
    invoke("classify", *files[:6], "--stages", "measure", "--db", url, "--quiet")
    measured = rows(url, MeasurementRow, "measure")
    assert len(measured) == 6

    out = invoke("classify", folder, "--stages", "compactness", "--db", url, "--quiet")
    assert "measure (stored results where they fit, computed for the rest)" in out
    assert "read from the database (stored by an earlier run, same version, model and parameters): measure 6" in out
    assert "8 processed, 0 failed" in out
    after = rows(url, MeasurementRow, "measure")
    assert len(after) == 8
    for cutout_id, row in measured.items():  # read, not written again: same run, same time
        assert after[cutout_id] == row
    assert {row["run_id"] for cutout_id, row in after.items() if cutout_id not in measured} == {2}
    reused = rows(url, ClassificationRow, "compactness")
    assert len(reused) == 8 and {r["label"] for r in reused.values()} <= {"compact", "extended"}

    fresh_url = f"sqlite:///{tmp_path / 'fresh.db'}"
    out = invoke("classify", folder, "--stages", "compactness", "--recompute", "--db", fresh_url, "--quiet")
    assert "read from the database" not in out
    fresh = rows(fresh_url, ClassificationRow, "compactness")
    by_path = lambda found, url: {_path(url, k): (v["label"], v["probabilities"], v["extra"]) for k, v in found.items()}
    assert by_path(reused, url) == by_path(fresh, fresh_url)  # what was read is exactly what would be computed

    out = invoke("classify", folder, "--stages", "compactness", "--recompute", "--db", url, "--quiet")
    assert "read from the database" not in out
    assert {row["run_id"] for row in rows(url, MeasurementRow, "measure").values()} == {3}


def _path(url, cutout_id):
    engine = make_engine(url)
    with engine.connect() as connection:
        path = connection.exec_driver_sql("SELECT path FROM cutouts WHERE id = ?", (cutout_id,)).scalar_one()
    engine.dispose()
    return path.rsplit("/", 1)[-1]


def test_other_parameters_or_other_bytes_are_computed_again(plugin, folder, tmp_path, mirabest_files):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    files = sorted(folder.glob("*.fits"))
    invoke("classify", *files[:4], "--stages", "measure", "--db", url, "--quiet")
    shutil.copy(mirabest_files[20], files[0])  # the same path, other bytes
    out = invoke("classify", *files[:4], "--stages", "compactness", "--db", url, "--quiet")
    assert "same version, model and parameters): measure 3\n" in out

    out = invoke("classify", *files[:4], "--stages", "compactness", "--param", "measure.threshold_sigma=4",
                 "--db", url, "--quiet")
    assert "read from the database (stored" not in out  # measured with threshold 3: not what this run computes
    # the measure rows now hold threshold 4 (parameters are not part of a result's identity): not read either
    out = invoke("classify", *files[:4], "--stages", "compactness", "--db", url, "--quiet")
    assert "read from the database (stored" not in out


@pytest.mark.slow
def test_anomaly_alone_scores_exactly_as_the_full_run(folder, tmp_path):
    """`--stages anomaly` reads the stored measure, som and cnn results (models and all): same scores."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    invoke("classify", folder, "--db", url, "--quiet")
    full = {k: (r["score"], r["components"]) for k, r in rows(url, AnomalyScoreRow, "anomaly").items()}
    assert len(full) == 8
    out = invoke("classify", folder, "--stages", "anomaly", "--db", url, "--quiet")
    assert "cnn (stored results where they fit)" in out
    assert "cnn 8, measure 8, som 8" in out
    alone = {k: (r["score"], r["components"]) for k, r in rows(url, AnomalyScoreRow, "anomaly").items()}
    assert alone == full


def test_the_pipeline_hands_on_the_stored_provenance(plugin, folder, tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    upgrade(url)
    engine = make_engine(url)
    sources = expand_inputs([str(folder)])[:3]
    plan = plan_stages(["tuned_compactness"], {}, engine)
    assert [s.name for s in plan.stages] == ["measure", "tuned_compactness"] and plan.reuse == {"measure": FILL}
    first = Pipeline([plan.stages[0]]).process_batch(sources)
    from survey_classifier.runs import register_run, store_batch

    run_id, _ = register_run(engine, sources, [plan.stages[0]], batch_size=8, config={}, executor="test")
    store_batch(engine, run_id, [plan.stages[0]], first)
    pipeline = Pipeline(plan.stages, stored=StoredResults(engine, plan.reuse))
    batch = pipeline.process_batch(sources)
    for computed, read in zip(first.outcomes, batch.outcomes):
        assert read.reused == {"measure"}
        assert read.cutout.provenance["measure"] == ("2", "", None) == computed.cutout.provenance["measure"]
        assert read.cutout.provenance["tuned_compactness"][1] == "compactness-thresholds:1"
        for key, value in computed.cutout.results["measure"].items():
            stored = read.cutout.results["measure"][key]
            assert stored == pytest.approx(value) if isinstance(value, float) else np.all(stored == value), key
    engine.dispose()


def test_workers_read_what_the_run_recorded(plugin, folder, tmp_path, monkeypatch):
    from survey_classifier.runs import register_run
    from survey_classifier.workers import tasks

    url = f"sqlite:///{tmp_path / 'r.db'}"
    invoke("classify", folder, "--stages", "measure", "--db", url, "--quiet")
    engine = make_engine(url)
    plan = plan_stages(["compactness"], {}, engine)
    sources = expand_inputs([str(folder)])
    run_id, batches = register_run(engine, sources, plan.stages, batch_size=8, config={"reuse": plan.reuse},
                                   executor="celery")
    monkeypatch.setenv("SURVEY_CLASSIFIER_DB", url)
    monkeypatch.setattr(tasks, "_engine", None)
    monkeypatch.setattr(tasks, "_pipelines", {})
    pipeline = tasks.pipeline_for_run(run_id)
    assert pipeline.stored.modes == {"measure": FILL}
    batch = pipeline.process_batch(batches[0][1])
    assert all(o.reused == {"measure"} and "compactness" in o.cutout.results for o in batch.outcomes)
    assert load_stage("measure").version == "2"
    engine.dispose()
    tasks.engine().dispose()
