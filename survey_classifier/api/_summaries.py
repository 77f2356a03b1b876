"""Aggregates the web page shows: label counts, the SOM grid, runs and stages."""

from __future__ import annotations

from sqlalchemy import and_, func, select
from sqlalchemy.engine import Connection

from survey_classifier.db.models import RunRow
from survey_classifier.query import Variant

__all__ = ["label_counts", "som_grid", "add_neuron_labels_to_grid", "list_runs", "describe_variants"]


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
