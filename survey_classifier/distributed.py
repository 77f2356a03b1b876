"""Submitting runs to Celery workers and following them from the database.

The database is the source of truth: a run's batches are rows of
``run_batches``; a message in the queue only says "process batch N". So
progress, status and retries are read from and decided by the database,
whatever happened to the broker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine

from survey_classifier.cutout import CutoutSource
from survey_classifier.db.models import ErrorRow, RunBatchRow, RunRow, utcnow
from survey_classifier.errors import SurveyClassifierError
from survey_classifier.runs import finish_run_if_done, register_run
from survey_classifier.stages.base import Stage
from survey_classifier.stages.registry import order_stages

__all__ = ["RunStatus", "submit_run", "enqueue_batches", "run_status", "retry_failed", "wait_for_run"]


@dataclass
class RunStatus:
    run_id: int
    status: str
    n_cutouts: int
    n_done: int
    n_failed: int
    batches: dict[str, int]
    errors: list[tuple[str, str, int]]

    @property
    def finished(self) -> bool:
        return self.batches.get("queued", 0) == 0 and self.batches.get("failed", 0) == 0


def enqueue_batches(engine: Engine, batch_ids: Sequence[int], *, queue: str = "cpu") -> int:
    """Send one message per batch to ``queue``: ids and the run's model references, JSON."""
    from survey_classifier.workers.tasks import process_batch

    table = RunBatchRow.__table__
    with engine.connect() as connection:
        rows = connection.execute(
            select(table.c.id, table.c.run_id, table.c.cutout_ids).where(table.c.id.in_(list(batch_ids)))
        ).all()
        described = dict(
            connection.execute(
                select(RunRow.id, RunRow.stages).where(RunRow.id.in_({row.run_id for row in rows}))
            ).all()
        )
    for batch_id, run_id, cutout_ids in rows:
        models = {s["name"]: s["model_artefact"] for s in described[run_id] if s.get("model_artefact")}
        # no time limits in the message: those of the workers' own environment apply
        # (SURVEY_CLASSIFIER_SOFT_TIME_LIMIT, SURVEY_CLASSIFIER_TIME_LIMIT), not the submitter's
        process_batch.apply_async(args=[run_id, batch_id, cutout_ids], kwargs={"models": models}, queue=queue,
                                  time_limit=None, soft_time_limit=None)
    return len(rows)


def submit_run(
    engine: Engine,
    sources: Sequence[CutoutSource],
    stages: Sequence[Stage],
    *,
    batch_size: int = 256,
    queue: str = "cpu",
    config: dict | None = None,
) -> tuple[int, int]:
    """Register a run and its batches, then queue them; returns (run id, batches)."""
    from survey_classifier.workers.app import QUEUES

    if queue not in QUEUES:
        msg = f"unknown queue {queue!r}; workers listen on {list(QUEUES)}"
        raise SurveyClassifierError(msg)
    ordered = order_stages(list(stages))
    run_config = {"batch_size": batch_size, "queue": queue, **(config or {})}
    run_id, batches = register_run(
        engine, sources, ordered, batch_size=batch_size, config=run_config, executor="celery"
    )
    enqueue_batches(engine, [batch_id for batch_id, _ in batches], queue=queue)
    return run_id, len(batches)


def run_status(engine: Engine, run_id: int) -> RunStatus:
    """Counts of batches by status, cutouts done and failed, errors by reason."""
    batches = RunBatchRow.__table__
    errors = ErrorRow.__table__
    with engine.connect() as connection:
        run = connection.execute(select(RunRow.__table__).where(RunRow.__table__.c.id == run_id)).first()
        if run is None:
            msg = f"no run with id {run_id} in this database"
            raise SurveyClassifierError(msg)
        by_status = dict(
            connection.execute(
                select(batches.c.status, func.count()).where(batches.c.run_id == run_id).group_by(batches.c.status)
            ).all()
        )
        n_done, n_failed = connection.execute(
            select(
                func.coalesce(func.sum(batches.c.n_cutouts), 0), func.coalesce(func.sum(batches.c.n_failed), 0)
            ).where(batches.c.run_id == run_id, batches.c.status == "done")
        ).one()
        reasons = connection.execute(
            select(errors.c.stage, errors.c.message, func.count())
            .where(errors.c.run_id == run_id)
            .group_by(errors.c.stage, errors.c.message)
            .order_by(func.count().desc())
            .limit(20)
        ).all()
    return RunStatus(
        run_id=run_id,
        status=run.status,
        n_cutouts=run.n_cutouts,
        n_done=int(n_done),
        n_failed=int(n_failed),
        batches={str(k): int(v) for k, v in by_status.items()},
        errors=[(stage, message, int(count)) for stage, message, count in reasons],
    )


def retry_failed(engine: Engine, run_id: int, *, queue: str = "cpu", stalled_after_s: float | None = None) -> int:
    """Queue again the batches that failed, that hold cutouts with errors, or
    (with ``stalled_after_s``) that were queued longer ago than that.

    Safe at any time: a batch processed twice is stored to the same rows.
    """
    table = RunBatchRow.__table__
    condition = (table.c.status == "failed") | (table.c.n_failed > 0)
    if stalled_after_s is not None:
        cutoff = utcnow() - timedelta(seconds=stalled_after_s)
        condition = condition | ((table.c.status == "queued") & (table.c.queued_at < cutoff))
    with engine.begin() as connection:
        ids = list(connection.execute(select(table.c.id).where(table.c.run_id == run_id, condition)).scalars())
        if ids:
            connection.execute(update(table).where(table.c.id.in_(ids)).values(status="queued", queued_at=utcnow()))
            connection.execute(
                update(RunRow.__table__)
                .where(RunRow.__table__.c.id == run_id)
                .values(status="running", finished_at=None)
            )
    return enqueue_batches(engine, ids, queue=queue) if ids else 0


def wait_for_run(
    engine: Engine,
    run_id: int,
    *,
    poll_s: float = 1.0,
    timeout_s: float | None = None,
    progress: Callable[[RunStatus], None] | None = None,
) -> RunStatus:
    """Poll the database until every batch of the run is done or failed."""
    start = time.monotonic()
    while True:
        status = run_status(engine, run_id)
        if progress is not None:
            progress(status)
        if status.batches.get("queued", 0) == 0:
            finish_run_if_done(engine, run_id)
            return run_status(engine, run_id)
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            return status
        time.sleep(poll_s)
