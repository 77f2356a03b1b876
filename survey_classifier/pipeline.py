"""Run stages over cutouts and store the results: the one pipeline.

The in-process ``classify`` command and the Celery workers run exactly this
code: :meth:`Pipeline.process_batch` reads and processes a batch without
writing to the database (it reads from it only the stored results of
upstream stages a run reuses, :mod:`survey_classifier.reuse`);
:func:`survey_classifier.runs.store_batch` writes what it produced in one
transaction, idempotently.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.engine import Engine

from survey_classifier.cutout import Cutout, CutoutSource
from survey_classifier.errors import CutoutError, StageConfigError, caused_by
from survey_classifier.heartbeat import Heartbeat
from survey_classifier.io.fits import ReadLimits, read_cutout
from survey_classifier.io.mosaics import is_mosaic_path, read_mosaic_cutout, write_cutout_fits
from survey_classifier.io.tiles import TileCache
from survey_classifier.outcomes import BatchResult, CutoutOutcome, FailureRecord, RunSummary
from survey_classifier.reuse import ONLY, StoredResults
from survey_classifier.runs import (
    READ_STAGE,
    close_run,
    done_counts,
    register_run,
    resume_run,
    store_batch,
    unfinished_batches,
    update_run,
)
from survey_classifier.stages.base import CutoutFailure, Stage, check_result
from survey_classifier.stages.registry import order_stages

__all__ = ["READ_STAGE", "Pipeline", "run_pipeline"]

log = logging.getLogger(__name__)


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
    stored : StoredResults, optional
        Stages whose stored results are read where they fit instead of
        computed (:mod:`survey_classifier.reuse`).
    save_cutouts : str or None
        Folder (or URL) where cutouts cut from mosaics are also written as
        FITS files; None writes nothing.
    interrupts : tuple of exception types
        Exceptions that stop a batch from outside (a Celery worker passes
        its ``SoftTimeLimitExceeded``): never recorded as the fault of the
        cutout being read or processed, but raised out of
        :meth:`process_batch`, even when a reader or a stage wrapped them.
    """

    def __init__(
        self,
        stages: Sequence[Stage],
        *,
        limits: ReadLimits | None = None,
        blas_threads: int | None = 1,
        stored: StoredResults | None = None,
        save_cutouts: str | None = None,
        interrupts: tuple[type[BaseException], ...] = (),
    ):
        self.stages = order_stages(list(stages))
        self.interrupts = tuple(interrupts)
        self.limits = limits or ReadLimits()
        self.blas_threads = blas_threads
        self.stored = stored if stored else None
        self.save_cutouts = save_cutouts
        self._ready = False
        self._blas = None

    def _mode(self, stage: Stage) -> str | None:
        return None if self.stored is None else self.stored.modes.get(stage.name)

    def setup(self) -> None:
        """Load each stage's resources once (model sessions, maps); not those only ever read from the database."""
        if not self._ready:
            for stage in self.stages:
                if self._mode(stage) != ONLY:
                    stage.setup()
            self._ready = True

    def describe(self) -> list[dict[str, Any]]:
        return [stage.describe() for stage in self.stages]

    def read(self, source: CutoutSource, tiles: TileCache | None = None) -> CutoutOutcome:
        """Read one input (a file, or a cutout cut from the mosaic ``tiles`` open for the batch);
        a failure becomes an error on the outcome."""
        outcome = CutoutOutcome(source=source)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if is_mosaic_path(source.path):
                    outcome.cutout = read_mosaic_cutout(source, tiles=tiles, limits=self.limits)
                    if self.save_cutouts:
                        write_cutout_fits(outcome.cutout, self.save_cutouts)
                else:
                    outcome.cutout = read_cutout(source, limits=self.limits)
            except CutoutError as exc:
                self._reraise_interruption(exc)
                outcome.errors.append(
                    FailureRecord(*READ_STAGE, "", type(exc).__name__, exc.reason, hdu=exc.hdu)
                )
            except OSError as exc:
                self._reraise_interruption(exc)
                reason = f"cannot read file: {exc.strerror or exc}"
                outcome.errors.append(FailureRecord(*READ_STAGE, "", type(exc).__name__, reason))
        for warning in caught:
            text = str(warning.message)
            log.warning("%s: %s", source.path, text)
            if outcome.cutout is not None and text not in outcome.cutout.warnings:
                outcome.cutout.warnings.append(text)
        return outcome

    def _reraise_interruption(self, exc: BaseException) -> None:
        """Raise the interruption (a time limit) that ``exc`` wraps, if it wraps one."""
        interruption = caused_by(exc, self.interrupts) if self.interrupts else None
        if interruption is not None:
            raise interruption

    def process_batch(self, sources: Sequence[CutoutSource]) -> BatchResult:
        """Read and process a batch; writes to no database."""

        def read_all(timings):
            start = time.perf_counter()
            with TileCache() as tiles:  # each mosaic tile opened once per batch
                outcomes = [self.read(source, tiles) for source in sources]
            timings["read"] += time.perf_counter() - start
            return outcomes

        return self._limited(read_all)

    def process_cutouts(self, cutouts: Sequence[Cutout]) -> BatchResult:
        """Process cutouts already read (the conformance kit fills in required upstream results this way)."""
        return self._limited(lambda timings: [CutoutOutcome(source=c.source, cutout=c) for c in cutouts])

    def _limited(self, outcomes_of) -> BatchResult:
        self.setup()
        if self.blas_threads is None:
            return self._process(outcomes_of)
        if self._blas is None:
            from threadpoolctl import ThreadpoolController

            self._blas = ThreadpoolController()
        with self._blas.limit(limits=self.blas_threads, user_api="blas"):
            return self._process(outcomes_of)

    def _process(self, outcomes_of) -> BatchResult:
        timings: dict[str, float] = defaultdict(float)
        outcomes = outcomes_of(timings)
        for stage in self.stages:
            if self._mode(stage) is not None:
                start = time.perf_counter()
                self._read_stored(stage, outcomes)
                timings[f"stored:{stage.name}"] += time.perf_counter() - start
                if self._mode(stage) == ONLY:
                    continue
            waiting = [o for o in outcomes if stage.name not in o.reused]
            config = stage.preprocess_config
            ready = [o for o in waiting if o.cutout is not None and self._meets(stage, o)]
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

    def _read_stored(self, stage: Stage, outcomes: list[CutoutOutcome]) -> None:
        """Put on the cutouts the stored results of ``stage`` that fit them, with their stored provenance."""
        readable = [o for o in outcomes if o.cutout is not None]
        for outcome, hit in zip(readable, self.stored.lookup(stage, [o.cutout for o in readable]), strict=True):
            if hit is not None:
                result, provenance = hit
                outcome.cutout.results[stage.name] = result
                outcome.cutout.provenance[stage.name] = provenance
                outcome.reused.add(stage.name)

    def _meets(self, stage: Stage, outcome: CutoutOutcome) -> bool:
        cutout = outcome.cutout
        missing = [
            f"the results of stage {dep!r}, which failed on this cutout"
            for dep in stage.stage_requirements
            if dep not in cutout.results
        ]
        if "wcs" in stage.requires and cutout.wcs is None:
            missing.append("a celestial WCS, which this cutout lacks")
        if "beam" in stage.requires and not (cutout.beam_major_arcsec and cutout.beam_minor_arcsec):
            missing.append("the beam, which this cutout's header does not give (BMAJ, BMIN)")
        if missing:
            self._fail(stage, outcome, "MissingRequirement", f"needs {'; '.join(missing)}")
            return False
        return True

    def _fail(self, stage: Stage, outcome: CutoutOutcome, error_type: str, message: str) -> None:
        hdu = outcome.cutout.hdu if outcome.cutout is not None else None
        outcome.errors.append(
            FailureRecord(stage.name, stage.version, stage.model_ref, error_type, message, hdu, stage.model_sha256)
        )
        log.warning("%s [HDU %s]: stage %s failed: %s", outcome.source.path, hdu, stage.name, message)

    def _run_stage(self, stage: Stage, ready: list[CutoutOutcome]) -> None:
        if not ready:
            return
        try:
            results = self._call(stage, ready)
        except StageConfigError:
            raise
        except Exception as batch_exc:  # isolate the cutout at fault: one at a time
            self._reraise_interruption(batch_exc)
            results = []
            for outcome in ready:
                try:
                    results.extend(self._call(stage, [outcome]))
                except StageConfigError:
                    raise
                except Exception as exc:
                    self._reraise_interruption(exc)
                    results.append(exc)
        for outcome, result in zip(ready, results, strict=True):
            if isinstance(result, Exception):
                self._fail(stage, outcome, type(result).__name__, _reason(result))
            elif isinstance(result, CutoutFailure):
                self._fail(stage, outcome, "CutoutFailure", result.reason)
            else:
                outcome.cutout.results[stage.name] = result
                outcome.cutout.provenance[stage.name] = (stage.version, stage.model_ref, stage.model_sha256)

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



