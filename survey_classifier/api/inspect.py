"""Endpoints of the per-source and SOM views: a source in its neuron's frame, neurons, embedding neighbours.

The map of a SOM stage's results is the registered model named by their
``model_ref``: it is fetched and verified as a worker fetches it
(:func:`survey_classifier.artefacts.fetch`) and loaded once per process.
A source is drawn in its neuron's frame as the SOM stage mapped it: read
from its file, prepared with the map's own preprocessing, mirrored (when
its placement says ``flip``) and rotated by its ``angle_deg``
(:meth:`~survey_classifier.som.RotationInvariantSOM.rotate_into_frame`, the
same turn ``show som`` draws). Neighbours in the CNN's embedding space
are the sources whose stored embeddings (of the classification variant
shown) are nearest in cosine distance.

What the SOM view lays over the map (:func:`map_overlay`) is read from the
map too, once per process: its U-matrix
(:func:`survey_classifier.som.plots.u_matrix`), and, where the map has the
neurons' classes ``train som --labels`` wrote beside its file
(``neurons.json``: registered with it, fetched and verified by its sha256
as the map is, or beside a shipped map's file in its package), each
neuron's class, purity and class counts
(:class:`~survey_classifier.som.labels.NeuronLabels`).
"""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import select

from survey_classifier.api._params import NAME_PATTERN, ColourMap, CutoutId, ImageSize
from survey_classifier.api.contract import errors
from survey_classifier.db.models import CutoutRow
from survey_classifier.errors import CutoutError, ModelError
from survey_classifier.modelref import ModelRef

__all__ = ["inspect_router", "load_map", "map_layout", "map_overlay", "SomMap"]

log = logging.getLogger(__name__)
_NAME = NAME_PATTERN
Stage = Annotated[str | None, Query(pattern=_NAME, description="A stage name (default: the one shown).")]
Node = Annotated[int, PathParam(ge=0, le=10_000)]
_PNG = {200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
              "description": "The picture."}}

#: sha256 of a map -> the map.
_MAPS: dict[str, object] = {}
#: (database, model_ref) -> the registered map's reference, its bytes fetched, verified and loaded (``_MAPS``).
_REFS: dict[tuple[str, str], ModelRef] = {}
#: (database, model_ref) -> :func:`map_overlay`'s answer.
_OVERLAYS: dict[tuple[str, str], dict] = {}
_LOCK = threading.Lock()


def _key(engine, model_ref: str) -> tuple[str, str]:
    return engine.url.render_as_string(hide_password=True), model_ref


def _map_ref(engine, model_ref: str) -> ModelRef:
    """The map registered as ``model_ref``, fetched, verified and loaded once per process."""
    from survey_classifier.artefacts import fetch
    from survey_classifier.registry import stored_ref
    from survey_classifier.som import RotationInvariantSOM

    key = _key(engine, model_ref)
    with _LOCK:
        if key in _REFS:
            return _REFS[key]
    ref = stored_ref(engine, model_ref)
    with _LOCK:
        ref = fetch(ref, engine)
        if ref.sha256 not in _MAPS:
            _MAPS[ref.sha256] = RotationInvariantSOM.load(ref.path)
        _REFS[key] = ref
        return ref


def load_map(engine, model_ref: str):
    """The SOM registered as ``model_ref``, fetched, verified and loaded once per process.

    Raises
    ------
    ModelError
        No registered map of that name, or its bytes cannot be fetched or verified.
    """
    return _MAPS[_map_ref(engine, model_ref).sha256]


def map_layout(som) -> dict:
    """Layout of a map for the page: every neuron's ``(x, y)`` and its place ``(px, py)`` in node spacings."""
    grid = som.grid_
    positions = grid.positions - grid.positions.min(axis=0)
    return {
        "layout": grid.layout,
        "neurons": [{"x": int(x), "y": int(y), "px": float(px), "py": float(py)}
                    for (x, y), (px, py) in zip(grid.index_xy.tolist(), positions.tolist(), strict=True)],
    }


class NeuronClass(BaseModel):
    """One class the map's neurons were labelled with."""

    name: str
    colour: str = Field(description="#rrggbb: the class's colour in the pictures of `show som` and on the page.")
    sources: int = Field(description="Labelled sources of this class the map was labelled with.")
    neurons: int = Field(description="Neurons that give this class.")


class NeuronClasses(BaseModel):
    """The classes of the map's neurons, as `train som --labels` wrote them beside its file (neurons.json)."""

    classes: list[NeuronClass]
    labelled_sources: int
    mean_purity: float = Field(description="Fraction of the labelled sources that are in their neuron's class.")
    smoothing: float = Field(description="Width (nodes) of the Gaussian the neurons' votes were summed with; 0: none.")


