"""Commands of the distributed path: ``submit``, ``status``, ``retry-failed``, ``worker``.

Commands that do not need Celery do not import it: these are mounted
lazily on the main group.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time

import click

from survey_classifier.cli.group import fail
from survey_classifier.cli.options import (
    broker_option,
    catalogue_options,
    db_option,
    max_memory_option,
    mosaic_options,
    queue_option,
    stage_options,
)
from survey_classifier.cli.run import prepare_run
from survey_classifier.deliveries import DELIVERIES_ENV
from survey_classifier.io.fits import MAX_MEMORY_ENV

__all__ = ["submit", "status", "retry_failed_command", "worker"]


def _use_services(db_url: str | None, broker: str | None) -> None:
    """Point the Celery app (configured from the environment) at these services."""
    if broker:
        os.environ["SURVEY_CLASSIFIER_BROKER"] = broker
    if db_url:
        os.environ["SURVEY_CLASSIFIER_DB"] = db_url
    from survey_classifier.workers.app import broker_url, use_broker

    use_broker(broker_url())


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@db_option
@broker_option
@stage_options
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(min=1))
@queue_option
@catalogue_options
@mosaic_options
@click.option("--no-wait", is_flag=True, help="Queue the batches and return at once.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def submit(inputs, db_url, broker, stages, params, recompute, batch_size, queue, no_wait, quiet, mosaics, cutout_size,
           save_cutouts, **columns):
    """Queue INPUTS to Celery workers; follow progress from the database.

    With --mosaics, INPUTS are catalogues of positions; the workers cut each
    cutout from the tiles (which they must be able to read: a shared folder
    or an object store).
    """
    from survey_classifier.cli.progress import RunProgress, echo_errors_hint
    from survey_classifier.distributed import check_broker, submit_run, wait_for_run
    from survey_classifier.query import failed_by_stage

    _use_services(db_url, broker)
    check_broker()  # before anything is registered: a broker that is down leaves nothing half-queued
    mosaic_choice = {"mosaics": mosaics, "cutout_size": cutout_size, "save_cutouts": save_cutouts}
    engine, stage_list, sources, config = prepare_run(db_url, inputs, stages, params, columns, mosaic_choice,
                                                      recompute=recompute)
    start = time.perf_counter()
    run_id, n_batches = submit_run(
        engine, sources, stage_list, batch_size=batch_size, queue=queue, config=config,
        announce=lambda run_id, resumed: click.echo(
            f"run {run_id}: resuming it (interrupted while queueing): sending the batches without a message"
            if resumed else f"run {run_id}: registering {len(sources)} cutouts"),
    )
    click.echo(f"run {run_id}: {len(sources)} cutouts in {n_batches} batches queued on '{queue}'")
    if no_wait:
        return
    with RunProgress(len(sources), quiet=quiet, stages=[s.name for s in stage_list]) as bar:
        status = wait_for_run(
            engine, run_id, progress=lambda status: bar.status(
                status.n_done, failed_by_stage(engine, run_id),
                note=_progress_note(status),
            ),
            on_outage=lambda down_s, exc: bar.note(f"database unreachable for {down_s:.0f} s, retrying"),
        )
    _print_status(status, time.perf_counter() - start, db_url)
    if status.n_failed:
        by_stage = sorted(failed_by_stage(engine, run_id).items(), key=lambda item: -item[1])
        click.echo("failed cutouts by stage: " + ", ".join(f"{stage} {n}" for stage, n in by_stage))
    echo_errors_hint(run_id, db_url, status.n_failed)
    if status.n_done and status.n_done == status.n_failed:
        sys.exit(1)


def _progress_note(status) -> str:
    """What a waiting ``submit`` shows before its bar when the run does not move."""
    if status.state == "stalled":
        return f"stalled for {_age(status.idle_s)}: `survey-classifier status {status.run_id}` says what resumes it"
    return "waiting for workers" if waiting_for_workers(status) else ""


def waiting_for_workers(status) -> bool:
    """A running run of which no batch has been stored or given up yet: no worker has reached it."""
    return status.status == "running" and not status.batches.get("done") and not status.batches.get("failed")


def _print_status(status, elapsed=None, db_url=None, *, batch_lines=False) -> None:
    timing = f" in {elapsed:.1f} s ({status.n_done / max(elapsed, 1e-9):.0f} cutouts/s)" if elapsed else ""
    batches = ", ".join(f"{k} {v}" for k, v in sorted(status.batches.items()))
    state = "waiting for workers" if waiting_for_workers(status) and status.state == "running" else status.state
    click.echo(
        f"run {status.run_id} [{state}]: {status.n_cutouts} cutouts, {status.n_done} done "
        f"({status.n_done - status.n_failed} processed, {status.n_failed} failed){timing}; batches: {batches}"
    )
    if state == "waiting for workers":
        click.echo("  no batch finished yet: are workers running on this database and broker "
                   "(`survey-classifier worker --db ... --broker ...`)? "
                   "A fresh worker first loads and warms its stages.")
    advice = _what_resumes(status, db_url)
    if advice:
        click.echo(f"  {state}: {advice}")
    if batch_lines:
        for batch in status.details:
            click.echo("  " + _batch_line(batch, status.executor))
        hidden = (sum(status.batches.values()) if batch_lines == "all" else status.n_left) - len(status.details)
        if hidden > 0:
            click.echo(f"  ... and {hidden} more batches")
    for stage, message, count in status.errors:
        click.echo(f"  {count} x [{stage}] {message}")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _batch_line(batch, executor) -> str:
    queued = "queued" if executor == "celery" else "registered"
    since = {"queued": queued, "done": "stored", "failed": "given up"}.get(batch.status, "changed")
    parts = [f"batch {batch.index} [{batch.status}] {since} {_age(batch.age_s)} ago"]
    if batch.deliveries is not None:
        parts.append(f"deliveries {batch.deliveries}")
    if batch.worker:
        parts.append(("stored by " if batch.status == "done" else "last worker ") + batch.worker)
    if batch.reason:
        parts.append(f"reason: {batch.reason}")
    return "; ".join(parts)


def _what_resumes(status, db_url) -> str:
    """For an interrupted or stalled run: what happened, and the command or automatic action that resumes it."""
    from survey_classifier.distributed import stall_after_s

    again = f"`{_resume_command(status, db_url)}`"
    if status.state == "interrupted" and status.executor == "celery":
        return (f"its submitter {status.owner} ended (killed, or gave up on the broker) before every batch was "
                f"sent; the workers' sweeper sends the missing ones once they have waited {stall_after_s():.0f} s "
                f"(SURVEY_CLASSIFIER_STALL_AFTER on the workers), or resume it now with {again}")
    if status.state == "interrupted":
        return (f"its process {status.owner} is gone with {status.n_left} batches not stored; "
                f"resume it with {again} (stored batches are kept)")
    if status.state == "incomplete":
        return (f"{status.batches['failed']} batches were given up (their reasons below); send them again with "
                f"`survey-classifier retry-failed {status.run_id}{_db_words(db_url)} --broker ...`")
    if status.state == "stalled" and status.executor == "celery":
        return (f"no batch stored for {_age(status.idle_s)}; the workers' sweeper sends again a batch whose worker "
                f"died or whose message was lost {stall_after_s():.0f} s after it was sent: if nothing moves, no "
                "worker is running on this database and broker (start one: `survey-classifier worker --db ... "
                f"--broker ...`); to send them all again now: `survey-classifier retry-failed {status.run_id} "
                f"--stalled-after 0{_db_words(db_url)}`")
    if status.state == "stalled":
        return (f"no batch stored for {_age(status.idle_s)} although its process {status.owner} is alive: it is "
                f"working on a slow batch, or stuck (stop it and resume with {again})")
    return ""


def _db_words(db_url) -> str:
    from survey_classifier.db.checks import shown_url

    return f" --db {shlex.quote(shown_url(db_url))}" if db_url else ""


def _resume_command(status, db_url) -> str:
    """The command that ran the run, as far as its recorded configuration tells: running it again resumes it."""
    config = status.config
    words = ["survey-classifier", "classify" if status.executor == "in-process" else "submit"]
    inputs = list(config.get("inputs") or [])
    words += inputs if len(inputs) <= 4 else [*inputs[:3], "..."]
    if config.get("stages_asked"):
        words += ["--stages", ",".join(config["stages_asked"])]
    for stage, values in sorted((config.get("params") or {}).items()):
        words += [w for key, value in sorted(values.items()) for w in ("--param", f"{stage}.{key}={json.dumps(value)}")]
    for option in ("mosaics", "cutout_size", "save_cutouts"):
        if config.get(option):
            words += [f"--{option.replace('_', '-')}", str(config[option])]
    if config.get("batch_size"):
        words += ["--batch-size", str(config["batch_size"])]
    if status.executor == "celery" and config.get("queue"):
        words += ["--queue", config["queue"]]
    return shlex.join(words) + _db_words(db_url)


@click.command()
@click.argument("run_id", type=int)
@db_option
@click.option("--stalled-after", type=click.FloatRange(min=0), default=600.0, show_default=True,
              help="Seconds without a stored batch after which a running run is shown as stalled.")
@click.option("--batches", "every_batch", is_flag=True, help="Show every batch, not only those not done.")
def status(run_id, db_url, stalled_after, every_batch):
    """Progress and failures of run RUN_ID: what it is doing (running, stalled, interrupted, finished), what
    resumes it, and each batch not done with its age, last worker, deliveries and failure reason."""
    from survey_classifier.db.checks import open_database
    from survey_classifier.distributed import run_status

    engine = open_database(db_url)
    found = run_status(engine, run_id, stalled_after_s=stalled_after, every_batch=every_batch,
                       max_details=10**6 if every_batch else 20)
    _print_status(found, db_url=db_url, batch_lines="all" if every_batch else True)


@click.command("retry-failed")
@click.argument("run_id", type=int)
@db_option
@broker_option
@queue_option
@click.option("--stalled-after", type=float, default=None,
              help="Also requeue batches queued more than this many seconds ago (lost by the broker).")
def retry_failed_command(run_id, db_url, broker, queue, stalled_after):
    """Queue again the failed batches of RUN_ID (and, optionally, stalled ones)."""
    from survey_classifier.db.checks import open_database
    from survey_classifier.distributed import check_broker, retry_failed

    _use_services(db_url, broker)
    check_broker()
    n = retry_failed(open_database(db_url), run_id, queue=queue, stalled_after_s=stalled_after)
    click.echo(f"run {run_id}: {n} batches queued again on '{queue}'")


@click.command()
@db_option
@broker_option
@click.option("--queues", default="cpu", show_default=True, help="Comma-separated queues: cpu, gpu.")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), default=None,
              help="Worker processes (default: one per core; use 1 per GPU for gpu).")
@click.option("-n", "--hostname", default=None, help="Worker name (default: celery@HOST).")
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--warm/--no-warm", default=None,
              help="Load and run the default stages once in each worker process before its first batch "
                   "(default: on, unless $SURVEY_CLASSIFIER_WARM=0).")
@max_memory_option
@click.option("--max-deliveries", type=click.IntRange(min=1), default=None, envvar=DELIVERIES_ENV,
              help="Deliveries of a batch that end without its outcome stored (its worker process died) before "
                   f"it is processed one cutout at a time to find the culprit (default 3; ${DELIVERIES_ENV}).")
def worker(db_url, broker, queues, concurrency, hostname, loglevel, warm, max_memory, max_deliveries):
    """Start a Celery worker for the given queues.

    Each worker process first loads the database's default stages with
    their models and runs them once (its log says what and how long), so
    that the first batch of a run is as fast as the others.
    """
    from survey_classifier.db.checks import open_database

    open_database(db_url).dispose()  # a missing database or an old schema: one line now, not in every task
    _use_services(db_url, broker)
    from survey_classifier.workers.warm import WARM_ENV

    if warm is not None:
        os.environ[WARM_ENV] = "1" if warm else "0"
    if max_memory is not None:  # read by each worker process
        os.environ[MAX_MEMORY_ENV] = str(max_memory)
    if max_deliveries is not None:
        os.environ[DELIVERIES_ENV] = str(max_deliveries)
    from survey_classifier.workers.app import app
    from survey_classifier.workers.queues import QUEUES

    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(wanted) - set(QUEUES))
    if unknown:
        fail(f"unknown queues {unknown}; choose from {list(QUEUES)}")
    from survey_classifier.workers.warm import preload_modules

    preload_modules()
    argv = ["worker", "-Q", ",".join(wanted), "--loglevel", loglevel,
            "--concurrency", str(concurrency or os.cpu_count() or 1)]
    if hostname:
        argv += ["-n", hostname]
    app.worker_main(argv)
