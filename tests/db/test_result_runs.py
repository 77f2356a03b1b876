"""Provenance of reruns: after a repeated or concurrent run of the same cutouts, `query --run 1` still answers
what run 1 wrote or confirmed (SQLite and PostgreSQL, real `classify` processes for the concurrent case)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from survey_classifier.cli import main
from survey_classifier.cutout import CutoutSource
from survey_classifier.db import downgrade, make_engine, upgrade
from survey_classifier.db.models import MeasurementRow, ResultRunRow, RunRow
from survey_classifier.pipeline import run_pipeline
from survey_classifier.query import query_results
from survey_classifier.stages.registry import load_stage

COMMAND = str(Path(sys.executable).with_name("survey-classifier"))
N = 6


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'reruns.db'}"
    return request.getfixturevalue("postgres_url")


def _run_ids(url: str) -> list[int]:
    engine = make_engine(url)
    with engine.connect() as connection:
        ids = list(connection.execute(select(RunRow.id).order_by(RunRow.id)).scalars())
    engine.dispose()
    return ids


def _queried(url: str, run_id: int) -> list[str]:
    """The cutouts `query --run RUN` prints (the command itself), by file name."""
    done = CliRunner().invoke(main, ["query", "--db", url, "--run", str(run_id), "--columns", "path", "--format",
                                     "csv", "--limit", "1000"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    lines = [line.strip() for line in done.output.splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "path"
    return sorted(Path(line).name for line in lines[1:])


def test_a_repeated_run_leaves_the_first_its_rows(url, mirabest_files):
    upgrade(url)
    engine = make_engine(url)
    files = mirabest_files[:N]
    first = run_pipeline([CutoutSource(str(p)) for p in files], [load_stage("measure")], engine)
    second = run_pipeline([CutoutSource(str(p)) for p in files[2:]], [load_stage("measure")], engine)
    with engine.connect() as connection:  # the rows were written again in place: their last writer is run 2
        last = dict(connection.execute(
            select(MeasurementRow.run_id, func.count()).group_by(MeasurementRow.run_id)).all())
    assert last == {first.run_id: 2, second.run_id: N - 2}
    assert len(query_results(engine, run_id=first.run_id)) == N
    assert len(query_results(engine, run_id=second.run_id)) == N - 2
    engine.dispose()
    assert _queried(url, first.run_id) == sorted(p.name for p in files)
    assert _queried(url, second.run_id) == sorted(p.name for p in files[2:])


@pytest.mark.slow
def test_concurrent_runs_each_keep_what_they_wrote(postgres_url, mirabest_files):
    """Two `classify` processes of the same files at once, on PostgreSQL (where runs of a survey are concurrent)."""
    url = postgres_url
    upgrade(url)
    files = [str(p) for p in mirabest_files[:N]]
    runs = [subprocess.Popen([COMMAND, "classify", *files, "--db", url, "--stages", "measure", "--quiet"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ)
            for _ in range(2)]
    for running in runs:
        _, err = running.communicate(timeout=300)
        assert running.returncode == 0, err[-2000:]
    run_ids = _run_ids(url)
    assert len(run_ids) == 2
    for run_id in run_ids:
        assert _queried(url, run_id) == sorted(Path(p).name for p in files)


def test_the_upgrade_fills_the_provenance_of_existing_rows(tmp_path, mirabest_files):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url)
    engine = make_engine(url)
    summary = run_pipeline([CutoutSource(str(p)) for p in mirabest_files[:3]], [load_stage("measure")], engine)
    engine.dispose()
    downgrade(url, "0008")  # a database from before the table
    upgrade(url)
    engine = make_engine(url)
    with engine.connect() as connection:
        linked = connection.execute(select(func.count()).select_from(ResultRunRow)
                                    .where(ResultRunRow.run_id == summary.run_id)).scalar_one()
    assert linked == 3
    assert len(query_results(engine, run_id=summary.run_id)) == 3
    engine.dispose()
