"""Read results back as :class:`astropy.table.Table`.

One row per cutout, with the cutout's position and catalogue fields and,
for every stage with results, that stage's columns prefixed by its name
(``measure_peak_flux_jy``, ``cnn_label``, ``som_node_x`` ...). Where a stage
has results of several versions or models, the most recent is shown unless
``versions`` picks one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.table import MaskedColumn, Table
from sqlalchemy import and_, exists, or_, select
from sqlalchemy.engine import Engine

from survey_classifier.db.models import RESULT_TABLES, CutoutRow, ErrorRow, RunRow
from survey_classifier.errors import SurveyClassifierError

__all__ = ["query_results", "query_errors", "cone_prefilter", "EXPORT_FORMATS", "write_table"]

#: ``--format`` name -> (astropy writer format, file suffix)
EXPORT_FORMATS = {
    "csv": ("ascii.csv", ".csv"),
    "ecsv": ("ascii.ecsv", ".ecsv"),
    "votable": ("votable", ".xml"),
    "fits": ("fits", ".fits"),
}

_SKIP = {"id", "cutout_id", "stage", "updated_at", "embedding", "extra", "components", "probabilities"}


def _check_cone(ra: float, dec: float, radius: float) -> None:
    if not (0.0 <= ra < 360.0 or math.isclose(ra, 360.0)):
        msg = f"cone search RA must be in [0, 360) degrees, got {ra}"
        raise SurveyClassifierError(msg)
    if not -90.0 <= dec <= 90.0:
        msg = f"cone search Dec must be in [-90, 90] degrees, got {dec}"
        raise SurveyClassifierError(msg)
    if not 0.0 < radius <= 180.0:
        msg = f"cone search radius must be in (0, 180] degrees, got {radius}"
        raise SurveyClassifierError(msg)


def cone_prefilter(ra: float, dec: float, radius: float):
    """SQL condition on ``cutouts`` that keeps every source within ``radius`` deg.

    A declination band and, away from the poles, a right-ascension window
    widened by 1/cos(dec) (wrapping at 0/360). Exact separations are
    computed afterwards.
    """
    c = CutoutRow.__table__.c
    dec_lo, dec_hi = dec - radius, dec + radius
    condition = c.dec_deg.between(dec_lo, dec_hi)
    if dec_hi >= 90.0 or dec_lo <= -90.0:
        return condition
    half_width = radius / max(math.cos(math.radians(max(abs(dec_lo), abs(dec_hi)))), 1e-12)
    if half_width >= 180.0:
        return condition
    ra_lo, ra_hi = (ra - half_width) % 360.0, (ra + half_width) % 360.0
    if ra_lo <= ra_hi:
        return and_(condition, c.ra_deg.between(ra_lo, ra_hi))
    return and_(condition, or_(c.ra_deg >= ra_lo, c.ra_deg <= ra_hi))


def _latest_variant(connection, row_class, stage: str, pick: str | None):
    """(stage_version, model_ref) to show for ``stage``: ``pick`` or the newest."""
    table = row_class.__table__
    query = select(table.c.stage_version, table.c.model_ref).where(table.c.stage == stage)
    if pick:
        version, _, model = pick.partition("@")
        query = query.where(table.c.stage_version == version)
        if model:
            query = query.where(table.c.model_ref == model)
    row = connection.execute(query.order_by(table.c.updated_at.desc()).limit(1)).first()
    return None if row is None else tuple(row)


def query_results(
    engine: Engine,
    *,
    stage: str | None = None,
    label: str | None = None,
    min_probability: float | None = None,
    run_id: int | None = None,
    ra: float | None = None,
    dec: float | None = None,
    radius: float | None = None,
    versions: Mapping[str, str] | None = None,
    limit: int | None = None,
) -> Table:
    """Cutouts and their results as one table.

    Parameters
    ----------
    engine : Engine
    stage : str, optional
        Keep cutouts with a result of this stage; ``label`` and
        ``min_probability`` apply to it (default: the classification stage
        present, when those filters are given).
    label, min_probability : optional
        Filters on a classification stage.
    run_id : int, optional
        Keep cutouts with a result or error written by this run.
    ra, dec, radius : float, optional
        Cone search, all in degrees (ICRS as stored).
    versions : mapping, optional
        ``{stage: "VERSION"}`` or ``{stage: "VERSION@MODEL"}``.
    limit : int, optional
    """
    versions = dict(versions or {})
    cone = (ra, dec, radius)
    if any(v is not None for v in cone) and any(v is None for v in cone):
        msg = "a cone search needs all of --ra, --dec and --radius"
        raise SurveyClassifierError(msg)
    if radius is not None:
        _check_cone(ra, dec, radius)
    c = CutoutRow.__table__.c
    with engine.connect() as connection:
        variants = {}
        for kind, row_class in RESULT_TABLES.items():
            table = row_class.__table__
            for (name,) in connection.execute(select(table.c.stage).distinct()):
                variant = _latest_variant(connection, row_class, name, versions.get(name))
                if variant is not None:
                    variants[name] = (kind, row_class, variant)
        if (label is not None or min_probability is not None) and stage is None:
            stage = next((n for n, (k, _, _) in variants.items() if k == "classification"), None)
            if stage is None:
                msg = "no classification results in this database to filter on label or probability"
                raise SurveyClassifierError(msg)
        query = select(CutoutRow.__table__)
        if stage is not None:
            if stage not in variants:
                msg = f"no results of stage {stage!r} in this database; stages with results: {sorted(variants)}"
                raise SurveyClassifierError(msg)
            kind, row_class, (version, model) = variants[stage]
            t = row_class.__table__
            condition = [t.c.cutout_id == c.id, t.c.stage == stage, t.c.stage_version == version, t.c.model_ref == model]
            if label is not None or min_probability is not None:
                if kind != "classification":
                    msg = f"stage {stage!r} gives {kind} results; label and probability filters need a classifier"
                    raise SurveyClassifierError(msg)
                if label is not None:
                    condition.append(t.c.label == label)
                if min_probability is not None:
                    condition.append(t.c.probability >= min_probability)
            query = query.where(exists().where(*condition))
        if run_id is not None:
            if connection.execute(select(RunRow.id).where(RunRow.id == run_id)).first() is None:
                msg = f"no run with id {run_id} in this database"
                raise SurveyClassifierError(msg)
            touched = [
                exists().where(rc.__table__.c.cutout_id == c.id, rc.__table__.c.run_id == run_id)
                for rc in (*RESULT_TABLES.values(), ErrorRow)
            ]
            query = query.where(or_(*touched))
        if radius is not None:
            query = query.where(cone_prefilter(ra, dec, radius))
        query = query.order_by(c.id)
        rows = [dict(r._mapping) for r in connection.execute(query)]
        if radius is not None and rows:
            centre = SkyCoord(ra * u.deg, dec * u.deg)
            found = SkyCoord([r["ra_deg"] for r in rows] * u.deg, [r["dec_deg"] for r in rows] * u.deg)
            separation = centre.separation(found).deg
            rows = [dict(r, separation_deg=float(s)) for r, s in zip(rows, separation) if s <= radius]
        if limit is not None:
            rows = rows[:limit]
        table = _cutout_table(rows, with_separation=radius is not None)
        ids = [r["id"] for r in rows]
        for name, (kind, row_class, (version, model)) in sorted(variants.items()):
            _add_stage_columns(connection, table, ids, name, kind, row_class, version, model)
    return table


def _cutout_table(rows: list[dict], *, with_separation: bool) -> Table:
    names = ["cutout_id", "path", "catalogue_id", "ra_deg", "dec_deg", "pixel_scale_arcsec", "sha256"]
    table = Table()
    table["cutout_id"] = np.array([r["id"] for r in rows], dtype=np.int64)
    for name in names[1:]:
        table[name] = _column([r[name] for r in rows])
    if with_separation:
        table["separation_arcsec"] = np.array([r["separation_deg"] * 3600.0 for r in rows])
    extra_keys = sorted({k for r in rows for k in (r["catalogue"] or {})})
    for key in extra_keys:
        if key not in table.colnames:
            table[key] = _column([(r["catalogue"] or {}).get(key) for r in rows])
    table["ra_deg"].unit = u.deg
    table["dec_deg"].unit = u.deg
    return table


def _column(values: list):
    """A column from Python values, masked where None."""
    mask = [v is None for v in values]
    present = [v for v in values if v is not None]
    if not present:
        return MaskedColumn(np.zeros(len(values)), mask=[True] * len(values))
    if all(isinstance(v, bool) for v in present):
        fill, dtype = False, bool
    elif all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        fill, dtype = 0, np.int64
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        fill, dtype = np.nan, np.float64
    else:
        fill, dtype = "", str
        values = [v if isinstance(v, str) or v is None else str(v) for v in values]
    data = np.array([fill if v is None else v for v in values], dtype=dtype)
    return MaskedColumn(data, mask=mask) if any(mask) else data


def _add_stage_columns(connection, table: Table, ids, name, kind, row_class, version, model) -> None:
    t = row_class.__table__
    by_cutout = {}
    for start in range(0, len(ids), 10000):
        chunk = ids[start : start + 10000]
        rows = connection.execute(
            select(t).where(
                t.c.stage == name, t.c.stage_version == version, t.c.model_ref == model, t.c.cutout_id.in_(chunk)
            )
        )
        by_cutout.update({r.cutout_id: dict(r._mapping) for r in rows})
    columns = [col.name for col in t.columns if col.name not in _SKIP]
    for column in columns:
        table[f"{name}_{column}"] = _column([by_cutout.get(i, {}).get(column) for i in ids])
    if kind == "classification":
        classes = sorted({k for r in by_cutout.values() for k in r["probabilities"]})
        for cls in classes:
            table[f"{name}_p_{cls}"] = _column([by_cutout.get(i, {}).get("probabilities", {}).get(cls) for i in ids])
    if kind == "anomaly":
        parts = sorted({k for r in by_cutout.values() for k in r["components"]})
        for part in parts:
            table[f"{name}_{part}"] = _column([by_cutout.get(i, {}).get("components", {}).get(part) for i in ids])
    extras = sorted({k for r in by_cutout.values() for k in (r.get("extra") or {})})
    for key in extras:
        values = [(by_cutout.get(i, {}).get("extra") or {}).get(key) for i in ids]
        if all(v is None or isinstance(v, (int, float, str, bool)) for v in values):
            table[f"{name}_{key}"] = _column(values)


def query_errors(engine: Engine, *, run_id: int | None = None) -> Table:
    """Errors stored against cutouts: path, stage, HDU, type and message."""
    e = ErrorRow.__table__
    c = CutoutRow.__table__
    query = select(c.c.path, e.c.stage, e.c.stage_version, e.c.model_ref, e.c.hdu, e.c.error_type, e.c.message, e.c.run_id)
    query = query.join(c, c.c.id == e.c.cutout_id).order_by(c.c.path, e.c.stage)
    if run_id is not None:
        query = query.where(e.c.run_id == run_id)
    with engine.connect() as connection:
        rows = [dict(r._mapping) for r in connection.execute(query)]
    table = Table()
    for name in ("path", "stage", "stage_version", "model_ref", "hdu", "error_type", "message", "run_id"):
        table[name] = _column([r[name] for r in rows])
    return table


def write_table(table: Table, path: str, fmt: str | None = None) -> str:
    """Write ``table`` as CSV, ECSV, VOTable or FITS (from ``fmt`` or the suffix)."""
    if fmt is None:
        suffix = "." + path.rsplit(".", 1)[-1].lower() if "." in path else ""
        fmt = next((name for name, (_, s) in EXPORT_FORMATS.items() if s == suffix), None)
        fmt = fmt or {".vot": "votable", ".votable": "votable", ".fit": "fits"}.get(suffix)
    if fmt not in EXPORT_FORMATS:
        msg = f"cannot tell the export format of {path!r}; use one of {sorted(EXPORT_FORMATS)}"
        raise SurveyClassifierError(msg)
    out = table.copy()
    if fmt in ("fits", "votable"):
        for name in out.colnames:
            if out[name].dtype.kind == "b" and hasattr(out[name], "mask"):
                out[name] = out[name].filled(False)
    out.write(path, format=EXPORT_FORMATS[fmt][0], overwrite=True)
    return fmt
