"""Stalled work is found and sent again by the workers' sweeper: real workers, a Redis of the test's own."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.services import PrivateRedis
from sqlalchemy import func, select, text

from survey_classifier.cutout import CutoutSource
from survey_classifier.db.models import ErrorRow, MeasurementRow, RunBatchRow
from survey_classifier.distributed import submit_run, wait_for_run
from survey_classifier.stages.registry import load_stage
from survey_classifier.workers.app import use_broker

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

FAST_START = {"SURVEY_CLASSIFIER_WARM": "0"}


def stored_once(engine, n: int) -> None:
    with engine.connect() as connection:
        rows, distinct = connection.execute(
            select(func.count(), func.count(MeasurementRow.cutout_id.distinct()))).one()
        errors = connection.execute(select(func.count()).select_from(ErrorRow)).scalar_one()
    assert (rows, distinct, errors) == (n, n, 0)


def n_done(engine, run_id: int) -> int:
    with engine.connect() as connection:
        return connection.execute(
            select(func.count()).where(RunBatchRow.run_id == run_id, RunBatchRow.status == "done")).scalar_one()


def test_redis_restarted_without_persistence_mid_run(pg, tmp_path, workers, mirabest_files, slow_plugin):
    """The README's Redis (no AOF) restarts mid-run and forgets every queued message: the workers finish the run."""
    url, engine = pg
    redis_server = PrivateRedis(tmp_path / "redis", persistent=False)
    try:
        use_broker(redis_server.url)
        env = {**FAST_START, "SURVEY_CLASSIFIER_STALL_AFTER": "3"}
        pool = [workers(f"r{i}", url, redis_server.url, env=env) for i in (1, 2)]
        for worker in pool:
            worker.wait_ready()
        sources = [CutoutSource(str(p)) for p in mirabest_files[:200]]
        run_id, n_batches = submit_run(engine, sources, [load_stage("slow_measure", delay_s=0.02)], batch_size=10)
        deadline = time.monotonic() + 30
        while n_done(engine, run_id) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        redis_server.stop()
        time.sleep(1)
        redis_server.start()
        back = time.monotonic()
        done_at_restart = n_done(engine, run_id)
        assert done_at_restart < n_batches - 2
        status = wait_for_run(engine, run_id, timeout_s=45, poll_s=0.2)
        print(f"redis restart without AOF: {n_batches - done_at_restart} batches outstanding, run finished "
              f"{time.monotonic() - back:.1f} s after Redis came back (stall_after 3 s)")
        assert status.status == "finished" and status.batches == {"done": n_batches}, status
        stored_once(engine, 200)
        assert all(worker.alive for worker in pool)
        # the restart lost the queued messages: the sweeper found them missing and sent them again
        assert any("had no message in the broker (lost)" in worker.log() for worker in pool)
    finally:
        redis_server.stop()


def test_whole_worker_killed_mid_batch_is_sent_to_the_other(pg, broker_url, workers, mirabest_files, slow_plugin):
    """Batches (6 s) outlast the stall time (4 s): leases keep live workers' batches; the dead one's comes back."""
    url, engine = pg
    use_broker(broker_url)
    env = {**FAST_START, "SURVEY_CLASSIFIER_STALL_AFTER": "4"}
    doomed, rescuer = workers("doomed", url, broker_url, env=env), workers("rescuer", url, broker_url, env=env)
    doomed.wait_ready()
    rescuer.wait_ready()
    sources = [CutoutSource(str(p)) for p in mirabest_files[:20]]
    run_id, n_batches = submit_run(engine, sources, [load_stage("slow_measure", delay_s=0.6)], batch_size=10)
    time.sleep(3)  # each worker is half-way through its batch
    assert n_done(engine, run_id) == 0
    doomed.kill()
    killed = time.monotonic()
    status = wait_for_run(engine, run_id, timeout_s=45, poll_s=0.1)
    print(f"worker SIGKILLed mid-batch: its batch (6 s) stored by the other worker {time.monotonic() - killed:.1f} s "
          "after the kill (stall_after 4 s)")
    assert status.batches == {"done": n_batches}, status
    stored_once(engine, 20)
    with engine.connect() as connection:
        stored = connection.execute(select(RunBatchRow.worker, RunBatchRow.attempts)).all()
    assert all(worker.startswith("rescuer@") for worker, _ in stored), stored
    assert all(attempts == 1 for _, attempts in stored), f"a live worker's batch was given to another: {stored}"
    shown = subprocess.run([str(Path(sys.executable).parent / "survey-classifier"), "status", str(run_id), "--db", url,
                            "--batches"], capture_output=True, text=True, timeout=60).stdout
    assert f"run {run_id} [finished]: 20 cutouts, 20 done" in shown, shown
    lines = [line for line in shown.splitlines() if line.startswith("  batch ")]
    assert len(lines) == 2 and all("[done] stored" in line and "; stored by rescuer@" in line for line in lines)
    assert sorted(line.split("; ")[1] for line in lines) == ["deliveries 1", "deliveries 2"], lines
    assert rescuer.alive


