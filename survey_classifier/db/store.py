"""Idempotent writes to the results database.

Every write is an upsert on the natural key of its row, so re-running a
batch (after a crash, a retry, or a second ``classify`` of the same files)
updates rows in place and never duplicates them. The same functions serve
the in-process pipeline and the Celery workers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from sqlalchemy import delete, exists, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from survey_classifier.db.models import (
    RESULT_TABLES,
    CatalogueColumnRow,
    CutoutRow,
    ErrorRow,
    ResultRunRow,
    utcnow,
)
from survey_classifier.errors import CatalogueError

__all__ = [
    "upsert_rows", "upsert_cutouts", "store_results", "store_errors", "clear_errors", "record_catalogue_columns",
    "result_from_row", "embedding_array", "record_runs", "of_run",
]

RESULT_KEY = ("cutout_id", "stage", "stage_version", "model_ref")
_UPSERT_CHUNK = 500


def _insert_for(connection: Connection):
    name = connection.dialect.name
    if name == "postgresql":
        return postgresql.insert
    if name == "sqlite":
        return sqlite.insert
    msg = f"database dialect {name!r} is not supported (use SQLite or PostgreSQL)"
    raise NotImplementedError(msg)


def upsert_rows(connection: Connection, table, rows: Sequence[dict], key: Sequence[str]) -> None:
    """Insert ``rows`` into ``table``, updating those whose ``key`` exists.

    Rows must share their keys. One statement is compiled (and cached by
    SQLAlchemy) per table and column set, then executed for all rows.
    """
    if not rows:
        return
    insert = _insert_for(connection)
    columns = [c for c in rows[0] if c not in key]
    statement = insert(table)
    update = {c: statement.excluded[c] for c in columns}
    if update:
        statement = statement.on_conflict_do_update(index_elements=list(key), set_=update)
    else:
        statement = statement.on_conflict_do_nothing(index_elements=list(key))
    for start in range(0, len(rows), _UPSERT_CHUNK):
        connection.execute(statement, list(rows[start : start + _UPSERT_CHUNK]))


def upsert_cutouts(connection: Connection, rows: Sequence[dict]) -> dict[str, int]:
    """Upsert cutout rows keyed by ``path``; returns ``{path: id}``.

    Only the columns a row carries are written: a row holding just ``path``
    (a file that could not be read) leaves what is already stored as it was.
    """
    table = CutoutRow.__table__
    now = utcnow()
    rows = _with_healpix(rows)
    groups: dict[tuple[str, ...], list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append(dict(row, updated_at=now))
    for group in groups.values():
        upsert_rows(connection, table, group, key=("path",))
    paths = [row["path"] for row in rows]
    ids: dict[str, int] = {}
    for start in range(0, len(paths), _UPSERT_CHUNK):
        chunk = paths[start : start + _UPSERT_CHUNK]
        ids.update(connection.execute(select(table.c.path, table.c.id).where(table.c.path.in_(chunk))).all())
    return ids


def _with_healpix(rows: Sequence[dict]) -> list[dict]:
    """Rows carrying a position get its HEALPix pixel (``healpix``), for cone searches."""
    from survey_classifier.db._healpix import healpix_of

    placed = [i for i, row in enumerate(rows) if "ra_deg" in row or "dec_deg" in row]
    if not placed:
        return list(rows)
    coordinates = [(rows[i].get("ra_deg"), rows[i].get("dec_deg")) for i in placed]
    pixels = healpix_of(
        [np.nan if ra is None else ra for ra, _ in coordinates],
        [np.nan if dec is None else dec for _, dec in coordinates],
    )
    rows = list(rows)
    for i, pixel in zip(placed, pixels.tolist()):
        rows[i] = dict(rows[i], healpix=pixel if pixel >= 0 else None)
    return rows


def _result_row(kind: str, result: dict[str, Any]) -> dict[str, Any]:
    """Split a stage result into the table's columns and ``extra``."""
    table = RESULT_TABLES[kind].__table__
    row: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in result.items():
        if name == "embedding" and kind == "classification":
            if value is not None:
                array = np.ascontiguousarray(value, dtype=np.float32).ravel()
                row["embedding"] = array.tobytes()
                row["embedding_dtype"] = "<f4"
            continue
        if name in table.c and name not in ("extra", "id"):
            row[name] = _plain(value)
        else:
            extra[name] = _plain(value)
    if kind == "classification":
        probabilities = row.get("probabilities") or {}
        row["probabilities"] = {str(k): float(v) for k, v in probabilities.items()}
        row["probability"] = float(probabilities.get(row["label"], np.nan)) if probabilities else None
        row.setdefault("embedding", None)
        row.setdefault("embedding_dtype", None)
    row["extra"] = extra or None
    return row


#: Columns of a result table that are bookkeeping or derived, not part of what the stage returned.
_NOT_RESULT = {"id", "cutout_id", "stage", "stage_version", "model_ref", "model_sha256", "run_id", "updated_at",
               "extra", "probability", "embedding_dtype", "rank", "percentile"}


def embedding_array(blob: bytes, dtype: str | None) -> np.ndarray:
    """A stored embedding (its bytes and the ``embedding_dtype`` beside them; little-endian float32 when none)."""
    return np.frombuffer(blob, dtype=np.dtype(dtype or "<f4"))


