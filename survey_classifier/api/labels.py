"""Endpoints of the results service for users' labels and the re-ranked anomalies.

Reading needs nothing; every write (a label, a deletion, a re-ranking)
needs the service's bearer token, as the model endpoints do. Labels are
stored with their author (given in the body: the token is shared, the
name is the user's own) and the time; they never change a pipeline
result.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi import Path as PathParam
from pydantic import BaseModel, Field
from sqlalchemy import select

from survey_classifier.api._params import NAME_PATTERN, RowId
from survey_classifier.api.contract import errors, table_responses
from survey_classifier.db.models import CutoutRow
from survey_classifier.formats import EXPORT_FORMATS
from survey_classifier.labels.store import MAX_NOTE

__all__ = ["label_router"]

_NAME = NAME_PATTERN
Stage = Annotated[str | None, Query(pattern=_NAME, description="A stage name, e.g. som.")]


class SourceLabelIn(BaseModel):
    """A label for one source: any of a class, interesting or not, and a note; and who gives it."""

    label: str | None = Field(None, max_length=128, description="Class, from /labels/classes or free text.")
    interesting: bool | None = Field(None, description="true: interesting, false: not interesting.")
    note: str | None = Field(None, max_length=MAX_NOTE)
    author: str = Field(..., min_length=1, max_length=128, description="Who gives the label.")


class NeuronLabelIn(BaseModel):
    """A label for one SOM neuron: its class, a note, who gives it, and (optionally) the map."""

    label: str = Field(..., min_length=1, max_length=128)
    note: str | None = Field(None, max_length=MAX_NOTE)
    author: str = Field(..., min_length=1, max_length=128)
    model_ref: str | None = Field(
        None, max_length=256, description="The map (NAME:VERSION); default: that of the SOM results shown."
    )


class RerankIn(BaseModel):
    """Who asks for the re-ranking, and of which unsupervised anomaly stage."""

    author: str | None = Field(None, max_length=128)
    anomaly_stage: str | None = Field(None, pattern=_NAME)


class SourceLabelPage(BaseModel):
    """One page of current source labels (each row a label with its cutout's id, catalogue id and position)."""

    count: int
    limit: int
    offset: int
    rows: list[dict]


#: Refusals of the writing routes.
_WRITE = (401, 403, 422)


def _plain(row: dict) -> dict:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}


