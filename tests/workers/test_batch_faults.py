"""Batches under harder faults, on real worker processes: every batch ends, every outcome is recorded.

- PostgreSQL (a server of the test's own) stopped for longer than the workers' retry budget;
- a poison cutout (a small .fits.gz that expands to a large image) whose processing is killed by a
  memory watchdog, as a container's OOM killer would, and the same refused by ``--max-memory``;
- a read that outlasts the soft time limit.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import textwrap
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

#: Worker processes start without warming the default stages.
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


def test_postgres_down_longer_than_the_retry_budget(private_postgres, private_broker, workers, mirabest_files,
                                                    slow_plugin):
    """Batches that cannot be recorded go back to the queue, none is acked unrecorded; the run completes."""
    url = private_postgres.url
    upgrade(url)
    engine = make_engine(url)
    use_broker(private_broker)
    budget = {"SURVEY_CLASSIFIER_DB_RETRIES": "2", "SURVEY_CLASSIFIER_RETRY_BACKOFF_MAX": "1"}
    worker = workers("outlasting", url, private_broker, env={**QUICK, **budget}, concurrency=2)
    worker.wait_ready()
    sources = [CutoutSource(str(p)) for p in mirabest_files[:120]]
    run_id, n_batches = submit_run(engine, sources, [load_stage("slow_measure", delay_s=0.02)], batch_size=10)

    def done() -> int:
        with engine.connect() as connection:
            return connection.execute(
                select(func.count()).where(RunBatchRow.run_id == run_id, RunBatchRow.status == "done")
            ).scalar_one()

    wait_for(lambda: done() >= 2, 60, "two batches stored before the outage")
    private_postgres.stop(mode="immediate")
    engine.dispose()
    outage_start = time.monotonic()
    given_back = re.compile(r"unreachable after 2 retries .* goes back to the queue")
    wait_for(lambda: len(given_back.findall(worker.log())) >= 3, 40, "messages given back during the outage")
    time.sleep(max(0.0, 6.0 - (time.monotonic() - outage_start)))  # 2 retries take at most 2 s: outlast them
    outage_s = time.monotonic() - outage_start
    private_postgres.start()
    recovery_s = wait_for(lambda: done() == n_batches, 60, "every batch stored after the outage")
    status = wait_for_run(engine, run_id, timeout_s=30)
    assert status.status == "finished" and status.batches == {"done": n_batches}, status
    assert stored_once(engine, "slow_measure") == (120, 120, 120)
    assert errors_of(engine) == []
    assert worker.alive
    print(f"outage {outage_s:.1f} s; all {n_batches} batches stored {recovery_s:.1f} s after PostgreSQL came back")
    engine.dispose()


def test_postgres_down_while_a_batch_is_processed_one_cutout_at_a_time(private_postgres, private_broker, workers,
                                                                        mirabest_files, slow_plugin):
    """PostgreSQL stopped while a split batch (one cutout at a time) processes a cutout: the retries that follow
    count no death against it (before: it was recorded as having killed its process), nothing lost or doubled."""
    url = private_postgres.url
    engine = make_engine(url)
    use_broker(private_broker)
    # the whole batch (8 x 0.4 s) outlasts the 2 s soft limit: it is split; one death would fail a cutout
    env = {**QUICK, "SURVEY_CLASSIFIER_SOFT_TIME_LIMIT": "2", "SURVEY_CLASSIFIER_TIME_LIMIT": "30",
           "SURVEY_CLASSIFIER_MAX_DELIVERIES": "1", "SURVEY_CLASSIFIER_DB_RETRIES": "30",
           "SURVEY_CLASSIFIER_RETRY_BACKOFF_MAX": "1"}
    worker = workers("splitting", url, private_broker, env=env)
    worker.wait_ready()
    sources = [CutoutSource(str(p)) for p in mirabest_files[:8]]
    run_id, _ = submit_run(engine, sources, [load_stage("slow_measure", delay_s=0.4)], batch_size=8)

    def split():
        with engine.connect() as connection:
            return connection.execute(select(RunBatchRow.split).where(RunBatchRow.run_id == run_id)).scalar_one()

    # a cutout of the split batch is being processed, one stored before it
    wait_for(lambda: (s := split()) is not None and s["current"] is not None and s["stored"], 60,
             "a cutout processed alone after one was stored")
    private_postgres.stop(mode="immediate")
    engine.dispose()
    time.sleep(4.0)
    private_postgres.start()
    back = time.monotonic()
    status = wait_for_run(engine, run_id, timeout_s=90, poll_s=0.2)
    print(f"PostgreSQL down 4 s during a split batch: run finished {time.monotonic() - back:.1f} s after it came back")
    assert status.status == "finished" and status.batches == {"done": 1}, status
    assert errors_of(engine) == [], "a cutout was blamed for the outage"
    assert stored_once(engine, "slow_measure") == (8, 8, 8)
    with engine.connect() as connection:
        deliveries, n_failed, progress = connection.execute(
            select(RunBatchRow.deliveries, RunBatchRow.n_failed, RunBatchRow.split)).one()
    assert progress["deaths"] == {} and progress["timeouts"] == {} and progress["failed"] == [], progress
    assert sorted(progress["stored"]) == sorted(set(progress["stored"])) and len(progress["stored"]) == 8, progress
    assert n_failed == 0
    retried = worker.log().count("Retry in")
    print(f"deliveries counted {deliveries}, retries during the outage {retried}, deaths 0, 8 of 8 stored once")
    assert "retry" in worker.log().lower(), "the outage did not hit the batch"
    engine.dispose()


def poison_cutout(path, side=8192) -> str:
    """A .fits.gz of some hundred kB that expands to a side x side float32 image (256 MiB at 8192)."""
    cards = ["SIMPLE  =                    T", "BITPIX  =                  -32", "NAXIS   =                    2",
             f"NAXIS1  = {side:20d}", f"NAXIS2  = {side:20d}", "END"]
    header = "".join(card.ljust(80) for card in cards)
    data_bytes = side * side * 4
    with gzip.open(path, "wb", compresslevel=1) as stream:
        stream.write(header.ljust(2880).encode("ascii"))
        chunk = bytes(16 * 1024 * 1024)
        for start in range(0, data_bytes, len(chunk)):
            stream.write(chunk[: min(len(chunk), data_bytes - start)])
        stream.write(bytes(-data_bytes % 2880))
    return str(path)


def poisoned_run(engine, mirabest_files, poison: str):
    """22 cutouts in 3 batches of 8; the poison third in the second batch."""
    paths = [str(p) for p in mirabest_files[:21]]
    paths.insert(10, poison)
    return submit_run(engine, [CutoutSource(p) for p in paths], [load_stage("measure")], batch_size=8)


def test_poison_cutout_killing_its_worker_ends_recorded(pg, private_broker, workers, memory_watchdog, mirabest_files,
                                                       tmp_path):
    """An OOM-killed batch is redelivered 3 times, then processed one cutout at a time: the poison cutout is
    recorded as failed after killing its process 3 times alone, everything else is stored once."""
    url, engine = pg
    use_broker(private_broker)
    poison = poison_cutout(tmp_path / "poison.fits.gz")
    worker = workers("oom", url, private_broker, env=QUICK)
    worker.wait_ready()
    watchdog = memory_watchdog(worker, 500 * 1024 * 1024)
    start = time.monotonic()
    run_id, n_batches = poisoned_run(engine, mirabest_files, poison)
    status = wait_for_run(engine, run_id, timeout_s=90)
    elapsed = time.monotonic() - start
    assert status.status == "finished" and status.batches == {"done": n_batches}, status
    reason = "worker process died while processing this cutout 3 times: memory or a crash"
    assert errors_of(engine) == [(poison, "WorkerLost", reason)]
    assert status.n_done == 22 and status.n_failed == 1
    assert stored_once(engine, "measure") == (21, 21, 22)
    assert len(watchdog.kills) == 6, watchdog.kills  # 3 deliveries of the batch, then 3 of the poison alone
    with engine.connect() as connection:
        deliveries = dict(connection.execute(
            select(RunBatchRow.batch_index, RunBatchRow.deliveries).where(RunBatchRow.run_id == run_id)
        ).all())
    assert deliveries == {0: 1, 1: 7, 2: 1}
    assert worker.alive
    print(f"poison batch ended after {len(watchdog.kills)} kills, run finished in {elapsed:.1f} s")


def test_max_memory_refuses_the_poison_before_decoding(pg, private_broker, workers, memory_watchdog, mirabest_files,
                                                       tmp_path):
    url, engine = pg
    use_broker(private_broker)
    poison = poison_cutout(tmp_path / "poison.fits.gz")
    worker = workers("budgeted", url, private_broker, env={**QUICK, "SURVEY_CLASSIFIER_MAX_MEMORY": "1G"})
    worker.wait_ready()
    watchdog = memory_watchdog(worker, 500 * 1024 * 1024)
    run_id, n_batches = poisoned_run(engine, mirabest_files, poison)
    status = wait_for_run(engine, run_id, timeout_s=40)
    assert status.batches == {"done": n_batches} and status.n_failed == 1, status
    [(path, error_type, message)] = errors_of(engine)
    assert (path, error_type) == (poison, "CutoutLimitError")
    assert message.startswith("needs about 2305 MiB of memory to decode and process (8192 x 8192 pixels of "
                              "BITPIX -32, 256 MiB once decompressed, 8 working copies), over the budget of "
                              "1024 MiB (--max-memory)")
    assert watchdog.kills == []
    assert stored_once(engine, "measure") == (21, 21, 22)


class StallingServer:
    """An HTTP server whose every answer stalls for ``stall_s`` (an object store that hangs); counts requests."""

    def __init__(self, stall_s: float):
        import http.server
        import threading

        owner = self
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                owner.requests += 1
                time.sleep(stall_s)

            do_HEAD = do_GET

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_soft_time_limit_during_a_read_is_recorded_as_a_timeout(pg, private_broker, workers, mirabest_files):
    """A read that hangs past the soft time limit: the batch is split, the hanging cutout is recorded as a
    timeout (not as a malformed file) once it has had the whole limit to itself, the others are stored."""
    url, engine = pg
    use_broker(private_broker)
    stalling = StallingServer(stall_s=60)
    try:
        limits = {"SURVEY_CLASSIFIER_SOFT_TIME_LIMIT": "3", "SURVEY_CLASSIFIER_TIME_LIMIT": "30"}
        worker = workers("patient", url, private_broker, env={**QUICK, **limits})
        worker.wait_ready()
        hanging = f"{stalling.url}/survey/hanging.fits"
        paths = [str(p) for p in mirabest_files[:5]]
        paths.insert(2, hanging)
        run_id, n_batches = submit_run(engine, [CutoutSource(p) for p in paths], [load_stage("measure")],
                                       batch_size=6)
        start = time.monotonic()
        status = wait_for_run(engine, run_id, timeout_s=50)
        elapsed = time.monotonic() - start
    finally:
        stalling.close()
    assert status.status == "finished" and status.batches == {"done": 1} and status.n_failed == 1, status
    reason = "processing took longer than the 3 s soft time limit"
    assert errors_of(engine) == [(hanging, "SoftTimeLimitExceeded", reason)]
    assert stored_once(engine, "measure") == (5, 5, 6)
    # (the whole batch,) its first cutouts with the hanging one last, then the hanging one alone; a cold
    # worker process may use up the first soft limit before the hanging read
    assert 2 <= stalling.requests <= 3
    print(f"hanging read recorded as a timeout; run finished in {elapsed:.1f} s")


STUBBORN_PLUGIN = '''
"""A stage that ignores the soft time limit on a cutout named "stubborn" (a hung library call)."""
import time
from survey_classifier.stages.measure import MeasureStage


class StubbornMeasure(MeasureStage):
    name = "stubborn_measure"

    def process(self, batch):
        if any("stubborn" in cutout.source.path for cutout in batch):
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    time.sleep(1)
                except Exception:  # SoftTimeLimitExceeded included
                    pass
        return super().process(batch)
'''


@pytest.fixture
def stubborn_plugin(tmp_path, monkeypatch):
    site = tmp_path / "stubborn-site"
    (site / "stubborn_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "stubborn_plugin.py").write_text(textwrap.dedent(STUBBORN_PLUGIN))
    (site / "stubborn_plugin-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: stubborn-plugin\nVersion: 0.1\n")
    (site / "stubborn_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[survey_classifier.stages]\nstubborn_measure = stubborn_plugin:StubbornMeasure\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    return site


def test_hard_time_limit_is_recorded_against_its_cutout(pg, private_broker, workers, mirabest_files, stubborn_plugin,
                                                        tmp_path):
    """A cutout whose processing ignores the soft time limit is killed by the hard one: the message goes back
    to the queue, the batch is split, and the cutout is recorded as a timeout; the others are stored once."""
    url, engine = pg
    use_broker(private_broker)
    stubborn = tmp_path / "stubborn.fits"
    shutil.copy(mirabest_files[0], stubborn)
    limits = {"SURVEY_CLASSIFIER_SOFT_TIME_LIMIT": "3", "SURVEY_CLASSIFIER_TIME_LIMIT": "5",
              "SURVEY_CLASSIFIER_MAX_DELIVERIES": "1"}
    worker = workers("strict", url, private_broker, env={**QUICK, **limits})
    worker.wait_ready()
    paths = [str(p) for p in mirabest_files[1:6]]
    paths.insert(3, str(stubborn))
    start = time.monotonic()
    run_id, _ = submit_run(engine, [CutoutSource(p) for p in paths], [load_stage("stubborn_measure")], batch_size=6)
    status = wait_for_run(engine, run_id, timeout_s=50)
    elapsed = time.monotonic() - start
    assert status.status == "finished" and status.batches == {"done": 1} and status.n_failed == 1, status
    reason = "processing took longer than the 5 s hard time limit once"
    assert errors_of(engine) == [(str(stubborn), "TimeLimitExceeded", reason)]
    assert stored_once(engine, "stubborn_measure") == (5, 5, 6)
    # the whole batch (unless a cold process spent its soft limit before reaching the stage), then the cutout alone
    assert worker.log().count("Hard time limit (5") in (1, 2)
    print(f"hard time limit recorded against its cutout; run finished in {elapsed:.1f} s")


SLOW_SETUP_PLUGIN = '''
"""A stage whose set-up imports a module that takes 4 s to import (a large library, a cold disk)."""
from survey_classifier.stages.measure import MeasureStage


class SlowSetupMeasure(MeasureStage):
    name = "slow_setup_measure"

    def setup(self):
        import slow_import_dependency  # noqa: F401
        super().setup()
'''


def test_soft_time_limit_while_the_stages_are_set_up_is_a_timeout(pg, private_broker, workers, mirabest_files,
                                                                 tmp_path, monkeypatch):
    """A soft time limit during a module import of the stages' set-up (a cold worker process) blames no file
    and does not loop: after --max-deliveries such deliveries the batch fails with that reason."""
    site = tmp_path / "slow-setup-site"
    (site / "slow_setup_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "slow_setup_plugin.py").write_text(textwrap.dedent(SLOW_SETUP_PLUGIN))
    (site / "slow_import_dependency.py").write_text("import time\n\ntime.sleep(4)\n")
    (site / "slow_setup_plugin-0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: slow-setup-plugin\nVersion: 0.1\n")
    (site / "slow_setup_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[survey_classifier.stages]\nslow_setup_measure = slow_setup_plugin:SlowSetupMeasure\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    url, engine = pg
    use_broker(private_broker)
    limits = {"SURVEY_CLASSIFIER_SOFT_TIME_LIMIT": "2", "SURVEY_CLASSIFIER_TIME_LIMIT": "30",
              "SURVEY_CLASSIFIER_MAX_DELIVERIES": "2"}
    worker = workers("cold", url, private_broker, env={**QUICK, **limits})
    worker.wait_ready()
    start = time.monotonic()
    sources = [CutoutSource(str(p)) for p in mirabest_files[:4]]
    run_id, _ = submit_run(engine, sources, [load_stage("slow_setup_measure")], batch_size=4)
    status = wait_for_run(engine, run_id, timeout_s=60)
    elapsed = time.monotonic() - start
    assert status.batches == {"failed": 1} and status.state == "incomplete", status
    assert errors_of(engine) == [], "a file was blamed for the set-up's timeout"
    with engine.connect() as connection:
        deliveries, failure, progress = connection.execute(
            select(RunBatchRow.deliveries, RunBatchRow.failure, RunBatchRow.split)).one()
    assert deliveries == 2 and progress is None, (deliveries, progress)  # not split: that cannot shorten a set-up
    assert "setting up the stages (importing modules, loading models) took longer than the 2 s soft time limit in " \
           "2 deliveries" in failure, failure
    assert worker.alive
    print(f"set-up outlasting the soft limit: batch failed after 2 deliveries, {elapsed:.1f} s after submit")
