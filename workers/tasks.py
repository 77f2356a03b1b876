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

Only transient errors (database or broker connection) are retried, with
exponential backoff; a bad cutout is an error row, not a task failure.
"""

from __future__ import annotations

import json
import logging
import os

from celery.signals import worker_process_init
from sqlalchemy import select
from sqlalchemy.exc import InterfaceError, OperationalError

from survey_classifier.artefacts import fetch
from survey_classifier.db import make_engine
from survey_classifier.db.models import RunRow
from survey_classifier.errors import StageConfigError
from survey_classifier.modelref import ModelRef
from survey_classifier.pipeline import Pipeline
from survey_classifier.reuse import StoredResults
from survey_classifier.runs import close_run_if_done, mark_batch_failed, sources_for, store_batch
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
    models = dict(models or {})
    key = json.dumps([described, models, reuse], sort_keys=True)
    if key not in _pipelines:
        stages = [_rebuild(run_id, entry, models.get(entry["name"])) for entry in described]
        pipeline = Pipeline(stages, stored=StoredResults(engine(), reuse))
        pipeline.setup()
        _pipelines[key] = pipeline
        log.info(
            "run %s: stages %s ready in process %s", run_id,
            [f"{s.name} {s.version}" + (f" ({s.model_ref})" if s.model_ref else "") for s in stages], os.getpid(),
        )
    return _pipelines[key]


def _rebuild(run_id: int, entry: dict, message: dict | None):
    """One stage as the run recorded it, with the model its task message names."""
    stage = load_stage(entry["name"], **entry["params"])
    if stage.version != entry["version"]:
        msg = (
            f"run {run_id} was submitted with stage {entry['name']} {entry['version']} but this worker has "
            f"{stage.version}; install the same survey-classifier (and plugins) on every worker"
        )
        raise StageConfigError(msg)
    recorded = entry.get("model_artefact")
    if stage.model_param is not None:
        if message is None or recorded is None or ModelRef.from_message(message) != ModelRef.from_message(recorded):
            msg = (
                f"run {run_id}: the task message names model {message} for stage {entry['name']}, but the run "
                f"recorded {recorded}; submit the run again"
            )
            raise StageConfigError(msg)
        stage.bind_model(fetch(ModelRef.from_message(message), engine()))
    return stage


class BatchTask(app.Task):
    """Marks the batch failed when the task gives up, so ``retry-failed`` finds it."""

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        batch_id = kwargs.get("batch_id", args[1] if len(args) > 1 else None)
        if not isinstance(batch_id, int):
            return
        try:
            mark_batch_failed(engine(), batch_id, f"{type(exc).__name__}: {exc}")
        except TRANSIENT_ERRORS:
            log.exception("could not mark batch %s failed", batch_id)


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
def process_batch(self, run_id: int, batch_id: int, cutout_ids: list[int], models: dict | None = None) -> dict:
    """Process and store one batch of registered cutouts with the models named in ``models``."""
    if not (isinstance(run_id, int) and isinstance(batch_id, int) and all(isinstance(i, int) for i in cutout_ids)):
        msg = f"process_batch expects integer ids, got run {run_id!r}, batch {batch_id!r}"
        raise TypeError(msg)
    pipeline = pipeline_for_run(run_id, models)
    sources = sources_for(engine(), cutout_ids)
    batch = pipeline.process_batch(sources)
    store_batch(engine(), run_id, pipeline.stages, batch, batch_id=batch_id, worker=self.request.hostname)
    close_run_if_done(engine(), run_id, pipeline.stages)
    failed = sum(1 for outcome in batch.outcomes if outcome.errors)
    log.info("run %s batch %s: %d cutouts, %d failed", run_id, batch_id, len(sources), failed)
    return {"run_id": run_id, "batch_id": batch_id, "n_cutouts": len(sources), "n_failed": failed}
