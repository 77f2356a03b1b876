"""The batch task: thin, idempotent, JSON arguments only.

A task receives a run id, a batch id, the cutout ids of that batch and
the reference of every model the run uses (stage, name, version, sha256,
store). It rebuilds the run's stages once per worker process, fetches each
model from its store into the local cache (the results database by
default: no shared filesystem needed), checks its sha256, runs the same
:class:`~survey_classifier.pipeline.Pipeline` as ``classify`` and stores
the batch with :func:`~survey_classifier.runs.store_batch` (upserts,
batch marked done in the same transaction). A redelivered batch is simply
stored again, to the same rows.

Nothing is acknowledged that is not recorded: the message of a batch is
acknowledged only once the batch is stored or its failure is committed.
Transient errors (database or broker connection) are retried in the
worker with exponential backoff (``SURVEY_CLASSIFIER_DB_RETRIES`` times);
past that budget the message is given back to the queue after a pause
(``SURVEY_CLASSIFIER_RETRY_BACKOFF_MAX`` seconds), never dropped, so an
outage of any length ends with the batch stored. Any other error marks
the batch failed (for ``retry-failed``); if even that cannot be written,
the message goes back to the queue too. A bad cutout is an error row, not
a task failure.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import NoReturn

from celery.exceptions import Reject, Retry, SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import worker_process_init
from celery.utils.time import get_exponential_backoff_interval
from sqlalchemy import select
from sqlalchemy.exc import InterfaceError, OperationalError

from survey_classifier.closing import rebuild_stage
from survey_classifier.db import make_engine
from survey_classifier.db.models import RunRow
from survey_classifier.deliveries import (
    begin_cutout,
    begin_delivery,
    begin_split,
    death_reason,
    end_cutout,
    finish_split,
    max_deliveries,
    note_hard_timeout,
    record_culprit,
    store_cutout,
)
from survey_classifier.errors import StageConfigError, caused_by
from survey_classifier.io.fits import ReadLimits
from survey_classifier.pipeline import Pipeline
from survey_classifier.reuse import StoredResults
from survey_classifier.runs import close_run_if_done, mark_batch_failed, sources_for, store_batch
from survey_classifier.workers.app import app, retry_budget

__all__ = ["process_batch", "TRANSIENT_ERRORS"]

log = logging.getLogger(__name__)

try:
    from redis.exceptions import ConnectionError as RedisConnectionError
except ImportError:  # pragma: no cover - redis is a dependency
    RedisConnectionError = ConnectionError

#: Errors worth retrying: the database or the broker was briefly unreachable.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, RedisConnectionError, ConnectionError, TimeoutError)

_engine = None
_pipelines: dict[str, Pipeline] = {}


@worker_process_init.connect
def _fresh_process(**_kwargs):
    """Each worker process makes its own engine and sessions, never the parent's, and warms its stages."""
    from survey_classifier.workers.warm import warm_process

    global _engine
    _engine = None
    _pipelines.clear()
    warm_process(engine())


def engine():
    global _engine
    if _engine is None:
        _engine = make_engine(os.environ.get("SURVEY_CLASSIFIER_DB"))
    return _engine


def pipeline_for_run(run_id: int, models: dict[str, dict] | None = None) -> Pipeline:
    """The run's stages with their models, built, verified and set up once per process."""
    with engine().connect() as connection:
        run = connection.execute(select(RunRow.stages, RunRow.config).where(RunRow.id == run_id)).first()
    if run is None:
        msg = f"run {run_id} is not in the database {engine().url.render_as_string(hide_password=True)}"
        raise StageConfigError(msg)
    described, reuse = run.stages, (run.config or {}).get("reuse") or {}
    save_cutouts = (run.config or {}).get("save_cutouts")  # submit --save-cutouts: cutouts cut from mosaics
    models = dict(models or {})
    key = json.dumps([described, models, reuse, save_cutouts], sort_keys=True)
    if key not in _pipelines:
        stages = [rebuild_stage(engine(), run_id, entry, models.get(entry["name"])) for entry in described]
        pipeline = Pipeline(stages, stored=StoredResults(engine(), reuse), save_cutouts=save_cutouts,
                            limits=ReadLimits.from_environment(), interrupts=(SoftTimeLimitExceeded,))
        pipeline.setup()
        _pipelines[key] = pipeline
        log.info(
            "run %s: stages %s ready in process %s", run_id,
            [f"{s.name} {s.version}" + (f" ({s.model_ref})" if s.model_ref else "") for s in stages], os.getpid(),
        )
    return _pipelines[key]


