"""Read results back as :class:`astropy.table.Table`.

One row per cutout, with the cutout's position and catalogue fields and,
for every stage with results, that stage's columns prefixed by its name
(``measure_peak_flux_jy``, ``cnn_label``, ``som_node_x`` ...). Where a stage
has results of several versions or models, the most recent is shown unless
``versions`` picks one.

Every column carries its unit, UCD and description
(:mod:`survey_classifier.columns`), so every export writes them; columns
carried through from an input catalogue come back under their own names
(prefixed ``catalogue_`` only where a name is taken by one of ours) with
the unit and description the catalogue gave. The columns come in a
readable order: id, name, position, then each classification's label and
probability (:data:`LEADING_COLUMNS`).

Cone searches use the HEALPix pixel stored with each cutout
(``cutouts.healpix``): the cone becomes a few ranges of one indexed integer
column, and exact separations are computed on what those ranges return.
Every value reaches the database as a bound parameter.
"""

from __future__ import annotations

import json
import math
import weakref
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from astropy.coordinates import angular_separation
from astropy.table import Table
from sqlalchemy import (
    ARRAY,
    BigInteger,
    String,
    Text,
    and_,
    any_,
    bindparam,
    exists,
    func,
    or_,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.engine import Connection, Engine

from survey_classifier._frame import Frame, FrameColumn, frame_column
from survey_classifier.columns import Column, annotate, described_columns, family_of, order_columns
from survey_classifier.db._healpix import cone_ranges
from survey_classifier.db.models import (
    RESULT_TABLES,
    CatalogueColumnRow,
    CutoutRow,
    ErrorRow,
    ResultRunRow,
    RunRow,
)
from survey_classifier.db.store import of_run
from survey_classifier.errors import StageConfigError, SurveyClassifierError
from survey_classifier.heartbeat import owner_dead
from survey_classifier.labels.columns import add_label_columns
from survey_classifier.labels.store import labelled_condition, labelled_cutout_ids

__all__ = [
    "Variant",
    "find_variants",
    "stage_of_kind",
    "classification_stages",
    "query_results",
    "top_anomalies",
    "query_errors",
    "failed_by_stage",
    "list_runs",
    "cone_prefilter",
    "cone_search",
    "LEADING_COLUMNS",
    "SEPARATION",
    "POSITION_OFFSET",
    "ANOMALY_RANK",
    "TILE_COLUMNS",
]

#: Columns computed by queries (the stored ones describe themselves in :mod:`survey_classifier.db.models`).
SEPARATION = Column("separation_arcsec", "Angular distance from the centre of the cone search", unit="arcsec",
                    ucd="pos.angDistance", format=".2f").checked()
POSITION_OFFSET = Column("position_offset_arcsec", "Angular distance between the input catalogue's position and "
                         "the WCS centre of the cutout", unit="arcsec", ucd="pos.angDistance", format=".2f").checked()
ANOMALY_RANK = Column("anomaly_rank", "Rank of the anomaly score among these results (1 = most anomalous)",
                      unit="", ucd="stat.rank").checked()

#: Columns of cutouts cut from mosaic tiles (from ``cutouts.origin``), with the key each is read from.
TILE_COLUMNS = (
    (Column("tile", "Mosaic tile the cutout was cut from (path or URL)", ucd="meta.id;meta.file").checked(), "tile"),
    (Column("tile_x", "0-based pixel column of the catalogue position on the tile", unit="pix",
            ucd="pos.cartesian.x;instr.pixel", format=".2f").checked(), "x"),
    (Column("tile_y", "0-based pixel row of the catalogue position on the tile", unit="pix",
            ucd="pos.cartesian.y;instr.pixel", format=".2f").checked(), "y"),
)
#: The cutout columns of every result table, in this order (the database's name where it differs).
_CUTOUT_COLUMNS = (("cutout_id", "id"), ("catalogue_id", "catalogue_id"), ("ra_deg", "ra_deg"),
                   ("dec_deg", "dec_deg"), ("wcs_ra_deg", "wcs_ra_deg"), ("wcs_dec_deg", "wcs_dec_deg"),
                   ("catalogue_ra_deg", "catalogue_ra_deg"), ("catalogue_dec_deg", "catalogue_dec_deg"),
                   ("pixel_scale_arcsec", "pixel_scale_arcsec"), ("beam_major_arcsec", "beam_major_arcsec"),
                   ("beam_minor_arcsec", "beam_minor_arcsec"), ("path", "path"), ("sha256", "sha256"))
#: What a query reads of each cutout: its columns, the catalogue's own columns and the mosaic tile it came from.
_CUTOUT_READ = [CutoutRow.__table__.c[stored] for _, stored in _CUTOUT_COLUMNS] + [
    CutoutRow.__table__.c.catalogue, CutoutRow.__table__.c.origin]
#: Names a catalogue column cannot take (it is then prefixed ``catalogue_``).
_RESERVED = {name for name, _ in _CUTOUT_COLUMNS} | {SEPARATION.name, POSITION_OFFSET.name, ANOMALY_RANK.name} | {
    spec.name for spec, _ in TILE_COLUMNS}

#: Patterns of the columns a result table starts with, in this order.
LEADING_COLUMNS = ("cutout_id", "catalogue_id", "ra_deg", "dec_deg", "separation_arcsec", "anomaly_rank",
                   "*_label", "*_probability")

#: Longest list of cutout ids sent to the database as one ``IN`` condition.
_MAX_ID_LIST = 5000

_SKIP = {"id", "cutout_id", "stage", "updated_at", "embedding", "extra", "components", "probabilities"}


class Variant(NamedTuple):
    """The results of one stage shown by a query: its kind, table, version and model."""

    kind: str
    row_class: type
    version: str
    model: str
    updated_at: object = None


def _check_cone(ra: float, dec: float, radius: float) -> None:
    for name, value in (("RA", ra), ("Dec", dec), ("radius", radius)):
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            msg = f"cone search {name} must be a finite number of degrees, got {value!r}"
            raise SurveyClassifierError(msg)
    if not (0.0 <= ra < 360.0 or math.isclose(ra, 360.0)):
        msg = f"cone search RA must be in [0, 360) degrees, got {ra}"
        raise SurveyClassifierError(msg)
    if not -90.0 <= dec <= 90.0:
        msg = f"cone search Dec must be in [-90, 90] degrees, got {dec}"
        raise SurveyClassifierError(msg)
    if not 0.0 < radius <= 180.0:
        msg = f"cone search radius must be in (0, 180] degrees, got {radius}"
        raise SurveyClassifierError(msg)


#: Range slots of the cone statements: a cone's ranges fill the smallest that holds them, the rest are empty.
_RANGE_SLOTS = (1, 8, 16, 24, 32, 48)
#: An empty range (no pixel is at least 0 and at most -1), for the slots a cone does not fill.
_NO_RANGE = (0, -1)


@lru_cache(maxsize=32)
def _ranges_statement(names: tuple[str, ...], slots: int):
    """``SELECT names FROM cutouts`` over ``slots`` HEALPix ranges, each given as parameters ``low{i}``, ``high{i}``.

    One ``SELECT`` per range joined by ``UNION ALL`` (the ranges are
    disjoint): each is a scan of one slice of the ``(healpix, ra_deg,
    dec_deg, id)`` index, a plan no planner can turn into a table scan, as
    it may a long ``OR``. Made once for each count of slots, with the
    ranges as bound parameters, so that a cone search neither builds nor
    compiles a statement.
    """
    c = CutoutRow.__table__.c
    columns = [c[name] for name in names]
    selects = [select(*columns).where(c.healpix.between(bindparam(f"low{i}"), bindparam(f"high{i}")))
               for i in range(slots)]
    return selects[0] if slots == 1 else union_all(*selects)


def _cone_candidates(ra: float, dec: float, radius: float, *names: str):
    """The statement of the columns ``names`` of the cutouts in the HEALPix ranges covering the cone, and its
    parameters."""
    _check_cone(ra, dec, radius)
    ranges = cone_ranges(ra % 360.0, dec, radius)
    slots = next((n for n in _RANGE_SLOTS if n >= len(ranges)), None)
    if slots is None:  # more ranges than cone_ranges gives: one statement for this count
        slots = len(ranges)
    params = {}
    for i in range(slots):
        params[f"low{i}"], params[f"high{i}"] = ranges[i] if i < len(ranges) else _NO_RANGE
    return _ranges_statement(names, slots), params


def cone_prefilter(ra: float, dec: float, radius: float):
    """SQL condition on ``cutouts`` that keeps every source within ``radius`` deg.

    The cutouts whose HEALPix pixel lies in the ranges covering the cone
    (some sources outside the cone pass too; exact separations are computed
    afterwards).
    """
    c = CutoutRow.__table__.c
    statement, params = _cone_candidates(ra, dec, radius, "id")
    return c.id.in_(statement.params(params))


def cone_search(connection: Connection, ra: float, dec: float, radius: float) -> dict[int, float]:
    """``{cutout_id: separation_deg}`` of every cutout within ``radius`` deg of (``ra``, ``dec``)."""
    statement, params = _cone_candidates(ra, dec, radius, "id", "ra_deg", "dec_deg")
    rows = connection.execute(statement, params).all()
    if not rows:
        return {}
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    positions = np.radians(np.array([(r[1], r[2]) for r in rows], dtype=float))
    separation = np.degrees(
        angular_separation(math.radians(ra), math.radians(dec), positions[:, 0], positions[:, 1])
    )
    inside = separation <= radius
    return dict(zip(ids[inside].tolist(), separation[inside].tolist()))


def _distinct_variants(connection: Connection, table) -> list[tuple[str, str, str]]:
    """The (stage, stage_version, model_ref) present in ``table``, one index seek each."""
    key = (table.c.stage, table.c.stage_version, table.c.model_ref)
    found: list[tuple[str, str, str]] = []
    query = select(*key).order_by(*key).limit(1)
    while True:
        where = query if not found else query.where(tuple_(*key) > tuple_(*found[-1]))
        row = connection.execute(where).first()
        if row is None:
            return found
        found.append(tuple(row))


def _stored_variants(connection: Connection) -> dict[str, list[Variant]]:
    """Every variant stored of each stage; where a stage has several, each with when it was last written."""
    by_stage: dict[str, list[Variant]] = {}
    for kind, row_class in RESULT_TABLES.items():
        for stage, version, model in _distinct_variants(connection, row_class.__table__):
            by_stage.setdefault(stage, []).append(Variant(kind, row_class, version, model))
    for stage, variants in by_stage.items():
        if len(variants) > 1:  # the newest is shown: when each was written (an index seek each)
            by_stage[stage] = [v._replace(updated_at=_newest(connection, stage, v)) for v in variants]
    return by_stage


@lru_cache(maxsize=1)
def _results_mark_statement():
    """The id and time of the newest row of each result table (a primary-key seek each), in one statement."""
    marks = []
    for row_class in RESULT_TABLES.values():
        t = row_class.__table__
        newest = select(t.c.id, t.c.updated_at).order_by(t.c.id.desc()).limit(1)
        marks.append(newest.with_only_columns(t.c.id).scalar_subquery())
        marks.append(newest.with_only_columns(t.c.updated_at).scalar_subquery())
    return select(*marks)


#: The stored variants last read through each engine, with the mark of the result tables they were read at.
_VARIANTS_READ: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _stored_variants_now(connection: Connection) -> dict[str, list[Variant]]:
    """:func:`_stored_variants`, read again only when the result tables changed since the last read.

    Result rows are added (a new id) or updated in place (same id, new
    ``updated_at``), never deleted. A new variant is a new row, so it moves
    the mark (the newest id and its time in each result table, one
    statement); an update in place changes which variant is newest only
    where a stage has several, and there the time each was last written is
    read again, as without the cache. So the answer is always the one
    :func:`_stored_variants` gives, at the cost of one small statement in
    place of a seek per variant and table.
    """
    mark = tuple(connection.execute(_results_mark_statement()).one())
    read = _VARIANTS_READ.get(connection.engine)
    if read is not None and read[0] == mark:
        by_stage = read[1]
        if all(v.updated_at == _newest(connection, stage, v)
               for stage, variants in by_stage.items() if len(variants) > 1 for v in variants):
            return by_stage
    by_stage = _stored_variants(connection)
    _VARIANTS_READ[connection.engine] = (mark, by_stage)
    return by_stage


def find_variants(connection: Connection, versions: Mapping[str, str] | None = None) -> dict[str, Variant]:
    """The variant of each stage a query shows: the one ``versions`` picks, or the newest.

    ``versions`` maps a stage to ``"VERSION"`` or ``"VERSION@MODEL"``; a pick
    that matches no stored result is refused, naming what is stored.
    """
    versions = dict(versions or {})
    by_stage = _stored_variants_now(connection)
    chosen = {}
    for stage, variants in by_stage.items():
        pick = versions.get(stage)
        if pick:
            version, _, model = pick.partition("@")
            matching = [v for v in variants if v.version == version and (not model or v.model == model)]
            if not matching:
                stored = sorted(f"{v.version}@{v.model}" if v.model else v.version for v in variants)
                msg = f"no results of stage {stage!r} version {pick!r}; stored: {stored}"
                raise SurveyClassifierError(msg)
            variants = matching
        if len(variants) > 1:  # the newest written
            chosen[stage] = max(variants, key=lambda v: (v.updated_at is not None, v.updated_at or 0))
        else:
            chosen[stage] = variants[0]
    unknown = sorted(set(versions) - set(by_stage))
    if unknown:
        msg = f"no results of stage(s) {unknown} in this database; stages with results: {sorted(by_stage)}"
        raise SurveyClassifierError(msg)
    return chosen


def _id_in(connection: Connection, column, ids):
    """``column IN ids``; on PostgreSQL as ``= ANY(array)``, one bound parameter however many ids."""
    ids = [int(i) for i in ids]
    if connection.dialect.name == "postgresql":
        return column == any_(bindparam(None, ids, type_=ARRAY(BigInteger)))
    return column.in_(ids)


def _newest(connection: Connection, stage: str, variant: Variant):
    table = variant.row_class.__table__
    newest = select(func.max(table.c.updated_at)).where(*_variant_condition(table, stage, variant))
    return connection.execute(newest).scalar()


def _variant_condition(table, stage: str, variant: Variant) -> list:
    return [table.c.stage == stage, table.c.stage_version == variant.version, table.c.model_ref == variant.model]


def stage_of_kind(variants: Mapping[str, Variant], kind: str, stage: str | None, what: str) -> str:
    """``stage`` (checked to be of ``kind``) or the only/first stage of that kind."""
    if stage is None:
        stage = next((n for n, v in sorted(variants.items()) if v.kind == kind), None)
        if stage is None:
            msg = f"no {kind} results in this database to filter on {what}"
            raise SurveyClassifierError(msg)
    elif stage not in variants:
        msg = f"no results of stage {stage!r} in this database; stages with results: {sorted(variants)}"
        raise SurveyClassifierError(msg)
    elif variants[stage].kind != kind:
        msg = f"stage {stage!r} gives {variants[stage].kind} results; {what} filters need a {kind} stage"
        raise SurveyClassifierError(msg)
    return stage


def _has_label(connection: Connection, stage: str, variant: Variant, label: str) -> bool:
    t = variant.row_class.__table__
    found = exists().where(*_variant_condition(t, stage, variant), t.c.label == label)
    return bool(connection.execute(select(found)).scalar())


def _labels_of(connection: Connection, stage: str, variant: Variant) -> list[str]:
    t = variant.row_class.__table__
    labels = select(t.c.label).where(*_variant_condition(t, stage, variant)).distinct()
    return sorted(connection.execute(labels).scalars())


def classification_stages(
    connection: Connection, variants: Mapping[str, Variant], stage: str | None, label: str | None
) -> list[str]:
    """The classification stages a label or probability filter applies to.

    ``stage`` when named, else every classification stage with results;
    with ``label``, only those that gave it. A label that none of them
    gave is refused with the labels each stage holds, so that a typo or a
    label of another stage does not pass for an empty result.
    """
    if stage is not None:
        stages = [stage_of_kind(variants, "classification", stage, "label or probability")]
    else:
        stages = [name for name, variant in sorted(variants.items()) if variant.kind == "classification"]
        if not stages:
            msg = "no classification results in this database to filter on label or probability"
            raise SurveyClassifierError(msg)
    if label is None:
        return stages
    holding = [name for name in stages if _has_label(connection, name, variants[name], label)]
    if holding:
        return holding
    held = {
        name: _labels_of(connection, name, variant)
        for name, variant in sorted(variants.items())
        if variant.kind == "classification"
    }
    holders = [name for name, labels in held.items() if label in labels]
    if stage is not None and holders:
        msg = (
            f"stage {stage!r} has no results labelled {label!r} (its labels: {', '.join(held[stage]) or 'none'}); "
            f"{label!r} is a label of stage {', '.join(holders)}: name that stage, or name none to search them all"
        )
    else:
        listed = "; ".join(f"{name}: {', '.join(labels) or 'none'}" for name, labels in held.items())
        msg = f"no classification stage has results labelled {label!r}; labels stored: {listed}"
    raise SurveyClassifierError(msg)


def _check_range(name: str, low, high, *, lowest=None, highest=None) -> None:
    for value in (low, high):
        if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value)):
            msg = f"{name} must be a finite number, got {value!r}"
            raise SurveyClassifierError(msg)
        if value is not None and ((lowest is not None and value < lowest) or (highest is not None and value > highest)):
            msg = f"{name} must be in [{lowest}, {highest}], got {value}"
            raise SurveyClassifierError(msg)
    if low is not None and high is not None and low > high:
        msg = f"{name} range is empty: minimum {low} is above maximum {high}"
        raise SurveyClassifierError(msg)


