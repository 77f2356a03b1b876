"""The export formats of result tables: one list, from which the CLI, the API and queries derive.

Adding a format means adding one :class:`ExportFormat` to
:data:`EXPORT_FORMATS`: ``query --format`` and ``-o FILE.SUFFIX``, the
API's ``format=`` parameter and its documented media types follow.

Every format carries each column's unit, UCD and description (attached by
:func:`survey_classifier.columns.annotate`):

- VOTable: ``FIELD`` ``unit`` (an empty unit for dimensionless numbers),
  ``ucd`` and ``DESCRIPTION``, and a ``COOSYS`` (ICRS) that the position
  fields refer to;
- FITS: ``TUNITn``, and ``TCOMMn`` (description) and ``TUCDn`` (UCD), the
  keywords TOPCAT reads;
- ECSV: units, descriptions and UCDs in its YAML header;
- CSV: the same ECSV header as ``#`` comment lines above comma-separated
  rows (ECSV with a comma delimiter): astropy reads it back whole
  (``format="ascii.ecsv"``), other readers skip lines starting with ``#``
  (``pandas.read_csv(f, comment="#")``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from survey_classifier.columns import column_of
from survey_classifier.errors import SurveyClassifierError

__all__ = ["ExportFormat", "EXPORT_FORMATS", "format_for_path", "table_bytes", "write_table", "to_votable"]

#: ID of the ICRS ``COOSYS`` that position fields of a VOTable refer to.
COOSYS_ID = "icrs"


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
        ExportFormat("csv", "ascii.ecsv", "text/csv; charset=utf-8", (".csv",), True),
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


def to_votable(table: Table):
    """``table`` as an astropy ``VOTableFile``: unit, UCD and description on each FIELD, COOSYS ICRS."""
    from astropy.io.votable import from_table
    from astropy.io.votable.tree import CooSys

    votable = from_table(table)
    resource = votable.resources[0]
    positions = [f for f in resource.tables[0].fields if (f.ucd or "").startswith(("pos.eq.ra", "pos.eq.dec"))]
    if positions:
        resource.coordinate_systems.append(CooSys(ID=COOSYS_ID, system="ICRS"))
        for field in positions:
            field.ref = COOSYS_ID
    description = table.meta.get("description")
    if description:
        resource.tables[0].description = description
    return votable


def _fits_hdus(table: Table):
    """A primary HDU and the table, with ``TCOMMn`` and ``TUCDn`` beside each ``TFORMn``."""
    from astropy.io import fits

    hdu = fits.table_to_hdu(_filled_logicals(table))
    for index, name in enumerate(table.colnames, start=1):
        spec = column_of(table, name)
        after = f"TUNIT{index}" if f"TUNIT{index}" in hdu.header else f"TFORM{index}"
        if spec.ucd:
            hdu.header.set(f"TUCD{index}", spec.ucd, after=after)
        if table[name].info.description:
            hdu.header.set(f"TCOMM{index}", spec.description, after=after)
    return fits.HDUList([fits.PrimaryHDU(), hdu])


def _masked_logicals(table: Table) -> dict[str, np.ndarray]:
    """The rows of each boolean column that hold no value (an unlabelled source's ``label_interesting``)."""
    return {
        name: np.asarray(table[name].mask)
        for name in table.colnames
        if table[name].dtype.kind == "b" and getattr(table[name], "mask", None) is not None and table[name].mask.any()
    }


def _filled_logicals(table: Table) -> Table:
    """``table`` with its masked booleans filled (astropy's FITS writer has no null logical): :func:`_fits_bytes`."""
    masked = _masked_logicals(table)
    if not masked:
        return table
    out = table.copy(copy_data=False)
    for name in masked:
        out[name] = table[name].filled(False)
    return out


def _fits_bytes(table: Table) -> bytes:
    """The FITS file of ``table``, undefined logicals written as the FITS null byte (standard, section 7.3.3).

    astropy fills masked booleans, which would turn "not labelled" into "not interesting"; TOPCAT and
    cfitsio read a zero byte in an ``L`` column as null, astropy as False with a warning naming the column.
    """
    hdus = _fits_hdus(table)
    buffer = io.BytesIO()
    hdus.writeto(buffer)
    data = bytearray(buffer.getvalue())
    masked = _masked_logicals(table)
    if masked:
        header = hdus[1].header
        start = len(hdus[0].header.tostring()) + len(header.tostring())
        row_bytes = header["NAXIS1"]
        for name, rows in masked.items():
            column_offset = hdus[1].data.dtype.fields[name][1]
            for row in np.flatnonzero(rows):
                data[start + row * row_bytes + column_offset] = 0
    return bytes(data)


def _write(table: Table, target, export: ExportFormat) -> None:
    """``table`` written as ``export`` to ``target`` (a path, replaced if there, or a file object)."""
    replace = isinstance(target, str)
    if export.name == "votable":
        to_votable(table).to_xml(target)
    elif export.name == "fits":
        body = _fits_bytes(table)
        if replace:
            with open(target, "wb") as stream:
                stream.write(body)
        else:
            target.write(body)
    else:
        options = {"delimiter": ","} if export.name == "csv" else {}
        table.write(target, format=export.astropy_format, overwrite=replace, **options)


def table_bytes(table: Table, fmt: str) -> bytes:
    """``table`` written as ``fmt``, in memory (a download body)."""
    export = _check(fmt)
    if export.text:
        text = io.StringIO()
        _write(table, text, export)
        return text.getvalue().encode("utf-8")
    buffer = io.BytesIO()
    _write(table, buffer, export)
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
    _write(table, str(path), _check(fmt))
    return fmt
