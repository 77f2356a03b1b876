"""Run stages over cutouts and store the results: the one pipeline.

The in-process ``classify`` command and the Celery workers run exactly this
code: :meth:`Pipeline.process_batch` reads and processes a batch without
touching the database, :func:`store_batch` writes what it produced in one
transaction, idempotently.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine

from survey_classifier.cutout import Cutout, CutoutSource
from survey_classifier.db.models import CutoutRow, RunBatchRow, RunRow, utcnow
from survey_classifier.db.store import clear_errors, store_errors, store_results, upsert_cutouts
from survey_classifier.errors import CutoutError, StageConfigError, SurveyClassifierError
from survey_classifier.io.fits import ReadLimits, read_cutout
from survey_classifier.stages.base import CutoutFailure, Stage, check_result
from survey_classifier.stages.registry import order_stages

__all__ = [
    "READ_STAGE",
    "CutoutOutcome",
    "BatchResult",
    "Pipeline",
    "store_batch",
    "register_run",
    "sources_for",
    "finish_run_if_done",
    "RunSummary",
    "run_pipeline",
]

log = logging.getLogger(__name__)

#: Name and version under which reading errors are stored.
READ_STAGE = ("read", "1")


@dataclass
class FailureRecord:
    """A failure of one stage (or of reading) on one cutout."""

    stage: str
    stage_version: str
    model_ref: str
    error_type: str
    message: str
    hdu: int | None = None


@dataclass
class CutoutOutcome:
    """What the pipeline made of one input."""

    source: CutoutSource
    cutout: Cutout | None = None
    errors: list[FailureRecord] = field(default_factory=list)


@dataclass
class BatchResult:
    """Outcomes of one batch, with the seconds spent in each step."""

    outcomes: list[CutoutOutcome]
    timings: dict[str, float]


class Pipeline:
    """An ordered set of stages applied to batches of cutouts.

    Parameters
    ----------
    stages : list of Stage
        Ordered by their requirements on construction.
    limits : ReadLimits, optional
        Size limits applied when reading each file.
    blas_threads : int or None
        BLAS threads while a batch is processed (default 1: the pipeline
        scales with processes, and on small cutouts multi-threaded BLAS
        spends far more time synchronising than computing). None leaves
        the library's setting alone.
    """

    def __init__(self, stages: Sequence[Stage], *, limits: ReadLimits | None = None, blas_threads: int | None = 1):
        self.stages = order_stages(list(stages))
        self.limits = limits or ReadLimits()
        self.blas_threads = blas_threads
        self._ready = False
        self._blas = None

    def setup(self) -> None:
        """Load each stage's resources once (model sessions, maps)."""
        if not self._ready:
            for stage in self.stages:
                stage.setup()
            self._ready = True

    def describe(self) -> list[dict[str, Any]]:
        return [stage.describe() for stage in self.stages]

    def read(self, source: CutoutSource) -> CutoutOutcome:
        """Read one input; a failure becomes an error on the outcome."""
        outcome = CutoutOutcome(source=source)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                outcome.cutout = read_cutout(source, limits=self.limits)
            except CutoutError as exc:
                outcome.errors.append(
                    FailureRecord(*READ_STAGE, "", type(exc).__name__, exc.reason, hdu=exc.hdu)
                )
            except OSError as exc:
                reason = f"cannot read file: {exc.strerror or exc}"
                outcome.errors.append(FailureRecord(*READ_STAGE, "", type(exc).__name__, reason))
        for warning in caught:
            text = str(warning.message)
            log.warning("%s: %s", source.path, text)
            if outcome.cutout is not None and text not in outcome.cutout.warnings:
                outcome.cutout.warnings.append(text)
        return outcome

    def process_batch(self, sources: Sequence[CutoutSource]) -> BatchResult:
        """Read and process a batch; touches no database."""
        self.setup()
        if self.blas_threads is None:
            return self._process_batch(sources)
        if self._blas is None:
            from threadpoolctl import ThreadpoolController

            self._blas = ThreadpoolController()
        with self._blas.limit(limits=self.blas_threads, user_api="blas"):
            return self._process_batch(sources)

    def _process_batch(self, sources: Sequence[CutoutSource]) -> BatchResult:
        timings: dict[str, float] = defaultdict(float)
        start = time.perf_counter()
        outcomes = [self.read(source) for source in sources]
        timings["read"] += time.perf_counter() - start
        for stage in self.stages:
            config = getattr(stage, "preprocess_config", None)
            ready = [o for o in outcomes if o.cutout is not None and self._meets(stage, o)]
            if config is not None:
                start = time.perf_counter()
                for outcome in list(ready):
                    try:
                        outcome.cutout.preprocessed(config)
                    except ValueError as exc:
                        self._fail(stage, outcome, "PreprocessError", str(exc))
                        ready.remove(outcome)
                timings["preprocess"] += time.perf_counter() - start
            start = time.perf_counter()
            self._run_stage(stage, ready)
            timings[f"stage:{stage.name}"] += time.perf_counter() - start
        return BatchResult(outcomes=outcomes, timings=dict(timings))

    def _meets(self, stage: Stage, outcome: CutoutOutcome) -> bool:
        cutout = outcome.cutout
        missing = [dep for dep in stage.stage_requirements if dep not in cutout.results]
        if "wcs" in stage.requires and cutout.wcs is None:
            missing.append("a celestial WCS")
        if missing:
            reason = f"needs {', '.join(missing)}, which is missing for this cutout (an earlier failure)"
            self._fail(stage, outcome, "MissingRequirement", reason)
            return False
        return True

    def _fail(self, stage: Stage, outcome: CutoutOutcome, error_type: str, message: str) -> None:
        hdu = outcome.cutout.hdu if outcome.cutout is not None else None
        outcome.errors.append(FailureRecord(stage.name, stage.version, stage.model_ref, error_type, message, hdu))
        log.warning("%s [HDU %s]: stage %s failed: %s", outcome.source.path, hdu, stage.name, message)

    def _run_stage(self, stage: Stage, ready: list[CutoutOutcome]) -> None:
        if not ready:
            return
        try:
            results = self._call(stage, ready)
        except StageConfigError:
            raise
        except Exception:  # isolate the cutout at fault: one at a time
            results = []
            for outcome in ready:
                try:
                    results.extend(self._call(stage, [outcome]))
                except StageConfigError:
                    raise
                except Exception as exc:
                    results.append(exc)
        for outcome, result in zip(ready, results, strict=True):
            if isinstance(result, Exception):
                self._fail(stage, outcome, type(result).__name__, _reason(result))
            elif isinstance(result, CutoutFailure):
                self._fail(stage, outcome, "CutoutFailure", result.reason)
            else:
                outcome.cutout.results[stage.name] = result
                outcome.cutout.provenance[stage.name] = (stage.version, stage.model_ref)

    @staticmethod
    def _call(stage: Stage, batch: list[CutoutOutcome]) -> list:
        results = stage.process([outcome.cutout for outcome in batch])
        if len(results) != len(batch):
            msg = f"stage {stage.name!r} returned {len(results)} results for a batch of {len(batch)}"
            raise StageConfigError(msg)
        for result in results:
            check_result(stage, result)
        return results