def query_results(
    engine: Engine,
    *,
    stage: str | None = None,
    label: str | None = None,
    min_probability: float | None = None,
    run_id: int | None = None,
    ra: float | None = None,
    dec: float | None = None,
    radius: float | None = None,
    versions: Mapping[str, str] | None = None,
    limit: int | None = None,
    max_probability: float | None = None,
    som_node: tuple[int, int] | None = None,
    som_stage: str | None = None,
    anomaly_ranks: tuple[int, int] | None = None,
    anomaly_stage: str | None = None,
    cutout_ids: Sequence[int] | None = None,
    offset: int = 0,
    after_id: int | None = None,
    label_class: str | None = None,
    interesting: bool | None = None,
    sort: str | None = None,
    descending: bool = False,
    _variants: Mapping[str, Variant] | None = None,
    as_frame: bool = False,
) -> Table | Frame:
    """Cutouts and their results as one table, ordered by cutout id.

    Parameters
    ----------
    engine : Engine
    stage : str, optional
        Keep cutouts with a result of this stage; ``label`` and the
        probability range apply to it (default: every classification
        stage, a cutout passing when one of them matches).
    label : str, optional
        Keep this class label (refused, naming the stages that hold it,
        when the stages searched never gave it).
    min_probability, max_probability : float, optional
        Range of the probability of the predicted label.
    run_id : int, optional
        Keep cutouts with a result or error written by this run.
    ra, dec, radius : float, optional
        Cone search, all in degrees (ICRS as stored); adds ``separation_arcsec``.
    versions : mapping, optional
        ``{stage: "VERSION"}`` or ``{stage: "VERSION@MODEL"}``.
    limit : int, optional
        At most this many rows.
    som_node : (int, int), optional
        Keep cutouts placed on this SOM node (x, y) by ``som_stage``.
    anomaly_ranks : (int, int), optional
        Keep cutouts whose anomaly rank (1 = highest score of
        ``anomaly_stage``) is in this inclusive range.
    cutout_ids : sequence of int, optional
        Keep these cutouts.
    offset : int
        Skip this many rows (page ``n`` of size ``limit`` has offset ``n * limit``).
    after_id : int, optional
        Keyset pagination: only cutouts with an id above this one.
    label_class : str, optional
        Keep cutouts whose current user label has this class (case and
        spacing aside).
    interesting : bool, optional
        Keep cutouts whose current user label says interesting (True) or
        not interesting (False).
    sort : str, optional
        Order by this column instead of the cutout id: a column of the
        cutout (``ra_deg``, ``catalogue_id`` ...) or a stored result column
        of a stage (``cnn_probability``, ``anomaly_score``, ``som_distance``);
        missing values last, ties by cutout id. Not with ``after_id``.
    descending : bool
        Largest first.
    as_frame : bool
        Return the light :class:`~survey_classifier._frame.Frame` (the same
        columns and descriptions, no astropy table built: what a JSON answer
        encodes) instead of the astropy table.

    Returns
    -------
    Table or Frame
        With the label columns of :mod:`survey_classifier.labels.columns`
        when there are labels.
    """
    cone = (ra, dec, radius)
    if any(v is not None for v in cone) and any(v is None for v in cone):
        msg = "a cone search needs all of --ra, --dec and --radius"
        raise SurveyClassifierError(msg)
    if radius is not None:
        _check_cone(ra, dec, radius)
    _check_range("probability", min_probability, max_probability, lowest=0.0, highest=1.0)
    if limit is not None and limit < 0:
        msg = f"limit must be zero or more, got {limit}"
        raise SurveyClassifierError(msg)
    if offset < 0:
        msg = f"offset must be zero or more, got {offset}"
        raise SurveyClassifierError(msg)
    c = CutoutRow.__table__.c
    with engine.connect() as connection:
        variants = dict(_variants) if _variants is not None else find_variants(connection, versions)
        conditions = []
        if label is not None or min_probability is not None or max_probability is not None:
            classified = []
            for name in classification_stages(connection, variants, stage, label):
                t = variants[name].row_class.__table__
                condition = [t.c.cutout_id == c.id, *_variant_condition(t, name, variants[name])]
                if label is not None:
                    condition.append(t.c.label == label)
                if min_probability is not None:
                    condition.append(t.c.probability >= min_probability)
                if max_probability is not None:
                    condition.append(t.c.probability <= max_probability)
                classified.append(exists().where(*condition))
            conditions.append(or_(*classified))
        elif stage is not None:
            if stage not in variants:
                msg = f"no results of stage {stage!r} in this database; stages with results: {sorted(variants)}"
                raise SurveyClassifierError(msg)
            t = variants[stage].row_class.__table__
            conditions.append(exists().where(t.c.cutout_id == c.id, *_variant_condition(t, stage, variants[stage])))
        if som_node is not None:
            som_stage = stage_of_kind(variants, "som", som_stage, "SOM node")
            t = variants[som_stage].row_class.__table__
            node_x, node_y = (int(v) for v in som_node)
            conditions.append(
                exists().where(
                    t.c.cutout_id == c.id,
                    *_variant_condition(t, som_stage, variants[som_stage]),
                    t.c.node_x == node_x,
                    t.c.node_y == node_y,
                )
            )
        if anomaly_ranks is not None:
            first, last = (int(v) for v in anomaly_ranks)
            if first < 1 or last < first:
                msg = f"anomaly rank range must be 1 <= first <= last, got {first}..{last}"
                raise SurveyClassifierError(msg)
            anomaly_stage = stage_of_kind(variants, "anomaly", anomaly_stage, "anomaly rank")
            ranked = _ranked_anomalies(variants, anomaly_stage).offset(first - 1).limit(last - first + 1)
            conditions.append(c.id.in_(ranked.scalar_subquery()))
        if run_id is not None:
            if connection.execute(select(RunRow.id).where(RunRow.id == run_id)).first() is None:
                msg = f"no run with id {run_id} in this database"
                raise SurveyClassifierError(msg)
            link = ResultRunRow.__table__  # what the run wrote or confirmed, though a rerun wrote it again since
            conditions.append(exists().where(link.c.cutout_id == c.id, link.c.run_id == run_id))
        if cutout_ids is not None:
            conditions.append(_id_in(connection, c.id, cutout_ids))
        if after_id is not None:
            conditions.append(c.id > int(after_id))
        if label_class is not None or interesting is not None:
            conditions.append(labelled_condition(c.id, label=label_class, interesting=interesting))
        separations = None
        page_in_sql = True
        if radius is not None:
            separations = cone_search(connection, ra, dec, radius)
            if len(separations) <= _MAX_ID_LIST:
                conditions.append(_id_in(connection, c.id, separations))
            else:  # a wide cone: filter on the pixel ranges, then on the exact separations here
                conditions.append(cone_prefilter(ra, dec, radius))
                page_in_sql = False
        query = select(*_CUTOUT_READ).where(*conditions)
        if sort is not None:
            if after_id is not None:
                msg = "keyset pagination (after_id) follows the cutout id; page a sorted table with offset"
                raise SurveyClassifierError(msg)
            query = _sorted(query, variants, sort, descending)
        else:
            query = query.order_by(c.id)
        if page_in_sql and offset:
            query = query.offset(offset)
        if page_in_sql and limit is not None:
            query = query.limit(limit)
        rows = _dicts(connection.execute(query))
        if separations is not None:
            rows = [dict(r, separation_deg=separations[r["id"]]) for r in rows if r["id"] in separations]
        if not page_in_sql:
            rows = rows[offset:] if limit is None else rows[offset : offset + limit]
        table = _cutout_table(rows, with_separation=separations is not None)
        ids = [r["id"] for r in rows]
        for name, variant in sorted(variants.items()):
            _add_stage_columns(connection, table, ids, name, variant)
        _add_catalogue_columns(connection, table, rows)
        add_label_columns(connection, table, ids, variants, frame_column)
    frame = table[order_columns(table.colnames, LEADING_COLUMNS)]
    return frame if as_frame else frame.to_table()


