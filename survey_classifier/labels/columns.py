"""The label columns of query results (and so of every export and API page).

- ``label_class``, ``label_interesting``, ``label_note``, ``label_author``,
  ``label_time``: the current label a user gave the source (when any
  source in the database is labelled);
- ``{stage}_neuron_label``, ``{stage}_neuron_label_reliability``: for each
  SOM stage shown whose map has labelled neurons, the label of the
  source's neuron and how far to trust it
  (:mod:`survey_classifier.labels.neurons`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from astropy.table import Table
from sqlalchemy.engine import Connection

from survey_classifier._frame import FrameColumn
from survey_classifier.columns import Column, annotate, described_columns
from survey_classifier.db.models import SourceLabelRow
from survey_classifier.labels.neurons import carried_labels
from survey_classifier.labels.store import current_source_labels, has_source_labels

__all__ = ["SOURCE_LABEL_COLUMNS", "NEURON_LABEL", "NEURON_LABEL_RELIABILITY", "label_column", "add_label_columns"]

#: Query column of each source label field.
SOURCE_LABEL_COLUMNS = {
    "label": "label_class",
    "interesting": "label_interesting",
    "note": "label_note",
    "author": "label_author",
    "created_at": "label_time",
}

#: The columns a SOM stage's labelled neurons add (named ``{stage}_neuron_label...``).
NEURON_LABEL = Column("neuron_label", "Class a user gave the source's best-matching SOM neuron",
                      ucd="src.class").checked()
NEURON_LABEL_RELIABILITY = Column(
    "neuron_label_reliability", "Fraction of the user-labelled sources at a similar distance from their labelled "
    "neuron whose own class agrees with the neuron's (smoothed; empty without such sources)", unit="",
    ucd="stat.probability", format=".3f").checked()


def label_column(field: str, name: str | None = None) -> Column:
    """The description of a source label field (``label``, ``interesting`` ...) under its output name."""
    return described_columns(SourceLabelRow)[field].renamed(name or SOURCE_LABEL_COLUMNS[field])


def _array(column):
    """The numpy array of a table column (of a :class:`~survey_classifier._frame.Frame`: made from its values)."""
    return column.array() if isinstance(column, FrameColumn) else column


def add_label_columns(
    connection: Connection, table: Table, ids: Sequence[int], variants: Mapping, column: Callable
) -> None:
    """Add the label columns to a query table whose rows are the cutouts ``ids``.

    ``variants`` are the stage variants the query shows
    (:func:`survey_classifier.query.find_variants`); ``column(values,
    text=False)`` makes a (masked) table column from Python values. Every
    column is described (:mod:`survey_classifier.columns`).
    """
    if has_source_labels(connection):
        labels = current_source_labels(connection, ids)
        for field, name in SOURCE_LABEL_COLUMNS.items():
            values = [labels.get(i, {}).get(field) for i in ids]
            if field == "created_at":
                values = [None if v is None else v.isoformat() for v in values]
            table[name] = column(values, text=field != "interesting")
            annotate(table[name], label_column(field))
    for stage, variant in sorted(variants.items()):
        if variant.kind != "som" or f"{stage}_node_x" not in table.colnames:
            continue
        node_x, node_y, distance = (_array(table[f"{stage}_{key}"]) for key in ("node_x", "node_y", "distance"))
        carried = carried_labels(connection, stage, variant, node_x, node_y, distance)
        if carried is None:
            continue
        labels, reliability = carried
        prefix = f"{stage}: "
        for spec, values in ((NEURON_LABEL, column(labels, text=True)),
                             (NEURON_LABEL_RELIABILITY, column([None if r != r else float(r) for r in reliability]))):
            name = f"{stage}_{spec.name}"
            table[name] = values
            annotate(table[name], spec.renamed(name, prefix=prefix))