class SomNeuron(BaseModel):
    """One neuron of the map: its place, its U-matrix value and, when the map is labelled, its class."""

    x: int
    y: int
    px: float = Field(description="Place on the page, in node spacings (hexagonal rows are offset).")
    py: float
    u_distance: float = Field(description="U-matrix: mean distance of its prototype to those of its neighbours "
                                          "on the map (units of the quantization error).")
    neuron_class: str | None = Field(None, description="The class the neuron gives: the majority of its "
                                                       "labelled sources (of its neighbours when it has none or "
                                                       "a tie); null without neuron classes.")
    purity: float | None = Field(None, description="Fraction of its own labelled sources in their majority class "
                                                   "(null when it has none).")
    class_counts: dict[str, int] | None = Field(None, description="Its labelled sources per class.")
    class_from_neighbours: bool | None = Field(None, description="Its class is its neighbours' majority.")


class SomNode(BaseModel):
    """A neuron with sources among the results shown."""

    x: int
    y: int
    count: int
    best_distance: float
    best_cutout_id: int
    label: str | None = Field(description="Its current label by a user (`/som/nodes/{x}/{y}/labels`).")


class LabelledNeuron(BaseModel):
    """A neuron's current label by a user."""

    x: int
    y: int
    label: str
    author: str
    label_id: int


class SomMap(BaseModel):
    """The SOM of the results shown: hits per node, users' neuron labels, and what the map itself says."""

    stage: str
    stage_version: str
    model_ref: str
    width: int
    height: int
    nodes: list[SomNode]
    labelled_nodes: list[LabelledNeuron]
    prototype_image: str
    has_prototypes: bool
    layout: str | None = Field(description="cartesian or hexagonal; null for a map outside the registry.")
    neurons: list[SomNeuron] | None = Field(description="Every neuron of the map; null outside the registry.")
    has_neuron_images: bool
    neuron_classes: NeuronClasses | None = Field(description="null: the map carries no neuron classes "
                                                             "(`neuron_classes_note` says why).")
    neuron_classes_note: str


def map_overlay(engine, model_ref: str) -> dict:
    """What the SOM view lays over the map registered as ``model_ref``, worked out once per process.

    Returns ``{"u_distance": [...], "per_neuron": [...] or None, "neuron_classes": {...} or None,
    "neuron_classes_note": str}``. Per neuron, in the map's order (that of :func:`map_layout`): its
    U-matrix value (:func:`~survey_classifier.som.plots.u_matrix`) and, when the map has its
    :data:`~survey_classifier.som.labels.NEURON_LABELS_FILE` (registered with it, or beside a shipped
    map's file), the class it gives, the purity of its own labelled sources and their counts per class
    (:class:`SomNeuron`); ``neuron_classes`` is :class:`NeuronClasses`, None without labels, and the
    note says which. An answer whose registered neurons.json was refused (not found, another sha256,
    not fitting the map) is not kept, so the page shows the classes once the file is mended.

    Raises
    ------
    ModelError
        As :func:`load_map`.
    """
    ref = _map_ref(engine, model_ref)
    key = _key(engine, model_ref)
    with _LOCK:
        found = _OVERLAYS.get(key)
    if found is None:
        found = _overlay_of(_MAPS[ref.sha256], ref, engine)
        from survey_classifier.som.labels import NEURON_LABELS_FILE

        refused = found["neuron_classes"] is None and ref.companion(NEURON_LABELS_FILE) is not None
        if not refused:  # a registered file that was refused is tried again, once mended in its store
            with _LOCK:
                _OVERLAYS[key] = found
    return found


def _neuron_labels_file(ref: ModelRef, engine) -> tuple[Path | None, str]:
    """The verified local copy of the map's neurons.json, or None and why there is none.

    :func:`~survey_classifier.som.labels.registered_labels_file`; a registered file that is refused
    is logged, and the page's note points to the log.
    """
    from survey_classifier.som.labels import NEURON_LABELS_FILE, registered_labels_file

    try:
        return registered_labels_file(ref, engine)
    except ModelError as exc:
        log.warning("SOM view: %s", exc)
        return None, (f"the neuron classes registered with the map {ref.ref} ({NEURON_LABELS_FILE}) cannot be "
                      "fetched or do not have their registered sha256; see the log")


