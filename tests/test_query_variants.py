"""The stage variants a query shows follow every write of results, though they are read again only after one.

:func:`survey_classifier.query.find_variants` keeps what it read of the
result tables until their mark (the newest row of each) moves, and reads
again, for a stage with several variants, when each was last written.
These tests write results between queries, as a run does while the
service answers, and check each query shows what a fresh read shows.
"""

import pytest
from sqlalchemy import select

from survey_classifier.cutout import CutoutSource
from survey_classifier.db import make_engine, upgrade
from survey_classifier.db.models import CutoutRow
from survey_classifier.db.store import store_results
from survey_classifier.pipeline import run_pipeline
from survey_classifier.query import _stored_variants, _stored_variants_now, find_variants, query_results
from survey_classifier.stages.registry import load_stage


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def measured(request, tmp_path, mirabest_files):
    """Six real cutouts measured, in SQLite or PostgreSQL; (engine, run id)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'variants.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    upgrade(url)
    engine = make_engine(url)
    summary = run_pipeline([CutoutSource(str(p)) for p in mirabest_files[::50][:6]], [load_stage("measure")], engine)
    assert summary.n_processed == 6
    yield engine, summary.run_id
    engine.dispose()


def _score(engine, version: str, run_id: int, score: float, *, first: int | None = None) -> None:
    """Store anomaly scores of stage version ``version`` for every cutout (the ``first`` ones only if given)."""
    with engine.begin() as connection:
        ids = connection.execute(select(CutoutRow.id).order_by(CutoutRow.id)).scalars().all()[:first]
        store_results(connection, kind="anomaly", stage="anomaly", stage_version=version, model_ref="",
                      run_id=run_id, results=[(i, {"score": score, "components": {"size": score}}) for i in ids])


def _shown(engine) -> tuple[set, set]:
    """(stage versions, scores) of the anomaly columns a query shows now."""
    table = query_results(engine)
    present = ~table["anomaly_score"].mask if hasattr(table["anomaly_score"], "mask") else slice(None)
    return set(table["anomaly_stage_version"][present].tolist()), set(table["anomaly_score"][present].tolist())


def _fresh(engine) -> dict:
    with engine.connect() as connection:
        return {stage: (v.version, v.model) for stage, v in find_variants(connection).items()}


def test_a_query_shows_each_new_write_of_results(measured):
    engine, run_id = measured
    with engine.connect() as connection:
        assert set(find_variants(connection)) == {"measure"}
        read = _stored_variants_now(connection)
        assert _stored_variants_now(connection) is read  # nothing written since: the same read serves

    _score(engine, "1", run_id, 1.0, first=3)  # a new stage appears
    assert "anomaly_score" in query_results(engine).colnames
    assert _shown(engine) == ({"1"}, {1.0})

    _score(engine, "2", run_id, 2.0)  # a new version: the newest is shown
    assert _shown(engine) == ({"2"}, {2.0})

    # version 1 written again in place (same rows, no new id): it is the newest written again
    _score(engine, "1", run_id, 3.0, first=3)
    assert _shown(engine) == ({"1"}, {3.0})
    assert _fresh(engine)["anomaly"] == ("1", "")

    with engine.connect() as connection:
        assert find_variants(connection, {"anomaly": "2"})["anomaly"].version == "2"  # a pick still picks
        cached = _stored_variants_now(connection)
        assert cached == _stored_variants(connection)  # the kept read is what a fresh read gives


def test_a_second_engine_sees_what_the_first_wrote(measured):
    """Two server processes: each keeps its own read and each sees the other's writes at its next query."""
    engine, run_id = measured
    other = make_engine(engine.url.render_as_string(hide_password=False))
    try:
        assert _fresh(other) == _fresh(engine)
        _score(engine, "1", run_id, 1.0)
        assert _fresh(other)["anomaly"] == ("1", "")
        _score(other, "2", run_id, 2.0)
        assert _fresh(engine)["anomaly"] == ("2", "")
        assert _shown(engine) == _shown(other) == ({"2"}, {2.0})
    finally:
        other.dispose()
