"""classify runs the registry's default for each stage, fetched and checked against its sha256."""

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from survey_classifier.cli import main
from survey_classifier.db import make_engine, upgrade
from survey_classifier.db.models import ArtefactRow, RunRow
from survey_classifier.registry import register_model
from survey_classifier.stages.anomaly import ANOMALY_MIRABEST_4

pytestmark = pytest.mark.filterwarnings("ignore::survey_classifier.errors.SurveyClassifierWarning")


def test_registry_default_is_used_and_a_changed_artefact_refused(tmp_path, monkeypatch, mirabest_files, sqlite_url):
    monkeypatch.setenv("SURVEY_CLASSIFIER_CACHE", str(tmp_path / "cache"))
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    row = register_model(engine, ANOMALY_MIRABEST_4.path(), stage="anomaly", name="anomaly-mine", version="1",
                         make_default=True)
    files = [str(p) for p in mirabest_files[:6]]
    result = CliRunner().invoke(main, ["classify", *files, "--db", sqlite_url, "--quiet"])
    assert result.exit_code == 0, result.output
    with engine.connect() as connection:
        stages = connection.execute(select(RunRow.stages)).scalar_one()
    anomaly = next(s for s in stages if s["name"] == "anomaly")
    assert anomaly["params"]["scorer"] is None  # the default, resolved by the registry:
    assert anomaly["model"] == "anomaly-mine:1" and anomaly["model_sha256"] == row["sha256"]
    assert anomaly["model_artefact"]["store"] == "database"

    with engine.begin() as connection:  # the stored bytes change behind the registry's back
        connection.execute(ArtefactRow.__table__.update().values(content=b"\x00\x01\x02"))
    for cached in (tmp_path / "cache").rglob("scorer.npz"):
        cached.unlink()
    refused = CliRunner().invoke(main, ["classify", *files, "--db", sqlite_url, "--quiet"])
    assert refused.exit_code == 1 and "sha256" in refused.output and "refused" in refused.output
    assert "Traceback" not in refused.output
    engine.dispose()
