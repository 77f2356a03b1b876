"""Conformance kit for stages, built-in or third-party.

Run any stage through the same checks the built-in stages pass::

    from survey_classifier.testing import check_stage
    check_stage(MyStage(threshold=2.0), cutouts)

where ``cutouts`` are real :class:`~survey_classifier.cutout.Cutout`
objects (read them with :func:`survey_classifier.io.fits.read_cutout`).
The results of the stages a stage requires (``requires =
("stage:measure",)``) are computed first by the installed stages, with
their default parameters and shipped models, where the cutouts do not
carry them already. Each check raises ``AssertionError`` with a message
naming the stage and what it got wrong.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from survey_classifier.cutout import Cutout
from survey_classifier.stages.base import RESULT_KINDS, CutoutFailure, Stage

__all__ = ["check_stage", "STAGE_CHECKS", "with_requirements"]


def _fresh(cutouts: Sequence[Cutout]) -> list[Cutout]:
    """Copies with the results of earlier stages kept, caches dropped."""
    copies = []
    for cutout in cutouts:
        clone = copy.copy(cutout)
        clone.results = dict(cutout.results)
        clone.provenance = dict(cutout.provenance)
        clone._preprocessed = {}
        copies.append(clone)
    return copies


def with_requirements(stage: Stage, cutouts: Sequence[Cutout]) -> list[Cutout]:
    """Copies of ``cutouts`` carrying the results of every stage ``stage`` requires.

    Results already on a cutout are kept; the others are computed by the
    installed stages (default parameters, shipped models), through the
    same :class:`~survey_classifier.pipeline.Pipeline` as a run.
    """
    from survey_classifier.pipeline import Pipeline
    from survey_classifier.stages.registry import available_stages, load_stage

    installed = available_stages()
    needed: list[str] = []
    pending = [dep for dep in stage.stage_requirements if any(dep not in c.results for c in cutouts)]
    while pending:
        name = pending.pop(0)
        if name in needed:
            continue
        if name not in installed:
            msg = (
                f"stage {stage.name!r} requires the results of {name!r}, and no installed stage is called "
                f"{name!r}: fill cutout.results[{name!r}] (and cutout.provenance) before calling check_stage"
            )
            raise AssertionError(msg)
        needed.append(name)
        pending.extend(r.split(":", 1)[1] for r in installed[name].requires if r.startswith("stage:"))
    copies = _fresh(cutouts)
    if not needed:
        return copies
    upstream = [load_stage(name) for name in needed]
    batch = Pipeline(upstream, blas_threads=None).process_cutouts(copies)
    return [outcome.cutout for outcome in batch.outcomes]


def check_declaration(stage: Stage, cutouts) -> None:
    """Name, version, kind and parameters are well formed."""
    name = type(stage).__name__
    assert isinstance(stage, Stage), f"{name} is not a survey_classifier Stage"
    assert stage.name and stage.name.isidentifier(), f"{name}.name {stage.name!r} must be an identifier"
    assert stage.version, f"stage {stage.name!r} has an empty version"
    assert stage.result_kind in RESULT_KINDS, f"stage {stage.name!r} has unknown result_kind"
    assert isinstance(stage.model_ref, str), f"stage {stage.name!r}: model_ref must be a str ('' if none)"


def check_params_roundtrip(stage: Stage, cutouts) -> None:
    """``type(stage)(**stage.get_params())`` rebuilds the same stage; params are JSON."""
    params = stage.get_params()
    json.dumps(stage.describe())
    try:
        json.dumps(params)
    except TypeError as exc:
        msg = f"stage {stage.name!r}: parameters must be JSON-serialisable for workers: {exc}"
        raise AssertionError(msg) from exc
    clone = type(stage)(**params)
    assert clone.get_params() == params, f"stage {stage.name!r}: get_params() does not round-trip"


def check_empty_batch(stage: Stage, cutouts) -> None:
    """An empty batch gives an empty list."""
    stage.setup()
    assert list(stage.process([])) == [], f"stage {stage.name!r}: process([]) must return []"


def _run(stage: Stage, cutouts: Sequence[Cutout]) -> list:
    stage.setup()
    batch = _fresh(cutouts)
    results = list(stage.process(batch))
    assert len(results) == len(batch), (
        f"stage {stage.name!r} returned {len(results)} results for {len(batch)} cutouts"
    )
    return results


def check_results(stage: Stage, cutouts) -> None:
    """One result per cutout, each a dict with the kind's fields or a CutoutFailure."""
    results = _run(stage, cutouts)
    required = RESULT_KINDS[stage.result_kind]
    for cutout, result in zip(cutouts, results):
        if isinstance(result, CutoutFailure):
            assert result.reason, f"stage {stage.name!r}: empty failure reason for {cutout.path}"
            continue
        assert isinstance(result, dict), f"stage {stage.name!r}: result for {cutout.path} is not a dict"
        missing = [key for key in required if key not in result]
        assert not missing, f"stage {stage.name!r}: result for {cutout.path} lacks {missing}"
    assert any(isinstance(r, dict) for r in results), (
        f"stage {stage.name!r} failed on every cutout given to the conformance kit"
    )


