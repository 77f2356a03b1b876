"""Submitting runs to Celery workers and following them from the database.

The database is the source of truth: a run's batches are rows of
``run_batches``; a message in the queue only says "process batch N". So
progress, status and retries are read from and decided by the database,
whatever happened to the broker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from survey_classifier.cutout import CutoutSource
from survey_classifier.db.models import ErrorRow, RunBatchRow, RunRow, utcnow
from survey_classifier.errors import BrokerError, DatabaseError, SurveyClassifierError
from survey_classifier.heartbeat import Heartbeat, owner_dead
from survey_classifier.runs import register_run, resume_run, retry_unreachable, update_run
from survey_classifier.stages.base import Stage
from survey_classifier.stages.registry import order_stages

__all__ = [
    "RunStatus",
    "BatchState",
    "STALL_ENV",
    "stall_after_s",
    "PUBLISH_RETRY",
    "check_broker",
    "submit_run",
    "enqueue_batches",
    "unsent_batches",
    "run_status",
    "retry_failed",
    "wait_for_run",
]

#: Seconds after which a batch taken by a dead worker, or whose message was lost, is sent again
#: (read by the workers' sweeper, :mod:`survey_classifier.workers.sweeper`; default 120).
STALL_ENV = "SURVEY_CLASSIFIER_STALL_AFTER"
#: How one message is published while the broker is unreachable: retried for about half a minute.
PUBLISH_RETRY = {"max_retries": 8, "interval_start": 0.5, "interval_step": 1.0, "interval_max": 5.0}
#: Batches whose ``queued_at`` is set in one update, just before their messages are sent.
_SEND_CHUNK = 500
#: Errors of a database that is down or restarting, which a waiting ``submit`` outlives.
_DATABASE_DOWN = (OperationalError, InterfaceError)

log = logging.getLogger(__name__)


@dataclass
class BatchState:
    """One batch as ``status`` shows it."""

    index: int
    status: str
    #: Seconds since its message was sent (queued) or since it ended (done, failed).
    age_s: float
    #: The worker that stored it, or the last one that took it (where the database records it).
    worker: str | None = None
    #: How many times a worker took it (where the database records it).
    deliveries: int | None = None
    #: Why it failed.
    reason: str | None = None


@dataclass
class RunStatus:
    run_id: int
    status: str
    n_cutouts: int
    n_done: int
    n_failed: int
    batches: dict[str, int]
    errors: list[tuple[str, str, int]]
    executor: str = "celery"
    config: dict = field(default_factory=dict)
    #: ``PID@HOST`` of the process that drives (or drove) the run.
    owner: str | None = None
    #: What the run is doing: its stored status, or "interrupted" (its owner died), "incomplete" (only
    #: failed batches left) or "stalled" (no batch stored for ``stalled_after_s``).
    state: str = ""
    #: Seconds since the last batch was stored (or the run started).
    idle_s: float = 0.0
    stalled_after_s: float = 600.0
    #: The batches not done (every batch on request), in order.
    details: list[BatchState] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.batches.get("queued", 0) == 0 and self.batches.get("failed", 0) == 0

    @property
    def n_left(self) -> int:
        return sum(n for status, n in self.batches.items() if status != "done")


def stall_after_s() -> float:
    return float(os.environ.get(STALL_ENV, "120"))


def _broker_shown() -> str:
    from kombu.utils.url import maybe_sanitize_url

    from survey_classifier.workers.app import app

    return maybe_sanitize_url(app.conf.broker_url)


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def check_broker(timeout_s: float = 5.0) -> None:
    """Raise :class:`BrokerError` (one line) unless the broker answers within about ``timeout_s``."""
    from survey_classifier.workers.app import app

    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0.5, timeout=timeout_s)
    except Exception as exc:  # kombu wraps the transport's errors: any of them means "not reachable"
        msg = (
            f"cannot reach the broker at {_broker_shown()} ({_reason(exc)}): is Redis running and the --broker "
            "URL right? Nothing was queued."
        )
        raise BrokerError(msg) from exc


def enqueue_batches(engine: Engine, batch_ids: Sequence[int], *, queue: str = "cpu") -> int:
    """Send one message per batch to ``queue``: ids and the run's model references, JSON.

    Each batch's ``queued_at`` is set just before its message is sent (the
    sweeper's clock for lost messages starts then). A publish is retried
    while the broker is unreachable (:data:`PUBLISH_RETRY`); past that a
    :class:`BrokerError` says how many were sent and what sends the rest.
    """
    from kombu.exceptions import OperationalError as BrokerDown

    from survey_classifier.workers.tasks import process_batch

    table = RunBatchRow.__table__
    with engine.connect() as connection:
        rows = connection.execute(
            select(table.c.id, table.c.run_id, table.c.cutout_ids)
            .where(table.c.id.in_(list(batch_ids)))
            .order_by(table.c.id)
        ).all()
        described = dict(
            connection.execute(
                select(RunRow.id, RunRow.stages).where(RunRow.id.in_({row.run_id for row in rows}))
            ).all()
        )
    sent = 0
    for first in range(0, len(rows), _SEND_CHUNK):
        chunk = rows[first : first + _SEND_CHUNK]
        retry_unreachable(lambda chunk=chunk: _mark_sent(engine, [row.id for row in chunk]))
        for batch_id, run_id, cutout_ids in chunk:
            models = {s["name"]: s["model_artefact"] for s in described[run_id] if s.get("model_artefact")}
            try:
                # no time limits in the message: those of the workers' own environment apply
                # (SURVEY_CLASSIFIER_SOFT_TIME_LIMIT, SURVEY_CLASSIFIER_TIME_LIMIT), not the submitter's
                process_batch.apply_async(
                    args=[run_id, batch_id, cutout_ids], kwargs={"models": models}, queue=queue, retry=True,
                    retry_policy=PUBLISH_RETRY, time_limit=None, soft_time_limit=None,
                )
            except (BrokerDown, OSError) as exc:
                msg = (
                    f"the broker at {_broker_shown()} stopped answering ({_reason(exc)}) after {sent} of {len(rows)} "
                    "batches were sent; the workers' sweeper sends the others once it is back (or run the same "
                    "command again)"
                )
                raise BrokerError(msg) from exc
            sent += 1
    return sent


def _mark_sent(engine: Engine, batch_ids: list[int]) -> None:
    table = RunBatchRow.__table__
    with engine.begin() as connection:
        connection.execute(update(table).where(table.c.id.in_(batch_ids)).values(queued_at=utcnow()))


def submit_run(
    engine: Engine,
    sources: Sequence[CutoutSource],
    stages: Sequence[Stage],
    *,
    batch_size: int = 256,
    queue: str = "cpu",
    config: dict | None = None,
    announce: Callable[[int, bool], None] | None = None,
) -> tuple[int, int]:
    """Register a run and its batches, then queue them; returns (run id, batches).

    ``announce`` is called with the run id (and whether it is resumed) as
    soon as the run is recorded. While it registers and queues, this process
    beats on the run (an owner that dies meanwhile leaves an *interrupted*
    run, which ``status`` shows); once every message is sent, the workers
    own the run. An interrupted run of the same inputs, stages and
    parameters is resumed instead: its batches without a message are sent.
    """
    from survey_classifier.workers.app import QUEUES

    if queue not in QUEUES:
        msg = f"unknown queue {queue!r}; workers listen on {list(QUEUES)}"
        raise SurveyClassifierError(msg)
    ordered = order_stages(list(stages))
    run_config = {"batch_size": batch_size, "queue": queue, **(config or {})}
    n_cutouts = len({source.path for source in sources})
    resumed = resume_run(engine, executor="celery", config=run_config, stages=ordered, n_cutouts=n_cutouts)
    with contextlib.ExitStack() as beating:

        def started(run_id: int) -> None:
            if announce is not None:
                announce(run_id, resumed is not None)
            beating.enter_context(Heartbeat(engine, run_id))

        if resumed is None:
            run_id, batches = register_run(
                engine, sources, ordered, batch_size=batch_size, config=run_config, executor="celery",
                on_start=started,
            )
            enqueue_batches(engine, [batch_id for batch_id, _ in batches], queue=queue)
        else:
            run_id = resumed
            started(run_id)
            enqueue_batches(engine, unsent_batches(engine, run_id), queue=queue)
    retry_unreachable(lambda: update_run(engine, run_id, heartbeat_at=None))
    return run_id, retry_unreachable(lambda: _count_batches(engine, run_id))


def _count_batches(engine: Engine, run_id: int) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).where(RunBatchRow.run_id == run_id)).scalar_one()


def unsent_batches(engine: Engine, run_id: int) -> list[int]:
    """The queued batches of a run without a message in the broker (with a broker other than Redis,
    which cannot be read: every queued batch)."""
    from survey_classifier.workers.app import app

    table = RunBatchRow.__table__

    def queued() -> list[int]:
        with engine.connect() as connection:
            return list(connection.execute(
                select(table.c.id).where(table.c.run_id == run_id, table.c.status == "queued").order_by(table.c.id)
            ).scalars())

    candidates = queued()
    if not app.conf.broker_url.startswith(("redis://", "rediss://")):
        return candidates
    import redis

    from survey_classifier.workers.queues import QUEUES
    from survey_classifier.workers.sweeper import batches_in_broker

    client = redis.Redis.from_url(app.conf.broker_url, socket_connect_timeout=10, socket_timeout=30)
    try:
        present = batches_in_broker(client, QUEUES)
    finally:
        client.close()
    still_queued = set(queued())  # a batch stored meanwhile has left the broker, and needs nothing
    return [batch_id for batch_id in candidates if batch_id not in present and batch_id in still_queued]


def run_status(engine: Engine, run_id: int, *, stalled_after_s: float = 600.0, every_batch: bool = False,
               max_details: int = 50) -> RunStatus:
    """Counts of batches by status, cutouts done and failed, errors by reason, what the run is doing
    (``state``) and the batches not done (``every_batch``: all of them), at most ``max_details``."""
    batches = RunBatchRow.__table__
    errors = ErrorRow.__table__
    with engine.connect() as connection:
        run = connection.execute(select(RunRow.__table__).where(RunRow.__table__.c.id == run_id)).first()
        if run is None:
            raise _no_such_run(run_id)
        by_status = dict(
            connection.execute(
                select(batches.c.status, func.count()).where(batches.c.run_id == run_id).group_by(batches.c.status)
            ).all()
        )
        n_done, n_failed, last_stored = connection.execute(
            select(
                func.coalesce(func.sum(batches.c.n_cutouts), 0), func.coalesce(func.sum(batches.c.n_failed), 0),
                func.max(batches.c.finished_at),
            ).where(batches.c.run_id == run_id, batches.c.status == "done")
        ).one()
        reasons = connection.execute(
            select(errors.c.stage, errors.c.message, func.count())
            .where(errors.c.run_id == run_id)
            .group_by(errors.c.stage, errors.c.message)
            .order_by(func.count().desc())
            .limit(20)
        ).all()
        details = _batch_states(connection, run_id, every_batch, max_details)
    status = RunStatus(
        run_id=run_id,
        status=run.status,
        n_cutouts=run.n_cutouts,
        n_done=int(n_done),
        n_failed=int(n_failed),
        batches={str(k): int(v) for k, v in by_status.items()},
        errors=[(stage, message, int(count)) for stage, message, count in reasons],
        executor=run.executor,
        config=run.config or {},
        owner=run.owner,
        idle_s=_seconds_since(last_stored or run.started_at),
        stalled_after_s=stalled_after_s,
        details=details,
    )
    status.state = run.status
    if run.status == "running" and owner_dead(run.owner, run.heartbeat_at):
        status.state = "interrupted"
    elif run.status == "running" and status.batches.get("failed") and not status.batches.get("queued"):
        status.state = "incomplete"  # nothing left to do but the batches given up
    elif run.status == "running" and status.n_left and status.idle_s > stalled_after_s:
        status.state = "stalled"
    return status


def _seconds_since(moment) -> float:
    now = utcnow()
    if moment.tzinfo is None:  # SQLite returns naive UTC
        now = now.replace(tzinfo=None)
    return max(0.0, (now - moment).total_seconds())


def _batch_states(connection, run_id: int, every_batch: bool, limit: int) -> list[BatchState]:
    table = RunBatchRow.__table__
    columns = [table.c.batch_index, table.c.status, table.c.worker, table.c.queued_at, table.c.finished_at,
               table.c.deliveries, table.c.last_worker, table.c.failure]
    query = select(*columns).where(table.c.run_id == run_id).order_by(table.c.batch_index).limit(limit)
    if not every_batch:
        query = query.where(table.c.status != "done")
    states = []
    for row in connection.execute(query).mappings():
        ended = row["finished_at"] if row["status"] == "done" else None
        states.append(BatchState(
            index=row["batch_index"],
            status=row["status"],
            age_s=_seconds_since(ended or row["queued_at"]),
            worker=row["last_worker"] or row["worker"],
            deliveries=row["deliveries"],
            reason=row["failure"],
        ))
    return states


def retry_failed(engine: Engine, run_id: int, *, queue: str = "cpu", stalled_after_s: float | None = None) -> int:
    """Queue again the batches that failed, that hold cutouts with errors, or
    (with ``stalled_after_s``) that were queued longer ago than that.

    Safe at any time: a batch processed twice is stored to the same rows.
    """
    table = RunBatchRow.__table__
    _require_run(engine, run_id)
    condition = (table.c.status == "failed") | (table.c.n_failed > 0)
    if stalled_after_s is not None:
        cutoff = utcnow() - timedelta(seconds=stalled_after_s)
        condition = condition | ((table.c.status == "queued") & (table.c.queued_at < cutoff))
    with engine.begin() as connection:
        ids = list(connection.execute(select(table.c.id).where(table.c.run_id == run_id, condition)).scalars())
        if ids:
            connection.execute(update(table).where(table.c.id.in_(ids)).values(status="queued", queued_at=utcnow()))
            connection.execute(
                update(RunRow.__table__)
                .where(RunRow.__table__.c.id == run_id)
                .values(status="running", finished_at=None)
            )
    return enqueue_batches(engine, ids, queue=queue) if ids else 0


def _no_such_run(run_id: int) -> SurveyClassifierError:
    msg = f"no run with id {run_id} in this database (`survey-classifier runs list` shows them)"
    return SurveyClassifierError(msg)


def _require_run(engine: Engine, run_id: int) -> None:
    with engine.connect() as connection:
        if connection.execute(select(RunRow.id).where(RunRow.id == run_id)).first() is None:
            raise _no_such_run(run_id)


def _close_if_stored(engine: Engine, status: RunStatus) -> None:
    """Close a run every batch of which is stored, if its workers have not (one that died before closing it):
    with its recorded stages, so its run-wide results are computed; once (a claim). A stage or model this
    machine cannot rebuild leaves the close to the workers' sweeper."""
    from survey_classifier.closing import close_stored_run

    if status.status != "running" or set(status.batches) != {"done"}:
        return
    try:
        close_stored_run(engine, status.run_id)
    except SurveyClassifierError as exc:
        log.warning("run %s: every batch is stored, but this process cannot close it (%s); the workers' sweeper "
                    "will", status.run_id, exc)