def result_from_row(kind: str, row) -> dict[str, Any]:
    """The stage result a stored row holds: the inverse of the split done on storing.

    The kind's columns and the keys kept in ``extra``; a classification's
    embedding as a float32 array again. Values are as stored (a NaN was
    stored as None).
    """
    mapping = row._mapping if hasattr(row, "_mapping") else row
    table = RESULT_TABLES[kind].__table__
    result = {name: mapping[name] for name in table.c.keys() if name not in _NOT_RESULT and name in mapping}
    if kind == "classification":
        blob = result.pop("embedding", None)
        if blob is not None:
            result["embedding"] = embedding_array(blob, mapping["embedding_dtype"]).copy()
    result.update(mapping.get("extra") or {})
    return result


def _plain(value):
    """JSON- and database-safe Python value (NaN becomes None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def store_results(
    connection: Connection,
    *,
    kind: str,
    stage: str,
    stage_version: str,
    model_ref: str,
    run_id: int | None,
    results: Iterable[tuple[int, dict[str, Any]]],
    model_sha256: str | None = None,
) -> int:
    """Upsert ``(cutout_id, result)`` pairs of one stage; returns the count.

    A success also clears any error stored earlier for the same cutout and
    the same stage version and model, since it no longer holds.
    """
    now = utcnow()
    rows = []
    for cutout_id, result in results:
        row = _result_row(kind, result)
        row.update(
            cutout_id=cutout_id,
            stage=stage,
            stage_version=stage_version,
            model_ref=model_ref,
            model_sha256=model_sha256,
            run_id=run_id,
            updated_at=now,
        )
        rows.append(row)
    upsert_rows(connection, RESULT_TABLES[kind].__table__, rows, key=RESULT_KEY)
    keys = [(row["cutout_id"], stage, stage_version, model_ref) for row in rows]
    clear_errors(connection, keys)
    record_runs(connection, run_id, keys)
    return len(rows)


def store_errors(connection: Connection, errors: Sequence[dict[str, Any]], run_id: int | None) -> None:
    """Upsert error rows (``cutout_id, stage, stage_version, model_ref, model_sha256, hdu, error_type, message``)."""
    now = utcnow()
    rows = [dict(error, run_id=run_id, updated_at=now) for error in errors]
    upsert_rows(connection, ErrorRow.__table__, rows, key=RESULT_KEY)
    record_runs(connection, run_id, [tuple(row[k] for k in RESULT_KEY) for row in rows])


def record_runs(connection: Connection, run_id: int | None, keys: Sequence[tuple[int, str, str, str]]) -> None:
    """Record that run ``run_id`` wrote or confirmed the results (or errors) under ``keys`` (``result_runs``).

    Kept beside the rows' own ``run_id`` (the last writer), so a rerun
    that updates a row in place leaves the earlier runs' provenance.
    """
    if run_id is None or not keys:
        return
    rows = [dict(zip(("run_id", *RESULT_KEY), (run_id, *key))) for key in dict.fromkeys(keys)]
    upsert_rows(connection, ResultRunRow.__table__, rows, key=("run_id", *RESULT_KEY))


def of_run(table, run_id: int):
    """The condition on the rows of a result (or errors) ``table`` that run ``run_id`` wrote or confirmed."""
    link = ResultRunRow.__table__
    return exists().where(
        link.c.run_id == run_id,
        link.c.cutout_id == table.c.cutout_id,
        link.c.stage == table.c.stage,
        link.c.stage_version == table.c.stage_version,
        link.c.model_ref == table.c.model_ref,
    )


def clear_errors(connection: Connection, keys: Sequence[tuple[int, str, str, str]]) -> None:
    """Delete the errors stored under the given result keys."""
    if not keys:
        return
    table = ErrorRow.__table__
    by_stage: dict[tuple[str, str, str], list[int]] = {}
    for cutout_id, stage, stage_version, model_ref in keys:
        by_stage.setdefault((stage, stage_version, model_ref), []).append(cutout_id)
    for (stage, stage_version, model_ref), cutout_ids in by_stage.items():
        connection.execute(
            delete(table).where(
                table.c.stage == stage,
                table.c.stage_version == stage_version,
                table.c.model_ref == model_ref,
                table.c.cutout_id.in_(cutout_ids),
            )
        )


def _same_unit(a: str | None, b: str | None) -> bool:
    from astropy import units as u

    if (a or None) is None or (b or None) is None:
        return (a or None) == (b or None)
    try:
        return u.Unit(a, parse_strict="silent") == u.Unit(b, parse_strict="silent")
    except ValueError:
        return a == b


def record_catalogue_columns(connection: Connection, columns) -> None:
    """Keep the unit, UCD and description of carried catalogue columns (``catalogue_columns``).

    A column name has one unit in a results database: a catalogue giving a
    stored column another unit is refused, since its values would come back
    labelled with the wrong one. A newer description or UCD replaces the
    stored one; an empty one leaves it.
    """
    columns = {column.name: column for column in columns}
    if not columns:
        return
    table = CatalogueColumnRow.__table__
    stored = {
        row.name: row
        for row in connection.execute(select(table).where(table.c.name.in_(sorted(columns))))
    }
    rows = []
    for name, column in sorted(columns.items()):
        old = stored.get(name)
        if old is not None and not _same_unit(old.unit, column.unit):
            msg = (
                f"catalogue column {name!r} is in {column.unit or 'no unit'} here, but this results database "
                f"holds it in {old.unit or 'no unit'}; convert the column or rename it"
            )
            raise CatalogueError(msg)
        rows.append({
            "name": name,
            "unit": column.unit if old is None else old.unit,
            "ucd": column.ucd or (old.ucd if old is not None else None),
            "description": column.description or (old.description if old is not None else None),
            "updated_at": utcnow(),
        })
    upsert_rows(connection, table, rows, key=("name",))