def _sorted(query, variants: Mapping[str, Variant], sort: str, descending: bool):
    """``query`` of cutouts ordered by the column ``sort`` (a cutout's or a stage result's), missing last."""
    c = CutoutRow.__table__.c
    stored = dict(_CUTOUT_COLUMNS)
    if sort in stored:
        column = c[stored[sort]]
    else:
        column = None
        for stage in sorted(variants, key=len, reverse=True):
            field = sort[len(stage) + 1:] if sort.startswith(f"{stage}_") else None
            t = variants[stage].row_class.__table__.alias("sort_by")  # the filters' subqueries use the table itself
            if field and field not in _SKIP and field in t.c:
                query = query.outerjoin(t, and_(t.c.cutout_id == c.id,
                                                *_variant_condition(t, stage, variants[stage])))
                column = t.c[field]
                break
        if column is None:
            columns = [name for name, _ in _CUTOUT_COLUMNS] + sorted(
                f"{stage}_{col.name}" for stage, v in variants.items() for col in v.row_class.__table__.columns
                if col.name not in _SKIP and col.name not in ("run_id", "model_sha256"))
            msg = f"cannot sort by {sort!r}: sortable columns are {', '.join(columns)}"
            raise SurveyClassifierError(msg)
    return query.order_by(column.is_(None), column.desc() if descending else column.asc(), c.id)


