"""Runs in the results database: registering a run, storing its batches, closing it.

Shared by the in-process driver (:func:`survey_classifier.pipeline.run_pipeline`)
and the Celery workers: :func:`store_batch` writes everything one batch
produced in one transaction, idempotently (upserts keyed on the cutout,
stage and model version), so a batch run twice stores nothing twice.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from survey_classifier.cutout import CutoutSource
from survey_classifier.db.checks import unreachable
from survey_classifier.db.models import CutoutRow, RunBatchRow, RunRow, utcnow
from survey_classifier.db.store import (
    clear_errors,
    record_catalogue_columns,
    record_runs,
    store_errors,
    store_results,
    upsert_cutouts,
)
from survey_classifier.errors import SurveyClassifierError
from survey_classifier.heartbeat import owner_dead, owner_tag
from survey_classifier.outcomes import BatchResult, CutoutOutcome
from survey_classifier.stages.base import Stage

__all__ = [
    "READ_STAGE",
    "store_batch",
    "store_outcomes",
    "register_run",
    "sources_for",
    "close_run_if_done",
    "close_run",
    "mark_batch_failed",
    "start_run",
    "update_run",
    "resume_run",
    "unfinished_batches",
    "done_counts",
    "retry_unreachable",
]

#: Name and version under which reading errors are stored.
READ_STAGE = ("read", "1")

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Waits between tries of a database operation while the server is unreachable (30 s in all).
RETRY_WAITS_S = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0)


def retry_unreachable(operation: Callable[[], T]) -> T:
    """``operation()``, tried again while the database is unreachable (:data:`RETRY_WAITS_S`).

    Only for operations that are one transaction (a failed try leaves nothing).
    """
    for wait_s in RETRY_WAITS_S:
        try:
            return operation()
        except (OperationalError, InterfaceError) as exc:
            if not unreachable(exc):
                raise
            log.warning("the database is unreachable; trying again in %.1f s", wait_s)
            time.sleep(wait_s)
    return operation()


def _cutout_row(outcome: CutoutOutcome) -> dict[str, Any]:
    source = outcome.source
    row: dict[str, Any] = {"path": source.path}
    cutout = outcome.cutout
    if cutout is None:
        return row
    row.update(
        sha256=cutout.sha256,
        hdu=cutout.hdu,
        **_positions(source, cutout.ra_deg, cutout.dec_deg),
        pixel_scale_arcsec=cutout.pixel_scale_arcsec,
        beam_major_arcsec=cutout.beam_major_arcsec,
        beam_minor_arcsec=cutout.beam_minor_arcsec,
        shape_y=int(cutout.data.shape[0]),
        shape_x=int(cutout.data.shape[1]),
        catalogue_id=source.catalogue_id,
        catalogue=source.extra or None,
        warnings=cutout.warnings or None,
        origin=cutout.origin,
    )
    return row


def _positions(source: CutoutSource, wcs_ra_deg, wcs_dec_deg) -> dict[str, Any]:
    """The catalogue's position, the WCS centre, and the source position cone searches use.

    The source position is the catalogue's when it gave one (a catalogue
    names the source; the cutout may be centred elsewhere), else the WCS
    centre of the cutout.
    """
    catalogued = source.ra_deg is not None and source.dec_deg is not None
    return {
        "catalogue_ra_deg": source.ra_deg if catalogued else None,
        "catalogue_dec_deg": source.dec_deg if catalogued else None,
        "wcs_ra_deg": wcs_ra_deg,
        "wcs_dec_deg": wcs_dec_deg,
        "ra_deg": source.ra_deg if catalogued else wcs_ra_deg,
        "dec_deg": source.dec_deg if catalogued else wcs_dec_deg,
    }


def store_batch(
    engine: Engine,
    run_id: int | None,
    stages: Sequence[Stage],
    batch: BatchResult,
    *,
    batch_id: int | None = None,
    worker: str | None = None,
) -> float:
    """Write one batch's cutouts, results and errors in one transaction.

    Idempotent: storing the same batch twice leaves the same rows. With
    ``batch_id``, the ``run_batches`` row is marked done in the same
    transaction, so a batch is either wholly stored and done or not at all.
    Returns the seconds spent.
    """
    start = time.perf_counter()
    outcomes = batch.outcomes
    with engine.begin() as connection:
        store_outcomes(connection, run_id, stages, outcomes)
        if batch_id is not None:
            batches = RunBatchRow.__table__
            connection.execute(
                update(batches)
                .where(batches.c.id == batch_id)
                .values(
                    status="done",
                    n_failed=sum(1 for o in outcomes if o.errors),
                    worker=worker,
                    finished_at=utcnow(),
                    attempts=batches.c.attempts + 1,
                    failure=None,
                )
            )
    return time.perf_counter() - start


def store_outcomes(connection: Connection, run_id: int | None, stages: Sequence[Stage],
                   outcomes: Sequence[CutoutOutcome]) -> dict[str, int]:
    """Write cutouts, results and errors inside the caller's transaction; returns cutout ids by path."""
    ids = upsert_cutouts(connection, [_cutout_row(o) for o in outcomes])
    read_ok = [(ids[o.source.path], *READ_STAGE, "") for o in outcomes if o.cutout is not None]
    clear_errors(connection, read_ok)
    for stage in stages:
        results = [
            (ids[o.source.path], o.cutout.results[stage.name])
            for o in outcomes
            if o.cutout is not None and stage.name in o.cutout.results and stage.name not in o.reused
        ]
        store_results(
            connection,
            kind=stage.result_kind,
            stage=stage.name,
            stage_version=stage.version,
            model_ref=stage.model_ref,
            model_sha256=stage.model_sha256,
            run_id=run_id,
            results=results,
        )
    errors = [
        {
            "cutout_id": ids[o.source.path],
            "stage": e.stage,
            "stage_version": e.stage_version,
            "model_ref": e.model_ref,
            "model_sha256": e.model_sha256,
            "hdu": e.hdu,
            "error_type": e.error_type,
            "message": e.message,
        }
        for o in outcomes
        for e in o.errors
    ]
    store_errors(connection, errors, run_id)
    record_runs(connection, run_id, [  # the stored results this run read instead of computing: confirmed
        (ids[o.source.path], stage.name, stage.version, stage.model_ref)
        for o in outcomes for stage in stages if o.cutout is not None and stage.name in o.reused
    ])
    return ids


