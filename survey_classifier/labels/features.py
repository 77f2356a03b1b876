"""The stored features a supervised model learns interest from, read from whatever results are stored.

Nothing here names a model: the features are taken from the variant of
each stage a query shows (:func:`survey_classifier.query.find_variants`),
by the kind of its results, so a new SOM or CNN brings its own features:

- ``anomaly`` results: every numeric component (percentile copies,
  ``*_pct``, left out) and the combined score;
- ``classification`` results: the probability of each class and, when the
  stage stored one, every dimension of the embedding;
- ``som`` results: the distance to the best-matching neuron;
- ``measurement`` results: every numeric column (fluxes, sizes, island
  count, asymmetry ...).

Each feature is turned into its percentile among the cutouts (0-1, ties
sharing the mean rank), so fluxes, distances and embedding values share one
scale whatever their units and tails; a missing value becomes 0.5. An
embedding's ``D`` dimensions together weigh as much as one feature: each
is given the weight ``1 / sqrt(D)`` (:meth:`Features.weighted`), so a
64-dimensional embedding does not outvote the handful of measured
quantities in distances or in a regularised model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata
from sqlalchemy import select
from sqlalchemy.engine import Connection

from survey_classifier.db.store import embedding_array

__all__ = ["Features", "read_features", "percentile_ranks"]

#: Measurement columns that are bookkeeping, not measurements.
_NOT_FEATURES = {"id", "cutout_id", "run_id", "stage", "stage_version", "model_ref", "model_sha256", "updated_at",
                 "extra", "components", "probabilities", "embedding", "embedding_dtype", "label", "rank",
                 "percentile", "partial", "node_x", "node_y", "angle_deg", "flip", "probability"}


@dataclass
class Features:
    """A feature matrix over cutouts.

    ``matrix[i, j]`` is feature ``names[j]`` of cutout ``cutout_ids[i]``,
    as a percentile (0-1); ``variants`` maps each stage read to its
    ``VERSION@MODEL``.
    """

    cutout_ids: np.ndarray
    matrix: np.ndarray
    names: list[str]
    variants: dict[str, str]
    weights: np.ndarray | None = None

    def weighted(self) -> np.ndarray:
        """The percentiles centred on 0 and multiplied by each feature's weight."""
        weights = np.ones(len(self.names)) if self.weights is None else self.weights
        return (self.matrix - 0.5) * weights


def percentile_ranks(values: np.ndarray) -> np.ndarray:
    """Each column's values as percentiles among its finite values (0.5 where not finite)."""
    values = np.asarray(values, dtype=float)
    out = np.full(values.shape, 0.5)
    for j in range(values.shape[1]):
        finite = np.isfinite(values[:, j])
        if finite.sum() > 1:
            out[finite, j] = (rankdata(values[finite, j]) - 0.5) / finite.sum()
    return out


def _stage_columns(connection: Connection, stage: str, variant) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Cutout ids of one stage's results and ``{feature name: values}`` aligned with them."""
    t = variant.row_class.__table__
    wanted = [col for col in t.columns if col.name not in ("extra", "stage", "updated_at")]
    query = select(*wanted).where(
        t.c.stage == stage, t.c.stage_version == variant.version, t.c.model_ref == variant.model
    ).order_by(t.c.cutout_id)
    rows = connection.execute(query).all()
    ids = np.array([row.cutout_id for row in rows], dtype=np.int64)
    columns: dict[str, np.ndarray] = {}

    def put(name: str, values) -> None:
        columns[f"{stage}.{name}"] = np.array([_number(v) for v in values], dtype=float)

    if variant.kind == "anomaly":
        put("score", [row.score for row in rows])
        parts = sorted({k for row in rows for k in (row.components or {}) if not k.endswith("_pct")})
        for part in parts:
            put(part, [(row.components or {}).get(part) for row in rows])
    elif variant.kind == "classification":
        classes = sorted({k for row in rows for k in (row.probabilities or {})})
        for name in classes:
            put(f"p_{name}", [(row.probabilities or {}).get(name) for row in rows])
        columns.update(_embedding_columns(stage, rows))
    elif variant.kind == "som":
        put("distance", [row.distance for row in rows])
    else:
        for col in wanted:
            if col.name not in _NOT_FEATURES and _numeric(col):
                put(col.name, [getattr(row, col.name) for row in rows])
    return ids, columns


def _embedding_columns(stage: str, rows) -> dict[str, np.ndarray]:
    """One column per embedding dimension (NaN for cutouts without an embedding of the common length)."""
    vectors = [
        None if row.embedding is None else embedding_array(row.embedding, row.embedding_dtype)
        for row in rows
    ]
    sizes = [len(v) for v in vectors if v is not None]
    if not sizes:
        return {}
    size = max(set(sizes), key=sizes.count)
    matrix = np.full((len(rows), size), np.nan)
    for i, vector in enumerate(vectors):
        if vector is not None and len(vector) == size:
            matrix[i] = vector
    return {f"{stage}.embedding_{j}": matrix[:, j] for j in range(size)}


def _numeric(column) -> bool:
    try:
        return column.type.python_type in (int, float)
    except NotImplementedError:
        return False


def _number(value) -> float:
    if isinstance(value, bool) or value is None:
        return np.nan
    try:
        number = float(value)
    except (TypeError, ValueError):
        return np.nan
    return number if np.isfinite(number) else np.nan


def read_features(
    connection: Connection,
    variants: Mapping,
    *,
    cutout_ids: Sequence[int] | None = None,
    skip_stages: Sequence[str] = (),
) -> Features:
    """The features of every stage shown (``variants``), for ``cutout_ids`` (default: all with results).

    Feature columns that are constant or missing for every cutout are
    dropped.
    """
    per_stage = []
    used = {}
    for stage, variant in sorted(variants.items()):
        if stage in skip_stages:
            continue
        ids, columns = _stage_columns(connection, stage, variant)
        if columns:
            used[stage] = f"{variant.version}@{variant.model}" if variant.model else variant.version
            per_stage.append((ids, columns))
    if cutout_ids is None:
        cutout_ids = np.unique(np.concatenate([ids for ids, _ in per_stage])) if per_stage else []
    wanted = np.asarray(cutout_ids, dtype=np.int64)
    names, blocks = [], []
    for ids, columns in per_stage:
        where = np.clip(np.searchsorted(ids, wanted), 0, max(len(ids) - 1, 0))
        present = (ids[where] == wanted) if len(ids) else np.zeros(len(wanted), dtype=bool)
        for name, values in sorted(columns.items()):
            names.append(name)
            blocks.append(np.where(present, values[where] if len(ids) else np.nan, np.nan))
    values = np.column_stack(blocks) if blocks else np.empty((len(wanted), 0))
    keep = [j for j in range(len(names)) if np.unique(values[np.isfinite(values[:, j]), j]).size > 1]
    kept = [names[j] for j in keep]
    return Features(
        cutout_ids=wanted, matrix=percentile_ranks(values[:, keep]), names=kept, variants=used,
        weights=_weights(kept),
    )


def _weights(names: list[str]) -> np.ndarray:
    """1 per feature, ``1 / sqrt(D)`` for each of the ``D`` dimensions of one stage's embedding."""
    blocks: dict[str, int] = {}
    for name in names:
        stage, _, feature = name.partition(".")
        if feature.startswith("embedding_"):
            blocks[stage] = blocks.get(stage, 0) + 1
    weights = np.ones(len(names))
    for j, name in enumerate(names):
        stage, _, feature = name.partition(".")
        if feature.startswith("embedding_"):
            weights[j] = 1.0 / np.sqrt(blocks[stage])
    return weights