def _overlay_of(som, ref: ModelRef, engine) -> dict:
    from survey_classifier.som.labels import NEURON_LABELS_FILE, NeuronLabels
    from survey_classifier.som.plots import u_matrix

    model_ref = ref.ref
    overlay = {"u_distance": [float(value) for value in u_matrix(som)], "per_neuron": None, "neuron_classes": None}
    path, note = _neuron_labels_file(ref, engine)
    if path is None:
        return {**overlay, "neuron_classes_note": note}
    try:
        labels = NeuronLabels.read(path, grid=som.grid_)
    except ValueError as exc:
        log.warning("SOM view: %s", exc)
        note = f"the neuron classes of the map {model_ref} ({NEURON_LABELS_FILE}) do not fit it; see the log"
        return {**overlay, "neuron_classes_note": note}
    return {**overlay, **_neuron_classes(labels),
            "neuron_classes_note": f"classes of the {int(labels.hits.sum())} labelled sources the map {model_ref} "
                                   f"was labelled with ({NEURON_LABELS_FILE}); {100 * labels.mean_purity:.1f} % are "
                                   "in their neuron's class"}


def _neuron_classes(labels) -> dict:
    """``per_neuron`` and ``neuron_classes`` of :func:`map_overlay` from a map's :class:`NeuronLabels`."""
    from survey_classifier.som.plots import class_colour

    hits, purity = labels.hits, labels.purity
    per_neuron = []
    for node, counts in enumerate(labels.counts):
        given = int(labels.labels[node])
        tied = np.count_nonzero(counts == counts.max()) > 1
        per_neuron.append({
            "neuron_class": labels.classes[given] if given >= 0 else None,
            "purity": float(purity[node]) if hits[node] else None,
            "class_counts": dict(zip(labels.classes, counts.tolist(), strict=True)),
            "class_from_neighbours": given >= 0 and (not hits[node] or tied),
        })
    totals = labels.counts.sum(axis=0).tolist()
    classes = [{"name": name, "colour": class_colour(name, labels.classes), "sources": int(total),
                "neurons": int(np.count_nonzero(labels.labels == index))}
               for index, (name, total) in enumerate(zip(labels.classes, totals, strict=True))]
    return {"per_neuron": per_neuron,
            "neuron_classes": {"classes": classes, "labelled_sources": int(hits.sum()),
                               "mean_purity": labels.mean_purity, "smoothing": labels.smoothing}}


def _node_index(som, x: int, y: int) -> int:
    found = np.flatnonzero((som.grid_.index_xy[:, 0] == x) & (som.grid_.index_xy[:, 1] == y))
    if found.size == 0:
        raise HTTPException(404, f"no neuron ({x}, {y}) on this {som.grid_.layout} map")
    return int(found[0])


def _shown(image: np.ndarray) -> np.ndarray:
    """Display values of a prepared image or prototype (:func:`survey_classifier.display.stretch_prepared`)."""
    from survey_classifier.display import stretch_prepared

    return stretch_prepared(image)


#: Pixels across (at least) that a cutout over the pixel budget keeps for its picture in its neuron's frame.
_FRAME_DETAIL = 1024


def _member_png(map_sha: str, path: str, angle_deg: float, flip: bool, size: int, cmap: str) -> bytes:
    """The cutout at ``path`` in its neuron's frame; one over the pixel budget is block-averaged while it is
    read, as ``image.png`` reads it (to about :data:`_FRAME_DETAIL` pixels across), and prepared at that
    coarser scale (:func:`_binned_config`)."""
    from survey_classifier.api.images import array_png, read_binned
    from survey_classifier.io.fits import read_cutout
    from survey_classifier.preprocess import PreprocessConfig, preprocess

    som = _MAPS[map_sha]
    config = PreprocessConfig.from_dict(som.preprocess_dict_)
    with warnings.catch_warnings():  # the reader's quirks were reported when the cutout was classified
        warnings.simplefilter("ignore")
        binned = read_binned(path, size=_FRAME_DETAIL)
        if binned is None:
            prepared = read_cutout(path).preprocessed(config)
        else:
            image, step, header = binned
            scale = _pixel_scale_arcsec(header)
            prepared = preprocess(image, _binned_config(config, step),
                                  pixel_scale_arcsec=None if scale is None else scale * step)
    return array_png(_shown(som.rotate_into_frame(prepared, angle_deg, flip)), size=size, cmap=cmap)


def _binned_config(config, step: int):
    """``config`` for an image averaged in ``step`` x ``step`` blocks: its lengths in input pixels divided by
    ``step`` (lengths in arcsec and in output pixels stay)."""
    from dataclasses import replace

    return replace(
        config,
        crop=None if config.crop is None else max(2, round(config.crop / step)),
        crop_min=max(2.0, config.crop_min / step),
        island_reach=None if config.island_reach is None else config.island_reach / step,
    )


def _pixel_scale_arcsec(header) -> float | None:
    """Geometric mean pixel side of a FITS header's celestial WCS, arcsec (None without one)."""
    import math

    from astropy.wcs import WCS
    from astropy.wcs.utils import proj_plane_pixel_scales

    try:
        celestial = WCS(header).celestial
        if celestial.naxis != 2:
            return None
        scales = proj_plane_pixel_scales(celestial)
    except Exception:  # a header without a usable WCS: preprocess without a scale, as the reader would
        return None
    return float(math.sqrt(abs(scales[0] * scales[1]))) * 3600.0


