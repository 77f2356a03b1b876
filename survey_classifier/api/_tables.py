"""Astropy tables as JSON rows or as export files (CSV, VOTable, FITS)."""

from __future__ import annotations

import io
import math

import numpy as np
from astropy.table import Table
from fastapi.responses import Response

from survey_classifier.query import _prepare_for

__all__ = ["table_rows", "export_response", "EXPORT_MEDIA"]

#: format -> (astropy writer, media type, suffix)
EXPORT_MEDIA = {
    "csv": ("ascii.csv", "text/csv; charset=utf-8", ".csv"),
    "votable": ("votable", "application/x-votable+xml", ".xml"),
    "fits": ("fits", "application/fits", ".fits"),
}


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
    if hasattr(column, "mask") and np.any(column.mask):
        values = [None if masked else value for value, masked in zip(values, np.asarray(column.mask).tolist())]
    return [_plain(v) for v in values]


def table_rows(table: Table) -> list[dict]:
    """Rows of ``table`` as JSON-ready dicts (masked and NaN values as null)."""
    names = table.colnames
    columns = [_column_values(table[name]) for name in names]
    return [dict(zip(names, values)) for values in zip(*columns)]


def export_response(table: Table, fmt: str, stem: str) -> Response:
    """``table`` written as ``fmt`` into the body of a download response."""
    writer, media, suffix = EXPORT_MEDIA[fmt]
    out = _prepare_for(table, fmt)
    if fmt == "csv":
        text = io.StringIO()
        out.write(text, format=writer)
        body = text.getvalue().encode("utf-8")
    else:
        buffer = io.BytesIO()
        out.write(buffer, format=writer)
        body = buffer.getvalue()
    headers = {"Content-Disposition": f'attachment; filename="{stem}{suffix}"'}
    return Response(content=body, media_type=media, headers=headers)
