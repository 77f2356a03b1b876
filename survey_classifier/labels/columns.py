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

from survey_classifier.labels.neurons import carried_labels
from survey_classifier.labels.store import current_source_labels, has_source_labels

__all__ = ["SOURCE_LABEL_COLUMNS", "add_label_columns"]

#: Query column of each source label field.
SOURCE_LABEL_COLUMNS = {
    "label": "label_class",
    "interesting": "label_interesting",
    "note": "label_note",
    "author": "label_author",
    "created_at": "label_time",
}


def add_label_columns(
    connection: Connection, table: Table, ids: Sequence[int], variants: Mapping, column: Callable
) -> None:
    """Add the label columns to a query table whose rows are the cutouts ``ids``.

    ``variants`` are the stage variants the query shows
    (:func:`survey_classifier.query.find_variants`); ``column`` makes a
    (masked) table column from Python values.
    """
    if has_source_labels(connection):
        labels = current_source_labels(connection, ids)
        for field, name in SOURCE_LABEL_COLUMNS.items():
            values = [labels.get(i, {}).get(field) for i in ids]
            if field == "created_at":
                values = [None if v is None else v.isoformat() for v in values]
            table[name] = column(values)
    for stage, variant in sorted(variants.items()):
        if variant.kind != "som" or f"{stage}_node_x" not in table.colnames:
            continue
        carried = carried_labels(
            connection, stage, variant, table[f"{stage}_node_x"], table[f"{stage}_node_y"], table[f"{stage}_distance"]
        )
        if carried is None:
            continue
        labels, reliability = carried
        table[f"{stage}_neuron_label"] = column(labels)
        table[f"{stage}_neuron_label_reliability"] = column(
            [None if r != r else float(r) for r in reliability.tolist()]
        )