def wait_for_run(
    engine: Engine,
    run_id: int,
    *,
    poll_s: float = 1.0,
    timeout_s: float | None = None,
    progress: Callable[[RunStatus], None] | None = None,
    outage_s: float = 600.0,
    on_outage: Callable[[float, BaseException], None] | None = None,
) -> RunStatus:
    """Poll the database until every batch of the run is done or failed.

    A database that is down or restarting is polled again (``on_outage``
    is told how long it has been unreachable) for up to ``outage_s``
    seconds; past that a one-line :class:`DatabaseError` says that the run
    goes on without this process.
    """
    start = time.monotonic()
    down_since = None
    while True:
        try:
            status = run_status(engine, run_id)
            if progress is not None:
                progress(status)
            if status.batches.get("queued", 0) == 0:
                _close_if_stored(engine, status)
                return run_status(engine, run_id)
            down_since = None
        except _DATABASE_DOWN as exc:
            down_since = time.monotonic() if down_since is None else down_since
            down_s = time.monotonic() - down_since
            if down_s > outage_s:
                msg = (
                    f"the database has not answered for {down_s:.0f} s ({_reason(getattr(exc, 'orig', None) or exc)}); "
                    f"run {run_id} goes on on the workers: follow it with `survey-classifier status {run_id}`"
                )
                raise DatabaseError(msg) from exc
            if on_outage is not None:
                on_outage(down_s, exc)
            status = None
        if status is not None and timeout_s is not None and time.monotonic() - start > timeout_s:
            return status
        time.sleep(poll_s)

