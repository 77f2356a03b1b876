"""The export formats of result tables: one list, from which the CLI, the API and queries derive.

Adding a format means adding one :class:`ExportFormat` to
:data:`EXPORT_FORMATS`: ``query --format`` and ``-o FILE.SUFFIX``, the
API's ``format=`` parameter and its documented media types follow.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from astropy.table import Table

from survey_classifier.errors import SurveyClassifierError

__all__ = ["ExportFormat", "EXPORT_FORMATS", "format_for_path", "table_bytes", "write_table"]


@dataclass(frozen=True)
class ExportFormat:
    """A table format: astropy's writer, the media type served, file suffixes (the first is written)."""

    name: str
    astropy_format: str
    media_type: str
    suffixes: tuple[str, ...]
    text: bool

    @property
    def suffix(self) -> str:
        return self.suffixes[0]


#: Every export format, by its ``--format`` / ``format=`` name.
EXPORT_FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat("csv", "ascii.csv", "text/csv; charset=utf-8", (".csv",), True),
        ExportFormat("ecsv", "ascii.ecsv", "text/x-ecsv; charset=utf-8", (".ecsv",), True),
        ExportFormat("votable", "votable", "application/x-votable+xml", (".xml", ".vot", ".votable"), False),
        ExportFormat("fits", "fits", "application/fits", (".fits", ".fit"), False),
    )
}


def format_for_path(path: str) -> str | None:
    """The format a file name's suffix names, if any."""
    name = str(path).lower()
    for export in EXPORT_FORMATS.values():
        if any(name.endswith(suffix) for suffix in export.suffixes):
            return export.name
    return None


def _check(fmt: str) -> ExportFormat:
    if fmt not in EXPORT_FORMATS:
        msg = f"unknown table format {fmt!r}; use one of {sorted(EXPORT_FORMATS)}"
        raise SurveyClassifierError(msg)
    return EXPORT_FORMATS[fmt]


def _prepared(table: Table, fmt: str) -> Table:
    """A copy the writer of ``fmt`` accepts (FITS and VOTable have no masked booleans)."""
    out = table.copy()
    if fmt in ("fits", "votable"):
        for name in out.colnames:
            if out[name].dtype.kind == "b" and hasattr(out[name], "mask"):
                out[name] = out[name].filled(False)
    return out


def table_bytes(table: Table, fmt: str) -> bytes:
    """``table`` written as ``fmt``, in memory (a download body)."""
    export = _check(fmt)
    out = _prepared(table, fmt)
    if export.text:
        text = io.StringIO()
        out.write(text, format=export.astropy_format)
        return text.getvalue().encode("utf-8")
    buffer = io.BytesIO()
    out.write(buffer, format=export.astropy_format)
    return buffer.getvalue()


def write_table(table: Table, path: str, fmt: str | None = None) -> str:
    """Write ``table`` to ``path`` as ``fmt``, else as its suffix says; returns the format."""
    fmt = fmt or format_for_path(path)
    if fmt is None:
        msg = (
            f"cannot tell the export format of {path!r} from its suffix; "
            f"use --format with one of {sorted(EXPORT_FORMATS)}"
        )
        raise SurveyClassifierError(msg)
    export = _check(fmt)
    _prepared(table, fmt).write(path, format=export.astropy_format, overwrite=True)
    return fmt