def check_result_columns(stage: Stage, cutouts) -> None:
    """Every extra field a result carries that comes back as a column is declared in ``result_columns``.

    Extra scalar fields (numbers, text, flags) and the keys of an anomaly
    stage's ``components`` become query columns; each needs a
    :class:`~survey_classifier.columns.Column` (unit, UCD, description) in
    the stage's ``result_columns``, named as the key.
    """
    from survey_classifier.db.models import RESULT_TABLES

    declared = {column.name for column in stage.result_columns}
    stored = set(RESULT_TABLES[stage.result_kind].__table__.c.keys()) | {"embedding", "probabilities"}
    for column in stage.result_columns:
        column.checked()
    undeclared: set[str] = set()
    for result in _run(stage, cutouts):
        if not isinstance(result, dict):
            continue
        scalars = [k for k, v in result.items() if k not in stored and _is_scalar(v)]
        components = list(result.get("components") or {}) if stage.result_kind == "anomaly" else []
        undeclared.update(k for k in (*scalars, *components) if k not in declared)
    assert not undeclared, (
        f"stage {stage.name!r} returns {sorted(undeclared)} without describing them: add a "
        "survey_classifier.columns.Column (name, description, unit, UCD) for each to its result_columns"
    )


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool, np.generic))


def _same(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, CutoutFailure):
        return a == b
    if isinstance(a, (np.ndarray, list, tuple)):
        a_arr, b_arr = np.asarray(a), np.asarray(b)
        if a_arr.dtype.kind in "fc":
            return a_arr.shape == b_arr.shape and np.allclose(a_arr, b_arr, rtol=1e-4, atol=1e-6, equal_nan=True)
        return a_arr.shape == b_arr.shape and bool(np.all(a_arr == b_arr))
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6)
    return a == b


def check_deterministic(stage: Stage, cutouts) -> None:
    """The same batch twice gives the same results."""
    first = _run(stage, cutouts)
    second = _run(stage, cutouts)
    for cutout, a, b in zip(cutouts, first, second):
        assert _same(a, b), f"stage {stage.name!r} gave different results twice for {cutout.path}"


def check_batch_independent(stage: Stage, cutouts) -> None:
    """A cutout's result does not depend on the rest of its batch."""
    together = _run(stage, cutouts)
    for cutout, expected in zip(cutouts, together):
        alone = _run(stage, [cutout])[0]
        assert _same(expected, alone), (
            f"stage {stage.name!r}: the result for {cutout.path} changes with the batch it is in"
        )


def check_stored_once(stage: Stage, cutouts) -> None:
    """Through the real pipeline into a real SQLite database: stored once, twice idempotent."""
    from sqlalchemy import func, select

    from survey_classifier.db import make_engine, upgrade
    from survey_classifier.db.models import RESULT_TABLES
    from survey_classifier.pipeline import BatchResult, CutoutOutcome
    from survey_classifier.runs import store_batch

    batch = _fresh(cutouts)
    results = _run(stage, batch)
    outcomes = []
    for cutout, result in zip(batch, results):
        if isinstance(result, dict):
            cutout.results[stage.name] = result
        outcomes.append(CutoutOutcome(source=cutout.source, cutout=cutout))
    table = RESULT_TABLES[stage.result_kind]
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'conformance.db'}"
        upgrade(url)
        engine = make_engine(url)
        try:
            for _ in range(2):
                store_batch(engine, None, [stage], BatchResult(outcomes=outcomes, timings={}))
            with engine.connect() as connection:
                count = connection.execute(
                    select(func.count()).select_from(table).where(table.stage == stage.name)
                ).scalar_one()
        finally:
            engine.dispose()
    expected = sum(isinstance(r, dict) for r in results)
    assert count == expected, f"stage {stage.name!r}: stored {count} rows for {expected} results"


STAGE_CHECKS = (
    check_declaration,
    check_params_roundtrip,
    check_empty_batch,
    check_results,
    check_result_columns,
    check_deterministic,
    check_batch_independent,
    check_stored_once,
)


def check_stage(stage: Stage, cutouts: Sequence[Cutout], *, skip: Sequence[str] = ()) -> None:
    """Run every conformance check of :data:`STAGE_CHECKS` on ``stage``.

    Parameters
    ----------
    stage : Stage
        The stage under test, configured as it would be used.
    cutouts : sequence of Cutout
        Real cutouts (at least two). The results of the stages this one
        requires are computed by the installed stages where missing
        (:func:`with_requirements`); fill them in yourself to test on others.
    skip : sequence of str
        Names of checks to leave out, for a documented reason.
    """
    if len(cutouts) < 2:
        msg = "check_stage needs at least two cutouts"
        raise ValueError(msg)
    cutouts = with_requirements(stage, cutouts)
    for check in STAGE_CHECKS:
        if check.__name__ not in skip:
            check(stage, cutouts)
