"""Runs whose process is SIGKILLed: `status` says interrupted, and the same command resumes them."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from survey_classifier.db import make_engine, upgrade
from survey_classifier.db.models import ErrorRow, MeasurementRow, RunBatchRow, RunRow

CLI = str(Path(sys.executable).parent / "survey-classifier")


def cli(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=60)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def batches_done(engine) -> int:
    try:
        with engine.connect() as connection:
            return connection.execute(select(func.count()).where(RunBatchRow.status == "done")).scalar_one()
    except OperationalError:  # the database is not created yet
        return 0


@pytest.mark.slow
def test_classify_killed_is_interrupted_then_resumed(sqlite_url, mirabest_files, slow_plugin):
    files = [str(p) for p in mirabest_files[:60]]
    args = ["classify", *files, "--db", sqlite_url, "--stages", "slow_measure", "--param",
            "slow_measure.delay_s=0.04", "--batch-size", "6", "--quiet"]
    process = subprocess.Popen([CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    engine = make_engine(sqlite_url)
    deadline = time.monotonic() + 40
    while batches_done(engine) < 3 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    done_at_kill = batches_done(engine)
    assert 3 <= done_at_kill < 10

    shown = cli("status", "1", "--db", sqlite_url).stdout
    assert "run 1 [interrupted]" in shown, shown
    assert f"its process {process.pid}@" in shown and f"with {10 - done_at_kill} batches not stored" in shown
    assert "resume it with `survey-classifier classify" in shown and "--stages slow_measure" in shown
    assert shown.count("[queued] registered") == 10 - done_at_kill
    assert " interrupted " in cli("runs", "list", "--db", sqlite_url).stdout

    resumed = cli(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "run 1 (an interrupted run, resumed): 60 cutouts, 60 processed, 0 failed" in resumed.stdout
    assert "run 1 [finished]: 60 cutouts, 60 done (60 processed, 0 failed)" in cli("status", "1", "--db",
                                                                                  sqlite_url).stdout
    with engine.connect() as connection:
        rows, distinct = connection.execute(select(func.count(), func.count(MeasurementRow.cutout_id.distinct()))).one()
        errors = connection.execute(select(func.count()).select_from(ErrorRow)).scalar_one()
        runs = connection.execute(select(RunRow.id, RunRow.n_processed)).all()
        attempts = set(connection.execute(select(RunBatchRow.attempts)).scalars())
    engine.dispose()
    assert (rows, distinct, errors) == (60, 60, 0)
    assert runs == [(1, 60)]
    assert attempts == {1}, "a batch stored before the kill was processed again"


def kill_submitter_while_queueing(db_url, broker_url, files, client) -> tuple[list[str], int]:
    """Start `submit --no-wait` of one-cutout batches, freeze it once some messages are sent, SIGKILL it;
    returns its arguments and process id."""
    args = ["submit", *map(str, files), "--db", db_url, "--broker", broker_url, "--stages", "measure",
            "--batch-size", "1", "--no-wait"]
    process = subprocess.Popen([CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    first = process.stdout.readline()
    assert first.startswith(f"run 1: registering {len(files)} cutouts"), first
    deadline = time.monotonic() + 30
    while client.llen("cpu") == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    os.kill(process.pid, signal.SIGSTOP)  # frozen mid-queue, then killed
    sent_before = client.llen("cpu")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stdout.close()
    assert 0 < sent_before < len(files)
    return args, process.pid


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
def test_sweeper_sends_what_a_dead_submitter_left_unsent(postgres_url, broker_url, mirabest_files, workers):
    """Nobody submits again: the workers' sweeper sends the missing batches and the run finishes by itself."""
    from survey_classifier.distributed import wait_for_run

    upgrade(postgres_url)
    client = redis.Redis.from_url(broker_url)
    kill_submitter_while_queueing(postgres_url, broker_url, mirabest_files[:150], client)
    assert "run 1 [interrupted]" in cli("status", "1", "--db", postgres_url).stdout
    worker = workers("adopter", postgres_url, broker_url,
                     env={"SURVEY_CLASSIFIER_WARM": "0", "SURVEY_CLASSIFIER_STALL_AFTER": "2"})
    worker.wait_ready()
    engine = make_engine(postgres_url)
    status = wait_for_run(engine, 1, timeout_s=90, poll_s=0.2)
    with engine.connect() as connection:
        rows, distinct = connection.execute(select(func.count(), func.count(MeasurementRow.cutout_id.distinct()))).one()
    engine.dispose()
    assert status.status == "finished" and status.batches == {"done": 150}, status
    assert (rows, distinct) == (150, 150)
    assert "had no message in the broker (lost)" in worker.log()
    assert "run 1 [finished]" in cli("status", "1", "--db", postgres_url).stdout


