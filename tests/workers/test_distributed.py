"""Bulk processing on real Celery workers, Redis and PostgreSQL; faults included."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select

from survey_classifier.cutout import CutoutSource
from survey_classifier.db.models import CutoutRow, ErrorRow, MeasurementRow, RunBatchRow
from survey_classifier.distributed import run_status, submit_run, wait_for_run
from survey_classifier.stages.registry import load_stage
from survey_classifier.workers.app import use_broker

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


def exactly_once(engine, stage: str, n: int) -> None:
    with engine.connect() as connection:
        rows, distinct = connection.execute(
            select(func.count(), func.count(MeasurementRow.cutout_id.distinct())).where(MeasurementRow.stage == stage)
        ).one()
        errors = connection.execute(select(func.count()).select_from(ErrorRow)).scalar_one()
        cutouts = connection.execute(select(func.count()).select_from(CutoutRow)).scalar_one()
    assert (rows, distinct, errors, cutouts) == (n, n, 0, n)


def batches_done(engine, run_id: int) -> int:
    with engine.connect() as connection:
        return connection.execute(
            select(func.count()).where(RunBatchRow.run_id == run_id, RunBatchRow.status == "done")
        ).scalar_one()


def wait_for_batches(engine, run_id: int, n: int, timeout_s: float = 120) -> None:
    """Block until ``n`` batches of the run are done: the fault comes mid-run."""
    deadline = time.monotonic() + timeout_s
    while batches_done(engine, run_id) < n and time.monotonic() < deadline:
        time.sleep(0.05)


def test_all_mirabest_cutouts_on_two_workers(pg, broker_url, workers, mirabest_files):
    url, engine = pg
    use_broker(broker_url)
    pool = [workers(f"w{i}", url, broker_url) for i in (1, 2)]
    for worker in pool:
        worker.wait_ready()
    sources = [CutoutSource(str(p)) for p in mirabest_files]
    run_id, n_batches = submit_run(engine, sources, [load_stage("measure")], batch_size=64)
    status = wait_for_run(engine, run_id, timeout_s=600)
    assert status.status == "finished" and status.n_done == len(sources) == 1027 and status.n_failed == 0
    assert status.batches == {"done": n_batches}
    exactly_once(engine, "measure", 1027)
    with engine.connect() as connection:
        hosts = set(connection.execute(select(RunBatchRow.worker).where(RunBatchRow.run_id == run_id)).scalars())
    assert len(hosts) == 2, f"both workers should have taken batches, got {hosts}"


def test_worker_killed_mid_batch_loses_and_duplicates_nothing(pg, broker_url, workers, mirabest_files, slow_plugin):
    url, engine = pg
    use_broker(broker_url)
    first = workers("doomed", url, broker_url)
    first.wait_ready()
    sources = [CutoutSource(str(p)) for p in mirabest_files[:120]]
    stage = load_stage("slow_measure", delay_s=0.05)
    run_id, n_batches = submit_run(engine, sources, [stage], batch_size=20)
    wait_for_batches(engine, run_id, 2)
    time.sleep(0.3)  # well inside the next one-second batch
    first.kill()
    done_at_kill = batches_done(engine, run_id)
    assert done_at_kill < n_batches, "the worker finished everything before it could be killed"
    second = workers("rescuer", url, broker_url)
    second.wait_ready()
    status = wait_for_run(engine, run_id, timeout_s=180)
    assert status.batches == {"done": n_batches}, status
    exactly_once(engine, "slow_measure", 120)


def test_redis_restart_mid_run(pg, own_redis, workers, mirabest_files, slow_plugin):
    url, engine = pg
    use_broker(own_redis.url)
    pool = [workers(f"r{i}", url, own_redis.url) for i in (1, 2)]
    for worker in pool:
        worker.wait_ready()
    sources = [CutoutSource(str(p)) for p in mirabest_files[:200]]
    run_id, n_batches = submit_run(engine, sources, [load_stage("slow_measure", delay_s=0.02)], batch_size=10)
    wait_for_batches(engine, run_id, 3)
    own_redis.stop()
    time.sleep(2)
    own_redis.start()
    status = wait_for_run(engine, run_id, timeout_s=240)
    assert status.batches == {"done": n_batches}, status
    assert all(worker.alive for worker in pool)
    exactly_once(engine, "slow_measure", 200)


def test_postgres_unreachable_for_a_few_seconds(pg, broker_url, workers, pg_proxy, mirabest_files, slow_plugin):
    url, engine = pg
    use_broker(broker_url)
    from sqlalchemy.engine import make_url

    proxied = make_url(url).set(port=pg_proxy.port).render_as_string(hide_password=False)
    worker = workers("patient", proxied, broker_url)
    worker.wait_ready()
    sources = [CutoutSource(str(p)) for p in mirabest_files[:150]]
    run_id, n_batches = submit_run(engine, sources, [load_stage("slow_measure", delay_s=0.02)], batch_size=10)
    wait_for_batches(engine, run_id, 2)
    outage = threading.Thread(target=pg_proxy.outage, args=(5.0,))
    outage.start()
    outage.join()
    status = wait_for_run(engine, run_id, timeout_s=240)
    assert status.batches == {"done": n_batches}, status
    exactly_once(engine, "slow_measure", 150)
    assert "Retry in" in worker.log() or "OperationalError" in worker.log()


def test_bad_messages_rejected_without_taking_the_worker_down(pg, broker_url, workers, mirabest_files):
    url, engine = pg
    use_broker(broker_url)
    worker = workers("sturdy", url, broker_url)
    worker.wait_ready()
    from kombu import Connection, Exchange, Producer, Queue

    with Connection(broker_url) as connection:
        producer = Producer(connection)
        queue = Queue("cpu", Exchange("cpu"), routing_key="cpu")
        producer.publish(b"{this is not json", routing_key="cpu", content_type="application/json",
                         content_encoding="utf-8", declare=[queue])
        producer.publish(b"\x80\x04K\x01.", routing_key="cpu", content_type="application/x-python-serialize",
                         content_encoding="binary", declare=[queue])
        producer.publish({"args": [1, 2], "kwargs": {}}, routing_key="cpu", serializer="json", declare=[queue],
                         headers={"task": "no.such.task", "id": "bad-task-1", "lang": "py", "argsrepr": "",
                                  "kwargsrepr": ""})
    sources = [CutoutSource(str(p)) for p in mirabest_files[:30]]
    run_id, n_batches = submit_run(engine, sources, [load_stage("measure")], batch_size=10)
    status = wait_for_run(engine, run_id, timeout_s=120)
    assert status.batches == {"done": n_batches}
    assert worker.alive
    log = worker.log()
    assert "no.such.task" in log
    assert "pickle" in log.lower() or "untrusted" in log.lower() or "serialize" in log.lower()
    assert "decode" in log.lower() or "json" in log.lower()
    assert run_status(engine, run_id).n_failed == 0