def _ranked_anomalies(variants: Mapping[str, Variant], stage: str):
    """Cutout ids of ``stage``'s anomaly scores, highest first (ties by cutout id)."""
    t = variants[stage].row_class.__table__
    return (
        select(t.c.cutout_id)
        .where(*_variant_condition(t, stage, variants[stage]), t.c.score.is_not(None))
        .order_by(t.c.score.desc(), t.c.cutout_id)
    )


def top_anomalies(
    engine: Engine,
    n: int = 100,
    *,
    stage: str | None = None,
    versions: Mapping[str, str] | None = None,
    run_id: int | None = None,
    unlabelled: bool = False,
) -> Table:
    """The ``n`` cutouts with the highest anomaly scores, highest first, with ``anomaly_rank``.

    With ``run_id``, only the scores that run wrote or confirmed (ranked within them); with
    ``unlabelled``, only cutouts no user has labelled (``anomaly_rank``
    still counts the labelled ones).
    """
    if not isinstance(n, int) or n < 1:
        msg = f"the number of anomalies must be a positive integer, got {n!r}"
        raise SurveyClassifierError(msg)
    with engine.connect() as connection:
        variants = find_variants(connection, versions)
        stage = stage_of_kind(variants, "anomaly", stage, "anomaly rank")
        ranked = _ranked_anomalies(variants, stage)
        if run_id is not None:
            ranked = ranked.where(of_run(variants[stage].row_class.__table__, run_id))
        if unlabelled:
            ids, order = _unlabelled_top(connection, ranked, n)
        else:
            ids = connection.execute(ranked.limit(n)).scalars().all()
            order = {cutout_id: rank for rank, cutout_id in enumerate(ids, start=1)}
    table = query_results(engine, cutout_ids=ids, _variants=variants)
    table["anomaly_rank"] = np.array([order[i] for i in table["cutout_id"]], dtype=np.int64)
    annotate(table["anomaly_rank"], ANOMALY_RANK)
    table.sort("anomaly_rank")
    return table[order_columns(table.colnames, LEADING_COLUMNS)]


