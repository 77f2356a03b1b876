"""Astropy tables as JSON rows or as export files (the formats of :mod:`survey_classifier.formats`)."""

from __future__ import annotations

import math

import numpy as np
from astropy.table import Table
from fastapi.responses import Response

from survey_classifier._frame import Frame
from survey_classifier.formats import EXPORT_FORMATS, table_bytes

__all__ = ["table_rows", "export_response"]


def _plain(value):
    if value is np.ma.masked or value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _column_values(column) -> list:
    values = column.tolist() if not hasattr(column, "mask") else column.filled(column.fill_value).tolist()
    kind = column.dtype.kind
    # tolist gives Python values: only floats (NaN, inf) and bytes need a look, each value of other kinds is kept
    if kind == "f":
        values = [v if math.isfinite(v) else None for v in values]
    elif kind not in "biuU":
        values = [_plain(v) for v in values]
    if hasattr(column, "mask") and np.any(column.mask):
        values = [None if masked else value for value, masked in zip(values, np.asarray(column.mask).tolist())]
    return values


def table_rows(table: Table | Frame, *, finite_only: bool = True) -> list[dict]:
    """Rows of ``table`` as JSON-ready dicts (masked values as None, NaN and infinities too unless ``finite_only``
    is False: of a :class:`~survey_classifier._frame.Frame`, for an encoder that writes them as null)."""
    if isinstance(table, Frame):
        return table.rows(finite_only=finite_only)
    names = table.colnames
    columns = [_column_values(table[name]) for name in names]
    return [dict(zip(names, values)) for values in zip(*columns)]


def export_response(table: Table, fmt: str, stem: str) -> Response:
    """``table`` written as ``fmt`` into the body of a download response."""
    export = EXPORT_FORMATS[fmt]
    headers = {"Content-Disposition": f'attachment; filename="{stem}{export.suffix}"'}
    return Response(content=table_bytes(table, fmt), media_type=export.media_type, headers=headers)
