"""The anomaly list re-ranked by interesting / not interesting labels, and the simulated user."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table
from sqlalchemy import func, select

from survey_classifier.anomaly.report import rare_mask
from survey_classifier.db.models import AnomalyScoreRow, LabelRankingRow, SourceLabelRow
from survey_classifier.errors import LabelError, NotFittedError
from survey_classifier.labels.ranking import RANKING_STAGE, InterestRanker, rerank
from survey_classifier.labels.simulate import simulate_user
from survey_classifier.labels.store import add_source_labels
from survey_classifier.query import find_variants, query_results, top_anomalies

RARE = ["fr_class=hybrid", "morphology!=standard"]


def _label_top(engine, n: int, *, skip: int = 0) -> list[int]:
    """The simulated user: the top ``n`` unsupervised anomalies (after ``skip``) labelled from the catalogue."""
    top = top_anomalies(engine, skip + n, stage="anomaly")[skip:]
    rare = rare_mask(top, RARE)
    with engine.begin() as connection:
        add_source_labels(connection, [{"cutout_id": int(i), "interesting": bool(r), "author": "sim"}
                                       for i, r in zip(top["cutout_id"], rare)])
    return [int(i) for i in top["cutout_id"]]


def test_a_rerank_needs_interest_labels(db_engine):
    with db_engine.begin() as connection:
        add_source_labels(connection, [{"cutout_id": 1, "label": "FRI", "author": "ann"}])
    with pytest.raises(LabelError, match="labelled interesting or not interesting yet"):
        rerank(db_engine)


def test_rerank_stores_a_fit_and_a_ranked_list(db_engine):
    labelled = _label_top(db_engine, 20)
    fit = rerank(db_engine, author="ann")
    with db_engine.connect() as connection:
        variants = find_variants(connection)
        n_scored = connection.execute(select(func.count()).select_from(AnomalyScoreRow)
                                      .where(AnomalyScoreRow.stage == "anomaly")).scalar_one()
    assert fit["model_ref"] == f"label-ranking:{fit['id']}" and fit["method"] == "logistic-blend/1"
    assert set(fit["features"]["variants"]) == set(variants) - {RANKING_STAGE}
    names = fit["features"]["names"]
    assert any(n.startswith("cnn.embedding_") for n in names) and "anomaly.asymmetry" in names
    assert "som.distance" in names and "measure.las_arcsec" in names
    assert fit["n_labels"] == 20 and 0 < fit["n_interesting"] < 20 and fit["metrics"]["n_sources"] == n_scored
    assert fit["blend"]["C"] == 0.3 and fit["metrics"]["fit_seconds"] < 60

    table = query_results(db_engine)
    assert table["reranked_model_ref"][0] == fit["model_ref"]
    assert sorted(table["reranked_rank"]) == list(range(1, n_scored + 1))
    on = np.isin(table["cutout_id"], labelled)
    trust = np.asarray(table["reranked_trust"])
    assert np.allclose(trust[on], 1.0) and (trust[~on] < 1.0).all()
    assert np.allclose(np.asarray(table["reranked_score"])[on], np.asarray(table["reranked_interest_pct"])[on])
    interesting = np.asarray(table["label_interesting"].filled(False))
    interest = np.asarray(table["reranked_interest"])
    assert interest[on & interesting].mean() > interest[on & ~interesting].mean()
    assert np.allclose(table["reranked_unsupervised"],
                       (np.argsort(np.argsort(np.asarray(table["anomaly_score"]))) + 0.5) / len(table))

    top = top_anomalies(db_engine, 10, stage=RANKING_STAGE, unlabelled=True)
    assert not set(top["cutout_id"]) & set(labelled) and len(top) == 10
    assert list(top["anomaly_rank"]) == sorted(top["anomaly_rank"])
    full = top_anomalies(db_engine, int(top["anomaly_rank"][-1]), stage=RANKING_STAGE)
    assert [i for i in full["cutout_id"] if i not in labelled] == list(top["cutout_id"])


def test_each_refit_replaces_the_scores_and_keeps_the_record(db_engine):
    _label_top(db_engine, 10)
    first = rerank(db_engine)
    _label_top(db_engine, 10, skip=10)
    second = rerank(db_engine)
    with db_engine.connect() as connection:
        refs = set(connection.execute(select(AnomalyScoreRow.model_ref).where(AnomalyScoreRow.stage == RANKING_STAGE))
                   .scalars())
        fits = connection.execute(select(LabelRankingRow.model_ref, LabelRankingRow.n_labels)
                                  .order_by(LabelRankingRow.id)).all()
        last_label = connection.execute(select(func.max(SourceLabelRow.id))).scalar_one()
    assert refs == {second["model_ref"]} and [tuple(f) for f in fits] == [(first["model_ref"], 10),
                                                                        (second["model_ref"], 20)]
    assert second["last_label_id"] == last_label
    assert "reranked_score" in query_results(db_engine).colnames


def test_the_ranker_alone():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 3))
    unsupervised = rng.random(200)
    with pytest.raises(NotFittedError):
        InterestRanker().score(features, unsupervised)
    only_dull = InterestRanker().fit(features[:5], np.zeros(5, dtype=bool))
    parts = only_dull.score(features, unsupervised)
    assert (parts["interest"] == 0).all() and only_dull.coefficients(["a", "b", "c"]) == {}
    assert np.allclose(parts["score"], (1 - parts["trust"]) * parts["unsupervised"])  # near a dull one: lower
    interesting = features[:, 0] > 1.0
    ranker = InterestRanker().fit(features[:60], interesting[:60])
    assert list(ranker.coefficients(["a", "b", "c"]))[0] == "a"
    assert ranker.interest(features)[interesting].min() > ranker.interest(features)[features[:, 0] < 0].max()


def test_simulated_user_on_real_results(cli, db_url, db_engine, tmp_path):
    out = tmp_path / "active.csv"
    result = cli("evaluate", "active", "--db", db_url, *[a for r in RARE for a in ("--rare", r)],
                 "--rounds", 4, "--per-round", 5, "--output", out)
    assert result.exit_code == 0, result.output
    table = query_results(db_engine)
    rare = rare_mask(table, RARE)
    assert f"{rare.sum()} rare of {len(table)} sources" in result.output and "4 rounds of 5 viewed" in result.output
    curve = Table.read(out, format="ascii.ecsv")  # our CSV: comma-separated rows under an ECSV header
    assert curve.colnames == ["viewed", "found_active", "found_unsupervised"]
    assert list(curve["viewed"]) == list(range(1, 21))
    by_score = np.lexsort((np.asarray(table["cutout_id"]), -np.asarray(table["anomaly_score"])))
    assert list(curve["found_unsupervised"]) == np.cumsum(rare[by_score][:20]).tolist()
    assert list(curve["found_active"][:5]) == list(curve["found_unsupervised"][:5])  # round 1: same list
    assert np.all(np.diff(curve["found_active"]) >= 0) and curve["found_active"][-1] <= rare.sum()
    with db_engine.connect() as connection:  # a simulation writes nothing
        assert connection.execute(select(func.count()).select_from(SourceLabelRow)).scalar_one() == 0
        assert connection.execute(select(func.count()).select_from(LabelRankingRow)).scalar_one() == 0


def test_simulation_views_each_source_once_and_learns():
    """Interest that a linear model can see and the unsupervised score cannot: found far sooner."""
    rng = np.random.default_rng(1)
    features = rng.normal(size=(600, 4))
    rare = features[:, 1] + features[:, 2] > 2.0
    unsupervised = rng.random(600) + 0.1 * rare
    run = simulate_user(features, unsupervised, rare, rounds=10, per_round=10)
    assert len(set(run.viewed_active.tolist())) == 100
    assert run.found_active[49] >= 1.5 * run.found_unsupervised[49]
    assert list(run.at((20, 50, 100))["viewed"]) == [20, 50, 100]
    assert list(run.at((20, 500))["viewed"]) == [20, 100]
