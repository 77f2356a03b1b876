"""Deliveries of a batch, counted in the database, so that a batch ends, always.

A worker counts each delivery of a batch in its ``run_batches`` row before
processing it (:func:`begin_delivery`), with its name and the time. A batch
whose process dies while processing it (out of memory, a crash, the hard
time limit) is delivered again by the broker; past ``limit`` deliveries
(``SURVEY_CLASSIFIER_MAX_DELIVERIES``, 3) it is processed one cutout at a
time, which the row's ``split`` column keeps track of::

    {"stored": [ids], "failed": [ids], "current": id or None, "current_retries": n,
     "deaths": {"id": n}, "timeouts": {"id": n}}

Each cutout is named ``current`` before it is processed, with the Celery
retry number of the delivery (``current_retries``), and its outcome is
stored, with ``current`` cleared, in one transaction as soon as it ends. So
when a delivery begins with a ``current`` cutout, the process that was
working on it died: that cutout's ``deaths`` count goes up (or its
``timeouts``, when the worker's main process saw the hard time limit kill
it, :func:`note_hard_timeout`). Unless the delivery is a later *retry* of
the message than the one that named it: then the delivery that named it
ended alive, with an error it handled (the database or broker was
unreachable, so it could not clear ``current``), and nothing died. A cutout that has killed its process
``limit`` times is recorded as failed, with the reason, and the rest of the
batch is processed. Cutouts already stored are not processed again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine

from survey_classifier.db.models import RunBatchRow, utcnow
from survey_classifier.db.store import store_errors
from survey_classifier.runs import READ_STAGE, store_outcomes

__all__ = [
    "DELIVERIES_ENV",
    "Delivery",
    "max_deliveries",
    "begin_delivery",
    "begin_split",
    "begin_cutout",
    "store_cutout",
    "record_culprit",
    "end_cutout",
    "finish_split",
    "note_hard_timeout",
    "death_reason",
]

#: Environment variable: deliveries of a batch before it is processed one cutout at a time.
DELIVERIES_ENV = "SURVEY_CLASSIFIER_MAX_DELIVERIES"

_TABLE = RunBatchRow.__table__


def max_deliveries() -> int:
    """The delivery limit from ``$SURVEY_CLASSIFIER_MAX_DELIVERIES`` (default 3)."""
    return max(1, int(os.environ.get(DELIVERIES_ENV, "3")))


@dataclass
class Delivery:
    """The delivery being begun: its number, and the one-at-a-time progress (None: whole batch)."""

    number: int
    split: dict[str, Any] | None

    def one_at_a_time(self, limit: int) -> bool:
        return self.split is not None or self.number > limit


def _new_split() -> dict[str, Any]:
    return {"stored": [], "failed": [], "current": None, "deaths": {}, "timeouts": {}}


def _locked(connection: Connection, batch_id: int):
    return connection.execute(
        select(_TABLE.c.deliveries, _TABLE.c.split).where(_TABLE.c.id == batch_id).with_for_update()
    ).one()


def _save(connection: Connection, batch_id: int, split: dict[str, Any], **values) -> None:
    connection.execute(update(_TABLE).where(_TABLE.c.id == batch_id).values(split=split, **values))


def begin_delivery(engine: Engine, batch_id: int, worker: str | None, retries: int = 0) -> Delivery:
    """Count a delivery of the batch (before processing); a cutout left ``current`` counts as a death, unless
    this delivery is a later retry (``retries``, Celery's count for the message) than the one that named it."""
    with engine.begin() as connection:
        connection.execute(
            update(_TABLE)
            .where(_TABLE.c.id == batch_id)
            .values(deliveries=_TABLE.c.deliveries + 1, last_worker=worker, last_attempt_at=utcnow())
        )
        number, split = _locked(connection, batch_id)
        if split is not None and split.get("current") is not None:
            split = dict(split)
            if split.get("current_retries", retries) >= retries:  # the same message again: its process died
                key = str(split["current"])
                split["deaths"] = {**split["deaths"], key: split["deaths"].get(key, 0) + 1}
            split["current"] = None
            _save(connection, batch_id, split)
    return Delivery(number=int(number), split=split)


def begin_split(engine: Engine, batch_id: int, reason: str) -> dict[str, Any]:
    """Switch the batch to one cutout at a time (if it is not already); returns its progress."""
    with engine.begin() as connection:
        _, split = _locked(connection, batch_id)
        if split is None:
            split = _new_split()
            _save(connection, batch_id, split, failure=reason)
    return split


def begin_cutout(engine: Engine, batch_id: int, cutout_id: int, retries: int = 0) -> None:
    """Name the cutout about to be processed by a delivery of retry number ``retries``; if its process dies,
    the next delivery knows."""
    with engine.begin() as connection:
        _, split = _locked(connection, batch_id)
        _save(connection, batch_id, {**split, "current": cutout_id, "current_retries": retries})


def end_cutout(engine: Engine, batch_id: int) -> None:
    """The current cutout (if any) was left unfinished without a death (an interruption): clear it."""
    with engine.begin() as connection:
        _, split = _locked(connection, batch_id)
        if split is not None and split.get("current") is not None:
            _save(connection, batch_id, {**split, "current": None})


def store_cutout(engine: Engine, run_id: int, stages, batch_id: int, cutout_id: int, outcomes) -> bool:
    """Store one cutout's outcome and mark it stored in the batch, in one transaction; True if it failed."""
    failed = any(outcome.errors for outcome in outcomes)
    with engine.begin() as connection:
        store_outcomes(connection, run_id, stages, outcomes)
        _, split = _locked(connection, batch_id)
        _save(connection, batch_id, _stored(split, cutout_id, failed))
    return failed


def record_culprit(engine: Engine, run_id: int, batch_id: int, cutout_id: int, error_type: str,
                   reason: str) -> None:
    """Record a cutout that killed its worker process (or outlasted a time limit) as failed, with why."""
    error = {"cutout_id": cutout_id, "stage": READ_STAGE[0], "stage_version": READ_STAGE[1], "model_ref": "",
             "model_sha256": None, "hdu": None, "error_type": error_type, "message": reason}
    with engine.begin() as connection:
        store_errors(connection, [error], run_id)
        _, split = _locked(connection, batch_id)
        _save(connection, batch_id, _stored(split, cutout_id, True))


def _stored(split: dict[str, Any], cutout_id: int, failed: bool) -> dict[str, Any]:
    return {
        **split,
        "stored": [*split["stored"], cutout_id],
        "failed": [*split["failed"], cutout_id] if failed else split["failed"],
        "current": None,
    }


def finish_split(engine: Engine, batch_id: int, worker: str | None) -> int:
    """Mark a batch processed one cutout at a time done; returns its failed cutouts."""
    with engine.begin() as connection:
        _, split = _locked(connection, batch_id)
        n_failed = len(set(split["failed"]))
        connection.execute(
            update(_TABLE)
            .where(_TABLE.c.id == batch_id)
            .values(status="done", n_failed=n_failed, worker=worker, finished_at=utcnow(),
                    attempts=_TABLE.c.attempts + 1, failure=None)
        )
    return n_failed


def note_hard_timeout(engine: Engine, batch_id: int, limit_s: float) -> None:
    """The hard time limit killed the process of this batch: count it against its current cutout."""
    with engine.begin() as connection:
        _, split = _locked(connection, batch_id)
        reason = f"its worker process was killed by the {limit_s:g} s hard time limit"
        if split is None or split.get("current") is None:
            connection.execute(update(_TABLE).where(_TABLE.c.id == batch_id).values(failure=reason))
            return
        key = str(split["current"])
        split = {**split, "current": None, "timeouts": {**split["timeouts"], key: split["timeouts"].get(key, 0) + 1}}
        _save(connection, batch_id, split, failure=reason)


def death_reason(split: dict[str, Any], cutout_id: int, limit: int, hard_limit_s: float) -> tuple[str, str] | None:
    """(error type, reason) when the cutout has killed its process ``limit`` times, else None."""
    key = str(cutout_id)
    deaths, timeouts = split["deaths"].get(key, 0), split["timeouts"].get(key, 0)
    total = deaths + timeouts
    if total < limit:
        return None
    times = "once" if total == 1 else f"{total} times"
    if timeouts == total:
        return "TimeLimitExceeded", f"processing took longer than the {hard_limit_s:g} s hard time limit {times}"
    return "WorkerLost", f"worker process died while processing this cutout {times}: memory or a crash"
