"""Batches under harder faults, on real worker processes: every batch ends, every outcome is recorded.

- PostgreSQL (a server of the test's own) stopped for longer than the workers' retry budget;
- a poison cutout (a small .fits.gz that expands to a large image) whose processing is killed by a
  memory watchdog, as a container's OOM killer would, and the same refused by ``--max-memory``;
- a read that outlasts the soft time limit.
"""

from __future__ import annotations

import re
import time

import pytest
from sqlalchemy import func, select

from survey_classifier.cutout import CutoutSource
from survey_classifier.db import make_engine, upgrade
from survey_classifier.db.models import CutoutRow, ErrorRow, MeasurementRow, RunBatchRow
from survey_classifier.distributed import submit_run, wait_for_run
from survey_classifier.stages.registry import load_stage
from survey_classifier.workers.app import use_broker

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

QUICK = {"SURVEY_CLASSIFIER_WARM": "0"}


def stored_once(engine, stage: str) -> tuple[int, int, int]:
    """(result rows, distinct cutouts with a result, cutout rows) of ``stage``."""
    with engine.connect() as connection:
        rows, distinct = connection.execute(
            select(func.count(), func.count(MeasurementRow.cutout_id.distinct())).where(MeasurementRow.stage == stage)
        ).one()
        cutouts = connection.execute(select(func.count()).select_from(CutoutRow)).scalar_one()
    return rows, distinct, cutouts


def errors_of(engine) -> list[tuple[str, str, str]]:
    with engine.connect() as connection:
        return [
            (path, error_type, message)
            for path, error_type, message in connection.execute(
                select(CutoutRow.path, ErrorRow.error_type, ErrorRow.message).join(
                    CutoutRow, CutoutRow.id == ErrorRow.cutout_id
                )
            )
        ]


def wait_for(condition, timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout_s:
            pytest.fail(f"{what}: not after {timeout_s} s")
        time.sleep(0.1)
    return time.monotonic() - start


def test_postgres_down_longer_than_the_retry_budget(own_postgres, broker_url, workers, mirabest_files, slow_plugin):
    """Batches that cannot be recorded go back to the queue, none is acked unrecorded; the run completes."""
    url = own_postgres.url
    upgrade(url)
    engine = make_engine(url)
    use_broker(broker_url)
    budget = {"SURVEY_CLASSIFIER_DB_RETRIES": "2", "SURVEY_CLASSIFIER_RETRY_BACKOFF_MAX": "1"}
    worker = workers("outlasting", url, broker_url, env={**QUICK, **budget}, concurrency=2)
    worker.wait_ready()
    sources = [CutoutSource(str(p)) for p in mirabest_files[:120]]
    run_id, n_batches = submit_run(engine, sources, [load_stage("slow_measure", delay_s=0.02)], batch_size=10)

    def done() -> int:
        with engine.connect() as connection:
            return connection.execute(
                select(func.count()).where(RunBatchRow.run_id == run_id, RunBatchRow.status == "done")
            ).scalar_one()

    wait_for(lambda: done() >= 2, 60, "two batches stored before the outage")
    own_postgres.stop()
    engine.dispose()
    outage_start = time.monotonic()
    given_back = re.compile(r"unreachable after 2 retries .* goes back to the queue")
    wait_for(lambda: len(given_back.findall(worker.log())) >= 3, 40, "messages given back during the outage")
    time.sleep(max(0.0, 6.0 - (time.monotonic() - outage_start)))  # 2 retries take at most 2 s: outlast them
    outage_s = time.monotonic() - outage_start
    own_postgres.start()
    recovery_s = wait_for(lambda: done() == n_batches, 60, "every batch stored after the outage")
    status = wait_for_run(engine, run_id, timeout_s=30)
    assert status.status == "finished" and status.batches == {"done": n_batches}, status
    assert stored_once(engine, "slow_measure") == (120, 120, 120)
    assert errors_of(engine) == []
    assert worker.alive
    print(f"outage {outage_s:.1f} s; all {n_batches} batches stored {recovery_s:.1f} s after PostgreSQL came back")
    engine.dispose()