def register_run(
    engine: Engine,
    sources: Sequence[CutoutSource],
    stages: Sequence[Stage],
    *,
    batch_size: int,
    config: dict,
    executor: str,
    on_start: Callable[[int], None] | None = None,
) -> tuple[int, list[tuple[int, list[CutoutSource]]]]:
    """Record a run, its cutouts (by path) and its batches before processing.

    A path listed twice is processed once. Returns the run id and, per
    batch, its ``run_batches`` id and sources. ``on_start`` is called with
    the run id as soon as the run is recorded, before its cutouts are.
    """
    if batch_size < 1:
        msg = f"batch_size must be at least 1, got {batch_size}"
        raise ValueError(msg)
    unique = list({source.path: source for source in reversed(sources)}.values())[::-1]
    described = {}
    for source in unique:
        described.update(source.extra_columns)

    def record_columns() -> None:
        with engine.begin() as connection:  # first: a catalogue whose units clash registers nothing
            record_catalogue_columns(connection, described.values())

    retry_unreachable(record_columns)
    run_id = retry_unreachable(lambda: start_run(engine, stages, config, len(unique), executor))
    if on_start is not None:
        on_start(run_id)
    return run_id, retry_unreachable(lambda: _register_batches(engine, run_id, unique, batch_size))


def _register_batches(engine: Engine, run_id: int, unique: Sequence[CutoutSource], batch_size: int):
    """The cutouts and batches of a run, in one transaction."""
    batches = []
    with engine.begin() as connection:
        for index, first in enumerate(range(0, len(unique), batch_size)):
            chunk = unique[first : first + batch_size]
            ids = upsert_cutouts(connection, [_registration_row(s) for s in chunk])
            cutout_ids = [ids[s.path] for s in chunk]
            result = connection.execute(
                RunBatchRow.__table__.insert().values(
                    run_id=run_id,
                    batch_index=index,
                    cutout_ids=cutout_ids,
                    n_cutouts=len(chunk),
                    status="queued",
                    attempts=0,
                    n_failed=0,
                    queued_at=utcnow(),
                )
            )
            batches.append((int(result.inserted_primary_key[0]), chunk))
    return batches