def label_router(engine, require_token) -> APIRouter:
    """The label endpoints over ``engine``; ``require_token`` guards the writes."""
    router = APIRouter()
    write = [Depends(require_token)]

    def _check_cutout(connection, cutout_id: int) -> None:
        if connection.execute(select(CutoutRow.id).where(CutoutRow.id == cutout_id)).first() is None:
            raise HTTPException(404, f"no cutout with id {cutout_id}")

    def _map(connection, stage: str | None, model_ref: str | None = None) -> tuple[str, object, str]:
        from survey_classifier.query import find_variants, stage_of_kind

        variants = find_variants(connection)
        if model_ref is not None:
            return stage, None, model_ref
        stage = stage_of_kind(variants, "som", stage, "neuron labels")
        return stage, variants[stage], variants[stage].model

    @router.get("/cutouts/{cutout_id}/labels", summary="The current label of a source and its history",
                responses=errors(404, 422))
    def source_labels(cutout_id: RowId):
        from survey_classifier.labels.store import source_label_history

        with engine.connect() as connection:
            _check_cutout(connection, cutout_id)
            history = [_plain(r) for r in source_label_history(connection, cutout_id)]
        return {"cutout_id": cutout_id, "current": history[0] if history else None, "history": history}

    @router.post("/cutouts/{cutout_id}/labels", status_code=201, dependencies=write,
                 summary="Label a source (needs the token); the newest label is the current one",
                 responses=errors(400, 404, *_WRITE))
    def add_source_label(cutout_id: RowId, body: SourceLabelIn):
        from survey_classifier.labels.store import add_source_labels, source_label_history

        with engine.begin() as connection:
            _check_cutout(connection, cutout_id)
            (label_id,) = add_source_labels(connection, [dict(body.model_dump(), cutout_id=cutout_id, origin="api")])
            stored = next(r for r in source_label_history(connection, cutout_id) if r["id"] == label_id)
        return _plain(stored)

    @router.delete("/labels/sources/{label_id}", dependencies=write,
                   summary="Delete a source label (needs the token); the one before becomes current",
                   responses=errors(404, *_WRITE))
    def delete_source(label_id: RowId):
        from survey_classifier.errors import LabelError
        from survey_classifier.labels.store import delete_source_label

        try:
            with engine.begin() as connection:
                return _plain(delete_source_label(connection, label_id))
        except LabelError as exc:
            raise HTTPException(404, str(exc)) from exc

    @router.get("/labels/sources", summary="Current source labels, newest first, filtered, one page at a time",
                responses={**table_responses(SourceLabelPage), **errors(422)})
    def list_sources(
        interesting: bool | None = None,
        label: Annotated[str | None, Query(max_length=128, description="Class (case and spaces aside).")] = None,
        author: Annotated[str | None, Query(max_length=128)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=10**7)] = 0,
        format: Annotated[Literal[("json", *EXPORT_FORMATS)], Query(description="Response format.")] = "json",
    ):
        from survey_classifier.api._public import public_row
        from survey_classifier.labels.store import list_source_labels

        if format != "json":
            from survey_classifier.api._public import public_table
            from survey_classifier.api._tables import export_response
            from survey_classifier.labels.catalogue import export_source_labels

            return export_response(public_table(export_source_labels(engine)), format, "labels")
        with engine.connect() as connection:
            rows = list_source_labels(connection, interesting=interesting, label=label, author=author, limit=limit,
                                      offset=offset)
        return {"count": len(rows), "limit": limit, "offset": offset, "rows": [public_row(_plain(r)) for r in rows]}

    @router.get("/labels/classes", summary="Classes to offer when labelling (used ones and common morphologies)")
    def classes():
        from survey_classifier.labels.store import label_classes
        from survey_classifier.query import find_variants

        with engine.connect() as connection:
            variants = find_variants(connection)
            classifier = []
            for stage, variant in sorted(variants.items()):
                if variant.kind == "classification":
                    t = variant.row_class.__table__
                    classifier += list(connection.execute(
                        select(t.c.label).where(t.c.stage == stage).distinct()).scalars())
            return {"classes": label_classes(connection, classifier)}

    @router.get("/som/nodes/{node_x}/{node_y}/labels", summary="The current label of a SOM neuron and its history",
                responses=errors(400, 422))
    def neuron_labels(
        node_x: Annotated[int, PathParam(ge=0, le=10_000)],
        node_y: Annotated[int, PathParam(ge=0, le=10_000)],
        stage: Stage = None,
        model_ref: Annotated[str | None, Query(max_length=256, description="The map (NAME:VERSION).")] = None,
    ):
        from survey_classifier.labels.store import neuron_label_history

        with engine.connect() as connection:
            _, _, model_ref = _map(connection, stage, model_ref)
            history = [_plain(r) for r in neuron_label_history(connection, model_ref, node_x, node_y)]
        return {"model_ref": model_ref, "node_x": node_x, "node_y": node_y,
                "current": history[0] if history else None, "history": history}

    @router.post("/som/nodes/{node_x}/{node_y}/labels", status_code=201, dependencies=write,
                 summary="Label a SOM neuron (needs the token); its sources get the label with a reliability",
                 responses=errors(400, *_WRITE))
    def add_neuron_label(
        node_x: Annotated[int, PathParam(ge=0, le=10_000)],
        node_y: Annotated[int, PathParam(ge=0, le=10_000)],
        body: NeuronLabelIn,
        stage: Stage = None,
    ):
        from survey_classifier.labels.store import add_neuron_labels, neuron_label_history

        with engine.begin() as connection:
            _, _, model_ref = _map(connection, stage, body.model_ref)
            (label_id,) = add_neuron_labels(connection, [dict(
                body.model_dump(), model_ref=model_ref, node_x=node_x, node_y=node_y, origin="api")])
            stored = next(r for r in neuron_label_history(connection, model_ref, node_x, node_y)
                          if r["id"] == label_id)
        return _plain(stored)

    @router.delete("/labels/neurons/{label_id}", dependencies=write, summary="Delete a neuron label (needs the token)",
                   responses=errors(404, *_WRITE))
    def delete_neuron(label_id: RowId):
        from survey_classifier.errors import LabelError
        from survey_classifier.labels.store import delete_neuron_label

        try:
            with engine.begin() as connection:
                return _plain(delete_neuron_label(connection, label_id))
        except LabelError as exc:
            raise HTTPException(404, str(exc)) from exc

    @router.get("/labels/neurons", summary="Current labels of a SOM map's neurons and their calibrated reliability",
                responses=errors(400, 422))
    def list_neurons(stage: Stage = None):
        from survey_classifier.labels.neurons import calibrate
        from survey_classifier.labels.store import current_neuron_labels

        with engine.connect() as connection:
            stage, variant, model_ref = _map(connection, stage)
            labels = [_plain(r) for r in current_neuron_labels(connection, model_ref).values()]
            calibration = calibrate(connection, stage, variant).as_dict()
        return {"stage": stage, "model_ref": model_ref, "labels": labels, "calibration": calibration}

    @router.post("/anomalies/rerank", dependencies=write,
                 summary="Refit the anomaly ranking to the interesting / not interesting labels (needs the token)",
                 responses=errors(400, *_WRITE))
    def rerank_anomalies(body: RerankIn | None = None):
        from survey_classifier.labels.ranking import rerank

        body = body or RerankIn()
        return _plain(rerank(engine, anomaly_stage=body.anomaly_stage, author=body.author))

    @router.get("/anomalies/rerank", summary="The fits of the re-ranking, newest first, and labels added since",
                responses=errors(422))
    def rerank_fits(limit: Annotated[int, Query(ge=1, le=100)] = 10):
        from survey_classifier.labels.ranking import labels_since, ranking_fits

        with engine.connect() as connection:
            fits = ranking_fits(connection, limit)
            since = labels_since(connection, fits[0]) if fits else labels_since(connection, {})
        return {"fits": [_plain(f) for f in fits], "labels_since_last_fit": since}

    return router
