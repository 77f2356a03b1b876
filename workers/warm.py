"""Warm a worker process before its first batch: load every default stage and run it once.

A fresh worker process spends its first batch loading models (ONNX
Runtime sessions, the SOM map) and compiling code (Numba kernels): 10.5 s
against 1.9 s for later batches in one measured run. Done when the
process starts instead (Celery's ``worker_process_init``), the first batch
of a run costs what the others do. The stages are those a run without
``--stages`` uses on the worker's database, with the registry's default
models fetched into the local cache; they are run once on a synthetic
FIRST-like cutout, nothing is stored. What stays warm is what the stages
keep per process (sessions keyed by model bytes, loaded maps, compiled
kernels), which is what the run's own stages then find.

``SURVEY_CLASSIFIER_WARM=0`` turns it off (``survey-classifier worker
--no-warm``). A failure to warm is logged and does not stop the worker:
its batches then load their stages as before.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

from sqlalchemy.engine import Engine

__all__ = ["WARM_ENV", "warm_enabled", "warm_default_stages", "warm_process", "preload_modules"]

log = logging.getLogger(__name__)

#: Environment variable that turns warming off when "0".
WARM_ENV = "SURVEY_CLASSIFIER_WARM"


def warm_enabled() -> bool:
    return os.environ.get(WARM_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def warm_default_stages(engine: Engine) -> tuple[list, float]:
    """Build the database's default stages with their models, set them up and run them once.

    Returns the stages and the seconds it took.
    """
    from survey_classifier.io.fits import read_cutout
    from survey_classifier.pipeline import Pipeline
    from survey_classifier.stages.plan import build_stages
    from survey_classifier.synthetic import make_synthetic_cutouts

    start = time.perf_counter()
    stages = build_stages(None, {}, engine)
    with tempfile.TemporaryDirectory(prefix="survey-classifier-warm-") as folder:
        make_synthetic_cutouts(folder, n=2, seed=0)
        cutouts = [read_cutout(path) for path in sorted(Path(folder).glob("*.fits"))]
        Pipeline(stages).process_cutouts(cutouts)
    return stages, time.perf_counter() - start


def warm_process(engine: Engine) -> None:
    """Warm this worker process, saying in its log what was loaded and how long it took."""
    if not warm_enabled():
        log.info("worker process %s: warming off (%s=0)", os.getpid(), WARM_ENV)
        return
    try:
        stages, seconds = warm_default_stages(engine)
    except Exception as exc:  # a worker that cannot warm still serves batches (and says why)
        log.warning("worker process %s: could not warm the default stages (%s: %s); its first batch will load them",
                    os.getpid(), type(exc).__name__, exc)
        return
    described = ", ".join(f"{s.name} {s.version}" + (f" ({s.model_ref})" if s.model_ref else "") for s in stages)
    log.info("worker process %s: default stages loaded and warmed in %.1f s: %s", os.getpid(), seconds, described)


def preload_modules() -> None:
    """Import, in a worker's main process before it forks its pool, what every worker process needs: the
    installed stages, the FITS and WCS readers, fsspec and its HTTP filesystem for cutouts named by URL
    (modules only: no model, no session, no thread).

    A pool process that replaces one that died (out of memory, a crash, the hard time limit) then starts
    with them instead of importing them for its first batch (measured: about 5 s on a loaded 2-core
    machine), so a batch that keeps killing its process reaches its delivery limit sooner; and no
    import is cut short by a time limit inside a batch (a module left half-imported breaks the process).
    """
    start = time.perf_counter()
    try:
        import fsspec.core  # cutouts and mosaics named by URL
        from astropy.wcs import WCS  # noqa: F401  (what reading a cutout imports)

        from survey_classifier.pipeline import Pipeline  # noqa: F401
        from survey_classifier.stages.registry import available_stages

        names = sorted(available_stages())
        try:
            import fsspec.implementations.http  # noqa: F401
        except ImportError:  # no aiohttp: no http inputs
            pass
    except Exception as exc:  # the worker still runs; its processes import what they need themselves
        log.warning("worker: could not preload the stages (%s: %s)", type(exc).__name__, exc)
        return
    log.info("worker: stages %s and readers imported in %.1f s, before the pool starts", names,
             time.perf_counter() - start)
