"""The batch task: thin, idempotent, JSON arguments only.

A task receives a run id, a batch id and the cutout ids of that batch,
rebuilds the run's stages once per worker process, runs the same
:class:`~survey_classifier.pipeline.Pipeline` as ``classify`` and stores
the batch with :func:`~survey_classifier.runs.store_batch` (upserts,
batch marked done in the same transaction). A redelivered batch is simply
stored again, to the same rows.

Only transient errors (database or broker connection) are retried, with
exponential backoff; a bad cutout is an error row, not a task failure.
"""

from __future__ import annotations

import json
import logging
import os

from celery.signals import worker_process_init
from sqlalchemy import select, update
from sqlalchemy.exc import InterfaceError, OperationalError

from survey_classifier.db import make_engine
from survey_classifier.db.models import RunBatchRow, RunRow
from survey_classifier.errors import StageConfigError
from survey_classifier.pipeline import Pipeline
from survey_classifier.runs import finish_run_if_done, sources_for, store_batch
from survey_classifier.stages.registry import load_stage
from survey_classifier.workers.app import app

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
    """Each worker process makes its own engine and sessions, never the parent's."""
    global _engine
    _engine = None
    _pipelines.clear()


def engine():
    global _engine
    if _engine is None:
        _engine = make_engine(os.environ.get("SURVEY_CLASSIFIER_DB"))
    return _engine


def pipeline_for_run(run_id: int) -> Pipeline:
    """The run's stages, built and set up once per process per configuration."""
    with engine().connect() as connection:
        described = connection.execute(select(RunRow.stages).where(RunRow.id == run_id)).scalar_one_or_none()
    if described is None:
        msg = f"run {run_id} is not in the database {engine().url.render_as_string(hide_password=True)}"
        raise StageConfigError(msg)
    key = json.dumps(described, sort_keys=True)
    if key not in _pipelines:
        stages = []
        for entry in described:
            stage = load_stage(entry["name"], **entry["params"])
            if stage.version != entry["version"] or stage.model_ref != entry["model"]:
                msg = (
                    f"run {run_id} was submitted with stage {entry['name']} {entry['version']} "
                    f"(model {entry['model'] or 'none'}) but this worker has {stage.version} "
                    f"(model {stage.model_ref or 'none'}); install the same version on every worker"
                )
                raise StageConfigError(msg)
            stages.append(stage)
        pipeline = Pipeline(stages)
        pipeline.setup()
        _pipelines[key] = pipeline
        log.info("run %s: stages %s ready in process %s", run_id, [s.name for s in stages], os.getpid())
    return _pipelines[key]


def _mark_failed(batch_id: int, reason: str) -> None:
    try:
        with engine().begin() as connection:
            table = RunBatchRow.__table__
            connection.execute(
                update(table).where(table.c.id == batch_id, table.c.status != "done").values(status="failed", worker=reason[:256])
            )
    except TRANSIENT_ERRORS:
        log.exception("could not mark batch %s failed", batch_id)


class BatchTask(app.Task):
    """Marks the batch failed when the task gives up, so ``retry-failed`` finds it."""

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        batch_id = kwargs.get("batch_id", args[1] if len(args) > 1 else None)
        if isinstance(batch_id, int):
            _mark_failed(batch_id, f"{type(exc).__name__}: {exc}")


@app.task(
    name="survey_classifier.process_batch",
    base=BatchTask,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=1,
    retry_backoff_max=30,
    retry_jitter=True,
    max_retries=12,
)
def process_batch(self, run_id: int, batch_id: int, cutout_ids: list[int]) -> dict:
    """Process and store one batch of registered cutouts."""
    if not (isinstance(run_id, int) and isinstance(batch_id, int) and all(isinstance(i, int) for i in cutout_ids)):
        msg = f"process_batch expects integer ids, got run {run_id!r}, batch {batch_id!r}"
        raise TypeError(msg)
    pipeline = pipeline_for_run(run_id)
    sources = sources_for(engine(), cutout_ids)
    batch = pipeline.process_batch(sources)
    store_batch(engine(), run_id, pipeline.stages, batch, batch_id=batch_id, worker=self.request.hostname)
    if finish_run_if_done(engine(), run_id):
        with engine().begin() as connection:
            for stage in pipeline.stages:
                stage.after_run(connection, run_id)
    failed = sum(1 for outcome in batch.outcomes if outcome.errors)
    log.info("run %s batch %s: %d cutouts, %d failed", run_id, batch_id, len(sources), failed)
    return {"run_id": run_id, "batch_id": batch_id, "n_cutouts": len(sources), "n_failed": failed}
