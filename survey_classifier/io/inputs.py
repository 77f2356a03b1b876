"""Turn command-line inputs into the list of cutouts to read.

An input is a directory (its FITS files, sorted), a glob pattern, a FITS
file, or a catalogue table naming one file per row. Catalogues are read with
:mod:`astropy.table`: CSV, ECSV, VOTable, or a FITS binary table (a ``.fits``
file whose first HDU with data is a table rather than an image). Their file
column, and optional id, RA and Dec columns, are found among common names when
not given. Every column but the file, RA and Dec columns is carried through to
the results database under its own name, with its unit, UCD and description
(the id column too, beside ``catalogue_id``); RA and Dec become the
catalogue position, in degrees.
"""

from __future__ import annotations

import glob
import math
import os
import warnings
from pathlib import Path

import numpy as np

from survey_classifier.cutout import CutoutSource
from survey_classifier.errors import CatalogueError, SurveyClassifierError
from survey_classifier.io import remote

__all__ = [
    "FITS_SUFFIXES",
    "CATALOGUE_FORMATS",
    "FILE_COLUMNS",
    "ID_COLUMNS",
    "RA_COLUMNS",
    "DEC_COLUMNS",
    "expand_inputs",
    "read_catalogue",
    "read_table",
]

#: File name endings taken as cutouts when listing a directory.
FITS_SUFFIXES = (".fits", ".fits.gz", ".fits.bz2", ".fits.fz", ".fit", ".fit.gz", ".fts", ".fz")

#: Catalogue file endings and the astropy.table format that reads them.
CATALOGUE_FORMATS = {
    ".csv": "ascii.csv",
    ".ecsv": "ascii.ecsv",
    ".tsv": "ascii.tab",
    ".vot": "votable",
    ".votable": "votable",
    ".xml": "votable",
}

#: Column names tried, case-insensitively and in order, when not given.
FILE_COLUMNS = ("file", "filename", "file_name", "path", "fits", "fits_file", "image", "cutout")
ID_COLUMNS = ("id", "name", "source_id", "source_name", "catalogue_id", "catalog_id")
RA_COLUMNS = ("ra", "ra_deg", "raj2000", "ra_j2000", "ra_icrs", "_raj2000")
DEC_COLUMNS = ("dec", "dec_deg", "dej2000", "decj2000", "dec_j2000", "de_icrs", "_dej2000")

_GLOB_CHARACTERS = frozenset("*?[")


