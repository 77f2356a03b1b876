"""Throughput of the Celery path against the in-process path, same pipeline.

Measures, on the 1027 mirabest cutouts with the given stages:
- in-process ``run_pipeline`` with 1 process, and 2 processes (two halves in parallel);
- Celery with 1 and with 2 worker processes (real Redis and PostgreSQL);
- the per-batch overhead of the queue: (celery time - in-process time) / batches.

    .venv/bin/python bench/bench_workers.py --db postgresql+psycopg://postgres@127.0.0.1/test \
        --broker redis://127.0.0.1:6379/9 [--stages measure] [--batch-size 128]

Uses the database given (its results tables receive rows) and FLUSHES the
Redis database given. Compare ratios within one run; the machine is noisy.

Besides wall time it reports the CPU time spent per cutout (user + system
of the pipeline processes, or of every process of each worker, plus the
submitting process): unlike throughput, that figure barely moves when
other jobs share the machine, so it compares two versions of the code
measured at different times.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from survey_classifier.db import make_engine, upgrade
from survey_classifier.distributed import submit_run, wait_for_run
from survey_classifier.io.inputs import expand_inputs
from survey_classifier.pipeline import run_pipeline
from survey_classifier.stages.registry import load_stage

DATA = Path(os.environ.get("SURVEY_CLASSIFIER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
BIN = Path(sys.executable).parent


def _in_process(args):
    url, paths, stages, batch_size, start_at = args
    from survey_classifier.cutout import CutoutSource

    engine = make_engine(url)
    stage_list = [load_stage(s) for s in stages]
    for stage in stage_list:
        stage.setup()
    time.sleep(max(0.0, start_at - time.time()))  # all processes start together
    start, cpu = time.time(), time.process_time()
    run_pipeline([CutoutSource(p) for p in paths], stage_list, engine, batch_size=batch_size)
    end, cpu = time.time(), time.process_time() - cpu
    engine.dispose()
    return start, end, cpu


def in_process(url, paths, stages, batch_size, n_proc):
    """Wall time of n_proc processes each running the pipeline on its share (start-up excluded), and their CPU time."""
    chunks = [paths[i::n_proc] for i in range(n_proc)]
    start_at = time.time() + 20.0
    with multiprocessing.get_context("spawn").Pool(n_proc) as pool:
        spans = pool.map(_in_process, [(url, chunk, stages, batch_size, start_at) for chunk in chunks])
    late = max(start for start, _, _ in spans) - start_at
    if late > 0.05:
        print(f"warning: a process started {late:.2f} s late; the in-process x{n_proc} figure includes it")
    return max(end for _, end, _ in spans) - min(start for start, _, _ in spans), sum(cpu for _, _, cpu in spans)


def _group_cpu_s(groups) -> float:
    """User + system seconds of every live process in the given process groups (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) in groups:  # pgrp
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def celery(url, broker, sources, stages, batch_size, n_workers, log_dir):
    import redis

    redis.Redis.from_url(broker).flushdb()
    from survey_classifier.workers.app import app

    app.conf.broker_url = broker
    procs = []
    for i in range(n_workers):
        log = open(Path(log_dir) / f"bench{n_workers}-{i}.log", "w")
        procs.append(
            subprocess.Popen(
                [str(BIN / "survey-classifier"), "worker", "--db", url, "--broker", broker, "-c", "1",
                 "-n", f"bench{i}@%h", "--loglevel", "WARNING"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        )
    groups = {proc.pid for proc in procs}
    engine = make_engine(url)
    # warm-up: one small run so that worker start-up is not timed
    warm, _ = submit_run(
        engine, sources[: batch_size * n_workers], [load_stage(s) for s in stages], batch_size=batch_size
    )
    wait_for_run(engine, warm, poll_s=0.2)
    start, cpu = time.perf_counter(), _group_cpu_s(groups) + time.process_time()
    run_id, n_batches = submit_run(engine, sources, [load_stage(s) for s in stages], batch_size=batch_size)
    wait_for_run(engine, run_id, poll_s=0.25)
    elapsed, cpu = time.perf_counter() - start, _group_cpu_s(groups) + time.process_time() - cpu
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait()
    engine.dispose()
    return elapsed, cpu, n_batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--stages", default="measure")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    stages = args.stages.split(",")
    upgrade(args.db)
    sources = expand_inputs([str(DATA / "mirabest" / "fits")])
    paths = [s.path for s in sources]
    n = len(paths)
    results, cpu = {}, {}
    with tempfile.TemporaryDirectory() as logs:
        for n_proc in (1, 2):
            key = f"in-process x{n_proc}"
            results[key], cpu[key] = in_process(args.db, paths, stages, args.batch_size, n_proc)
            key = f"celery x{n_proc}"
            results[key], cpu[key], n_batches = celery(
                args.db, args.broker, sources, stages, args.batch_size, n_proc, logs
            )
    for name, seconds in results.items():
        print(f"{name:>14}: {n} cutouts in {seconds:6.2f} s = {n / seconds:7.1f} cutouts/s; "
              f"CPU {1e3 * cpu[name] / n:6.2f} ms per cutout")
    print(f"celery 2 workers / 1 worker: {results['celery x1'] / results['celery x2']:.2f}x")
    for k in (1, 2):
        ratio = results[f"in-process x{k}"] / results[f"celery x{k}"]
        overhead = (results[f"celery x{k}"] - results[f"in-process x{k}"]) / n_batches * k
        print(f"parallelism {k}: celery throughput = {ratio:.2f} x in-process; "
              f"overhead {overhead * 1e3:+.1f} ms per batch of {args.batch_size}")


if __name__ == "__main__":
    main()
