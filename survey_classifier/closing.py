"""Closing a Celery run once every batch is stored, whoever stored the last one.

The worker that stores a run's last batch closes the run
(:func:`~survey_classifier.runs.close_run_if_done`: status ``finished``,
counts, the stages' run-wide results). A worker that dies between that
store and the close, or whose close fails, would leave the run
``running`` with nothing left to do; the workers' sweeper
(:mod:`survey_classifier.workers.sweeper`) and a waiting submitter close it
instead, with the stages the run recorded (:func:`recorded_stages`). The
close is claimed in the database (``running`` to ``finished`` in the
transaction that computes the run-wide results), so it happens once.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from survey_classifier.artefacts import fetch
from survey_classifier.db.models import RunBatchRow, RunRow, utcnow
from survey_classifier.errors import StageConfigError
from survey_classifier.modelref import ModelRef
from survey_classifier.runs import close_run_if_done
from survey_classifier.stages.base import Stage
from survey_classifier.stages.registry import load_stage

__all__ = ["rebuild_stage", "recorded_stages", "stored_unclosed_runs", "close_stored_run"]


def rebuild_stage(engine: Engine, run_id: int, entry: dict, message: dict | None = None) -> Stage:
    """One stage as run ``run_id`` recorded it (``entry`` of ``runs.stages``), with its model fetched and bound.

    ``message``: the model reference a task message names, which must be the recorded one.
    """
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
        stage.bind_model(fetch(ModelRef.from_message(message), engine))
    return stage


def recorded_stages(engine: Engine, run_id: int) -> list[Stage]:
    """The stages of run ``run_id`` as it recorded them, models fetched and bound."""
    with engine.connect() as connection:
        described = connection.execute(select(RunRow.stages).where(RunRow.id == run_id)).scalar_one()
    return [rebuild_stage(engine, run_id, entry, entry.get("model_artefact")) for entry in described]


def stored_unclosed_runs(engine: Engine, settled_s: float) -> list[int]:
    """Running Celery runs whose batches are all done, the last one stored more than ``settled_s`` seconds ago."""
    batches, runs = RunBatchRow.__table__, RunRow.__table__
    cutoff = utcnow() - timedelta(seconds=settled_s)
    query = (
        select(runs.c.id)
        .join(batches, batches.c.run_id == runs.c.id)
        .where(runs.c.executor == "celery", runs.c.status == "running")
        .group_by(runs.c.id)
        .having(func.count().filter(batches.c.status != "done") == 0, func.max(batches.c.finished_at) < cutoff)
        .order_by(runs.c.id)
    )
    with engine.connect() as connection:
        return list(connection.execute(query).scalars())


def close_stored_run(engine: Engine, run_id: int) -> bool:
    """Close run ``run_id`` if every batch is done and nobody closed it yet; True if this call closed it."""
    return close_run_if_done(engine, run_id, recorded_stages(engine, run_id))
