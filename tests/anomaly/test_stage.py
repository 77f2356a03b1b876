"""The anomaly stage on real cutouts, with the real SOM and CNN stages upstream."""

import pytest
from sqlalchemy import select

from survey_classifier.anomaly.fit import fit_from_database
from survey_classifier.anomaly.report import make_gallery
from survey_classifier.anomaly.scorer import AnomalyScorer
from survey_classifier.cutout import CutoutSource
from survey_classifier.db import make_engine, upgrade
from survey_classifier.db.models import AnomalyScoreRow
from survey_classifier.errors import StageConfigError
from survey_classifier.pipeline import Pipeline, run_pipeline
from survey_classifier.query import top_anomalies
from survey_classifier.stages.registry import load_stage
from survey_classifier.stages.som import SOMStage
from survey_classifier.testing import check_stage

pytestmark = pytest.mark.filterwarnings("ignore::survey_classifier.errors.SurveyClassifierWarning")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, mirabest_files):
    """60 real cutouts through measure, som and cnn, and a scorer fitted on them."""
    folder = tmp_path_factory.mktemp("anomaly")
    url = f"sqlite:///{folder / 'ref.db'}"
    upgrade(url)
    engine = make_engine(url)
    sources = [CutoutSource(str(p)) for p in mirabest_files[::17][:60]]
    upstream = [load_stage("measure"), load_stage("som"), load_stage("cnn", embedding=True)]
    run_pipeline(sources, upstream, engine)
    scorer, path = fit_from_database(engine, folder / "scorer.npz", k=5)
    yield engine, sources, upstream, path
    engine.dispose()


def test_scores_ranks_and_percentiles(reference, tmp_path):
    engine, sources, upstream, path = reference
    summary = run_pipeline(sources, [*upstream, load_stage("anomaly", scorer=str(path))], engine)
    assert summary.n_failed == 0
    with engine.connect() as connection:
        rows = connection.execute(
            select(AnomalyScoreRow.__table__).where(AnomalyScoreRow.run_id == summary.run_id)
        ).all()
    assert len(rows) == len(sources)
    assert sorted(r.rank for r in rows) == list(range(1, len(sources) + 1))
    by_rank = sorted(rows, key=lambda r: r.rank)
    assert all(a.score >= b.score for a, b in zip(by_rank, by_rank[1:]))
    assert by_rank[0].percentile == pytest.approx(100.0) and 0 < by_rank[-1].percentile < 100 / len(rows) + 1e-9
    assert not any(r.partial for r in rows)
    assert set(rows[0].components) >= {"som_distance", "cnn_entropy", "embedding_knn", "embedding_iforest", "asymmetry"}

    top = top_anomalies(engine, 8, run_id=summary.run_id)
    assert len(top) == 8 and list(top["anomaly_rank"]) == list(range(1, 9))
    png, page = make_gallery(top, tmp_path / "gallery")
    assert png.stat().st_size > 10_000
    html = page.read_text()
    assert html.count("<tr>") == 9 and "cutouts/0001.png" in html


def test_missing_upstream_is_partial_not_zero(reference):
    engine, sources, upstream, path = reference
    measure, _, cnn = upstream
    summary = run_pipeline(sources[:10], [measure, cnn, load_stage("anomaly", scorer=str(path))], engine)
    assert summary.n_failed == 0
    with engine.connect() as connection:
        rows = connection.execute(
            select(AnomalyScoreRow.__table__).where(AnomalyScoreRow.run_id == summary.run_id)
        ).all()
    assert len(rows) == 10 and all(r.partial and r.score > 0 for r in rows)
    assert all("som_distance" not in r.components and r.extra["missing"] == ["som_distance"] for r in rows)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"cnn_sha256": "0" * 64},
         r"fitted on cnn results 1@fr-cnn:1 \(sha256 000000000000…\) but this run's cnn results come from "
         r"1@fr-cnn:1 \(sha256 8c171d6a5e5d…\)"),
        ({"cnn_ref": "1@fr-cnn:0", "cnn_sha256": ""},
         r"fitted on cnn results 1@fr-cnn:0 but this run's cnn results come from 1@fr-cnn:1"),
        ({"som_ref": "2@som:som-mirabest/som.npz@000000000000", "som_sha256": ""},
         r"fitted on som results 2@som:som-mirabest/som.npz@000000000000 but this run's som results come from "
         r"2@som-mirabest:3"),
        ({"measure_ref": "1@"}, r"fitted on measure results 1@ but this run's measure results come from 2@"),
    ],
)
def test_scorer_of_other_versions_is_refused_naming_both(reference, tmp_path, changes, match):
    engine, sources, upstream, path = reference
    scorer = AnomalyScorer.load(path)
    for attribute, fitted in changes.items():
        setattr(scorer, attribute, fitted)
    other = scorer.save(tmp_path / "other.npz")
    with pytest.raises(StageConfigError, match=match):
        run_pipeline(sources[:3], [*upstream, load_stage("anomaly", scorer=str(other))], engine)


def test_anomaly_stage_conforms(reference):
    engine, sources, upstream, path = reference
    pipeline = Pipeline(upstream)
    batch = pipeline.process_batch(sources[:6])
    cutouts = [outcome.cutout for outcome in batch.outcomes]
    check_stage(load_stage("anomaly", scorer=str(path)), cutouts)


def test_train_anomaly_command_registers_a_versioned_scorer(reference, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from survey_classifier.artefacts import fetch
    from survey_classifier.cli import main
    from survey_classifier.registry import get_model, model_for, resolve_model
    from survey_classifier.stages.anomaly import AnomalyStage

    engine, sources, upstream, path = reference
    monkeypatch.setenv("SURVEY_CLASSIFIER_CACHE", str(tmp_path / "cache"))
    url = engine.url.render_as_string(hide_password=False)
    out = tmp_path / "scorer.npz"
    train = ["train", "anomaly", "--db", url, "-o", str(out), "-k", "5"]
    result = CliRunner().invoke(main, [*train, "--model-version", "7", "--weight", "embedding_iforest=0.5"])
    assert result.exit_code == 0, result.output
    assert "registered anomaly-scorer:7" in result.output
    assert "asymmetry (60 reference values, weight 3)" in result.output
    ref = resolve_model(engine, "anomaly", "anomaly-scorer", "7")
    row = get_model(engine, "anomaly-scorer", "7")
    facts = row["details"]["artefact"]
    assert facts["som_ref"] == f"{SOMStage.version}@som-mirabest:3" and facts["cnn_ref"] == "1@fr-cnn:1"
    assert facts["measure_ref"] == "2@" and row["details"]["weights"]["embedding_iforest"] == 0.5
    assert row["store"] == "database" and row["sha256"] == ref.sha256
    stored = fetch(ref, engine).path
    assert stored.is_relative_to(tmp_path / "cache")
    assert AnomalyScorer.load(stored).component_weights()["embedding_iforest"] == 0.5
    bad = CliRunner().invoke(main, [*train, "--model-version", "8", "--weight", "asymmetry=-1"])
    assert bad.exit_code != 0 and "--weight 'asymmetry=-1'" in bad.output
    assert model_for(engine, AnomalyStage, str(out)).ref == "anomaly-scorer:7"  # the same bytes, the same ref
    again = CliRunner().invoke(main, [*train, "--model-version", "7"])
    assert again.exit_code != 0 and "anomaly-scorer" in again.output