def run_pipeline(
    sources: Sequence[CutoutSource],
    stages: Sequence[Stage],
    engine: Engine,
    *,
    batch_size: int = 64,
    limits: ReadLimits | None = None,
    config: dict | None = None,
    progress: Callable[[BatchResult], None] | None = None,
    save_cutouts: str | None = None,
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
        Extra configuration recorded with the run; ``config["reuse"]``
        (``{stage: "fill" | "only"}``, from
        :func:`survey_classifier.stages.plan.plan_stages`) names the stages
        whose stored results are read where they fit.
    progress : callable, optional
        Called with each batch's :class:`BatchResult` once it is stored.
    save_cutouts : str, optional
        Folder (or URL) where cutouts cut from mosaics are also written.
    """
    run_config = {"batch_size": batch_size, "pid": os.getpid(), **(config or {})}
    pipeline = Pipeline(stages, limits=limits, stored=StoredResults(engine, run_config.get("reuse") or {}),
                        save_cutouts=save_cutouts)
    started = time.perf_counter()
    n_cutouts = len({source.path for source in sources})
    run_id = resume_run(engine, executor="in-process", config=run_config, stages=pipeline.stages, n_cutouts=n_cutouts)
    resumed = run_id is not None
    if run_id is None:
        run_id, batches = register_run(
            engine, sources, pipeline.stages, batch_size=batch_size, config=run_config, executor="in-process"
        )
        n_processed = n_failed = 0
    else:  # an interrupted run of the same inputs: its batches not stored yet
        batches = unfinished_batches(engine, run_id)
        _, n_processed, n_failed = done_counts(engine, run_id)
    timings: dict[str, float] = defaultdict(float)
    failures: list[tuple[str, str, str]] = []
    reused: Counter = Counter()
    status = "failed"
    try:
        with Heartbeat(engine, run_id):  # a process killed mid-run leaves an *interrupted* run
            start = time.perf_counter()
            pipeline.setup()
            timings["setup"] += time.perf_counter() - start
            for batch_id, batch_sources in batches:
                batch = pipeline.process_batch(batch_sources)
                for step, seconds in batch.timings.items():
                    timings[step] += seconds
                timings["database"] += store_batch(engine, run_id, pipeline.stages, batch, batch_id=batch_id)
                for outcome in batch.outcomes:
                    reused.update(outcome.reused)
                    if outcome.errors:
                        n_failed += 1
                        failures.extend((outcome.source.path, e.stage, e.message) for e in outcome.errors)
                    else:
                        n_processed += 1
                update_run(engine, run_id, n_processed=n_processed, n_failed=n_failed)
                if progress is not None:
                    progress(batch)
        status = "finished"
    finally:
        close_run(engine, run_id, pipeline.stages, status=status)
    return RunSummary(
        run_id=run_id,
        resumed=resumed,
        n_cutouts=n_cutouts,
        n_processed=n_processed,
        n_failed=n_failed,
        failures=failures,
        timings=dict(timings),
        elapsed_s=time.perf_counter() - started,
        reused=reused,
    )
