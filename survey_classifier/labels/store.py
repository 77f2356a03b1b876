"""Source and neuron labels: checked, written and read back.

A label is a statement by one user at one time. Rows are only added: the
newest label of a source (of a neuron) is its current one, the older ones
are its history, and a wrong label is taken back by deleting its row. A
source label says any of: a class (``label``, from a list or free text),
``interesting`` (True / False) and a ``note``; a neuron label gives the
class of one neuron (``node_x``, ``node_y``) of one SOM map, named by the
registry's ``model_ref`` of the map (``som-mirabest:3``).

Every function takes an open connection; writers expect a transaction.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from sqlalchemy import bindparam, delete, func, insert, select
from sqlalchemy.engine import Connection

from survey_classifier.db.models import CutoutRow, ModelRow, NeuronLabelRow, SourceLabelRow, utcnow
from survey_classifier.errors import LabelError

__all__ = [
    "LABEL_CLASSES",
    "MAX_NOTE",
    "check_source_label",
    "check_neuron_label",
    "add_source_labels",
    "add_neuron_labels",
    "current_source_labels",
    "source_label_history",
    "list_source_labels",
    "current_neuron_labels",
    "has_neuron_labels",
    "neuron_label_history",
    "delete_source_label",
    "delete_neuron_label",
    "label_classes",
    "has_source_labels",
    "labelled_condition",
    "labelled_cutout_ids",
    "same_class",
    "as_utc",
]

#: Classes offered before any is used (radio morphologies); users may write any other.
LABEL_CLASSES = (
    "FRI", "FRII", "hybrid", "compact", "bent", "wide-angle tail", "narrow-angle tail", "head-tail",
    "double-double", "X-shaped", "diffuse", "artefact",
)
#: Longest note kept with a label (characters).
MAX_NOTE = 4000
_MAX_NAME = 128
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _text(what: str, value, *, longest: int, required: bool, multiline: bool = False) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        value = None
    elif not isinstance(value, str):
        msg = f"{what} must be text, got {value!r}"
        raise LabelError(msg)
    else:
        value = value.strip() if multiline else " ".join(value.split())
        value = value or None
    if value is None:
        if required:
            msg = f"{what} is required"
            raise LabelError(msg)
        return None
    if len(value) > longest:
        msg = f"{what} is {len(value)} characters long; at most {longest} are kept"
        raise LabelError(msg)
    if _CONTROL.search(value.replace("\n", "").replace("\t", "") if multiline else value):
        msg = f"{what} contains control characters: {value[:40]!r}"
        raise LabelError(msg)
    return value


def as_utc(value) -> datetime:
    """A time zone aware UTC time (now when None); naive times are taken as UTC."""
    if value is None:
        return utcnow()
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            msg = f"label time {value!r} is not an ISO 8601 time (2026-12-04T10:00:00+00:00)"
            raise LabelError(msg) from None
    if not isinstance(value, datetime):
        msg = f"label time must be a datetime or ISO 8601 text, got {value!r}"
        raise LabelError(msg)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def check_source_label(label: Mapping) -> dict:
    """A source label as a row: checked, normalised (whitespace, UTC time).

    ``label`` has ``cutout_id``, ``author`` and any of ``label``,
    ``interesting`` and ``note`` (at least one), and optionally ``origin``
    and ``created_at``.
    """
    cutout_id = label.get("cutout_id")
    if not isinstance(cutout_id, int) or isinstance(cutout_id, bool) or cutout_id < 1:
        msg = f"a source label needs the cutout id (a positive integer), got {cutout_id!r}"
        raise LabelError(msg)
    interesting = label.get("interesting")
    if interesting is not None and not isinstance(interesting, bool):
        msg = f"'interesting' must be true, false or empty, got {interesting!r}"
        raise LabelError(msg)
    row = {
        "cutout_id": cutout_id,
        "label": _text("the class label", label.get("label"), longest=_MAX_NAME, required=False),
        "interesting": interesting,
        "note": _text("the note", label.get("note"), longest=MAX_NOTE, required=False, multiline=True),
        "author": _text("the author", label.get("author"), longest=_MAX_NAME, required=True),
        "origin": _text("the origin", label.get("origin"), longest=512, required=False),
        "created_at": as_utc(label.get("created_at")),
    }
    if row["label"] is None and row["interesting"] is None and row["note"] is None:
        msg = f"the label of cutout {cutout_id} says nothing: give a class, interesting (true/false) or a note"
        raise LabelError(msg)
    return row


def check_neuron_label(label: Mapping) -> dict:
    """A neuron label as a row: ``model_ref``, ``node_x``, ``node_y``, ``label``, ``author`` (``note``...)."""
    node = []
    for axis in ("node_x", "node_y"):
        value = label.get(axis)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            msg = f"a neuron label needs {axis} (an integer >= 0), got {value!r}"
            raise LabelError(msg)
        node.append(value)
    return {
        "model_ref": _text("the SOM map (model_ref)", label.get("model_ref"), longest=256, required=True),
        "node_x": node[0],
        "node_y": node[1],
        "label": _text("the class label", label.get("label"), longest=_MAX_NAME, required=True),
        "note": _text("the note", label.get("note"), longest=MAX_NOTE, required=False, multiline=True),
        "author": _text("the author", label.get("author"), longest=_MAX_NAME, required=True),
        "origin": _text("the origin", label.get("origin"), longest=512, required=False),
        "created_at": as_utc(label.get("created_at")),
    }


def _missing_cutouts(connection: Connection, ids: set[int]) -> list[int]:
    c = CutoutRow.__table__.c
    found: set[int] = set()
    listed = sorted(ids)
    for start in range(0, len(listed), 5000):
        chunk = listed[start : start + 5000]
        found.update(connection.execute(select(c.id).where(c.id.in_(chunk))).scalars())
    return sorted(ids - found)


def add_source_labels(connection: Connection, labels: Iterable[Mapping]) -> list[int]:
    """Check and store source labels; returns their ids (in order).

    Labels of cutouts that are not in the database are refused, all of
    them or none written.
    """
    rows = [check_source_label(label) for label in labels]
    missing = _missing_cutouts(connection, {row["cutout_id"] for row in rows})
    if missing:
        msg = f"no cutout with id {', '.join(map(str, missing[:10]))} in this database; no label was stored"
        raise LabelError(msg)
    return _insert(connection, SourceLabelRow, rows)


#: Grid shapes of SOM maps read from their artefacts, by (model_ref, sha256).
_MAP_SHAPES: dict[tuple[str, str], tuple[int, int] | None] = {}


def _map_shape(connection: Connection, model_ref: str) -> tuple[int, int] | None:
    """``(ny, nx)`` of a registered SOM map (from its record, else from its artefact); None if unknown."""
    name, _, version = model_ref.rpartition(":")
    row = connection.execute(
        select(ModelRow.details, ModelRow.sha256, ModelRow.stage).where(ModelRow.name == name,
                                                                         ModelRow.version == version)
    ).first()
    if row is None:
        return None
    shape = ((row.details or {}).get("artefact") or {}).get("grid_shape")
    if shape is None:
        key = (model_ref, row.sha256)
        if key not in _MAP_SHAPES:
            _MAP_SHAPES[key] = _artefact_shape(connection, row.stage, name, version)
        return _MAP_SHAPES[key]
    return (int(shape[0]), int(shape[1])) if len(shape) == 2 else None


def _artefact_shape(connection: Connection, stage: str, name: str, version: str) -> tuple[int, int] | None:
    """The grid shape the stage's own artefact check reports (shipped maps carry none in their record)."""
    from survey_classifier.artefacts import fetch
    from survey_classifier.errors import SurveyClassifierError
    from survey_classifier.registry import resolve_model
    from survey_classifier.stages.registry import available_stages

    stage_class = available_stages().get(stage)
    if stage_class is None:
        return None
    try:
        ref = fetch(resolve_model(connection.engine, stage, name, version), connection.engine)
        shape = stage_class.validate_artefact(ref.path).get("grid_shape")
    except (SurveyClassifierError, OSError):  # a retired or unreachable map: the node is not checked
        return None
    return (int(shape[0]), int(shape[1])) if shape is not None and len(shape) == 2 else None


