"""Labels as catalogue tables: exported, and imported from any catalogue the package reads.

Export writes one row per label (the current labels, or every label with
``history``) in any format of :mod:`survey_classifier.formats`; import reads
any table :func:`survey_classifier.io.inputs.read_table` reads (CSV, ECSV,
TSV, VOTable, FITS) and finds, for each row, the source it is about:

1. by catalogue id, when the table has an id column (``catalogue_id``,
   ``id``, ``name``, ``source_id`` ...) and the row has a value;
2. else by position, when it has RA and Dec (degrees, any angle unit, or
   sexagesimal text): the nearest cutout within ``radius_arcsec``;
3. else by ``cutout_id`` (this database's own id).

A row that matches no source, or two at the same distance, is reported and
skipped; a row that says nothing (no class, interest or note) is skipped.
Importing the same file twice adds nothing the second time: a row equal to
a stored label (same source, author, time and values) is not added again.
Neuron label tables (``model_ref``, ``node_x``, ``node_y``, a class) are
imported as neuron labels.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import MaskedColumn, Table
from sqlalchemy import select
from sqlalchemy.engine import Engine

from survey_classifier.columns import Column, annotate, described_columns
from survey_classifier.db.models import CutoutRow, NeuronLabelRow, SourceLabelRow
from survey_classifier.errors import LabelError
from survey_classifier.io.inputs import DEC_COLUMNS, ID_COLUMNS, RA_COLUMNS, read_table
from survey_classifier.labels.columns import SOURCE_LABEL_COLUMNS, label_column
from survey_classifier.labels.store import (
    add_neuron_labels,
    add_source_labels,
    as_utc,
    check_neuron_label,
    check_source_label,
    current_neuron_labels,
    current_source_labels,
)

__all__ = [
    "ImportReport",
    "export_source_labels",
    "export_neuron_labels",
    "import_labels",
    "parse_interesting",
]

#: Columns looked for (case-insensitively, in order) for each field of an imported label.
_FIELD_COLUMNS = {
    "label": ("label_class", "label", "class", "user_label"),
    "interesting": ("label_interesting", "interesting"),
    "note": ("label_note", "note", "comment"),
    "author": ("label_author", "author", "user"),
    "created_at": ("label_time", "created_at", "time"),
    "model_ref": ("model_ref", "som_model_ref", "map"),
    "node_x": ("node_x", "som_node_x"),
    "node_y": ("node_y", "som_node_y"),
}

_TRUE = {"true", "t", "yes", "y", "1", "interesting"}
_FALSE = {"false", "f", "no", "n", "0", "not interesting", "boring", "uninteresting"}


@dataclass
class ImportReport:
    """What an import did: rows read, labels stored, how rows were matched, what was skipped."""

    path: str
    kind: str
    n_rows: int = 0
    label_ids: list[int] = field(default_factory=list)
    matched_by: dict[str, int] = field(default_factory=dict)
    n_empty: int = 0
    n_already: int = 0
    unmatched: list[tuple[int, str]] = field(default_factory=list)

    def summary(self) -> str:
        how = ", ".join(f"{n} by {key}" for key, n in sorted(self.matched_by.items())) or "none matched"
        text = (
            f"{self.path}: {self.n_rows} rows; stored {len(self.label_ids)} {self.kind[:-1]} labels ({how}); "
            f"{self.n_already} already stored, {self.n_empty} empty, {len(self.unmatched)} unmatched"
        )
        for row, reason in self.unmatched[:5]:
            text += f"\n  row {row}: {reason}"
        if len(self.unmatched) > 5:
            text += f"\n  ... and {len(self.unmatched) - 5} more"
        return text


def parse_interesting(value) -> bool | None:
    """``interesting`` from a table cell: booleans, 1/0, yes/no, true/false, empty."""
    if value is None or value is np.ma.masked:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return None
        if value in (0.0, 1.0):
            return bool(value)
    text = str(value).strip().lower()
    if not text or text in ("--", "none", "null", "nan"):
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    msg = f"'interesting' must be true/false, yes/no or 1/0, got {value!r}"
    raise LabelError(msg)


#: Exported columns that are not a label's own fields.
_FILE = Column("file", "File name of the cutout", ucd="meta.id;meta.file").checked()
_INTERESTING_CODE = "Whether a user found the source interesting: 1 yes, 0 no, empty: not said"


def _described(table: Table, row_class) -> Table:
    """Each column with its unit, UCD and description (those of the database models)."""
    label = described_columns(row_class)
    cutout = described_columns(CutoutRow)
    specs = {"label_id": label["id"].renamed("label_id"), "cutout_id": cutout["id"].renamed("cutout_id"),
             "catalogue_id": cutout["catalogue_id"], "ra_deg": cutout["ra_deg"], "dec_deg": cutout["dec_deg"],
             "file": _FILE, "label_author": label["author"].renamed("label_author"),
             "label_time": label["created_at"].renamed("label_time"),
             "label_origin": label["origin"].renamed("label_origin")}
    if row_class is SourceLabelRow:
        specs.update({name: label_column(field) for field, name in SOURCE_LABEL_COLUMNS.items()})
        specs["label_interesting"] = replace(specs["label_interesting"], description=_INTERESTING_CODE)
    else:
        specs.update({name: label[name] for name in ("model_ref", "node_x", "node_y", "label", "note")})
    for name in table.colnames:
        annotate(table[name], specs[name])
    return table


def _masked(values: list, dtype, fill) -> MaskedColumn:
    mask = [v is None for v in values]
    return MaskedColumn(np.array([fill if v is None else v for v in values], dtype=dtype), mask=mask)


def export_source_labels(engine: Engine, *, history: bool = False) -> Table:
    """Source labels with the cutout's id, catalogue id, position and file name.

    The current label of each labelled source, or every label (``history``),
    oldest first. ``label_interesting`` is 1, 0 or empty (masked), which
    every table format keeps.
    """
    c = CutoutRow.__table__.c
    with engine.connect() as connection:
        if history:
            t = SourceLabelRow.__table__
            rows = [dict(r._mapping) for r in connection.execute(select(t).order_by(t.c.created_at, t.c.id))]
        else:
            rows = sorted(current_source_labels(connection).values(), key=lambda r: (r["created_at"], r["id"]))
        cutouts = {}
        ids = sorted({r["cutout_id"] for r in rows})
        for start in range(0, len(ids), 5000):
            chunk = ids[start : start + 5000]
            query = select(c.id, c.catalogue_id, c.ra_deg, c.dec_deg, c.path).where(c.id.in_(chunk))
            cutouts.update((r.id, r) for r in connection.execute(query))
    table = Table()
    table["label_id"] = np.array([r["id"] for r in rows], dtype=np.int64)
    table["cutout_id"] = np.array([r["cutout_id"] for r in rows], dtype=np.int64)
    table["catalogue_id"] = _masked([cutouts[r["cutout_id"]].catalogue_id for r in rows], str, "")
    table["ra_deg"] = _masked([cutouts[r["cutout_id"]].ra_deg for r in rows], float, np.nan)
    table["dec_deg"] = _masked([cutouts[r["cutout_id"]].dec_deg for r in rows], float, np.nan)
    table["file"] = np.array([Path(cutouts[r["cutout_id"]].path).name for r in rows], dtype=str)
    for field_name, column in SOURCE_LABEL_COLUMNS.items():
        values = [r[field_name] for r in rows]
        if field_name == "interesting":
            table[column] = _masked([None if v is None else int(v) for v in values], np.int16, -1)
        elif field_name == "created_at":
            table[column] = np.array([as_utc(v).isoformat() for v in values], dtype=str)
        else:
            table[column] = _masked(values, str, "")
    table["label_origin"] = _masked([r["origin"] for r in rows], str, "")
    return _described(table, SourceLabelRow)


def export_neuron_labels(engine: Engine, *, history: bool = False) -> Table:
    """Neuron labels: ``model_ref``, ``node_x``, ``node_y``, class, note, author and time."""
    with engine.connect() as connection:
        if history:
            t = NeuronLabelRow.__table__
            rows = [dict(r._mapping) for r in connection.execute(select(t).order_by(t.c.created_at, t.c.id))]
        else:
            rows = sorted(current_neuron_labels(connection).values(), key=lambda r: (r["created_at"], r["id"]))
    table = Table()
    table["label_id"] = np.array([r["id"] for r in rows], dtype=np.int64)
    table["model_ref"] = np.array([r["model_ref"] for r in rows], dtype=str)
    table["node_x"] = np.array([r["node_x"] for r in rows], dtype=np.int32)
    table["node_y"] = np.array([r["node_y"] for r in rows], dtype=np.int32)
    table["label"] = np.array([r["label"] for r in rows], dtype=str)
    table["note"] = _masked([r["note"] for r in rows], str, "")
    table["label_author"] = np.array([r["author"] for r in rows], dtype=str)
    table["label_time"] = np.array([as_utc(r["created_at"]).isoformat() for r in rows], dtype=str)
    table["label_origin"] = _masked([r["origin"] for r in rows], str, "")
    return _described(table, NeuronLabelRow)


def _find(names: list[str], candidates, given: str | None, path) -> str | None:
    folded = {name.lower(): name for name in names}
    if given is not None:
        if given.lower() not in folded:
            msg = f"label table {path}: no column {given!r}; columns are {names}"
            raise LabelError(msg)
        return folded[given.lower()]
    return next((folded[c] for c in candidates if c in folded), None)


def _cell(table: Table, column: str | None, row: int):
    if column is None:
        return None
    value = table[column][row]
    if value is np.ma.masked or (hasattr(table[column], "mask") and np.ma.getmaskarray(table[column])[row]):
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _degrees(table: Table, column: str, *, hours: bool, path) -> np.ndarray:
    """A column of angles in degrees (NaN where empty): numbers with any angle unit, or text as
    :mod:`survey_classifier.positions` reads it (sexagesimal hours for RA)."""
    from survey_classifier.positions import parse_dec, parse_ra

    data = table[column]
    if data.dtype.kind in "iuf":
        values = np.ma.filled(np.ma.asarray(data, dtype=float), np.nan)
        unit = data.unit
        if unit is not None and unit != u.deg:
            try:
                values = (values * unit).to_value(u.deg)
            except u.UnitsError:
                msg = f"label table {path}: column {column!r} has unit {unit}, not an angle"
                raise LabelError(msg) from None
        return values
    parse = parse_ra if hours else parse_dec
    out = np.full(len(table), np.nan)
    for row in range(len(table)):
        value = _cell(table, column, row)
        if value is not None:
            out[row] = parse(value, parameter=f"label table {path}, row {row + 1} of column {column!r}")
    return out


class _SourceMatcher:
    """Finds the cutout a row of a label table is about."""

    def __init__(self, connection, table: Table, path, radius_arcsec: float, columns: dict):
        self.connection = connection
        names = table.colnames
        self.id_column = _find(names, ("catalogue_id", *ID_COLUMNS), columns.get("id"), path)
        self.cutout_column = _find(names, ("cutout_id",), None, path)
        ra = _find(names, RA_COLUMNS, columns.get("ra"), path)
        dec = _find(names, DEC_COLUMNS, columns.get("dec"), path)
        if (ra is None) != (dec is None):
            msg = f"label table {path}: RA column {ra!r} and Dec column {dec!r} must come together"
            raise LabelError(msg)
        self.ra = _degrees(table, ra, hours=True, path=path) if ra else None
        self.dec = _degrees(table, dec, hours=False, path=path) if dec else None
        self.radius_deg = radius_arcsec / 3600.0
        if not self.radius_deg > 0:
            msg = f"the matching radius must be positive, got {radius_arcsec} arcsec"
            raise LabelError(msg)
        self.table = table
        self._catalogue_ids: dict[str, list[int]] | None = None

    def _by_catalogue_id(self) -> dict[str, list[int]]:
        if self._catalogue_ids is None:
            c = CutoutRow.__table__.c
            found: dict[str, list[int]] = {}
            for cutout_id, catalogue_id in self.connection.execute(
                select(c.id, c.catalogue_id).where(c.catalogue_id.is_not(None))
            ):
                found.setdefault(catalogue_id, []).append(cutout_id)
            self._catalogue_ids = found
        return self._catalogue_ids

    def match(self, row: int) -> tuple[int | None, str]:
        """``(cutout_id, how)`` or ``(None, why not)``."""
        from survey_classifier.query import cone_search

        catalogue_id = _cell(self.table, self.id_column, row)
        if catalogue_id is not None:
            found = self._by_catalogue_id().get(str(catalogue_id).strip(), [])
            if len(found) == 1:
                return found[0], "catalogue id"
            why = "no cutout has" if not found else f"{len(found)} cutouts have"
            return None, f"{why} catalogue id {catalogue_id!r}"
        if self.ra is not None and np.isfinite(self.ra[row]) and np.isfinite(self.dec[row]):
            ra, dec = float(self.ra[row]) % 360.0, float(self.dec[row])
            near = sorted(cone_search(self.connection, ra, dec, self.radius_deg).items(), key=lambda kv: kv[1])
            if not near:
                return None, f"no cutout within {self.radius_deg * 3600:g} arcsec of RA {ra:.5f}, Dec {dec:.5f}"
            if len(near) > 1 and near[1][1] - near[0][1] < 1e-7:
                return None, f"cutouts {near[0][0]} and {near[1][0]} are equally near RA {ra:.5f}, Dec {dec:.5f}"
            return int(near[0][0]), "position"
        cutout_id = _cell(self.table, self.cutout_column, row)
        if cutout_id is not None:
            return int(cutout_id), "cutout id"
        return None, "the row has no catalogue id, position or cutout id"


def _is_neuron_table(names: list[str]) -> bool:
    folded = {n.lower() for n in names}
    return all(any(c in folded for c in _FIELD_COLUMNS[key]) for key in ("model_ref", "node_x", "node_y"))


def import_labels(
    engine: Engine,
    path,
    *,
    author: str | None = None,
    radius_arcsec: float = 5.0,
    kind: str | None = None,
    columns: dict | None = None,
) -> ImportReport:
    """Store the labels of a catalogue table; see the module docstring for the matching.

    Parameters
    ----------
    path : str or Path
        The table (CSV, ECSV, TSV, VOTable or FITS).
    author : str, optional
        Author of rows that name none (default: the login name).
    radius_arcsec : float
        Largest distance of a position match.
    kind : {"sources", "neurons"}, optional
        What the table labels (default: neurons when it has ``model_ref``,
        ``node_x`` and ``node_y`` columns).
    columns : dict, optional
        Columns to use instead of those found: keys ``label``,
        ``interesting``, ``note``, ``author``, ``created_at``, ``id``,
        ``ra``, ``dec``.
    """
    path = Path(path)
    table = read_table(path)
    columns = dict(columns or {})
    names = table.colnames
    if kind is None:
        kind = "neurons" if _is_neuron_table(names) else "sources"
    if kind not in ("sources", "neurons"):
        msg = f"labels are of sources or neurons, not {kind!r}"
        raise LabelError(msg)
    found = {key: _find(names, candidates, columns.get(key), path) for key, candidates in _FIELD_COLUMNS.items()}
    default_author = author or getpass.getuser()
    report = ImportReport(path=str(path), kind=kind, n_rows=len(table))
    origin = f"import:{path.name}"
    with engine.begin() as connection:
        if kind == "neurons":
            labels = [check_neuron_label(label) for label in _neuron_rows(table, found, default_author, origin, report)]
            keys = {_neuron_key(r) for r in _neuron_history(connection)}
            fresh = [label for label in labels if _neuron_key(label) not in keys]
            report.n_already = len(labels) - len(fresh)
            report.label_ids = add_neuron_labels(connection, fresh)
            if fresh:
                report.matched_by["model_ref and node"] = len(fresh)
            return report
        matcher = _SourceMatcher(connection, table, path, radius_arcsec, columns)
        labels, how = [], []
        for row in range(len(table)):
            fields = {key: _cell(table, found[key], row) for key in ("label", "interesting", "note")}
            fields["interesting"] = parse_interesting(fields["interesting"])
            if all(v is None for v in fields.values()):
                report.n_empty += 1
                continue
            cutout_id, matched = matcher.match(row)
            if cutout_id is None:
                report.unmatched.append((row + 1, matched))
                continue
            author = _cell(table, found["author"], row)
            labels.append(check_source_label(dict(
                fields, cutout_id=cutout_id, author=default_author if author is None else str(author),
                created_at=_cell(table, found["created_at"], row), origin=origin,
                label=None if fields["label"] is None else str(fields["label"]),
                note=None if fields["note"] is None else str(fields["note"]),
            )))
            how.append(matched)
        history = _source_history(connection, {label["cutout_id"] for label in labels})
        keep = [i for i, label in enumerate(labels) if _source_key(label) not in history]
        report.n_already = len(labels) - len(keep)
        report.label_ids = add_source_labels(connection, [labels[i] for i in keep])
        for i in keep:
            report.matched_by[how[i]] = report.matched_by.get(how[i], 0) + 1
    return report


def _neuron_rows(table, found, default_author, origin, report) -> list[dict]:
    labels = []
    for row in range(len(table)):
        label = _cell(table, found["label"], row)
        if label is None:
            report.n_empty += 1
            continue
        node = [_cell(table, found[axis], row) for axis in ("node_x", "node_y")]
        if any(v is None or float(v) != int(v) for v in node):
            report.unmatched.append((row + 1, f"node ({node[0]}, {node[1]}) is not two integers"))
            continue
        model_ref, note, author = (_cell(table, found[key], row) for key in ("model_ref", "note", "author"))
        labels.append({
            "model_ref": None if model_ref is None else str(model_ref), "node_x": int(node[0]),
            "node_y": int(node[1]), "label": str(label), "note": None if note is None else str(note),
            "author": default_author if author is None else str(author),
            "created_at": _cell(table, found["created_at"], row), "origin": origin,
        })
    return labels


def _source_key(label: dict) -> tuple:
    return (label["cutout_id"], label["author"], as_utc(label["created_at"]), label["label"], label["interesting"],
            label["note"])


def _source_history(connection, cutout_ids: set[int]) -> set[tuple]:
    t = SourceLabelRow.__table__
    keys = set()
    listed = sorted(cutout_ids)
    for start in range(0, len(listed), 5000):
        rows = connection.execute(select(t).where(t.c.cutout_id.in_(listed[start : start + 5000])))
        keys.update(_source_key(dict(r._mapping)) for r in rows)
    return keys


def _neuron_key(label: dict) -> tuple:
    return (label["model_ref"], label["node_x"], label["node_y"], label["author"], as_utc(label["created_at"]),
            label["label"], label["note"])


def _neuron_history(connection) -> list[dict]:
    return [dict(r._mapping) for r in connection.execute(select(NeuronLabelRow.__table__))]