def _unlabelled_top(connection: Connection, ranked, n: int) -> tuple[list[int], dict[int, int]]:
    """The first ``n`` ids of ``ranked`` that no user labelled, and the rank of each among all."""
    labelled = labelled_cutout_ids(connection)
    ids: list[int] = []
    order: dict[int, int] = {}
    place = 0
    while len(ids) < n:
        chunk = connection.execute(ranked.offset(place).limit(n + len(labelled))).scalars().all()
        for cutout_id in chunk:
            place += 1
            if cutout_id not in labelled:
                ids.append(cutout_id)
                order[cutout_id] = place
                if len(ids) == n:
                    break
        if len(chunk) < n + len(labelled):
            break
    return ids, order


def _dicts(result) -> list[dict]:
    """The rows of ``result`` as dicts (the keys read once, not per row as ``Row._asdict`` does)."""
    keys = list(result.keys())
    return [dict(zip(keys, row)) for row in result.all()]  # one fetchall, not a fetchone per row


@lru_cache(maxsize=1)
def _cutout_specs() -> list[tuple[str, str, bool, Column]]:
    """(name, stored name, is text, description) of each cutout column of a result table."""
    described = described_columns(CutoutRow)
    return [(name, stored, _is_text(CutoutRow.__table__.c[stored]), described[stored].renamed(name))
            for name, stored in _CUTOUT_COLUMNS]