def add_neuron_labels(connection: Connection, labels: Iterable[Mapping]) -> list[int]:
    """Check and store neuron labels; returns their ids.

    A node outside a registered map's grid is refused.
    """
    rows = [check_neuron_label(label) for label in labels]
    shapes: dict[str, tuple[int, int] | None] = {}
    for row in rows:
        ref = row["model_ref"]
        if ref not in shapes:
            shapes[ref] = _map_shape(connection, ref)
        shape = shapes[ref]
        if shape is not None and not (row["node_x"] < shape[1] and row["node_y"] < shape[0]):
            msg = (
                f"neuron ({row['node_x']}, {row['node_y']}) is outside the SOM map {ref} "
                f"({shape[1]} nodes across, {shape[0]} down; x and y count from 0)"
            )
            raise LabelError(msg)
    return _insert(connection, NeuronLabelRow, rows)


def _insert(connection: Connection, row_class, rows: Sequence[dict]) -> list[int]:
    ids = []
    table = row_class.__table__
    for row in rows:  # one by one: the ids are wanted, and labels come a few at a time
        ids.append(connection.execute(insert(table).values(**row).returning(table.c.id)).scalar_one())
    return ids


def _utc(value):
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _record(row) -> dict:
    record = dict(row._mapping)
    record.pop("newest", None)
    if "created_at" in record:
        record["created_at"] = _utc(record["created_at"])
    return record