def _reason(exc: Exception) -> str:
    return exc.reason if isinstance(exc, CutoutError) else (str(exc) or type(exc).__name__)


def _cutout_row(outcome: CutoutOutcome) -> dict[str, Any]:
    source = outcome.source
    row: dict[str, Any] = {"path": source.path}
    cutout = outcome.cutout
    if cutout is None:
        return row
    ra = source.ra_deg if cutout.ra_deg is None else cutout.ra_deg
    dec = source.dec_deg if cutout.dec_deg is None else cutout.dec_deg
    row.update(
        sha256=cutout.sha256,
        hdu=cutout.hdu,
        ra_deg=ra,
        dec_deg=dec,
        pixel_scale_arcsec=cutout.pixel_scale_arcsec,
        beam_major_arcsec=cutout.beam_major_arcsec,
        beam_minor_arcsec=cutout.beam_minor_arcsec,
        shape_y=int(cutout.data.shape[0]),
        shape_x=int(cutout.data.shape[1]),
        catalogue_id=source.catalogue_id,
        catalogue=source.extra or None,
        warnings=cutout.warnings or None,
    )
    return row


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
        ids = upsert_cutouts(connection, [_cutout_row(o) for o in outcomes])
        read_ok = [(ids[o.source.path], *READ_STAGE, "") for o in outcomes if o.cutout is not None]
        clear_errors(connection, read_ok)
        for stage in stages:
            results = [
                (ids[o.source.path], o.cutout.results[stage.name])
                for o in outcomes
                if o.cutout is not None and stage.name in o.cutout.results
            ]
            store_results(
                connection,
                kind=stage.result_kind,
                stage=stage.name,
                stage_version=stage.version,
                model_ref=stage.model_ref,
                run_id=run_id,
                results=results,
            )
        errors = [
            {
                "cutout_id": ids[o.source.path],
                "stage": e.stage,
                "stage_version": e.stage_version,
                "model_ref": e.model_ref,
                "hdu": e.hdu,
                "error_type": e.error_type,
                "message": e.message,
            }
            for o in outcomes
            for e in o.errors
        ]
        store_errors(connection, errors, run_id)
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
                )
            )
    return time.perf_counter() - start


def register_run(
    engine: Engine,
    sources: Sequence[CutoutSource],
    stages: Sequence[Stage],
    *,
    batch_size: int,
    config: dict,
    executor: str,
) -> tuple[int, list[tuple[int, list[CutoutSource]]]]:
    """Record a run, its cutouts (by path) and its batches before processing.

    A path listed twice is processed once. Returns the run id and, per
    batch, its ``run_batches`` id and sources.
    """
    if batch_size < 1:
        msg = f"batch_size must be at least 1, got {batch_size}"
        raise ValueError(msg)
    unique = list({source.path: source for source in reversed(sources)}.values())[::-1]
    run_id = start_run(engine, stages, config, len(unique), executor)
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
    return run_id, batches