def _cutout_table(rows: list[dict], *, with_separation: bool) -> Frame:
    table = Frame()
    for name, stored, text, spec in _cutout_specs():
        values = [r[stored] for r in rows]
        table[name] = FrameColumn(values, "i") if name == "cutout_id" else frame_column(values, text=text)
        annotate(table[name], spec)
    if with_separation:
        table[SEPARATION.name] = FrameColumn([r["separation_deg"] * 3600.0 for r in rows], "f")
        annotate(table[SEPARATION.name], SEPARATION)
    table[POSITION_OFFSET.name] = frame_column(_position_offsets(rows))
    annotate(table[POSITION_OFFSET.name], POSITION_OFFSET)
    if any(r.get("origin") for r in rows):  # cut from mosaic tiles: the tile and the source's pixel on it
        for spec, key in TILE_COLUMNS:
            table[spec.name] = frame_column([(r.get("origin") or {}).get(key) for r in rows], text=key == "tile")
            annotate(table[spec.name], spec)
    return table


def _position_offsets(rows: list[dict]) -> list[float | None]:
    """Arcseconds between the catalogue position and the WCS centre (None without both)."""
    keys = ("catalogue_ra_deg", "catalogue_dec_deg", "wcs_ra_deg", "wcs_dec_deg")
    both = [i for i, r in enumerate(rows) if all(r.get(k) is not None for k in keys)]
    offsets: list[float | None] = [None] * len(rows)
    if both:
        angles = np.radians(np.array([[rows[i][k] for k in keys] for i in both], dtype=float))
        arcsec = np.degrees(angular_separation(*angles.T)) * 3600.0
        for i, value in zip(both, arcsec.tolist()):
            offsets[i] = value
    return offsets