def _prototype_png(map_sha: str, node: int, size: int, cmap: str) -> bytes:
    from survey_classifier.api.images import array_png

    return array_png(_shown(_MAPS[map_sha].prototypes_[node]), size=size, cmap=cmap)


def _png(content: bytes) -> Response:
    return Response(content, media_type="image/png", headers={"Cache-Control": "max-age=3600"})


def inspect_router(engine, *, slots=None, cache=None) -> APIRouter:
    """The routes of this module over ``engine``; pictures drawn in ``slots``, kept in ``cache`` (images.py)."""
    from survey_classifier.api.images import PngCache, RenderBusy, RenderSlots

    router = APIRouter()
    slots = RenderSlots() if slots is None else slots
    cache = PngCache() if cache is None else cache

    def _drawn(key: tuple, draw, *, slot: bool = True) -> bytes:
        found = cache.get(key)
        if found is not None:
            return found
        if not slot:
            png = draw()
        else:
            with slots.held() as free:
                if not free:
                    raise HTTPException(503, str(RenderBusy()), headers={"Retry-After": "1"})
                png = draw()
        cache.put(key, png)
        return png

    def _som_variant(connection, stage: str | None):
        from survey_classifier.query import find_variants, stage_of_kind

        variants = find_variants(connection)
        stage = stage_of_kind(variants, "som", stage, "SOM pictures")
        return stage, variants[stage]

    def _map_of(variant):
        try:
            sha = _map_ref(engine, variant.model).sha256
        except ModelError as exc:
            raise HTTPException(404, f"no map to draw for SOM results of {variant.model!r}: {exc}") from exc
        return _MAPS[sha], sha

    @router.get("/cutouts/{cutout_id}/som.png", response_class=Response,
                summary="The source as its SOM stage mapped it: prepared, mirrored and rotated into its neuron's frame",
                responses={**_PNG, **errors(400, 404, 422, 503)})
    def member_in_frame(cutout_id: CutoutId, stage: Stage = None, size: ImageSize = 128, cmap: ColourMap = "inferno"):
        c = CutoutRow.__table__.c
        with engine.connect() as connection:
            stage, variant = _som_variant(connection, stage)
            t = variant.row_class.__table__
            row = connection.execute(
                select(c.path, c.sha256, t.c.angle_deg, t.c.flip)
                .join(t, t.c.cutout_id == c.id)
                .where(c.id == cutout_id, t.c.stage == stage, t.c.stage_version == variant.version,
                       t.c.model_ref == variant.model)
            ).first()
        if row is None:
            raise HTTPException(404, f"cutout {cutout_id} has no placement of SOM stage {stage!r} ({variant.model})")
        _, map_sha = _map_of(variant)
        try:
            angle, flip = float(row.angle_deg or 0.0), bool(row.flip)
            png = _drawn(("member", map_sha, row.path, row.sha256, angle, flip, size, cmap),
                         lambda: _member_png(map_sha, row.path, angle, flip, size, cmap))
        except (CutoutError, ValueError) as exc:
            raise HTTPException(404, f"cutout {cutout_id}: {exc}") from exc
        return _png(png)

    @router.get("/som/nodes/{node_x}/{node_y}/prototype.png", response_class=Response,
                summary="The prototype of one SOM neuron", responses={**_PNG, **errors(400, 404, 422)})
    def prototype(node_x: Node, node_y: Node, stage: Stage = None, size: ImageSize = 128, cmap: ColourMap = "inferno"):
        with engine.connect() as connection:
            _, variant = _som_variant(connection, stage)
        som, map_sha = _map_of(variant)
        node = _node_index(som, node_x, node_y)
        return _png(_drawn(("prototype", map_sha, node, size, cmap), lambda: _prototype_png(map_sha, node, size, cmap),
                           slot=False))

    @router.get("/cutouts/{cutout_id}/neighbours",
                summary="The sources nearest to this one in a CNN's embedding space (cosine distance)",
                responses=errors(400, 404, 422))
    def neighbours(
        cutout_id: CutoutId,
        stage: Annotated[str | None, Query(pattern=_NAME, description="A classification stage that stores "
                                                                        "embeddings (default: the first).")] = None,
        k: Annotated[int, Query(ge=1, le=100, description="How many neighbours.")] = 8,
    ):
        from survey_classifier.api._summaries import embedding_neighbours

        with engine.connect() as connection:
            found = embedding_neighbours(connection, cutout_id, stage=stage, k=k)
        if found is None:
            raise HTTPException(404, f"cutout {cutout_id} has no stored embedding")
        return found

    return router
