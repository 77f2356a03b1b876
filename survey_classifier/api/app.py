"""The FastAPI application of the results service.

Read-only by default: every ``GET`` reads the database through SQLAlchemy
with bound parameters, and the few endpoints that write (making a model the
default of its stage, retiring a model, users' labels and the re-ranking
of the anomalies by them: :mod:`survey_classifier.api.labels`) need
``Authorization: Bearer TOKEN`` with the token the app was created with;
without one they are refused. Every parameter is validated: a malformed coordinate, an
oversized page or a filter value outside its pattern is answered with a
4xx and a message naming the parameter, never a 500. Every refusal has
one body, ``{"detail": "..."}``, and every status and media type a route
can answer is in its OpenAPI description (:mod:`survey_classifier.api.contract`);
the documentation at ``/docs`` is served from the installed package
(``fastapi-offline``), without a CDN. The Virtual Observatory endpoints
(``/scs``, ``/cutouts/{id}/fits``) are in :mod:`survey_classifier.api.vo`.
"""

from __future__ import annotations

import math
import secrets
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, StringConstraints
from sqlalchemy import select

from survey_classifier.api._params import MAX_ID, NAME_PATTERN, ColourMap, CutoutId, ImageSize
from survey_classifier.api.contract import errors, install_error_handlers, table_responses
from survey_classifier.db.models import CutoutRow, ErrorRow
from survey_classifier.display import SCALES, SOFTENING_SIGMA
from survey_classifier.errors import CutoutError, ModelError, SurveyClassifierError
from survey_classifier.formats import EXPORT_FORMATS

__all__ = ["create_app", "MAX_PAGE"]

#: Largest page of rows one request may ask for.
MAX_PAGE = 1000
_NAME = NAME_PATTERN
_LABEL = r"^[A-Za-z0-9][A-Za-z0-9 _.:+/()-]{0,127}$"
_PICK = r"^[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}=[A-Za-z0-9][A-Za-z0-9_.:+@-]{0,255}$"

Picks = Annotated[
    list[Annotated[str, StringConstraints(pattern=_PICK)]] | None,
    Query(description="STAGE=VERSION[@MODEL]: the results of that version (and model) instead of the newest."),
]
Stage = Annotated[str | None, Query(pattern=_NAME, description="A stage name, e.g. cnn.")]
Format = Annotated[Literal[("json", *EXPORT_FORMATS)], Query(description="Response format.")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"Rows per page (at most {MAX_PAGE}).")]
ModelId = Annotated[int, PathParam(ge=1, le=MAX_ID, examples=[1], description="A model id (`GET /models`).")]


#: Largest cone radius of ``/results``, degrees.
MAX_RADIUS_DEG = 10.0


def _finite(low: float, high: float, *, low_open=False, high_open=False, description=""):
    """A float query parameter within [low, high]; NaN and infinities refused."""
    bounds = {"gt" if low_open else "ge": low, "lt" if high_open else "le": high}
    return Annotated[float | None, Query(allow_inf_nan=False, description=description, **bounds)]


def _angle(description: str):
    """An angle query parameter, read by :mod:`survey_classifier.positions` (a 400 naming it if unreadable)."""
    return Annotated[str | None, Query(max_length=64, description=description)]


RA = _angle("Cone centre right ascension: degrees (150.25) or sexagesimal hours (10:01:00, 10h01m00s).")
Dec = _angle("Cone centre declination: degrees (2.2) or sexagesimal degrees (+02:12:00, 2d12m).")
Radius = _angle(f"Cone radius: degrees (0.5) or with a unit (30arcsec, 2arcmin, 0.5deg); at most {MAX_RADIUS_DEG:g} "
                "degrees.")
Probability = _finite(0.0, 1.0, description="Probability of the predicted label, [0, 1].")
Columns = Annotated[str | None, Query(
    max_length=2000, pattern=r"^[A-Za-z0-9_*?, .:+-]+$",
    description="Columns to answer, comma-separated, in that order; patterns pick several (cutout_id,ra_deg,cnn_*).",
)]


class ColumnInfo(BaseModel):
    """Unit (null: not a quantity; empty: dimensionless), UCD and description of one column."""

    name: str
    unit: str | None
    ucd: str | None
    description: str
    format: str | None


class TablePage(BaseModel):
    """A page of a result table: its columns described, and one object per row."""

    count: int
    limit: int
    offset: int
    next_after_id: int | None
    columns: list[ColumnInfo]
    rows: list[dict]


