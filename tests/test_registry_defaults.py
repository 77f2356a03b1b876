"""classify runs the model registry's default for each stage, sha256-checked."""

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from survey_classifier.cli import main
from survey_classifier.db import make_engine, upgrade
from survey_classifier.db.models import RunRow
from survey_classifier.registry import register_model
from survey_classifier.stages.anomaly import DEFAULT_SCORER

pytestmark = pytest.mark.filterwarnings("ignore::survey_classifier.errors.SurveyClassifierWarning")


def test_registry_default_is_used_and_a_changed_file_refused(tmp_path, monkeypatch, mirabest_files, sqlite_url):
    monkeypatch.setenv("SURVEY_CLASSIFIER_HOME", str(tmp_path / "home"))
    upgrade(sqlite_url)
    engine = make_engine(sqlite_url)
    row = register_model(engine, DEFAULT_SCORER, stage="anomaly", name="anomaly-mirabest", version="1")
    assert row["is_default"]
    files = [str(p) for p in mirabest_files[:6]]
    result = CliRunner().invoke(main, ["classify", *files, "--db", sqlite_url, "--quiet"])
    assert result.exit_code == 0, result.output
    with engine.connect() as connection:
        stages = connection.execute(select(RunRow.stages)).scalar_one()
    anomaly = next(s for s in stages if s["name"] == "anomaly")
    assert anomaly["params"]["scorer"] == row["artefact_path"]
    assert anomaly["model"] == "anomaly-mirabest:3"

    with open(row["artefact_path"], "r+b") as handle:  # corrupt the stored copy
        handle.seek(100)
        handle.write(b"\x00\x01\x02")
    refused = CliRunner().invoke(main, ["classify", *files, "--db", sqlite_url, "--quiet"])
    assert refused.exit_code != 0 and "sha256" in refused.output and "refused" in refused.output
    engine.dispose()