def expand_inputs(
    inputs,
    *,
    file_column=None,
    id_column=None,
    ra_column=None,
    dec_column=None,
    base_dir=None,
) -> list[CutoutSource]:
    """List the cutouts named by files, directories, globs and catalogues.

    Parameters
    ----------
    inputs : str, os.PathLike, or iterable of them
        Each is a directory (its files ending in :data:`FITS_SUFFIXES`,
        sorted by name, not recursive), a glob pattern, a FITS image, or a
        catalogue table (see :func:`read_catalogue`). A path that does not
        exist is passed on as a cutout, so that reading it records the error
        against it.
    file_column, id_column, ra_column, dec_column : str, optional
        Catalogue columns; found among :data:`FILE_COLUMNS`,
        :data:`ID_COLUMNS`, :data:`RA_COLUMNS` and :data:`DEC_COLUMNS` when
        None. Only the file column is required.
    base_dir : str or os.PathLike, optional
        Directory against which relative file names in a catalogue are
        resolved; the catalogue's own directory when None.

    Returns
    -------
    list of CutoutSource
        In input order, with absolute paths.

    Raises
    ------
    CatalogueError
        A catalogue is unreadable or lacks the file column (or a column
        named explicitly).
    SurveyClassifierError
        A glob pattern matches no file.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    columns = {
        "file_column": file_column,
        "id_column": id_column,
        "ra_column": ra_column,
        "dec_column": dec_column,
    }
    sources: list[CutoutSource] = []
    for item in inputs:
        text = os.fspath(item)
        if remote.is_url(text) and remote.local_path(text) is None:
            sources.extend(_url_sources(text, base_dir=base_dir, **columns))
            continue
        text = remote.local_path(text)
        path = Path(text)
        if path.is_dir():
            sources.extend(_directory_sources(path))
        elif path.is_file():
            table_hdu = _catalogue_kind(path)
            if table_hdu is not False:
                sources.extend(read_catalogue(path, hdu=table_hdu, base_dir=base_dir, **columns))
            else:
                sources.append(CutoutSource(path=os.path.abspath(path)))
        elif _GLOB_CHARACTERS.intersection(text):
            matches = sorted(glob.glob(text))
            if not matches:
                msg = f"the pattern {text!r} matches no file"
                raise SurveyClassifierError(msg)
            for match in matches:
                if os.path.isfile(match) or not os.path.isdir(match):  # what else it is: told at reading
                    sources.append(CutoutSource(path=os.path.abspath(match)))
        else:
            sources.append(CutoutSource(path=os.path.abspath(path)))
    return sources


def _url_sources(url: str, **options) -> list[CutoutSource]:
    """The cutouts named by a URL: a catalogue, or a folder, glob or object of FITS files."""
    remote.filesystem(url)  # a scheme without its filesystem package stops here, saying which to install
    name = remote.basename(url).lower()
    if any(name.endswith(suffix) for suffix in CATALOGUE_FORMATS):
        return read_catalogue(url, **options)
    try:
        entries = remote.list_files(url, FITS_SUFFIXES)
    except remote.RemoteInputError:
        return [CutoutSource(path=url)]  # reading it records why it is missing
    if _GLOB_CHARACTERS.intersection(url.partition("://")[2]) and not entries:
        msg = f"the pattern {url!r} matches no file"
        raise SurveyClassifierError(msg)
    if len(entries) == 1 and entries[0].url.rstrip("/") == url.rstrip("/") and name.endswith((".fits", ".fit", ".fts")):
        table_hdu = _fits_table_hdu(url)
        if table_hdu is not False:
            return read_catalogue(url, hdu=table_hdu, **options)
    return [CutoutSource(path=entry.url) for entry in entries]


def _directory_sources(directory: Path) -> list[CutoutSource]:
    """The files of ``directory`` with a FITS name, and what else has one (a link loop, a dangling link, a FIFO,
    a device): the reader records each of those as an error against it instead of the listing stopping."""
    names = sorted(
        entry.name
        for entry in os.scandir(directory)
        if entry.name.lower().endswith(FITS_SUFFIXES) and _listed(entry)
    )
    root = os.path.abspath(directory)
    return [CutoutSource(path=os.path.join(root, name)) for name in names]


def _listed(entry: os.DirEntry) -> bool:
    """Whether a folder's entry with a FITS name is read: a file, or anything but a folder (told at reading)."""
    try:
        return entry.is_file() or not entry.is_dir()
    except OSError:  # a link loop, on some systems: the reader says what it is
        return True


def _catalogue_kind(path: Path):
    """False for an image; else the HDU index of a FITS table, or None."""
    name = path.name.lower()
    if any(name.endswith(suffix) for suffix in CATALOGUE_FORMATS):
        return None
    if name.endswith((".fits", ".fit", ".fts")):
        return _fits_table_hdu(path)
    return False


def _fits_table_hdu(path: Path):
    """Index of the first table HDU when it comes before any image, else False."""
    from astropy.io import fits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with remote.open_binary(str(path)) as stream, fits.open(stream, memmap=False, lazy_load_hdus=True) as hdus:
                for index, hdu in enumerate(hdus):
                    if isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)):
                        return index
                    if isinstance(hdu, fits.CompImageHDU) or hdu.header.get("NAXIS", 0):
                        return False
    except Exception:  # not readable by astropy: the cutout reader reports why
        return False
    return False


def _with_null_logicals_masked(table, path, hdu):
    """``table`` with the undefined values of its FITS logical columns (a zero byte) masked, not False."""
    from astropy.io import fits
    from astropy.table import MaskedColumn

    logical = [name for name in table.colnames if table[name].dtype.kind == "b" and table[name].ndim == 1]
    if not logical:
        return table
    with remote.open_binary(str(path)) as stream, fits.open(stream, memmap=False, logical_as_bytes=True) as hdus:
        raw = {name: np.asarray(hdus[hdu].data[name]) for name in logical}
    for name, values in raw.items():
        undefined = (values == b"") | (values == b"\x00")
        if undefined.any():
            table[name] = MaskedColumn(table[name], mask=undefined)
    return table