class BatchTask(app.Task):
    """Counts a hard time limit against the batch's current cutout (in the worker's main process, which sees it;
    the message then goes back to the queue: ``task_acks_on_timeout`` is off)."""

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        batch_id = kwargs.get("batch_id", args[1] if len(args) > 1 else None)
        if not isinstance(exc, TimeLimitExceeded) or not isinstance(batch_id, int):
            return  # other failures are recorded by the task itself, before its message is acknowledged
        try:
            note_hard_timeout(engine(), batch_id, self.time_limit or app.conf.task_time_limit)
        except TRANSIENT_ERRORS:
            log.exception("batch %s: could not record the hard time limit", batch_id)


@app.task(
    name="survey_classifier.process_batch",
    base=BatchTask,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=None,  # counted against SURVEY_CLASSIFIER_DB_RETRIES here, not by Celery
)
def process_batch(self, run_id: int, batch_id: int, cutout_ids: list[int], models: dict | None = None) -> dict:
    """Process and store one batch of registered cutouts with the models named in ``models``.

    Returns only once the batch's outcome is committed: its results, or its
    failure. Otherwise the message is retried or given back to the queue.
    """
    if not (isinstance(run_id, int) and isinstance(batch_id, int) and all(isinstance(i, int) for i in cutout_ids)):
        msg = f"process_batch expects integer ids, got run {run_id!r}, batch {batch_id!r}"
        raise TypeError(msg)
    self.started = time.monotonic()  # the time limits count from about here
    try:
        return _process(self, run_id, batch_id, cutout_ids, models)
    except (Reject, Retry):
        raise
    except TRANSIENT_ERRORS as exc:
        _retry_or_give_back(self, batch_id, exc)
    except Exception as exc:
        if caused_by(exc, (SoftTimeLimitExceeded,)):  # also when a loader wrapped it
            _split_after_soft_limit(self, batch_id)
        _record_failure(batch_id, exc)
        raise


def _split_after_soft_limit(task, batch_id: int) -> NoReturn:
    """The whole batch took too long: give it back, to be processed one cutout at a time, each cutout
    with the whole time limit."""
    reason = (f"interrupted by the {_soft_limit_s(task):g} s soft time limit; "
              "processing it one cutout at a time, each with the whole time limit")
    begin_split(engine(), batch_id, reason)
    log.warning("batch %s: %s", batch_id, reason)
    raise Reject(reason, requeue=True) from None


def _process(task, run_id: int, batch_id: int, cutout_ids: list[int], models: dict | None) -> dict:
    # counted before anything can die
    delivery = begin_delivery(engine(), batch_id, task.request.hostname, task.request.retries)
    pipeline = _set_up(task, run_id, batch_id, models, delivery)
    sources = sources_for(engine(), cutout_ids)
    limit = max_deliveries()
    if delivery.one_at_a_time(limit):
        failed = _one_at_a_time(task, run_id, batch_id, cutout_ids, sources, pipeline, delivery, limit)
    else:
        batch = pipeline.process_batch(sources)
        store_batch(engine(), run_id, pipeline.stages, batch, batch_id=batch_id, worker=task.request.hostname)
        failed = sum(1 for outcome in batch.outcomes if outcome.errors)
    close_run_if_done(engine(), run_id, pipeline.stages)
    log.info("run %s batch %s: %d cutouts, %d failed", run_id, batch_id, len(sources), failed)
    return {"run_id": run_id, "batch_id": batch_id, "n_cutouts": len(sources), "n_failed": failed}


def _set_up(task, run_id: int, batch_id: int, models: dict | None, delivery) -> Pipeline:
    """The run's pipeline; a soft time limit while it is set up (modules imported, models loaded) is a timeout
    of the set-up, never of a cutout: the message goes back to the queue (the batch is not split: that would
    not shorten the set-up), and after ``max_deliveries`` such deliveries the batch fails with that reason."""
    try:
        return pipeline_for_run(run_id, models)
    except Exception as exc:
        if not caused_by(exc, (SoftTimeLimitExceeded,)):
            raise
    limit_s = _soft_limit_s(task)
    reason = (f"setting up the stages (importing modules, loading models) took longer than the {limit_s:g} s "
              "soft time limit")
    if delivery.number < max_deliveries():
        log.warning("batch %s: %s (delivery %d); the message goes back to the queue", batch_id, reason,
                    delivery.number)
        raise Reject(reason, requeue=True) from None
    reason += (f" in {delivery.number} deliveries; raise SURVEY_CLASSIFIER_SOFT_TIME_LIMIT or warm the workers, "
               "then retry-failed")
    log.error("batch %s: %s", batch_id, reason)
    raise SetUpTimeout(reason)