def _registration_row(source: CutoutSource) -> dict[str, Any]:
    row: dict[str, Any] = {"path": source.path}
    if source.catalogue_id is not None:
        row["catalogue_id"] = source.catalogue_id
    if source.extra:
        row["catalogue"] = source.extra
    if source.ra_deg is not None and source.dec_deg is not None:
        row.update(ra_deg=source.ra_deg, dec_deg=source.dec_deg, catalogue_ra_deg=source.ra_deg,
                   catalogue_dec_deg=source.dec_deg)
    return row


def sources_for(engine: Engine, cutout_ids: Sequence[int]) -> list[CutoutSource]:
    """Rebuild the sources of registered cutouts (what a worker receives)."""
    table = CutoutRow.__table__
    with engine.connect() as connection:
        rows = {
            row.id: row
            for row in connection.execute(
                select(
                    table.c.id, table.c.path, table.c.catalogue_id, table.c.catalogue, table.c.catalogue_ra_deg,
                    table.c.catalogue_dec_deg,
                )
                .where(table.c.id.in_(list(cutout_ids)))
            )
        }
    missing = [i for i in cutout_ids if i not in rows]
    if missing:
        msg = f"cutout ids {missing[:10]} are not registered in the database"
        raise SurveyClassifierError(msg)
    return [
        CutoutSource(
            path=rows[i].path,
            catalogue_id=rows[i].catalogue_id,
            ra_deg=rows[i].catalogue_ra_deg,
            dec_deg=rows[i].catalogue_dec_deg,
            extra=rows[i].catalogue or {},
        )
        for i in cutout_ids
    ]


def _finish_if_done(connection: Connection, run_id: int) -> bool:
    """Mark the run finished, with its counts, if every batch is done and it is still running; True if this
    call did (a claim: of several closers, one does)."""
    batches, runs = RunBatchRow.__table__, RunRow.__table__
    pending, n_cutouts, n_failed = connection.execute(
        select(
            func.count().filter(batches.c.status != "done"),
            func.coalesce(func.sum(batches.c.n_cutouts), 0),
            func.coalesce(func.sum(batches.c.n_failed), 0),
        ).where(batches.c.run_id == run_id)
    ).one()
    if pending:
        return False
    claimed = connection.execute(
        update(runs)
        .where(runs.c.id == run_id, runs.c.status == "running")
        .values(
            status="finished",
            finished_at=utcnow(),
            n_processed=int(n_cutouts) - int(n_failed),
            n_failed=int(n_failed),
        )
    ).rowcount
    return claimed == 1


def close_run_if_done(engine: Engine, run_id: int, stages: Sequence[Stage]) -> bool:
    """Once every batch of a run is done: mark it finished and let each stage
    finish its run-wide results (:meth:`Stage.after_run`), in one transaction.

    Idempotent and once: only the call that moves the run from ``running``
    to ``finished`` runs :meth:`Stage.after_run` (True); the others, and a
    run with batches not done, change nothing (False).
    """
    with engine.begin() as connection:
        done = _finish_if_done(connection, run_id)
        if done:
            for stage in stages:
                stage.after_run(connection, run_id)
    return done


def close_run(engine: Engine, run_id: int, stages: Sequence[Stage], *, status: str) -> None:
    """End a run processed in this process: run-wide results when it finished, then its status."""
    with engine.begin() as connection:
        if status == "finished":
            for stage in stages:
                stage.after_run(connection, run_id)
        connection.execute(
            update(RunRow.__table__)
            .where(RunRow.__table__.c.id == run_id)
            .values(status=status, finished_at=utcnow())
        )


def mark_batch_failed(engine: Engine, batch_id: int, reason: str) -> None:
    """Record that a batch was given up on (unless it was stored meanwhile), for ``retry-failed``."""
    table = RunBatchRow.__table__
    with engine.begin() as connection:
        connection.execute(
            update(table)
            .where(table.c.id == batch_id, table.c.status != "done")
            .values(status="failed", failure=reason)
        )