def read_catalogue(
    path,
    *,
    file_column=None,
    id_column=None,
    ra_column=None,
    dec_column=None,
    base_dir=None,
    hdu=None,
) -> list[CutoutSource]:
    """Read a catalogue table into cutout sources, one per row.

    Parameters
    ----------
    path : str or os.PathLike
        A CSV, ECSV, TSV, VOTable or FITS binary table file (or its URL).
    file_column, id_column, ra_column, dec_column, base_dir
        As for :func:`expand_inputs`; ``file_column=False`` reads a
        catalogue of positions without files (for cutting from mosaics):
        each source's path is then a placeholder naming the row.
    hdu : int, optional
        HDU of a FITS table; the first table HDU when None.

    Returns
    -------
    list of CutoutSource
        ``extra`` holds the carried columns (all but the file, RA and Dec
        columns) as JSON-safe Python values (masked and NaN values become
        None), and ``extra_columns`` their descriptions
        (:class:`~survey_classifier.columns.Column`: unit, UCD, description
        as the catalogue gives them). RA and Dec columns with a unit are
        converted to degrees; text columns are read as sexagesimal (hours
        for RA) when they are not plain numbers.
    """
    path = path if remote.is_url(path) else Path(path)
    table = read_table(path, hdu)
    names = list(table.colnames)
    positions_only = file_column is False
    file_name = None if positions_only else _pick_column(path, names, file_column, FILE_COLUMNS, "file", required=True)
    id_name = _pick_column(path, names, id_column, ID_COLUMNS, "id")
    ra_name = _pick_column(path, names, ra_column, RA_COLUMNS, "RA")
    dec_name = _pick_column(path, names, dec_column, DEC_COLUMNS, "Dec")
    if (ra_name is None) != (dec_name is None):
        msg = f"catalogue {path}: RA column {ra_name!r} and Dec column {dec_name!r} must come together"
        raise CatalogueError(msg)

    if base_dir is None:
        base = remote.parent(str(path))
    else:
        base = os.fspath(base_dir) if remote.is_url(base_dir) else os.path.abspath(base_dir)
    files = [None] * len(table) if positions_only else _python_values(table[file_name])
    ids = _python_values(table[id_name]) if id_name else [None] * len(table)
    if ra_name:
        ra_values = _angles_deg(path, table[ra_name], hours=True)
        dec_values = _angles_deg(path, table[dec_name], hours=False)
    else:
        ra_values = dec_values = [None] * len(table)
    carried = [name for name in names if name not in (file_name, ra_name, dec_name)]
    extra_columns = {name: _python_values(table[name]) for name in carried}
    descriptions = {name: _description(table[name], is_id=name == id_name) for name in carried}

    sources = []
    for row, file_value in enumerate(files):
        if positions_only:
            file_path = f"{path}[row {row + 1}]"
        elif file_value is None or not str(file_value).strip():
            file_path = f"{path}[row {row + 1}: no file named]"
        else:
            file_path = remote.join(base, str(file_value).strip())
        sources.append(
            CutoutSource(
                path=file_path,
                catalogue_id=None if ids[row] is None else str(ids[row]),
                ra_deg=ra_values[row],
                dec_deg=dec_values[row],
                extra={name: values[row] for name, values in extra_columns.items()},
                extra_columns=descriptions,
            )
        )
    return sources


def read_table(path, hdu=None):
    """A catalogue table (CSV, ECSV, TSV, VOTable or FITS, by suffix; a path or a URL); the one catalogue reader."""
    from astropy.table import Table

    name = str(path).lower()
    kwargs = {}
    for suffix, table_format in CATALOGUE_FORMATS.items():
        if name.endswith(suffix):
            kwargs["format"] = table_format
            break
    else:
        kwargs["format"] = "fits"
        if hdu is None:
            hdu = _fits_table_hdu(path)
            if hdu is False:
                msg = f"catalogue {path}: no table HDU found in the FITS file"
                raise CatalogueError(msg)
        kwargs["hdu"] = hdu
    if kwargs["format"] == "ascii.csv" and _has_ecsv_header(path):  # a CSV export of ours: read its header too
        kwargs["format"] = "ascii.ecsv"
    try:
        with warnings.catch_warnings():  # FITS null logicals: astropy reads them as False, masked below
            warnings.filterwarnings("ignore", message=".*contains NULL \\(undefined\\) values")
            if remote.is_url(path):
                with remote.open_binary(str(path)) as stream:
                    table = Table.read(stream, **kwargs)
            else:
                table = Table.read(path, **kwargs)
        if kwargs["format"] == "fits":
            table = _with_null_logicals_masked(table, path, kwargs["hdu"])
        return table
    except FileNotFoundError:
        msg = f"catalogue {path}: file not found"
        raise CatalogueError(msg) from None
    except Exception as exc:  # astropy raises many types for unreadable tables
        msg = f"catalogue {path}: cannot be read as {kwargs['format']} ({' '.join(str(exc).split())})"
        raise CatalogueError(msg) from exc


