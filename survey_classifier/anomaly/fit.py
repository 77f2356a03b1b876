"""Fit an anomaly scorer from results already in the database."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Engine

from survey_classifier.anomaly.scorer import AnomalyScorer
from survey_classifier.db.models import ClassificationRow, MeasurementRow, SOMPlacementRow
from survey_classifier.db.store import embedding_array
from survey_classifier.errors import SurveyClassifierError

__all__ = ["latest_variant", "load_reference", "fit_from_database"]


def latest_variant(engine: Engine, row_class, stage: str, run_id: int | None = None) -> tuple | None:
    """``(stage_version, model_ref, model_sha256)`` of the newest results of ``stage``."""
    table = row_class.__table__
    query = select(table.c.stage_version, table.c.model_ref, table.c.model_sha256).where(table.c.stage == stage)
    if run_id is not None:
        query = query.where(table.c.run_id == run_id)
    with engine.connect() as connection:
        row = connection.execute(query.order_by(table.c.updated_at.desc()).limit(1)).first()
    return None if row is None else tuple(row)


def _rows(engine, row_class, stage, variant, run_id):
    table = row_class.__table__
    query = select(table).where(
        table.c.stage == stage, table.c.stage_version == variant[0], table.c.model_ref == variant[1]
    )
    if run_id is not None:
        query = query.where(table.c.run_id == run_id)
    with engine.connect() as connection:
        return {row.cutout_id: row._mapping for row in connection.execute(query.order_by(table.c.cutout_id))}


def load_reference(engine: Engine, *, som_stage="som", cnn_stage="cnn", measure_stage="measure", run_id=None):
    """SOM, CNN and measure results of the reference catalogue, with their versions.

    Measure results count only from a version that reports ``asymmetry`` (2 on).
    """
    som_variant = latest_variant(engine, SOMPlacementRow, som_stage, run_id)
    cnn_variant = latest_variant(engine, ClassificationRow, cnn_stage, run_id)
    measure_variant = latest_variant(engine, MeasurementRow, measure_stage, run_id)
    measure = _rows(engine, MeasurementRow, measure_stage, measure_variant, run_id) if measure_variant else {}
    if not any(row["asymmetry"] is not None for row in measure.values()):
        measure_variant, measure = None, {}
    if som_variant is None and cnn_variant is None and measure_variant is None:
        msg = (
            f"no results of stages {som_stage!r}, {cnn_stage!r} or {measure_stage!r} (version 2 or later) "
            "in this database"
            + (f" for run {run_id}" if run_id is not None else "")
            + "; run `survey-classifier classify --stages measure,som,cnn` on the reference catalogue first"
        )
        raise SurveyClassifierError(msg)
    som = _rows(engine, SOMPlacementRow, som_stage, som_variant, run_id) if som_variant else {}
    cnn = _rows(engine, ClassificationRow, cnn_stage, cnn_variant, run_id) if cnn_variant else {}
    som_results = [{"node_x": r["node_x"], "node_y": r["node_y"], "distance": r["distance"]} for r in som.values()]
    cnn_results = []
    for row in cnn.values():
        embedding = None
        if row["embedding"] is not None:
            embedding = embedding_array(row["embedding"], row["embedding_dtype"])
        cnn_results.append({"probabilities": row["probabilities"], "embedding": embedding})
    measure_results = [{"asymmetry": r["asymmetry"]} for r in measure.values()]
    refs = {
        f"{name}_ref": f"{variant[0]}@{variant[1]}" if variant else ""
        for name, variant in (("som", som_variant), ("cnn", cnn_variant), ("measure", measure_variant))
    }
    refs.update(som_sha256=som_variant[2] or "" if som_variant else "",
                cnn_sha256=cnn_variant[2] or "" if cnn_variant else "")
    return som_results, cnn_results, measure_results, refs


def fit_from_database(
    engine: Engine, output, *, run_id=None, som_stage="som", cnn_stage="cnn", measure_stage="measure", **params
) -> tuple[AnomalyScorer, Path]:
    """Fit a scorer on the database's SOM, CNN and measure results and save it to ``output``."""
    som_results, cnn_results, measure_results, refs = load_reference(
        engine, som_stage=som_stage, cnn_stage=cnn_stage, measure_stage=measure_stage, run_id=run_id
    )
    scorer = AnomalyScorer(**refs, **params).fit(som_results, cnn_results, measure_results)
    path = scorer.save(output)
    return scorer, path
