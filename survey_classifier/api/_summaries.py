"""Aggregates the web page shows: label counts, the SOM grid, runs, stages, embedding neighbours."""

from __future__ import annotations

import numpy as np
from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection

from survey_classifier.db.models import CutoutRow, RunRow
from survey_classifier.db.store import embedding_array
from survey_classifier.query import Variant

__all__ = ["label_counts", "som_grid", "add_neuron_labels_to_grid", "list_runs", "describe_variants",
           "embedding_neighbours"]


def _variant_where(table, stage: str, variant: Variant) -> list:
    return [table.c.stage == stage, table.c.stage_version == variant.version, table.c.model_ref == variant.model]


def describe_variants(variants: dict[str, Variant]) -> list[dict]:
    return [
        {"stage": name, "kind": v.kind, "stage_version": v.version, "model_ref": v.model,
         "updated_at": v.updated_at.isoformat() if v.updated_at is not None else None}
        for name, v in sorted(variants.items())
    ]


def label_counts(connection: Connection, stage: str, variant: Variant) -> list[dict]:
    """``[{label, count, mean_probability}]`` of one classification variant, most common first."""
    t = variant.row_class.__table__
    rows = connection.execute(
        select(t.c.label, func.count(), func.avg(t.c.probability))
        .where(*_variant_where(t, stage, variant))
        .group_by(t.c.label)
        .order_by(func.count().desc(), t.c.label)
    )
    return [
        {"label": label, "count": int(n), "mean_probability": None if p is None else float(p)}
        for label, n, p in rows
    ]


def som_grid(connection: Connection, stage: str, variant: Variant) -> dict:
    """Cutouts per SOM node and, for each node, the cutout closest to its prototype."""
    t = variant.row_class.__table__
    where = _variant_where(t, stage, variant)
    per_node = (
        select(t.c.node_x, t.c.node_y, func.count().label("n"), func.min(t.c.distance).label("best"))
        .where(*where)
        .group_by(t.c.node_x, t.c.node_y)
        .subquery()
    )
    rows = connection.execute(
        select(per_node.c.node_x, per_node.c.node_y, per_node.c.n, per_node.c.best, func.min(t.c.cutout_id))
        .join(
            t,
            and_(t.c.node_x == per_node.c.node_x, t.c.node_y == per_node.c.node_y, t.c.distance == per_node.c.best),
        )
        .where(*where)
        .group_by(per_node.c.node_x, per_node.c.node_y, per_node.c.n, per_node.c.best)
        .order_by(per_node.c.node_y, per_node.c.node_x)
    ).all()
    nodes = [
        {"x": int(x), "y": int(y), "count": int(n), "best_distance": float(best), "best_cutout_id": int(cutout_id)}
        for x, y, n, best, cutout_id in rows
    ]
    width = max((n["x"] for n in nodes), default=-1) + 1
    height = max((n["y"] for n in nodes), default=-1) + 1
    return {"stage": stage, "stage_version": variant.version, "model_ref": variant.model,
            "width": width, "height": height, "nodes": nodes}


def add_neuron_labels_to_grid(connection: Connection, grid: dict) -> None:
    """Give each node of :func:`som_grid`'s answer its current user label (``label``, null if none)."""
    from survey_classifier.labels.store import current_neuron_labels

    labels = current_neuron_labels(connection, grid["model_ref"])
    for node in grid["nodes"]:
        found = labels.get((grid["model_ref"], node["x"], node["y"]))
        node["label"] = None if found is None else found["label"]
    grid["labelled_nodes"] = [
        {"x": x, "y": y, "label": row["label"], "author": row["author"], "label_id": row["id"]}
        for (_, x, y), row in sorted(labels.items(), key=lambda item: (item[0][2], item[0][1]))
    ]


def list_runs(connection: Connection, limit: int) -> list[dict]:
    rows = connection.execute(select(RunRow.__table__).order_by(RunRow.id.desc()).limit(limit))
    out = []
    for row in rows:
        record = dict(row._mapping)
        for key in ("started_at", "finished_at"):
            record[key] = record[key].isoformat() if record[key] is not None else None
        out.append(record)
    return out


def embedding_neighbours(
    connection: Connection, cutout_id: int, *, stage: str | None = None, k: int = 8
) -> dict | None:
    """The ``k`` sources nearest to ``cutout_id`` in the embedding space of a classification variant.

    ``stage`` names the classification stage (default: the first, by name,
    whose variant shown stores embeddings). Distances are cosine distances
    (1 - cosine similarity) between the stored vectors. None when the source
    has no stored embedding.
    """
    from survey_classifier.errors import SurveyClassifierError
    from survey_classifier.query import find_variants

    variants = find_variants(connection)
    if stage is not None and (stage not in variants or variants[stage].kind != "classification"):
        known = sorted(name for name, v in variants.items() if v.kind == "classification")
        msg = f"no classification results of stage {stage!r}; classification stages: {known}"
        raise SurveyClassifierError(msg)
    names = [stage] if stage is not None else sorted(n for n, v in variants.items() if v.kind == "classification")
    for name in names:
        variant = variants[name]
        t = variant.row_class.__table__
        rows = connection.execute(
            select(t.c.cutout_id, t.c.embedding, t.c.embedding_dtype, t.c.label, t.c.probability)
            .where(*_variant_where(t, name, variant), t.c.embedding.is_not(None))
            .order_by(t.c.cutout_id)
        ).all()
        own = next((row for row in rows if row.cutout_id == cutout_id), None)
        if own is None:
            continue
        vector = _vector(own)
        rows = [row for row in rows if row.cutout_id != cutout_id]
        vectors = [_vector(row) for row in rows]
        keep = [i for i, v in enumerate(vectors) if v.shape == vector.shape]
        if not keep:
            return _neighbour_answer(name, variant, cutout_id, [])
        matrix = np.stack([vectors[i] for i in keep])
        norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(vector)
        distance = 1.0 - (matrix @ vector) / np.where(norms > 0, norms, 1.0)
        order = np.argsort(distance, kind="stable")[:k]
        found = [{"cutout_id": int(rows[keep[i]].cutout_id), "distance": float(distance[i]),
                  "label": rows[keep[i]].label, "probability": rows[keep[i]].probability} for i in order]
        names = dict(connection.execute(select(CutoutRow.id, CutoutRow.catalogue_id).where(
            CutoutRow.id.in_([n["cutout_id"] for n in found]))).all())
        for neighbour in found:
            neighbour["catalogue_id"] = names.get(neighbour["cutout_id"])
        return _neighbour_answer(name, variant, cutout_id, found)
    return None


def _vector(row) -> np.ndarray:
    return embedding_array(row.embedding, row.embedding_dtype).astype(np.float64)


def _neighbour_answer(stage: str, variant: Variant, cutout_id: int, found: list[dict]) -> dict:
    return {"stage": stage, "stage_version": variant.version, "model_ref": variant.model, "metric": "cosine",
            "cutout_id": cutout_id, "neighbours": found}