def start_run(engine: Engine, stages: Sequence[Stage], config: dict, n_cutouts: int, executor: str) -> int:
    with engine.begin() as connection:
        result = connection.execute(
            RunRow.__table__.insert().values(
                started_at=utcnow(),
                status="running",
                executor=executor,
                config=config,
                stages=[stage.describe() for stage in stages],
                n_cutouts=n_cutouts,
                n_processed=0,
                n_failed=0,
                owner=owner_tag(),
                heartbeat_at=utcnow(),
            )
        )
        return int(result.inserted_primary_key[0])


def update_run(engine: Engine, run_id: int, **values) -> None:
    """Set columns of the ``runs`` row of ``run_id``."""
    with engine.begin() as connection:
        connection.execute(update(RunRow.__table__).where(RunRow.__table__.c.id == run_id).values(**values))


def _same_run(config: dict, stages: list) -> str:
    """What makes two runs "the same": their configuration (but the process id) and stages, as canonical JSON."""
    kept = {key: value for key, value in json.loads(json.dumps(config, default=str)).items() if key != "pid"}
    return json.dumps([kept, json.loads(json.dumps(stages, default=str))], sort_keys=True)


def resume_run(engine: Engine, *, executor: str, config: dict, stages: Sequence[Stage], n_cutouts: int) -> int | None:
    """The id of an interrupted run of the same inputs, stages and parameters, now claimed by this process; or None.

    A run is interrupted when it is still ``running`` and its owner is dead
    (:func:`survey_classifier.heartbeat.owner_dead`). The claim is atomic:
    of two processes resuming the same run, one gets it.
    """
    runs = RunRow.__table__
    wanted = _same_run(config, [stage.describe() for stage in stages])
    with engine.connect() as connection:
        candidates = connection.execute(
            select(runs.c.id, runs.c.config, runs.c.stages, runs.c.owner, runs.c.heartbeat_at)
            .where(runs.c.status == "running", runs.c.executor == executor, runs.c.n_cutouts == n_cutouts)
            .order_by(runs.c.id.desc())
        ).all()
    for row in candidates:
        if not owner_dead(row.owner, row.heartbeat_at) or _same_run(row.config, row.stages) != wanted:
            continue
        if _registered_cutouts(engine, row.id) < n_cutouts:  # died before its batches were recorded
            update_run(engine, row.id, status="failed", finished_at=utcnow())
            continue
        with engine.begin() as connection:
            claimed = connection.execute(
                update(runs)
                .where(runs.c.id == row.id, runs.c.status == "running", runs.c.owner == row.owner,
                       runs.c.heartbeat_at == row.heartbeat_at)
                .values(owner=owner_tag(), heartbeat_at=utcnow())
            ).rowcount
        if claimed == 1:
            return int(row.id)
    return None


def _registered_cutouts(engine: Engine, run_id: int) -> int:
    table = RunBatchRow.__table__
    with engine.connect() as connection:
        return connection.execute(
            select(func.coalesce(func.sum(table.c.n_cutouts), 0)).where(table.c.run_id == run_id)
        ).scalar_one()


def unfinished_batches(engine: Engine, run_id: int) -> list[tuple[int, list[CutoutSource]]]:
    """The batches of a run not stored yet, in order, with their sources: what resuming it processes."""
    table = RunBatchRow.__table__
    with engine.connect() as connection:
        rows = connection.execute(
            select(table.c.id, table.c.cutout_ids)
            .where(table.c.run_id == run_id, table.c.status != "done")
            .order_by(table.c.batch_index)
        ).all()
    return [(int(batch_id), sources_for(engine, cutout_ids)) for batch_id, cutout_ids in rows]


def done_counts(engine: Engine, run_id: int) -> tuple[int, int, int]:
    """Cutouts in the run's stored batches: (all, processed, failed)."""
    table = RunBatchRow.__table__
    with engine.connect() as connection:
        n_cutouts, n_failed = connection.execute(
            select(func.coalesce(func.sum(table.c.n_cutouts), 0), func.coalesce(func.sum(table.c.n_failed), 0))
            .where(table.c.run_id == run_id, table.c.status == "done")
        ).one()
    return int(n_cutouts), int(n_cutouts) - int(n_failed), int(n_failed)