#: The stored descriptions of the catalogue columns ``names`` (one statement, made once).
_CATALOGUE_COLUMNS_READ = select(CatalogueColumnRow.__table__).where(
    CatalogueColumnRow.__table__.c.name.in_(bindparam("names", expanding=True)))


def _add_catalogue_columns(connection, table: Frame, rows: list[dict]) -> None:
    """The catalogue's own columns, in its order, with its units and descriptions."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row["catalogue"] or {}))
    if not names:
        return
    stored = {r.name: r for r in connection.execute(_CATALOGUE_COLUMNS_READ, {"names": list(names)})}
    for key in names:
        values = [(r["catalogue"] or {}).get(key) for r in rows]
        if any(isinstance(v, (list, dict)) for v in values):
            values = [None if v is None else json.dumps(v) for v in values]
        name = key if key not in table.colnames and key not in _RESERVED else f"catalogue_{key}"
        while name in table.colnames:
            name = f"catalogue_{name}"
        table[name] = frame_column(values)
        row = stored.get(key)
        spec = Column(name, (row.description if row is not None else None) or f"Column {key!r} of the input catalogue",
                      row.unit if row is not None else None, row.ucd if row is not None else None)
        annotate(table[name], spec)


def _column(values: list, *, text: bool = False):
    """A table column from Python values, masked where None (of strings when ``text`` and all are None).

    The rule of :func:`survey_classifier._frame.frame_column`, as numpy holds it.
    """
    return frame_column(values, text=text).array()


def _is_text(column) -> bool:
    return isinstance(column.type, (String, Text))


@lru_cache(maxsize=1)
def _declared_result_columns() -> dict[str, dict[str, Column]]:
    """``{stage: {key: Column}}`` of the extra result fields installed stages declare."""
    from survey_classifier.stages.registry import available_stages

    try:
        stages = available_stages()
    except StageConfigError:  # a broken plugin: its columns come back undescribed, the rest as declared
        return {}
    return {name: {c.name: c for c in cls.result_columns} for name, cls in stages.items()}


@lru_cache(maxsize=64)
def _stage_rows_statement(row_class, dialect: str):
    """The result rows of one variant (parameters ``stage``, ``version``, ``model``) for the cutouts ``ids``.

    Made once per result table and dialect: the ids are one expanding
    parameter (on PostgreSQL one array, ``= ANY``), so a query builds no
    statement for them.
    """
    t = row_class.__table__
    wanted = [col for col in t.columns if col.name not in ("id", "stage", "updated_at", "embedding")]
    if dialect == "postgresql":
        of_ids = t.c.cutout_id == any_(bindparam("ids", type_=ARRAY(BigInteger)))
    else:
        of_ids = t.c.cutout_id.in_(bindparam("ids", expanding=True))
    return select(*wanted).where(t.c.stage == bindparam("stage"), t.c.stage_version == bindparam("version"),
                                 t.c.model_ref == bindparam("model"), of_ids)


@lru_cache(maxsize=4096)
def _stage_spec(spec: Column, column_name: str, stage: str) -> Column:
    """``spec`` of a stage's column as a result table shows it (made once per column)."""
    return spec.renamed(column_name, prefix=f"{stage}: ")