def create_app(
    db_url: str | None = None,
    *,
    write_token: str | None = None,
    som_image: str | Path | None = None,
    engine=None,
    render_slots: int | None = None,
    image_cache_bytes: int | None = None,
) -> FastAPI:
    """Build the results service over the database at ``db_url``.

    Parameters
    ----------
    db_url : str, optional
        SQLAlchemy URL (default: ``$SURVEY_CLASSIFIER_DB`` or the SQLite default).
    write_token : str, optional
        Bearer token that the writing endpoints require; none: read-only.
    som_image : str or Path, optional
        PNG of the SOM prototypes (written with the SOM artefact), served at
        ``/som/image.png``; a hit map of the placements otherwise.
    engine : Engine, optional
        An engine to use instead of one made from ``db_url``.
    render_slots : int, optional
        Pictures drawn at once (default :data:`~survey_classifier.api.images.RENDER_SLOTS`); a request
        that finds none free within two seconds is answered 503 with ``Retry-After``.
    image_cache_bytes : int, optional
        Bound of the cache of drawn pictures, bytes (default
        :data:`~survey_classifier.api.images.CACHE_BYTES`).
    """
    from survey_classifier.api.images import CACHE_BYTES, RENDER_SLOTS, PngCache, RenderSlots
    from survey_classifier.db.checks import open_database

    engine = engine if engine is not None else open_database(db_url)
    if write_token is not None and len(write_token) < 16:
        msg = "the write token must be at least 16 characters long"
        raise SurveyClassifierError(msg)
    som_path = Path(som_image) if som_image is not None else None
    if som_path is not None and not som_path.is_file():
        msg = f"SOM prototype image {som_path} not found"
        raise SurveyClassifierError(msg)

    app = FastAPIOffline(
        title="survey-classifier results",
        description="Classifications, SOM placements, anomaly scores and measurements of radio survey cutouts; "
                    "an IVOA Simple Cone Search at /scs. Every refusal answers {\"detail\": \"...\"}.",
        version="1",
        redoc_url=None,
    )
    app.state.engine = engine
    app.state.render_slots = RenderSlots(render_slots or RENDER_SLOTS)
    app.state.image_cache = PngCache(image_cache_bytes or CACHE_BYTES)
    static = files("survey_classifier.api") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    install_error_handlers(app)

    def require_token(authorization: Annotated[str | None, Header()] = None) -> None:
        if write_token is None:
            raise HTTPException(
                403, "this service is read-only; start it with a write token to change models or labels"
            )
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.encode(), write_token.encode()):
            raise HTTPException(
                401, "a valid 'Authorization: Bearer TOKEN' header is needed to change models or labels",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(str(static / "index.html"), media_type="text/html")

    @app.get("/results", summary="Cutouts and their results, filtered, one page at a time",
             responses={**table_responses(TablePage), **errors(400, 422)})
    def results(
        stage: Stage = None,
        label: Annotated[str | None, Query(
            pattern=_LABEL, description="Class label of `stage`, else of any classification stage that gave it."
        )] = None,
        min_probability: Probability = None,
        max_probability: Probability = None,
        run: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Run id.")] = None,
        version: Picks = None,
        som_x: Annotated[int | None, Query(ge=0, le=10_000)] = None,
        som_y: Annotated[int | None, Query(ge=0, le=10_000)] = None,
        som_stage: Stage = None,
        anomaly_rank_min: Annotated[int | None, Query(ge=1, le=10**9)] = None,
        anomaly_rank_max: Annotated[int | None, Query(ge=1, le=10**9)] = None,
        anomaly_stage: Stage = None,
        ra: RA = None,
        dec: Dec = None,
        radius: Radius = None,
        limit: Annotated[int | None, Query(
            ge=1, le=MAX_PAGE, description=f"Rows per page (at most {MAX_PAGE}); default 100 for JSON, and for a "
                                           "format= export every row of the filtered set.")] = None,
        offset: Annotated[int, Query(ge=0, le=10**7)] = 0,
        after_id: Annotated[int | None, Query(ge=0, le=MAX_ID, description="Keyset pagination.")] = None,
        columns: Columns = None,
        format: Format = "json",
        label_class: Annotated[str | None, Query(max_length=128, description="Class of the user's label.")] = None,
        interesting: Annotated[bool | None, Query(description="The user's label says interesting (or not).")] = None,
        sort: Annotated[str | None, Query(
            pattern=r"^-?[A-Za-z0-9_]{1,160}$",
            description="Order by this column (a cutout's or a stage result's: anomaly_score, cnn_probability); "
                        "a leading - for largest first. Page with offset.")] = None,
    ):
        from survey_classifier.query import query_results

        if (som_x is None) != (som_y is None):
            raise HTTPException(400, "a SOM node needs both som_x and som_y")
        if limit is None and format == "json":
            limit = 100
        ranks = None
        if anomaly_rank_min is not None or anomaly_rank_max is not None:
            ranks = (anomaly_rank_min or 1, anomaly_rank_max or (anomaly_rank_min or 1) + MAX_PAGE - 1)
        table = query_results(
            engine, stage=stage, label=label, min_probability=min_probability, max_probability=max_probability,
            run_id=run, versions=_picks(version), som_node=None if som_x is None else (som_x, som_y),
            som_stage=som_stage, anomaly_ranks=ranks, anomaly_stage=anomaly_stage, **_cone(ra, dec, radius),
            limit=limit, offset=offset, after_id=after_id, label_class=label_class, interesting=interesting,
            sort=sort.lstrip("-") if sort else None, descending=bool(sort and sort.startswith("-")),
            as_frame=format == "json",  # a JSON page is encoded from the light frame; exports need astropy
        )
        return _respond(table, format, "results", limit=limit, offset=offset, columns=columns,
                        keyset=sort is None and limit is not None)

    @app.get("/cutouts/{cutout_id}", summary="One cutout with the results of every stage",
             responses=errors(404, 422))
    def cutout(cutout_id: CutoutId):
        from survey_classifier.api._public import public_table, public_value
        from survey_classifier.api._tables import table_rows
        from survey_classifier.query import query_results

        table = query_results(engine, cutout_ids=[cutout_id], as_frame=True)
        if len(table) == 0:
            raise HTTPException(404, f"no cutout with id {cutout_id}")
        e = ErrorRow.__table__
        with engine.connect() as connection:
            errors = connection.execute(
                select(e.c.stage, e.c.stage_version, e.c.model_ref, e.c.hdu, e.c.error_type, e.c.message)
                .where(e.c.cutout_id == cutout_id)
            )
            error_list = [dict(r._mapping) for r in errors]
        return {"cutout": table_rows(public_table(table))[0], "errors": public_value(error_list)}

    @app.get("/cutouts/{cutout_id}/image.png", summary="The cutout rendered as PNG (the display stretch)",
             response_class=Response,
             responses={200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
                              "description": "The picture."}, **errors(404, 422, 503)})
    def cutout_image(
        cutout_id: CutoutId,
        size: ImageSize = 150,
        cmap: ColourMap = "inferno",
        scale: Annotated[Literal[SCALES], Query(description="How brightness above the background is shown.")] = "asinh",
        softening: Annotated[float, Query(
            ge=0.1, le=1000.0, allow_inf_nan=False,
            description="Knee of the asinh and log scales, in noise sigmas: smaller shows faint emission brighter.",
        )] = SOFTENING_SIGMA,
    ):
        from survey_classifier.api._public import public_text
        from survey_classifier.api.images import RenderBusy, cutout_png

        c = CutoutRow.__table__.c
        with engine.connect() as connection:
            row = connection.execute(select(c.path, c.sha256).where(c.id == cutout_id)).first()
        if row is None:
            raise HTTPException(404, f"no cutout with id {cutout_id}")
        try:
            png = cutout_png(row.path, row.sha256, size=size, cmap=cmap, scale=scale, softening_sigma=softening,
                             cache=app.state.image_cache, slots=app.state.render_slots)
        except RenderBusy as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": "1"}) from exc
        except CutoutError as exc:
            raise HTTPException(404, f"cutout {cutout_id}: {public_text(str(exc))}") from exc
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.get("/anomalies", summary="The most anomalous cutouts, highest score first",
             responses={**table_responses(TablePage), **errors(400, 422)})
    def anomalies(
        top: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        stage: Stage = None,
        version: Picks = None,
        columns: Columns = None,
        format: Format = "json",
        unlabelled: Annotated[bool, Query(description="Leave out sources a user has labelled.")] = False,
    ):
        from survey_classifier.query import top_anomalies

        table = top_anomalies(engine, top, stage=stage, versions=_picks(version), unlabelled=unlabelled)
        return _respond(table, format, "anomalies", limit=top, offset=0, keyset=False, columns=columns)

    @app.get("/labels", summary="Cutouts per label of a classification stage", responses=errors(400, 422))
    def labels(stage: Stage = None, version: Picks = None):
        from survey_classifier.api._summaries import label_counts
        from survey_classifier.query import find_variants, stage_of_kind

        with engine.connect() as connection:
            variants = find_variants(connection, _picks(version))
            stage = stage_of_kind(variants, "classification", stage, "label")
            counts = label_counts(connection, stage, variants[stage])
        v = variants[stage]
        return {"stage": stage, "stage_version": v.version, "model_ref": v.model, "labels": counts}

    @app.get("/stages", summary="Stages with results, and the version/model shown by default",
             responses=errors(400))
    def stages():
        from survey_classifier.api._summaries import describe_variants
        from survey_classifier.query import find_variants

        with engine.connect() as connection:
            return {"stages": describe_variants(find_variants(connection))}

    from survey_classifier.api.inspect import SomMap

    @app.get("/som", summary="The SOM grid: cutouts per node, the best-matching cutout of each, the map's layout, "
                             "its U-matrix and its neurons' classes",
             response_model=SomMap, responses=errors(400, 422))
    def som(stage: Stage = None, version: Picks = None):
        """The nodes of the SOM results shown (`stage`, `version` pick them as elsewhere) with their hits and
        users' labels. For a registered map also every neuron with its place on the page, its U-matrix value
        (`u_distance`) and, where the map was labelled when it was trained (the shipped maps were, with the
        MiraBest classes: `neurons.json` beside its file), the class each neuron gives, its purity and its
        labelled sources per class (`neuron_classes` names the classes; null and `neuron_classes_note` says so
        when the map has none)."""
        from survey_classifier.api._summaries import add_neuron_labels_to_grid, som_grid
        from survey_classifier.api.inspect import load_map, map_layout, map_overlay
        from survey_classifier.query import find_variants, stage_of_kind

        with engine.connect() as connection:
            variants = find_variants(connection, _picks(version))
            stage = stage_of_kind(variants, "som", stage, "SOM node")
            grid = som_grid(connection, stage, variants[stage])
            add_neuron_labels_to_grid(connection, grid)
        grid["prototype_image"] = "/som/image.png"
        grid["has_prototypes"] = som_path is not None
        grid["layout"], grid["neurons"], grid["has_neuron_images"] = None, None, False
        try:
            layout = map_layout(load_map(engine, grid["model_ref"]))
            overlay = map_overlay(engine, grid["model_ref"])
        except ModelError:  # a map outside the registry: its hits only
            grid["neuron_classes"] = None
            grid["neuron_classes_note"] = f"the map {grid['model_ref']} is not in the registry: hits only"
            return grid
        for node, neuron in enumerate(layout["neurons"]):
            neuron["u_distance"] = overlay["u_distance"][node]
            if overlay["per_neuron"] is not None:
                neuron.update(overlay["per_neuron"][node])
        grid.update(layout, has_neuron_images=True, neuron_classes=overlay["neuron_classes"],
                    neuron_classes_note=overlay["neuron_classes_note"])
        grid["width"] = max(grid["width"], 1 + max(n["x"] for n in layout["neurons"]))
        grid["height"] = max(grid["height"], 1 + max(n["y"] for n in layout["neurons"]))
        return grid

    @app.get("/som/image.png", summary="The SOM prototypes (or, without them, its hit map) as PNG",
             response_class=Response,
             responses={200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
                              "description": "The picture."}, **errors(400, 422)})
    def som_image_png(stage: Stage = None):
        import numpy as np

        from survey_classifier.api._summaries import som_grid
        from survey_classifier.api.images import hit_map_png
        from survey_classifier.query import find_variants, stage_of_kind

        if som_path is not None:
            return FileResponse(str(som_path), media_type="image/png")
        with engine.connect() as connection:
            variants = find_variants(connection)
            stage = stage_of_kind(variants, "som", stage, "SOM node")
            grid = som_grid(connection, stage, variants[stage])
        counts = np.zeros((grid["height"], grid["width"]))
        for node in grid["nodes"]:
            counts[node["y"], node["x"]] = node["count"]
        return Response(hit_map_png(counts), media_type="image/png")

    @app.get("/runs", summary="Pipeline runs, newest first", responses=errors(422))
    def runs(limit: Limit = 100):
        from survey_classifier.api._public import public_value
        from survey_classifier.api._summaries import list_runs

        with engine.connect() as connection:
            return {"runs": public_value(list_runs(connection, limit))}

    @app.get("/models", summary="Registered models", responses=errors(400, 422))
    def models(stage: Stage = None):
        from survey_classifier.api._public import public_model
        from survey_classifier.api._tables import table_rows
        from survey_classifier.registry import list_models

        return {"models": [public_model(m) for m in table_rows(list_models(engine, stage=stage))]}

    @app.get("/models/{model_id}", summary="One registered model, with its metrics and card",
             responses=errors(404, 422))
    def model(model_id: ModelId):
        from survey_classifier.api._public import public_model

        return public_model(_model_or_404(model_id))

    @app.post("/models/{model_id}/default", summary="Make a model its stage's default (needs the token)",
              dependencies=[Depends(require_token)], responses=errors(400, 401, 403, 404, 422))
    def model_default(model_id: ModelId):
        from survey_classifier.api._public import public_model
        from survey_classifier.registry import set_default

        found = _model_or_404(model_id)
        return public_model(set_default(engine, found["name"], found["version"]))

    @app.post("/models/{model_id}/retire", summary="Retire a model (needs the token)",
              dependencies=[Depends(require_token)], responses=errors(400, 401, 403, 404, 422))
    def model_retire(model_id: ModelId):
        from survey_classifier.api._public import public_model
        from survey_classifier.registry import retire_model

        found = _model_or_404(model_id)
        return public_model(retire_model(engine, found["name"], found["version"]))

    @app.get("/compare", summary="Agreement matrix between two versions/models of a classification stage",
             responses=errors(400, 422))
    def compare(
        stage: Annotated[str, Query(pattern=_NAME)],
        a: Annotated[str, Query(pattern=r"^[A-Za-z0-9_.:+@-]{1,256}$", description="VERSION[@MODEL]")],
        b: Annotated[str, Query(pattern=r"^[A-Za-z0-9_.:+@-]{1,256}$", description="VERSION[@MODEL]")],
        stage_b: Stage = None,
    ):
        from survey_classifier.api._tables import table_rows
        from survey_classifier.compare import agreement_matrix

        matrix = agreement_matrix(engine, stage, a, b, stage_b=stage_b)
        meta = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in matrix.meta.items()}
        return {"meta": meta, "matrix": table_rows(matrix)}

    from survey_classifier.api.labels import label_router

    app.include_router(label_router(engine, require_token))

    def _model_or_404(model_id: int) -> dict:
        from survey_classifier.errors import ModelError
        from survey_classifier.registry import get_model

        try:
            found = get_model(engine, id=model_id)
        except ModelError as exc:
            raise HTTPException(404, str(exc)) from exc
        return found

    from survey_classifier.api.inspect import inspect_router

    app.include_router(inspect_router(engine, slots=app.state.render_slots, cache=app.state.image_cache))

    from survey_classifier.api.vo import vo_router

    app.include_router(vo_router(engine))
    return app


