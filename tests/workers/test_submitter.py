"""The submitter under faults: real `survey-classifier` processes, real Redis and PostgreSQL servers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers.services import PrivateRedis, port_in_range
from sqlalchemy import func, select

from survey_classifier.db import make_engine, upgrade
from survey_classifier.db.models import MeasurementRow, RunBatchRow, RunRow

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

CLI = str(Path(sys.executable).parent / "survey-classifier")
SLOW = ["--stages", "slow_measure", "--param", "slow_measure.delay_s=0.05"]


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout, env=dict(os.environ))


def one_line_error(done: subprocess.CompletedProcess, expected: str) -> None:
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and expected in lines[0], done.stderr


def count(engine, *what) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(*what)).scalar_one()


def test_submit_with_the_broker_down_says_so_and_registers_nothing(postgres_url, mirabest_files):
    upgrade(postgres_url)
    nobody = f"redis://127.0.0.1:{port_in_range(6420)}/0"
    files = [str(p) for p in mirabest_files[:5]]
    done = cli("submit", *files, "--db", postgres_url, "--broker", nobody, "--stages", "measure")
    one_line_error(done, f"cannot reach the broker at {nobody}")
    engine = make_engine(postgres_url)
    assert (count(engine, RunRow), count(engine, RunBatchRow)) == (0, 0)
    engine.dispose()


def test_status_and_retry_failed_fail_in_one_line(postgres_url, broker_url):
    upgrade(postgres_url)
    port = port_in_range(25420)
    one_line_error(cli("status", "1", "--db", f"postgresql+psycopg://postgres@127.0.0.1:{port}/survey"),
                   f"cannot reach PostgreSQL at 127.0.0.1:{port}")
    one_line_error(cli("retry-failed", "999", "--db", postgres_url, "--broker", broker_url), "no run with id 999")
    one_line_error(cli("status", "999", "--db", postgres_url), "no run with id 999")


def test_waiting_submit_outlives_a_postgres_restart(private_postgres, broker_url, workers, mirabest_files,
                                                    slow_plugin):
    url = private_postgres.url
    worker = workers("w1", url, broker_url, env={"SURVEY_CLASSIFIER_WARM": "0"})
    worker.wait_ready()
    files = [str(p) for p in mirabest_files[:60]]
    submit = subprocess.Popen([CLI, "submit", *files, "--db", url, "--broker", broker_url, *SLOW, "--batch-size", "6",
                               "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = submit.stdout.readline()
    assert re.match(r"run (\d+): registering 60 cutouts", first), first
    run_id = int(first.split()[1].rstrip(":"))
    engine = make_engine(url)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with engine.connect() as connection:
            done = connection.execute(
                select(func.count()).where(RunBatchRow.run_id == run_id, RunBatchRow.status == "done")).scalar_one()
        if done:
            break
        time.sleep(0.1)
    engine.dispose()
    assert 0 < done < 10, "the restart should come mid-run"
    private_postgres.stop()
    time.sleep(3)
    private_postgres.start()
    out, err = submit.communicate(timeout=240)  # 60 cutouts at 1 per second, slower on a loaded machine
    assert submit.returncode == 0, err
    assert "Traceback" not in err
    assert f"run {run_id} [finished]: 60 cutouts, 60 done (60 processed, 0 failed)" in out, out
    engine = make_engine(url)
    with engine.connect() as connection:
        rows, distinct = connection.execute(
            select(func.count(), func.count(MeasurementRow.cutout_id.distinct()))).one()
    engine.dispose()
    assert (rows, distinct) == (60, 60)
    assert worker.alive


def test_submit_outlives_a_broker_blip_while_queueing(postgres_url, tmp_path, mirabest_files):
    """Redis (with its AOF) stops as the run is registered and comes back 3 s later: every batch gets its message."""
    upgrade(postgres_url)
    redis_server = PrivateRedis(tmp_path / "redis", persistent=True)
    try:
        files = [str(p) for p in mirabest_files[:400]]
        submit = subprocess.Popen([CLI, "submit", *files, "--db", postgres_url, "--broker", redis_server.url,
                                   "--stages", "measure", "--batch-size", "1", "--no-wait"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = submit.stdout.readline()
        assert first.startswith("run ") and "registering 400 cutouts" in first, first
        redis_server.stop()
        time.sleep(3)
        assert submit.poll() is None, "the submitter should be waiting for the broker"
        redis_server.start()
        out, err = submit.communicate(timeout=240)  # slower on a loaded machine
        assert submit.returncode == 0, err
        assert "400 cutouts in 400 batches queued" in out
        queued = {json.loads(_body(m))[0][1] for m in redis_server.client().lrange("cpu", 0, -1)}
        engine = make_engine(postgres_url)
        with engine.connect() as connection:
            batch_ids = set(connection.execute(select(RunBatchRow.id)).scalars())
        engine.dispose()
        assert queued == batch_ids
    finally:
        redis_server.stop()


def _body(raw: bytes) -> str:
    import base64

    message = json.loads(raw)
    return base64.b64decode(message["body"]).decode()


def test_submit_outlives_a_postgres_restart_while_registering(private_postgres, broker_url, mirabest_files):
    """PostgreSQL stops as the run starts registering its batches and is back 2 s later: nothing is lost."""
    import redis

    files = [str(p) for p in mirabest_files[:400]]
    submit = subprocess.Popen([CLI, "submit", *files, "--db", private_postgres.url, "--broker", broker_url,
                               "--stages", "measure", "--batch-size", "1", "--no-wait"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = submit.stdout.readline()
    os.kill(submit.pid, signal.SIGSTOP)
    assert first.startswith("run 1: registering 400 cutouts"), first
    private_postgres.stop()
    os.kill(submit.pid, signal.SIGCONT)
    time.sleep(2)
    assert submit.poll() is None, f"the submitter should be waiting for the database: {submit.communicate()}"
    private_postgres.start()
    out, err = submit.communicate(timeout=240)  # slower on a loaded machine
    assert submit.returncode == 0, err
    assert "Traceback" not in err and "400 cutouts in 400 batches queued" in out, (out, err)
    queued = Counter(json.loads(_body(m))[0][1] for m in redis.Redis.from_url(broker_url).lrange("cpu", 0, -1))
    engine = make_engine(private_postgres.url)
    with engine.connect() as connection:
        batch_ids = set(connection.execute(select(RunBatchRow.id)).scalars())
        runs = connection.execute(select(func.count()).select_from(RunRow)).scalar_one()
    engine.dispose()
    assert (runs, len(batch_ids)) == (1, 400)
    assert set(queued) == batch_ids and set(queued.values()) == {1}
