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
from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from survey_classifier.db.models import RESULT_TABLES, CutoutRow, ErrorRow, utcnow

__all__ = ["upsert_rows", "upsert_cutouts", "store_results", "store_errors", "clear_errors"]

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
    """Insert ``rows`` into ``table``, updating those whose ``key`` exists."""
    if not rows:
        return
    insert = _insert_for(connection)
    columns = [c for c in rows[0] if c not in key]
    for start in range(0, len(rows), _UPSERT_CHUNK):
        statement = insert(table).values(list(rows[start : start + _UPSERT_CHUNK]))
        update = {c: statement.excluded[c] for c in columns}
        if update:
            statement = statement.on_conflict_do_update(index_elements=list(key), set_=update)
        else:
            statement = statement.on_conflict_do_nothing(index_elements=list(key))
        connection.execute(statement)


def upsert_cutouts(connection: Connection, rows: Sequence[dict]) -> dict[str, int]:
    """Upsert cutout rows keyed by ``path``; returns ``{path: id}``.

    A row may carry only ``path`` (a file that could not be read): existing
    fields of a cutout already stored are then left as they were.
    """
    table = CutoutRow.__table__
    now = utcnow()
    full = [dict(row, updated_at=now) for row in rows if "sha256" in row]
    bare = [{"path": row["path"], "updated_at": now} for row in rows if "sha256" not in row]
    upsert_rows(connection, table, full, key=("path",))
    if bare:
        insert = _insert_for(connection)
        connection.execute(insert(table).values(bare).on_conflict_do_nothing(index_elements=["path"]))
    paths = [row["path"] for row in rows]
    found = connection.execute(select(table.c.path, table.c.id).where(table.c.path.in_(paths)))
    return dict(found.all())


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
            run_id=run_id,
            updated_at=now,
        )
        rows.append(row)
    upsert_rows(connection, RESULT_TABLES[kind].__table__, rows, key=RESULT_KEY)
    clear_errors(connection, [(row["cutout_id"], stage, stage_version, model_ref) for row in rows])
    return len(rows)


def store_errors(connection: Connection, errors: Sequence[dict[str, Any]], run_id: int | None) -> None:
    """Upsert error rows (``cutout_id, stage, stage_version, model_ref, hdu, error_type, message``)."""
    now = utcnow()
    rows = [dict(error, run_id=run_id, updated_at=now) for error in errors]
    upsert_rows(connection, ErrorRow.__table__, rows, key=RESULT_KEY)


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
