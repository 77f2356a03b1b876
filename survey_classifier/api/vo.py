"""Virtual Observatory access: an IVOA Simple Cone Search over the results, and each cutout's FITS file.

``GET /scs?RA=&DEC=&SR=`` follows Simple Cone Search 1.03 (with its errata):
RA, DEC and SR in decimal degrees (ICRS), ``VERB`` 1-3 for fewer or more
columns, a VOTable with one row per source within SR of the position (the
catalogue's position when the catalogue gave one), and for bad input a
VOTable holding ``<INFO name="Error">`` with the reason (HTTP 200, as the
standard asks). TOPCAT and pyvo (``pyvo.dal.SCSService(url)``) call it as
they call any cone search.

Each row carries ``access_url``, a link to ``GET /cutouts/{id}/fits``
(the cutout's FITS file as it was classified; ``pyvo``'s
``record.getdataset()`` downloads it). No answer holds a path on the
server: rows are identified by ids and links.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from sqlalchemy import select

from survey_classifier.api.contract import errors
from survey_classifier.columns import Column, annotate, column_of, order_columns
from survey_classifier.db.models import CutoutRow
from survey_classifier.errors import SurveyClassifierError

__all__ = ["vo_router", "SCS_MAX_RADIUS_DEG", "SCS_MAX_ROWS", "VOTABLE_MEDIA_TYPE"]

#: Largest cone radius the cone search answers, degrees.
SCS_MAX_RADIUS_DEG = 10.0
#: Most rows one cone-search answer holds (more: the first ones and ``QUERY_STATUS`` OVERFLOW).
SCS_MAX_ROWS = 50_000
#: What SCS 1.03 answers are served as.
VOTABLE_MEDIA_TYPE = "text/xml"

ACCESS_URL = Column("access_url", "Link to the cutout's FITS file", ucd="meta.ref.url;meta.dataset").checked()
ACCESS_FORMAT = Column("access_format", "Media type of the file at access_url", ucd="meta.code.mime").checked()

#: Columns of each verbosity (patterns, in order); VERB=3 adds every other column.
_VERBOSITY = {
    1: ("cutout_id", "ra_deg", "dec_deg"),
    2: ("cutout_id", "catalogue_id", "ra_deg", "dec_deg", "separation_arcsec", "*_label", "*_probability",
        "*_score", "*_node_x", "*_node_y", "measure_peak_flux_jy", "measure_integrated_flux_jy",
        "measure_las_arcsec"),
}
#: SCS 1.03 names its three required columns with UCD1 words.
_SCS_UCDS = {"cutout_id": "ID_MAIN", "ra_deg": "POS_EQ_RA_MAIN", "dec_deg": "POS_EQ_DEC_MAIN"}
_FITS_TYPES = {".gz": "application/gzip", ".bz2": "application/x-bzip2"}


def _votable_bytes(votable) -> bytes:
    buffer = io.BytesIO()
    votable.to_xml(buffer)
    return buffer.getvalue()


def scs_error(message: str) -> Response:
    """The error answer of SCS 1.03: ``<INFO name="Error">`` under the root, then an empty RESOURCE."""
    from astropy.io.votable.tree import Info, Resource, VOTableFile

    votable = VOTableFile()
    votable.infos.append(Info(ID="Error", name="Error", value=message))
    votable.resources.append(Resource())
    return Response(_votable_bytes(votable), media_type=VOTABLE_MEDIA_TYPE)


def _public(table):
    """``table`` without columns that hold file paths on the server."""
    keep = [name for name in table.colnames if "meta.file" not in (column_of(table, name).ucd or "")]
    return table[keep]


def _columns_of_verbosity(table, verbosity: int):
    if verbosity >= 3:
        return table[order_columns(table.colnames, _VERBOSITY[2])]
    names = order_columns(table.colnames, _VERBOSITY[verbosity])
    wanted = [n for n in names if any(_matches(n, p) for p in _VERBOSITY[verbosity])]
    return table[wanted]


def _matches(name: str, pattern: str) -> bool:
    import fnmatch

    return fnmatch.fnmatchcase(name, pattern)


def _cone_table(engine, ra: float, dec: float, radius: float, verbosity: int, base_url: str, max_rows: int):
    from survey_classifier.query import query_results

    # the light frame: only the columns of the verbosity become an astropy table
    if radius == 0:  # SR=0: the columns, no rows (the metadata query of SCS)
        table = query_results(engine, cutout_ids=[], as_frame=True)
        overflow = False
    else:
        table = query_results(engine, ra=ra, dec=dec, radius=radius, limit=max_rows + 1, as_frame=True)
        overflow = len(table) > max_rows
        if overflow:
            table = table.head(max_rows)
    table = _columns_of_verbosity(_public(table), verbosity).to_table()
    table[ACCESS_URL.name] = np.array([f"{base_url}/cutouts/{i}/fits" for i in table["cutout_id"]], dtype=str)
    annotate(table[ACCESS_URL.name], ACCESS_URL)
    table[ACCESS_FORMAT.name] = np.array(["application/fits"] * len(table), dtype="U16")
    annotate(table[ACCESS_FORMAT.name], ACCESS_FORMAT)
    return table, overflow


def _scs_votable(table, overflow: bool, query: str):
    from astropy.io.votable.tree import Info

    from survey_classifier.formats import to_votable

    table.meta["description"] = f"survey-classifier results within the cone {query}"
    votable = to_votable(table)
    for field in votable.resources[0].tables[0].fields:
        if field.name in _SCS_UCDS:
            field.ucd = _SCS_UCDS[field.name]
    status = "OVERFLOW" if overflow else "OK"
    votable.resources[0].infos.append(Info(name="QUERY_STATUS", value=status))
    return votable


def _scs_parameter(name: str, description: str):
    """A cone-search parameter, read as text so that bad input gets the SCS error VOTable, not a 422."""
    return Annotated[str | None, Query(alias=name, description=description)]


_RA = _scs_parameter("RA", "Right ascension of the cone centre, decimal degrees (ICRS).")
_DEC = _scs_parameter("DEC", "Declination of the cone centre, decimal degrees (ICRS).")
_SR = _scs_parameter("SR", f"Cone radius, decimal degrees (0 to {SCS_MAX_RADIUS_DEG:g}; 0: the columns only).")
_VERB = _scs_parameter("VERB", "1: id and position; 2 (default): the main results; 3: every column.")
_MAXREC = _scs_parameter("MAXREC", f"Most rows to answer (at most {SCS_MAX_ROWS}).")


def vo_router(engine) -> APIRouter:
    """The cone search and the FITS download, over ``engine``."""
    router = APIRouter(tags=["Virtual Observatory"])

    @router.get(
        "/scs",
        summary="IVOA Simple Cone Search 1.03: sources within SR degrees of (RA, DEC), as a VOTable",
        response_class=Response,
        responses={200: {"content": {VOTABLE_MEDIA_TYPE: {"schema": {"type": "string"}}},
                         "description": "A VOTable: the sources in the cone, or <INFO name=\"Error\"> "
                                        "saying what was wrong with the request (as SCS 1.03 asks)."},
                   **errors(422)},
    )
    def scs(
        request: Request,
        ra: _RA = None,
        dec: _DEC = None,
        sr: _SR = None,
        verb: _VERB = None,
        maxrec: _MAXREC = None,
    ):
        from survey_classifier.positions import parse_dec, parse_ra, parse_radius

        try:
            missing = [name for name, value in (("RA", ra), ("DEC", dec), ("SR", sr)) if value is None]
            if missing:
                msg = f"missing parameter(s) {', '.join(missing)}: a cone search needs RA, DEC and SR in degrees"
                raise SurveyClassifierError(msg)
            ra_deg, dec_deg = parse_ra(ra, parameter="RA"), parse_dec(dec, parameter="DEC")
            radius = 0.0 if sr.strip() in ("0", "0.0") else parse_radius(sr, parameter="SR",
                                                                         maximum_deg=SCS_MAX_RADIUS_DEG)
            verbosity = _integer(verb, "VERB", 2, low=1, high=3)
            max_rows = _integer(maxrec, "MAXREC", SCS_MAX_ROWS, low=0, high=SCS_MAX_ROWS)
            base = str(request.base_url).rstrip("/")
            table, overflow = _cone_table(engine, ra_deg, dec_deg, radius if max_rows else 0.0, verbosity, base,
                                          max_rows)
        except SurveyClassifierError as exc:
            return scs_error(str(exc))
        votable = _scs_votable(table, overflow, f"RA={ra_deg:g} DEC={dec_deg:g} SR={radius:g}")
        return Response(_votable_bytes(votable), media_type=VOTABLE_MEDIA_TYPE)

    @router.get(
        "/cutouts/{cutout_id}/fits",
        name="cutout_fits",
        summary="The cutout's FITS file, as it was classified",
        response_class=FileResponse,
        responses={200: {"content": {t: {"schema": {"type": "string", "format": "binary"}}
                                     for t in ("application/fits", *_FITS_TYPES.values())},
                         "description": "The file's bytes (FITS; gzip or bzip2 when it was stored compressed)."},
                   **errors(404, 409, 422)},
    )
    def cutout_fits(cutout_id: Annotated[int, PathParam(ge=1, le=2**31 - 1, examples=[1])]):
        from survey_classifier.checksum import sha256_file

        c = CutoutRow.__table__.c
        with engine.connect() as connection:
            row = connection.execute(select(c.path, c.sha256).where(c.id == cutout_id)).first()
        if row is None:
            raise HTTPException(404, f"no cutout with id {cutout_id}")
        path = Path(row.path)
        if not path.is_file():
            raise HTTPException(404, f"the file of cutout {cutout_id} is no longer where it was classified")
        if row.sha256 and sha256_file(path) != row.sha256:
            raise HTTPException(409, f"the file of cutout {cutout_id} changed since it was classified")
        suffix = path.suffix.lower()
        media = _FITS_TYPES.get(suffix, "application/fits")
        name = f"cutout-{cutout_id}.fits" + (suffix if suffix in _FITS_TYPES else "")
        return FileResponse(path, media_type=media, filename=name)

    return router


def _integer(text: str | None, name: str, default: int, *, low: int, high: int) -> int:
    if text is None or not text.strip():
        return default
    try:
        value = int(text.strip())
    except ValueError:
        msg = f"{name} must be an integer from {low} to {high}, got {text!r}"
        raise SurveyClassifierError(msg) from None
    if not low <= value <= high:
        msg = f"{name} must be an integer from {low} to {high}, got {value}"
        raise SurveyClassifierError(msg)
    return value