def _queued_batches(client) -> Counter:
    return Counter(
        json.loads(base64.b64decode(json.loads(raw)["body"]))[0][1] for raw in client.lrange("cpu", 0, -1)
    )


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
def test_submitter_killed_while_queueing_is_interrupted_then_resumed(postgres_url, broker_url, mirabest_files):
    upgrade(postgres_url)
    client = redis.Redis.from_url(broker_url)
    args, killed = kill_submitter_while_queueing(postgres_url, broker_url, mirabest_files[:400], client)
    shown = cli("status", "1", "--db", postgres_url).stdout
    assert "run 1 [interrupted]" in shown and f"its submitter {killed}@" in shown, shown
    assert "resume it now with `survey-classifier submit" in shown

    again = cli(*args)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("run 1: resuming it"), again.stdout
    engine = make_engine(postgres_url)
    with engine.connect() as connection:
        batch_ids = set(connection.execute(select(RunBatchRow.id)).scalars())
        n_runs = connection.execute(select(func.count()).select_from(RunRow)).scalar_one()
    engine.dispose()
    queued = _queued_batches(client)
    assert set(queued) == batch_ids and set(queued.values()) == {1}, "every batch once in the queue"
    assert n_runs == 1
    assert "run 1 [waiting for workers]" in cli("status", "1", "--db", postgres_url).stdout


@pytest.mark.postgres
@pytest.mark.redis
def test_status_shows_a_stalled_run_its_batches_and_what_resumes_it(postgres_url, broker_url, mirabest_files):
    """No worker runs: after the stall time the run is shown stalled, with each batch, its age and failure reason."""
    from survey_classifier.cutout import CutoutSource
    from survey_classifier.distributed import submit_run
    from survey_classifier.runs import mark_batch_failed
    from survey_classifier.stages.registry import load_stage
    from survey_classifier.workers.app import use_broker

    upgrade(postgres_url)
    use_broker(broker_url)
    engine = make_engine(postgres_url)
    run_id, _ = submit_run(engine, [CutoutSource(str(p)) for p in mirabest_files[:9]], [load_stage("measure")],
                           batch_size=3)
    with engine.connect() as connection:
        first = connection.execute(select(func.min(RunBatchRow.id))).scalar_one()
    status = ["status", str(run_id), "--db", postgres_url]
    assert f"run {run_id} [waiting for workers]" in cli(*status).stdout
    mark_batch_failed(engine, first, "TimeoutError: the database did not answer")
    engine.dispose()
    time.sleep(1.0)
    shown = cli(*status, "--stalled-after", "0.5").stdout
    assert f"run {run_id} [stalled]: 9 cutouts, 0 done" in shown, shown
    assert "no worker is running on this database and broker" in shown
    assert f"`survey-classifier retry-failed {run_id} --stalled-after 0 --db" in shown
    assert "batch 0 [failed] given up" in shown and "reason: TimeoutError: the database did not answer" in shown
    assert "batch 1 [queued] queued " in shown and "batch 2 [queued] queued " in shown
    engine = make_engine(postgres_url)
    for batch_id in (first + 1, first + 2):
        mark_batch_failed(engine, batch_id, "a reason")
    engine.dispose()
    shown = cli(*status).stdout
    assert f"run {run_id} [incomplete]: 9 cutouts, 0 done" in shown, shown
    assert f"3 batches were given up (their reasons below); send them again with `survey-classifier retry-failed " \
           f"{run_id} --db" in shown