def _cone(ra: str | None, dec: str | None, radius: str | None) -> dict:
    """``ra``, ``dec``, ``radius`` in degrees, read as the CLI reads them (positions.py)."""
    from survey_classifier.positions import parse_dec, parse_ra, parse_radius

    cone = (ra, dec, radius)
    if all(v is None for v in cone):
        return {}
    if any(v is None for v in cone):
        raise HTTPException(400, "a cone search needs all of ra, dec and radius")
    return {"ra": parse_ra(ra), "dec": parse_dec(dec), "radius": parse_radius(radius, maximum_deg=MAX_RADIUS_DEG)}


def _picks(values: list[str] | None) -> dict[str, str]:
    picks: dict[str, str] = {}
    for value in values or []:
        stage, _, pick = value.partition("=")
        if stage in picks:
            raise HTTPException(400, f"version given twice for stage {stage!r}")
        picks[stage] = pick
    return picks


def _respond(table, fmt: str, stem: str, *, limit: int, offset: int, keyset: bool = True, columns=None):
    from survey_classifier.api._json import WRITES_NAN_AS_NULL, FastJSONResponse
    from survey_classifier.api._public import public_table
    from survey_classifier.api._tables import export_response, table_rows
    from survey_classifier.columns import columns_block, select_columns

    next_after = None
    if keyset and len(table) and len(table) == limit:
        next_after = int(table["cutout_id"][-1])
    table = select_columns(public_table(table), columns)
    if fmt != "json":
        return export_response(table, fmt, stem)
    rows = table_rows(table, finite_only=not WRITES_NAN_AS_NULL)
    # plain values already: skip FastAPI's per-value encoder, slow on pages of a thousand rows
    return FastJSONResponse({"count": len(rows), "limit": limit, "offset": offset, "next_after_id": next_after,
                         "columns": columns_block(table), "rows": rows})