def _description(column, *, is_id: bool):
    """The unit, UCD and description a catalogue gives one of its columns (``meta.id`` for the id column)."""
    from survey_classifier.columns import Column

    unit = getattr(column, "unit", None)
    meta = getattr(column.info, "meta", None) or {}
    ucd = meta.get("ucd") or ("meta.id" if is_id else None)
    description = (column.info.description or "").strip() or f"Column {column.info.name!r} of the input catalogue"
    return Column(str(column.info.name), " ".join(description.split()), None if unit is None else unit.to_string(),
                  None if ucd is None else str(ucd))


def _has_ecsv_header(path: Path) -> bool:
    """Whether a CSV file starts with the ECSV header our CSV exports carry (``# %ECSV ...``)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(7) == b"# %ECSV"
    except OSError:
        return False


def _pick_column(path, names, given, candidates, role, *, required=False):
    if given is not None:
        if given in names:
            return given
        folded = {name.lower(): name for name in names}
        if given.lower() in folded:
            return folded[given.lower()]
        msg = f"catalogue {path}: no {role} column {given!r}; columns are {names}"
        raise CatalogueError(msg)
    folded = {name.lower(): name for name in names}
    for candidate in candidates:
        if candidate in folded:
            return folded[candidate]
    if required:
        msg = (
            f"catalogue {path}: no {role} column (looked for {', '.join(candidates)}); "
            f"columns are {names}; name it with file_column= (--file-column)"
        )
        raise CatalogueError(msg)
    return None


def _python_values(column) -> list:
    """The column as JSON-safe Python values, None where masked or NaN."""
    mask = getattr(column, "mask", None)
    data = np.asarray(column)
    if data.dtype.kind == "S":
        values = [v.decode("utf-8", "replace") for v in data.tolist()]
    elif data.dtype.kind == "O":
        values = [_jsonable(v) for v in data.tolist()]
    else:
        values = data.tolist()
        if data.dtype.kind in "fc" or data.ndim > 1:
            values = [_jsonable(v) for v in values]
        elif data.dtype.kind in "Mm":
            values = [str(v) for v in data.tolist()]
    if mask is not None and np.any(mask):
        row_mask = np.asarray(mask)
        if row_mask.ndim > 1:
            row_mask = row_mask.all(axis=tuple(range(1, row_mask.ndim)))
        values = [None if masked else value for value, masked in zip(values, row_mask)]
    return values


def _jsonable(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, complex):
        return [_jsonable(value.real), _jsonable(value.imag)]
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def _angles_deg(path, column, *, hours):
    """Angles in degrees from a numeric (any angle unit) or sexagesimal column."""
    import astropy.units as u
    from astropy.coordinates import Angle

    data = np.asarray(column)
    unit = getattr(column, "unit", None)
    if data.dtype.kind in "iuf":
        values = np.asarray(data, dtype=float)
        if unit is not None and unit != u.deg:
            try:
                values = (values * unit).to_value(u.deg)
            except u.UnitsError:
                msg = f"catalogue {path}: column {column.name!r} has unit {unit}, not an angle"
                raise CatalogueError(msg) from None
        return _python_values(_masked_like(column, values))
    text = _python_values(column)
    degrees = []
    for row, value in enumerate(text):
        if value is None or not str(value).strip():
            degrees.append(None)
            continue
        value = str(value).strip()
        try:
            degrees.append(float(value))
            continue
        except ValueError:
            pass
        try:
            angle = Angle(value, unit=u.hourangle if hours else u.deg)
        except (ValueError, u.UnitsError):
            msg = f"catalogue {path}: row {row + 1} of column {column.name!r} is not an angle: {value!r}"
            raise CatalogueError(msg) from None
        degrees.append(float(angle.to_value(u.deg)))
    return degrees


def _masked_like(column, values):
    mask = getattr(column, "mask", None)
    if mask is None or not np.any(mask):
        return values
    return np.ma.MaskedArray(values, mask=np.asarray(mask))