def _stage_values(connection, ids: list[int], name: str, variant: Variant) -> dict[str, list]:
    """``{column: values}`` of the stored results of ``variant`` for ``ids``, in that order (None where none)."""
    statement = _stage_rows_statement(variant.row_class, connection.dialect.name)
    names = [column.name for column in statement.selected_columns]
    at = names.index("cutout_id")
    by_cutout = {}
    for start in range(0, len(ids), _MAX_ID_LIST):
        chunk = [int(i) for i in ids[start : start + _MAX_ID_LIST]]
        params = {"stage": name, "version": variant.version, "model": variant.model, "ids": chunk}
        by_cutout.update((row[at], row) for row in connection.execute(statement, params).all())  # one fetchall
    missing = (None,) * len(names)
    ordered = [by_cutout.get(i, missing) for i in ids]
    if not ordered:
        return {column: [] for column in names}
    return dict(zip(names, map(list, zip(*ordered))))


def _add_stage_columns(connection, table: Frame, ids, name: str, variant: Variant) -> None:
    t = variant.row_class.__table__
    stored = _stage_values(connection, ids, name, variant)
    described = described_columns(variant.row_class)
    declared = _declared_result_columns().get(name, {})

    def put(key: str, values: list, spec: Column, *, text: bool = False) -> None:
        column_name = f"{name}_{key}"
        table[column_name] = frame_column(values, text=text)
        annotate(table[column_name], _stage_spec(spec, column_name, name))

    for column in (col for col in t.columns if col.name not in _SKIP):
        put(column.name, stored[column.name], described[column.name], text=_is_text(column))
    for mapping in ("probabilities", "components"):
        family = family_of(variant.row_class, mapping)
        if family is None:
            continue
        keys = sorted({k for m in stored[mapping] if m for k in m})
        for key in keys:
            spec = declared.get(key) or family.column(key)
            put(family.column(key).name, [(m or {}).get(key) for m in stored[mapping]], spec)
    extras = sorted({k for m in stored["extra"] if m for k in m}) if "extra" in stored else []
    for key in extras:
        values = [(m or {}).get(key) for m in stored["extra"]]
        if all(v is None or isinstance(v, (int, float, str, bool)) for v in values):
            spec = declared.get(key) or Column(key, f"{key!r}, a result field the stage does not describe")
            put(key, values, spec)


def list_runs(engine: Engine, *, limit: int = 20) -> Table:
    """The newest ``limit`` runs, newest first: when, how long, status, counts, stages with their models."""
    r = RunRow.__table__
    with engine.connect() as connection:
        rows = connection.execute(select(r).order_by(r.c.id.desc()).limit(int(limit))).all()
    table = Table()
    table["run"] = np.array([row.id for row in rows], dtype=np.int64)
    table["started_utc"] = [row.started_at.strftime("%Y-%m-%d %H:%M:%S") if row.started_at else "" for row in rows]
    table["took_s"] = _column([
        (row.finished_at - row.started_at).total_seconds() if row.finished_at and row.started_at else None
        for row in rows
    ])
    table["took_s"].format = ".1f"
    table["status"] = [
        "interrupted" if row.status == "running" and owner_dead(row.owner, row.heartbeat_at) else row.status
        for row in rows
    ]
    table["executor"] = [row.executor for row in rows]
    for name in ("n_cutouts", "n_processed", "n_failed"):
        table[name.removeprefix("n_")] = np.array([getattr(row, name) or 0 for row in rows], dtype=np.int64)
    table["stages"] = [", ".join(_stage_text(entry) for entry in row.stages or []) for row in rows]
    return table


def _stage_text(entry: dict) -> str:
    """``"cnn 1 (fr-cnn:1)"`` from a stage as a run recorded it."""
    return f"{entry['name']} {entry['version']}" + (f" ({entry['model']})" if entry.get("model") else "")


def failed_by_stage(engine: Engine, run_id: int) -> dict[str, int]:
    """Cutouts with an error stored by run ``run_id``, counted by stage (``read`` for unreadable files)."""
    e = ErrorRow.__table__
    query = (
        select(e.c.stage, func.count(func.distinct(e.c.cutout_id)))
        .where(e.c.run_id == run_id)
        .group_by(e.c.stage)
    )
    with engine.connect() as connection:
        return {stage: int(count) for stage, count in connection.execute(query)}


def query_errors(engine: Engine, *, run_id: int | None = None) -> Table:
    """Errors stored against cutouts: path, stage, HDU, type and message."""
    e = ErrorRow.__table__
    c = CutoutRow.__table__
    query = select(
        c.c.path, e.c.stage, e.c.stage_version, e.c.model_ref, e.c.hdu, e.c.error_type, e.c.message, e.c.run_id
    )
    query = query.join(c, c.c.id == e.c.cutout_id).order_by(c.c.path, e.c.stage)
    if run_id is not None:
        query = query.where(e.c.run_id == run_id)
    with engine.connect() as connection:
        rows = [dict(r._mapping) for r in connection.execute(query)]
    described = {**described_columns(ErrorRow), "path": described_columns(CutoutRow)["path"]}
    table = Table()
    for name in ("path", "stage", "stage_version", "model_ref", "hdu", "error_type", "message", "run_id"):
        table[name] = _column([r[name] for r in rows], text=name not in ("hdu", "run_id"))
        annotate(table[name], described[name])
    return table