def _registration_row(source: CutoutSource) -> dict[str, Any]:
    row: dict[str, Any] = {"path": source.path}
    if source.catalogue_id is not None:
        row["catalogue_id"] = source.catalogue_id
    if source.extra:
        row["catalogue"] = source.extra
    if source.ra_deg is not None and source.dec_deg is not None:
        row["ra_deg"] = source.ra_deg
        row["dec_deg"] = source.dec_deg
    return row


def sources_for(engine: Engine, cutout_ids: Sequence[int]) -> list[CutoutSource]:
    """Rebuild the sources of registered cutouts (what a worker receives)."""
    table = CutoutRow.__table__
    with engine.connect() as connection:
        rows = {
            row.id: row
            for row in connection.execute(
                select(table.c.id, table.c.path, table.c.catalogue_id, table.c.catalogue, table.c.ra_deg, table.c.dec_deg)
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
            ra_deg=rows[i].ra_deg,
            dec_deg=rows[i].dec_deg,
            extra=rows[i].catalogue or {},
        )
        for i in cutout_ids
    ]


def finish_run_if_done(engine: Engine, run_id: int) -> bool:
    """Mark the run finished, with its counts, once every batch is done."""
    batches = RunBatchRow.__table__
    runs = RunRow.__table__
    with engine.begin() as connection:
        pending, n_cutouts, n_failed = connection.execute(
            select(
                func.count().filter(batches.c.status != "done"),
                func.coalesce(func.sum(batches.c.n_cutouts), 0),
                func.coalesce(func.sum(batches.c.n_failed), 0),
            ).where(batches.c.run_id == run_id)
        ).one()
        if pending:
            return False
        connection.execute(
            update(runs)
            .where(runs.c.id == run_id)
            .values(
                status="finished",
                finished_at=utcnow(),
                n_processed=int(n_cutouts) - int(n_failed),
                n_failed=int(n_failed),
            )
        )
    return True


@dataclass
class RunSummary:
    """What a run did, for the closing summary and the ``runs`` table."""

    run_id: int
    n_cutouts: int
    n_processed: int
    n_failed: int
    failures: list[tuple[str, str, str]]
    timings: dict[str, float]
    elapsed_s: float

    @property
    def reasons(self) -> Counter:
        """Failures counted by stage and reason."""
        return Counter((stage, message) for _, stage, message in self.failures)


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
            )
        )
        return int(result.inserted_primary_key[0])


def run_pipeline(
    sources: Sequence[CutoutSource],
    stages: Sequence[Stage],
    engine: Engine,
    *,
    batch_size: int = 64,
    limits: ReadLimits | None = None,
    config: dict | None = None,
    progress: Callable[[int], None] | None = None,
) -> RunSummary:
    """Process ``sources`` in batches in this process and store everything.

    Parameters
    ----------
    sources : sequence of CutoutSource
    stages : sequence of Stage
    engine : Engine
        An engine on a database upgraded to the current schema.
    batch_size : int
    limits : ReadLimits, optional
    config : dict, optional
        Extra configuration recorded with the run.
    progress : callable, optional
        Called with the number of cutouts finished after each batch.
    """
    pipeline = Pipeline(stages, limits=limits)
    started = time.perf_counter()
    run_config = {"batch_size": batch_size, "pid": os.getpid(), **(config or {})}
    run_id, batches = register_run(
        engine, sources, pipeline.stages, batch_size=batch_size, config=run_config, executor="in-process"
    )
    timings: dict[str, float] = defaultdict(float)
    failures: list[tuple[str, str, str]] = []
    n_processed = n_failed = 0
    status = "failed"
    try:
        start = time.perf_counter()
        pipeline.setup()
        timings["setup"] += time.perf_counter() - start
        for batch_id, batch_sources in batches:
            batch = pipeline.process_batch(batch_sources)
            for step, seconds in batch.timings.items():
                timings[step] += seconds
            timings["database"] += store_batch(engine, run_id, pipeline.stages, batch, batch_id=batch_id)
            for outcome in batch.outcomes:
                if outcome.errors:
                    n_failed += 1
                    failures.extend((outcome.source.path, e.stage, e.message) for e in outcome.errors)
                else:
                    n_processed += 1
            _update_run(engine, run_id, n_processed=n_processed, n_failed=n_failed)
            if progress is not None:
                progress(len(batch.outcomes))
        with engine.begin() as connection:
            for stage in pipeline.stages:
                stage.after_run(connection, run_id)
        status = "finished"
    finally:
        _update_run(engine, run_id, status=status, finished_at=utcnow())
    return RunSummary(
        run_id=run_id,
        n_cutouts=sum(len(chunk) for _, chunk in batches),
        n_processed=n_processed,
        n_failed=n_failed,
        failures=failures,
        timings=dict(timings),
        elapsed_s=time.perf_counter() - started,
    )


def _update_run(engine: Engine, run_id: int, **values) -> None:
    with engine.begin() as connection:
        connection.execute(update(RunRow.__table__).where(RunRow.__table__.c.id == run_id).values(**values))