def test_worker_killed_between_last_store_and_close(pg, tmp_path, workers, mirabest_files, slow_plugin):
    """A worker SIGKILLed after it stored a run's last batch, before it closed the run, its message lost with a
    Redis restarted without persistence: another worker's sweeper closes the run, once, and `status` says so."""
    url, engine = pg
    redis_server = PrivateRedis(tmp_path / "redis", persistent=False)
    locker = engine.connect()
    try:
        use_broker(redis_server.url)
        env = {**FAST_START, "SURVEY_CLASSIFIER_STALL_AFTER": "4"}
        doomed = workers("doomed", url, redis_server.url, env=env)
        doomed.wait_ready()
        sources = [CutoutSource(str(p)) for p in mirabest_files[:10]]
        blocking = locker.begin()
        run_id, n_batches = submit_run(engine, sources, [load_stage("slow_measure", delay_s=0.05)], batch_size=10)
        # the runs table is locked against updates (stores, which only reference it, go on), so the worker's
        # close blocks right after its store of the last batch is committed; SIGKILL it there
        locker.execute(text("LOCK TABLE runs IN SHARE MODE"))
        closing = text("SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'runs'::regclass")
        deadline = time.monotonic() + 60
        with engine.connect() as watcher:
            while watcher.execute(closing).scalar_one() == 0:
                waiting = watcher.execute(text(
                    "SELECT a.pid, pg_blocking_pids(a.pid), wait_event_type, left(query, 300), l.mode "
                    "FROM pg_stat_activity a LEFT JOIN pg_locks l ON l.pid = a.pid AND NOT l.granted "
                    "WHERE datname = current_database()"
                )).all()
                assert time.monotonic() < deadline, f"{waiting}\n{doomed.log()[-1000:]}"
                time.sleep(0.05)
        assert n_done(engine, run_id) == n_batches
        doomed.kill()
        blocking.rollback()
        redis_server.stop()  # the killed worker's message, held unacknowledged, is gone with the restart
        redis_server.start()
        assert redis_server.client().dbsize() == 0
        shown = status_line(url, run_id)
        assert f"run {run_id} [running]" in shown, shown
        rescuer = workers("rescuer", url, redis_server.url, env=env)
        rescuer.wait_ready()
        started = time.monotonic()
        while _run_status(engine, run_id) != "finished":
            assert time.monotonic() - started < 30, rescuer.log()[-3000:]
            time.sleep(0.1)
        closed_s = time.monotonic() - started
        print(f"run left open by a worker killed after its last store: closed by the sweeper {closed_s:.1f} s after "
              "a worker started (stall_after 4 s, sweep every 1 s)")
        assert f"sweeper: run {run_id} had every batch stored but was still running" in rescuer.log()
        with engine.connect() as connection:
            attempts = connection.execute(select(RunBatchRow.attempts).where(RunBatchRow.run_id == run_id)).all()
        assert attempts == [(1,)], "the batch was processed again"
        stored_once(engine, 10)
        shown = status_line(url, run_id)
        assert f"run {run_id} [finished]: 10 cutouts, 10 done" in shown, shown
        from survey_classifier.closing import close_stored_run

        assert close_stored_run(engine, run_id) is False  # once: a second close changes nothing
    finally:
        locker.close()
        redis_server.stop()


def _run_status(engine, run_id: int) -> str:
    from survey_classifier.db.models import RunRow

    with engine.connect() as connection:
        return connection.execute(select(RunRow.status).where(RunRow.id == run_id)).scalar_one()


def status_line(url: str, run_id: int) -> str:
    return subprocess.run([str(Path(sys.executable).parent / "survey-classifier"), "status", str(run_id), "--db", url],
                          capture_output=True, text=True, timeout=60).stdout