def _newest_first(table, *partition):
    """Each row of ``table`` with ``newest`` = 1 for the newest of its ``partition`` group."""
    order = (table.c.created_at.desc(), table.c.id.desc())
    return select(table, func.row_number().over(partition_by=partition, order_by=order).label("newest"))


def current_source_labels(connection: Connection, cutout_ids: Sequence[int] | None = None) -> dict[int, dict]:
    """``{cutout_id: label row}`` of the current (newest) label of each labelled cutout."""
    t = SourceLabelRow.__table__
    found: dict[int, dict] = {}
    chunks = [None] if cutout_ids is None else [
        list(cutout_ids)[s : s + 5000] for s in range(0, len(cutout_ids), 5000)
    ]
    for chunk in chunks:
        ranked = _newest_first(t, t.c.cutout_id)
        if chunk is not None:
            ranked = ranked.where(t.c.cutout_id.in_([int(i) for i in chunk]))
        ranked = ranked.subquery()
        rows = connection.execute(select(ranked).where(ranked.c.newest == 1))
        found.update((row.cutout_id, _record(row)) for row in rows)
    return found


#: Whether any source is labelled (one statement, made once: queries ask it on every request).
_ANY_SOURCE_LABEL = select(SourceLabelRow.id).limit(1)
#: Whether a SOM's neurons have a label (parameter ``model_ref``; an index seek).
_ANY_NEURON_LABEL = select(NeuronLabelRow.id).where(NeuronLabelRow.model_ref == bindparam("model_ref")).limit(1)


def has_source_labels(connection: Connection) -> bool:
    return connection.execute(_ANY_SOURCE_LABEL).first() is not None


def has_neuron_labels(connection: Connection, model_ref: str) -> bool:
    """Whether any neuron of the map ``model_ref`` has a label (current or not)."""
    return connection.execute(_ANY_NEURON_LABEL, {"model_ref": model_ref}).first() is not None


def labelled_condition(cutout_id, *, label: str | None = None, interesting: bool | None = None):
    """SQL condition on ``cutout_id`` (a column): its current label has this class and/or interest."""
    t = SourceLabelRow.__table__
    ranked = _newest_first(t, t.c.cutout_id).subquery()
    keep = [ranked.c.newest == 1]
    if label is not None:
        keep.append(func.lower(func.replace(ranked.c.label, " ", "")) == "".join(label.split()).lower())
    if interesting is not None:
        keep.append(ranked.c.interesting.is_(interesting))
    return cutout_id.in_(select(ranked.c.cutout_id).where(*keep))


def labelled_cutout_ids(connection: Connection) -> set[int]:
    """Ids of the cutouts with at least one label."""
    return set(connection.execute(select(SourceLabelRow.cutout_id).distinct()).scalars())


def source_label_history(connection: Connection, cutout_id: int) -> list[dict]:
    """Every label of one cutout, newest first."""
    t = SourceLabelRow.__table__
    rows = connection.execute(
        select(t).where(t.c.cutout_id == cutout_id).order_by(t.c.created_at.desc(), t.c.id.desc())
    )
    return [_record(row) for row in rows]


