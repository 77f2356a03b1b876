"""A label filter searches every classification stage unless one is named, and never matches nothing silently."""

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from helpers.plugins import install_example_plugin
from sqlalchemy import func, select

from survey_classifier.api import create_app
from survey_classifier.cli import main
from survey_classifier.db import make_engine
from survey_classifier.db.models import ClassificationRow
from survey_classifier.errors import SurveyClassifierError
from survey_classifier.query import query_results


@pytest.fixture
def two_classifiers(tmp_path, monkeypatch, mirabest_files):
    """A database where cnn says FRI/FRII and the example plugin's compactness says compact/extended."""
    install_example_plugin(tmp_path / "site", monkeypatch)
    url = f"sqlite:///{tmp_path / 'r.db'}"
    done = CliRunner().invoke(main, ["classify", *map(str, mirabest_files[::100]), "--stages",
                                     "measure,cnn,compactness", "--db", url, "--quiet"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    return url


def count(url, stage, label):
    engine = make_engine(url)
    t = ClassificationRow.__table__
    with engine.connect() as connection:
        n = connection.execute(select(func.count()).where(t.c.stage == stage, t.c.label == label)).scalar_one()
    engine.dispose()
    return n


def test_a_label_of_any_stage_is_found_without_naming_it(two_classifiers):
    url = two_classifiers
    engine = make_engine(url)
    for stage, label in (("compactness", "compact"), ("compactness", "extended"), ("cnn", "FRII"), ("cnn", "FRI")):
        expected = count(url, stage, label)
        table = query_results(engine, label=label)
        assert len(table) == expected, label
        assert set(table[f"{stage}_label"]) <= {label}
    assert count(url, "compactness", "compact") + count(url, "compactness", "extended") == 11
    high = query_results(engine, label="compact", min_probability=0.9)
    assert all(p >= 0.9 for p in high["compactness_probability"])
    engine.dispose()


def test_a_label_the_named_stage_never_gave_names_the_stage_that_did(two_classifiers):
    engine = make_engine(two_classifiers)
    with pytest.raises(SurveyClassifierError) as caught:
        query_results(engine, stage="cnn", label="compact")
    assert "stage 'cnn' has no results labelled 'compact' (its labels: FRI, FRII)" in str(caught.value)
    assert "'compact' is a label of stage compactness" in str(caught.value)
    with pytest.raises(SurveyClassifierError, match=r"no classification stage has results labelled 'Bent'; "
                                                    r"labels stored: cnn: FRI, FRII; compactness: compact, extended"):
        query_results(engine, label="Bent")
    engine.dispose()

    out = CliRunner().invoke(main, ["query", "--db", two_classifiers, "--label", "Bent"])
    assert out.exit_code == 1 and out.output.count("\n") == 1 and "labels stored: cnn: FRI, FRII" in out.output
    out = CliRunner().invoke(main, ["query", "--db", two_classifiers, "--label", "compact"])
    assert out.exit_code == 0 and f"{count(two_classifiers, 'compactness', 'compact')} rows" in out.output


def test_the_service_answers_the_same(two_classifiers):
    with TestClient(create_app(two_classifiers)) as client:
        found = client.get("/results", params={"label": "extended"})
        assert found.status_code == 200
        assert len(found.json()["rows"]) == count(two_classifiers, "compactness", "extended")
        refused = client.get("/results", params={"label": "Bent"})
        assert refused.status_code == 400
        assert "labels stored: cnn: FRI, FRII; compactness: compact, extended" in refused.json()["detail"]