class SetUpTimeout(Exception):
    """The stages could not be set up within the soft time limit, ``max_deliveries`` times: the batch fails."""


def _one_at_a_time(task, run_id, batch_id, cutout_ids, sources, pipeline, delivery, limit) -> int:
    """Process a batch delivered ``limit`` times without ending cutout by cutout, each stored as it ends;
    record the cutouts that killed their process ``limit`` times. Returns the batch's failed cutouts."""
    split = delivery.split or begin_split(
        engine(), batch_id, f"delivered {delivery.number} times without its outcome stored: its worker process "
                            "died; processing it one cutout at a time",
    )
    log.warning("batch %s: delivery %d, processing %d cutouts one at a time (%d stored before)",
                batch_id, delivery.number, len(cutout_ids), len(split["stored"]))
    stored = set(split["stored"])
    for cutout_id, source in zip(cutout_ids, sources, strict=True):
        if cutout_id in stored:
            continue
        culprit = death_reason(split, cutout_id, limit, task.time_limit or app.conf.task_time_limit)
        if culprit is not None:
            record_culprit(engine(), run_id, batch_id, cutout_id, *culprit)
            log.error("batch %s: %s: %s; recorded as failed", batch_id, source.path, culprit[1])
            continue
        begin_cutout(engine(), batch_id, cutout_id, task.request.retries)
        began = time.monotonic()
        try:
            outcome = pipeline.process_batch([source])
        except SoftTimeLimitExceeded:
            # blamed only if it had (nearly) the whole limit to itself: not when set-up or the cutouts
            # before it took the time; those go on in a fresh delivery
            had = _soft_limit_s(task) - (began - task.started)
            _soft_timeout(task, run_id, batch_id, cutout_id, source, blame=had >= 0.9 * _soft_limit_s(task))
        store_cutout(engine(), run_id, pipeline.stages, batch_id, cutout_id, outcome.outcomes)
    return finish_split(engine(), batch_id, task.request.hostname)


def _soft_limit_s(task) -> float:
    return task.soft_time_limit or app.conf.task_soft_time_limit


def _soft_timeout(task, run_id: int, batch_id: int, cutout_id: int, source, *, blame: bool) -> NoReturn:
    """The soft time limit came while one cutout was processed alone: record a timeout against it if it had
    the whole limit to itself; then give the message back so the rest of the batch gets a fresh limit."""
    limit_s = _soft_limit_s(task)
    if blame:
        reason = f"processing took longer than the {limit_s:g} s soft time limit"
        record_culprit(engine(), run_id, batch_id, cutout_id, "SoftTimeLimitExceeded", reason)
        log.error("batch %s: %s: %s; recorded as failed", batch_id, source.path, reason)
    else:
        end_cutout(engine(), batch_id)
    raise Reject(f"soft time limit of {limit_s:g} s reached; the rest of the batch follows", requeue=True)


def _retry_or_give_back(task, batch_id: int, exc: BaseException):
    """Retry with backoff inside the budget; past it, pause and give the message back to the queue."""
    retries, backoff_max = retry_budget()
    reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    if task.request.retries < retries:
        countdown = get_exponential_backoff_interval(1, task.request.retries, backoff_max, True)
        try:
            raise task.retry(exc=exc, countdown=countdown, max_retries=retries)
        except Retry:
            raise
        except Exception:  # the broker too is unreachable: the message stays ours, give it back below
            log.warning("batch %s: could not schedule a retry through the broker", batch_id)
    log.warning(
        "batch %s: database or broker unreachable after %d retries (%s); the message goes back to the queue "
        "in %.0f s", batch_id, retries, reason, backoff_max,
    )
    time.sleep(backoff_max)
    try:  # the same message comes back: a cutout left named would count as one that killed its process
        end_cutout(engine(), batch_id)
    except TRANSIENT_ERRORS:
        log.warning("batch %s: could not clear its current cutout; the next delivery counts it as a death", batch_id)
    raise Reject(reason, requeue=True) from exc


def _record_failure(batch_id: int, exc: BaseException) -> None:
    """Commit the batch's failure (for ``retry-failed``) before its message is acknowledged."""
    reason = f"{type(exc).__name__}: {exc}"
    try:
        mark_batch_failed(engine(), batch_id, reason)
    except TRANSIENT_ERRORS as database_exc:
        _, backoff_max = retry_budget()
        log.warning("batch %s failed (%s) but the failure cannot be recorded (%s); the message goes back to "
                    "the queue in %.0f s", batch_id, reason, type(database_exc).__name__, backoff_max)
        time.sleep(backoff_max)
        raise Reject(reason, requeue=True) from exc
