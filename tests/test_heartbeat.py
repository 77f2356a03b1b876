"""A run's owner and heartbeat: when a run counts as interrupted, and what resuming it takes."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import timedelta

from sqlalchemy import select

from survey_classifier.cutout import CutoutSource
from survey_classifier.db.models import RunRow, utcnow
from survey_classifier.heartbeat import owner_dead, owner_tag
from survey_classifier.pipeline import run_pipeline
from survey_classifier.runs import start_run, update_run
from survey_classifier.stages.registry import load_stage


def a_dead_pid() -> int:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(finished.stdout)


def test_an_owner_on_this_host_is_looked_up_elsewhere_judged_by_its_heartbeat(monkeypatch):
    monkeypatch.setenv("SURVEY_CLASSIFIER_HEARTBEAT", "10")
    now = utcnow()
    long_ago = now - timedelta(hours=1)
    assert not owner_dead(owner_tag(), long_ago, now), "this process is alive, however old its heartbeat"
    assert owner_dead(f"{a_dead_pid()}@{socket.gethostname()}", now, now), "no such process: dead at once"
    elsewhere = "4242@a-host-that-is-not-this-one"
    assert not owner_dead(elsewhere, now - timedelta(seconds=25), now)
    assert owner_dead(elsewhere, now - timedelta(seconds=31), now), "silent for 3 heartbeats"
    assert not owner_dead(elsewhere, None, now), "no heartbeat (a queued Celery run): nobody to lose"


def test_a_run_that_died_before_registering_its_batches_is_not_resumed(engine, mirabest_files):
    """Its cutouts were never recorded: running the same inputs again starts afresh and marks it failed."""
    sources = [CutoutSource(str(p)) for p in mirabest_files[:5]]
    stages = [load_stage("measure")]
    config = {"inputs": ["five files"]}
    orphan = start_run(engine, stages, {"batch_size": 64, **config}, len(sources), "in-process")
    update_run(engine, orphan, owner=f"{a_dead_pid()}@{socket.gethostname()}")
    summary = run_pipeline(sources, stages, engine, config=config)
    assert summary.run_id != orphan and not summary.resumed and summary.n_processed == 5
    with engine.connect() as connection:
        statuses = dict(connection.execute(select(RunRow.id, RunRow.status)).all())
    assert statuses == {orphan: "failed", summary.run_id: "finished"}