def list_source_labels(
    connection: Connection,
    *,
    interesting: bool | None = None,
    label: str | None = None,
    author: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[dict]:
    """Current source labels with their cutout's catalogue id and position, newest first.

    ``interesting``, ``label`` (the class, compared as :func:`same_class`
    does) and ``author`` keep the current labels that match.
    """
    t = SourceLabelRow.__table__
    c = CutoutRow.__table__.c
    ranked = _newest_first(t, t.c.cutout_id).subquery()
    query = (
        select(ranked, c.catalogue_id, c.ra_deg, c.dec_deg, c.path)
        .join(CutoutRow.__table__, c.id == ranked.c.cutout_id)
        .where(ranked.c.newest == 1)
        .order_by(ranked.c.created_at.desc(), ranked.c.id.desc())
    )
    if interesting is not None:
        query = query.where(ranked.c.interesting.is_(interesting))
    if author is not None:
        query = query.where(ranked.c.author == author)
    if label is None:
        query = query.offset(offset).limit(limit)
        return [_record(row) for row in connection.execute(query)]
    rows = [_record(row) for row in connection.execute(query) if same_class(row.label, label)]
    return rows[offset:] if limit is None else rows[offset : offset + limit]


def current_neuron_labels(connection: Connection, model_ref: str | None = None) -> dict[tuple[str, int, int], dict]:
    """``{(model_ref, node_x, node_y): label row}`` of each labelled neuron (of one map if given)."""
    t = NeuronLabelRow.__table__
    ranked = _newest_first(t, t.c.model_ref, t.c.node_x, t.c.node_y)
    if model_ref is not None:
        ranked = ranked.where(t.c.model_ref == model_ref)
    ranked = ranked.subquery()
    rows = connection.execute(
        select(ranked).where(ranked.c.newest == 1).order_by(ranked.c.model_ref, ranked.c.node_y, ranked.c.node_x)
    )
    return {(row.model_ref, row.node_x, row.node_y): _record(row) for row in rows}


def neuron_label_history(connection: Connection, model_ref: str, node_x: int, node_y: int) -> list[dict]:
    """Every label of one neuron, newest first."""
    t = NeuronLabelRow.__table__
    rows = connection.execute(
        select(t)
        .where(t.c.model_ref == model_ref, t.c.node_x == node_x, t.c.node_y == node_y)
        .order_by(t.c.created_at.desc(), t.c.id.desc())
    )
    return [_record(row) for row in rows]


def _delete(connection: Connection, row_class, label_id: int, what: str) -> dict:
    t = row_class.__table__
    row = connection.execute(select(t).where(t.c.id == label_id)).first()
    if row is None:
        msg = f"no {what} label with id {label_id}"
        raise LabelError(msg)
    connection.execute(delete(t).where(t.c.id == label_id))
    return _record(row)


def delete_source_label(connection: Connection, label_id: int) -> dict:
    """Delete one source label (the one before it becomes current again); returns it."""
    return _delete(connection, SourceLabelRow, label_id, "source")


def delete_neuron_label(connection: Connection, label_id: int) -> dict:
    """Delete one neuron label; returns it."""
    return _delete(connection, NeuronLabelRow, label_id, "neuron")


def same_class(first: str | None, second: str | None) -> bool:
    """Whether two class labels name the same class (case and spacing aside: ``FR II`` is ``frii``)."""
    if first is None or second is None:
        return False
    return "".join(first.split()).casefold() == "".join(second.split()).casefold()


def label_classes(connection: Connection, extra: Iterable[str] = ()) -> list[str]:
    """Classes to offer: :data:`LABEL_CLASSES`, ``extra`` (a classifier's) and those users wrote."""
    used = connection.execute(select(SourceLabelRow.label).where(SourceLabelRow.label.is_not(None)).distinct())
    neuron = connection.execute(select(NeuronLabelRow.label).distinct())
    offered: list[str] = []
    for name in [*LABEL_CLASSES, *extra, *used.scalars(), *neuron.scalars()]:
        if not any(same_class(name, seen) for seen in offered):
            offered.append(name)
    return offered
