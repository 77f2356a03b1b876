"""Agreement between two versions or models of a classification stage.

Re-running a catalogue with a new model keeps the old results beside the
new ones (results are keyed by stage, stage version and model); this module
pairs the labels the two gave to the cutouts both classified.

Examples
--------
>>> matrix = agreement_matrix(engine, "cnn", "1@fr-cnn:1", "1@fr-cnn:2")  # doctest: +SKIP
>>> matrix.meta["agreement"]                                            # doctest: +SKIP
0.94
"""

from __future__ import annotations

import numpy as np
from astropy.table import Table
from sqlalchemy import select
from sqlalchemy.engine import Engine

from survey_classifier.db.models import ClassificationRow
from survey_classifier.errors import SurveyClassifierError

__all__ = ["parse_variant", "paired_labels", "agreement_matrix"]


def parse_variant(spec: str) -> tuple[str, str | None]:
    """``"VERSION"`` or ``"VERSION@MODEL"`` -> ``(version, model or None)``."""
    version, _, model = str(spec).partition("@")
    if not version:
        msg = f"a stage variant is VERSION or VERSION@MODEL (e.g. 1@fr-cnn:2), got {spec!r}"
        raise SurveyClassifierError(msg)
    return version, model or None


def _labels(connection, stage: str, spec: str) -> dict[int, str]:
    version, model = parse_variant(spec)
    t = ClassificationRow.__table__
    where = [t.c.stage == stage, t.c.stage_version == version]
    models = connection.execute(select(t.c.model_ref).where(*where).distinct()).scalars().all()
    if not models:
        stored = connection.execute(
            select(t.c.stage_version, t.c.model_ref).where(t.c.stage == stage).distinct()
        ).all()
        choices = sorted(f"{v}@{m}" if m else v for v, m in stored)
        msg = f"no classifications of stage {stage!r} version {version!r}; stored: {choices or 'none'}"
        raise SurveyClassifierError(msg)
    if model is None:
        if len(models) > 1:
            msg = (
                f"stage {stage!r} version {version!r} ran with several models {sorted(models)}; "
                f"name one: {version}@MODEL"
            )
            raise SurveyClassifierError(msg)
        model = models[0]
    elif model not in models:
        msg = f"stage {stage!r} version {version!r} has no results of model {model!r}; stored: {sorted(models)}"
        raise SurveyClassifierError(msg)
    rows = connection.execute(select(t.c.cutout_id, t.c.label).where(*where, t.c.model_ref == model))
    return dict(rows.all())


def paired_labels(engine: Engine, stage: str, a: str, b: str, *, stage_b: str | None = None) -> Table:
    """``cutout_id, label_a, label_b`` for the cutouts classified by both variants.

    Parameters
    ----------
    engine : Engine
    stage : str
        The classification stage of variant ``a`` (and of ``b`` unless ``stage_b``).
    a, b : str
        ``"VERSION"`` or ``"VERSION@MODEL"``.
    stage_b : str, optional
        Compare with another stage (e.g. a third-party classifier).
    """
    with engine.connect() as connection:
        first = _labels(connection, stage, a)
        second = _labels(connection, stage_b or stage, b)
    common = sorted(set(first) & set(second))
    table = Table()
    table["cutout_id"] = np.array(common, dtype=np.int64)
    table["label_a"] = np.array([first[i] for i in common], dtype=str)
    table["label_b"] = np.array([second[i] for i in common], dtype=str)
    table.meta.update(stage_a=stage, variant_a=a, stage_b=stage_b or stage, variant_b=b,
                      n_only_a=len(first) - len(common), n_only_b=len(second) - len(common))
    return table


def agreement_matrix(engine: Engine, stage: str, a: str, b: str, *, stage_b: str | None = None) -> Table:
    """Counts of (label by ``a``, label by ``b``) over the cutouts both classified.

    One row per label of ``a`` (column ``label_a``) and one integer column
    per label of ``b``; the labels of both, sorted, on both axes. ``meta``
    holds ``n_common``, ``agreement`` (the fraction on the diagonal, NaN
    with no common cutout), Cohen's ``kappa`` and the cutouts only one
    variant classified (``n_only_a``, ``n_only_b``).
    """
    pairs = paired_labels(engine, stage, a, b, stage_b=stage_b)
    labels = sorted(set(pairs["label_a"]) | set(pairs["label_b"]))
    index = {label: i for i, label in enumerate(labels)}
    counts = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for label_a, label_b in zip(pairs["label_a"], pairs["label_b"]):
        counts[index[label_a], index[label_b]] += 1
    matrix = Table()
    matrix["label_a"] = np.array(labels, dtype=str)
    for j, label in enumerate(labels):
        matrix[label] = counts[:, j]
    total = int(counts.sum())
    observed = float(np.trace(counts)) / total if total else float("nan")
    if total:
        expected = float((counts.sum(axis=1) * counts.sum(axis=0)).sum()) / total**2
        kappa = (observed - expected) / (1.0 - expected) if expected < 1.0 else 1.0
    else:
        kappa = float("nan")
    matrix.meta.update(pairs.meta, n_common=total, agreement=observed, kappa=kappa)
    return matrix
