"""What an answer of the service shows of the server's files: their names and download links, never their paths.

The database keeps where each cutout, tile and model file is on the
machine that classified it; a reader of the service gets the file's name
and the URL that serves its bytes (``/cutouts/{id}/fits``) instead. Free
text from the database (error messages, a run's configuration, a model's
details) has every absolute path cut to its last part.
"""

from __future__ import annotations

import re

import numpy as np
from astropy.table import Table

from survey_classifier._frame import Frame, FrameColumn, frame_column
from survey_classifier.columns import Column, annotate

__all__ = ["public_text", "public_value", "public_store", "public_table", "public_model", "public_row", "FILE_NAME",
           "FITS_URL"]

#: An absolute POSIX path (two parts at least), or a ``file://`` URL, in running text.
_ABSOLUTE = re.compile(r"(?:file://|(?<![\w./~-]))/(?:[^\s'\"/,;()\[\]{}<>]+/)+[^\s'\"/,;()\[\]{}<>]*")

FILE_NAME = Column("file_name", "Name of the cutout's file as it was classified (download it from fits_url)",
                   ucd="meta.id;meta.file").checked()
TILE = Column("tile", "Mosaic tile the cutout was cut from (its file name or URL)", ucd="meta.id;meta.file").checked()
FITS_URL = Column("fits_url", "URL of the cutout's FITS file on this service", ucd="meta.ref.url").checked()


def public_text(text: str) -> str:
    """``text`` with each absolute path (or ``file://`` URL) replaced by its last part."""
    return _ABSOLUTE.sub(lambda match: match.group(0).rstrip("/").rsplit("/", 1)[-1], text)


def public_value(value):
    """A JSON-ready value with :func:`public_text` applied to every string in it, keys left alone."""
    if isinstance(value, str):
        return public_text(value)
    if isinstance(value, dict):
        return {key: public_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [public_value(item) for item in value]
    return value


def public_store(store: str) -> str:
    """Where a model's bytes are kept, as a reader may see it: ``file`` for a folder of the server."""
    return "file" if store.startswith("file://") else store


def public_model(model: dict) -> dict:
    """A registry record for an answer: the store named without its folder, paths cut from the details."""
    shown = dict(model, store=public_store(str(model["store"])))
    if "details" in shown:
        shown["details"] = public_value(shown["details"])
    return shown


def public_row(row: dict) -> dict:
    """A row of a cutout (a dict with ``path`` and ``cutout_id``) with ``file_name`` and ``fits_url`` for its path."""
    if "path" not in row:
        return row
    shown = {}
    for key, value in row.items():
        if key == "path":
            shown[FILE_NAME.name] = _file_name(value)
            shown[FITS_URL.name] = f"/cutouts/{int(row['cutout_id'])}/fits"
        else:
            shown[key] = value
    return shown


def _file_name(path) -> str:
    return str(path).replace("\\", "/").rsplit("/", 1)[-1]


def public_table(table: Table) -> Table:
    """``table`` with its ``path`` column as ``file_name`` and ``fits_url``, a ``tile`` path as its name.

    Changes ``table`` itself (a query's answer, made for this request: a
    copy of its columns' metadata cost a tenth of a /results request).
    """
    if "path" not in table.colnames and "tile" not in table.colnames:
        return table
    if isinstance(table, Frame):
        return _public_frame(table)
    if "tile" in table.colnames:
        tile = table["tile"]
        shown = np.ma.array([public_text(str(v)) for v in np.ma.getdata(tile)], mask=np.ma.getmaskarray(tile))
        table.replace_column("tile", shown, copy=False)
        annotate(table["tile"], TILE)
    if "path" in table.colnames:
        _link_files(table, np.array([_file_name(p) for p in table["path"]], dtype=str),
                    np.array([f"/cutouts/{int(i)}/fits" for i in table["cutout_id"]], dtype=str))
    return table


def _public_frame(table: Frame) -> Frame:
    """:func:`public_table` of a :class:`~survey_classifier._frame.Frame` (its columns are lists)."""
    if "tile" in table.colnames:
        shown = [None if v is None else public_text(str(v)) for v in table["tile"].values]
        table.replace_column("tile", frame_column(shown, text=True))
        annotate(table["tile"], TILE)
    if "path" in table.colnames:
        _link_files(table, FrameColumn([_file_name(p) for p in table["path"].values], "U"),
                    FrameColumn([f"/cutouts/{int(i)}/fits" for i in table["cutout_id"].values], "U"))
    return table


def _link_files(table, names, urls) -> None:
    """Put the file names and download links ``names``, ``urls`` where the ``path`` column of ``table`` was."""
    at = table.colnames.index("path")
    table.remove_column("path")
    table.add_column(names, name=FILE_NAME.name, index=at)
    table.add_column(urls, name=FITS_URL.name, index=at + 1)
    annotate(table[FILE_NAME.name], FILE_NAME)
    annotate(table[FITS_URL.name], FITS_URL)
