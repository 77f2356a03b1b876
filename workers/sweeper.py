"""The workers' sweeper: no batch stays stuck when the broker loses its messages or a worker dies.

A thread in the main process of every worker (a step of Celery's consumer
blueprint, so it starts and stops with the worker; no Celery beat, no
other process to deploy or keep single) does three things every
``stall_after / 4`` seconds:

1. **Leases.** Redis keeps each message a worker has taken but not yet
   acknowledged in its ``unacked`` set, with the time it was taken, and
   gives it back to the queue once that time is older than the
   *visibility timeout*. The visibility timeout here is short
   (``SURVEY_CLASSIFIER_STALL_AFTER``, 120 s by default) and the sweeper
   of a live worker renews the time of every message its worker holds, so
   a batch being processed, however long, is never given back, and the
   batch of a worker that died (SIGKILL, lost machine) is given back
   ``stall_after`` seconds after its last renewal, to a live worker.
   The messages a worker holds are known from public Celery and kombu
   interfaces only: the ``task_received`` signal (sent for every task
   message the worker takes, a retry waiting for its countdown included)
   and ``Message.acknowledged`` (acked, rejected or requeued).
2. **Lost messages.** Once per interval in the whole cluster (a Redis
   lock), the database's view is compared with the broker's: a batch of a
   running Celery run still ``queued`` ``stall_after`` seconds after its
   message was sent, whose message is neither waiting in a queue nor held
   by a worker, was lost (a Redis restarted without persistence, a
   submitter killed while queueing); it is claimed in the database and
   sent again. Stores are idempotent, so a batch sent twice is harmless.
3. **Runs left open.** In the same locked step, a running Celery run whose
   batches are all done (the last stored more than an interval ago) but
   that nobody closed (its worker died between the store and the close)
   is closed with its recorded stages (:mod:`survey_classifier.closing`),
   once: the close is a claim in the database.

Only the Redis broker can be read this way; with another broker the
sweeper renews nothing and looks for no lost message (RabbitMQ gives a
dead worker's messages back by itself and keeps durable queues).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from datetime import timedelta

from celery import bootsteps
from celery.signals import task_received
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from survey_classifier.db.models import RunBatchRow, RunRow, utcnow
from survey_classifier.distributed import enqueue_batches, stall_after_s
from survey_classifier.heartbeat import owner_dead

__all__ = ["Sweeper", "batches_in_broker", "sweep_interval_s", "stale_batches", "requeue_lost"]

log = logging.getLogger(__name__)

#: The Redis key that makes one sweeper in the cluster look for lost messages per interval.
_LOCK_KEY = "survey_classifier:sweeper"
_TASK = "survey_classifier.process_batch"


def sweep_interval_s() -> float:
    return max(0.5, stall_after_s() / 4)


def _batch_id(raw: bytes | str) -> int | None:
    """The batch id a raw kombu message of the batch task carries, or None for any other message."""
    try:
        message = json.loads(raw)
        if isinstance(message, list):  # an unacked entry: [message, exchange, routing key]
            message = message[0]
        if message.get("headers", {}).get("task") != _TASK:
            return None
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        return int(args[1])
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def batches_in_broker(client, queues, *, page: int = 1000) -> set[int]:
    """Ids of the batches whose message waits in one of ``queues`` or is held by a worker.

    The queues are read before the workers' ``unacked`` set: a message moves
    from the first to the second, so one moving meanwhile is still seen.
    """
    from kombu.transport.redis import PRIORITY_STEPS, Channel

    found: set[int] = set()
    for queue in queues:
        for key in [queue] + [f"{queue}{Channel.sep}{p}" for p in PRIORITY_STEPS if p]:
            for first in range(0, client.llen(key), page):
                found.update(_batch_id(raw) for raw in client.lrange(key, first, first + page - 1))
    for _, raw in client.hscan_iter(Channel.unacked_key, count=page):
        found.add(_batch_id(raw))
    found.discard(None)
    return found


class Sweeper(bootsteps.StartStopStep):
    """The sweeper thread of one worker (see the module's description)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.consumer = parent
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._engine = None
        self._client = None
        #: Messages this worker holds, by delivery tag (kept from Celery's public task_received signal).
        self._held: dict[str, object] = {}
        self._held_lock = threading.Lock()
        task_received.connect(self._received, weak=False)

    def start(self, parent) -> None:
        if not parent.app.conf.broker_url.startswith(("redis://", "rediss://")):
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="survey-classifier-sweeper", daemon=True)
            self._thread.start()

    def shutdown(self, parent) -> None:
        task_received.disconnect(self._received)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        import redis

        self._client = redis.Redis.from_url(self.consumer.app.conf.broker_url, socket_timeout=10,
                                            socket_connect_timeout=5)
        log.info("sweeper: batches stalled for %.0f s are sent again (checked every %.1f s)", stall_after_s(),
                 sweep_interval_s())
        while not self._stop.wait(sweep_interval_s()):
            for step in (self.renew_leases, self.sweep_cluster):
                try:
                    step()
                except Exception:  # the broker or the database is away: try again next interval
                    log.warning("sweeper: %s failed; trying again in %.1f s", step.__name__, sweep_interval_s(),
                                exc_info=True)

    def _received(self, sender=None, request=None, **_kwargs) -> None:
        """Celery's ``task_received`` signal (the consumer's thread): this worker now holds the request's message."""
        if sender is not self.consumer or request is None:
            return
        message = request.message
        with self._held_lock:
            self._held[message.delivery_tag] = message

    def _held_tags(self) -> list[str]:
        """Delivery tags of the messages this worker holds: received (``task_received``), not yet acknowledged,
        rejected or requeued (``Message.acknowledged``), on the consumer's current channel (after a reconnection
        the old channel's messages were given back by kombu)."""
        channel = getattr(getattr(self.consumer, "task_consumer", None), "channel", None)
        with self._held_lock:
            for tag, message in list(self._held.items()):
                if message.acknowledged or message.channel is not channel:
                    del self._held[tag]
            return list(self._held)

    def renew_leases(self) -> None:
        """Mark the messages this worker holds as taken now, so that none is given back while it is alive."""
        from kombu.transport.redis import Channel

        tags = self._held_tags()
        if tags:
            self._client.zadd(Channel.unacked_index_key, dict.fromkeys(tags, time.time()), xx=True)

    def sweep_cluster(self) -> None:
        """What one sweeper in the cluster does per interval (a Redis lock): lost batches, runs left open."""
        from survey_classifier.db import make_engine

        if not self._client.set(_LOCK_KEY, os.getpid(), nx=True, ex=max(1, int(sweep_interval_s()))):
            return
        if self._engine is None:
            self._engine = make_engine(os.environ.get("SURVEY_CLASSIFIER_DB"))
        self.requeue_lost()
        self.close_stored_runs()

    def close_stored_runs(self) -> None:
        """Close the runs whose batches are all stored but that nobody closed (a worker that died between its
        store of the last batch and the close, or whose close failed)."""
        from survey_classifier.closing import close_stored_run, stored_unclosed_runs

        for run_id in stored_unclosed_runs(self._engine, sweep_interval_s()):
            if close_stored_run(self._engine, run_id):
                log.warning("sweeper: run %s had every batch stored but was still running (the worker that stored "
                            "its last batch died or could not close it); closed it", run_id)

    def requeue_lost(self) -> None:
        """Send again the stale batches the broker no longer has."""
        from survey_classifier.workers.queues import QUEUES

        stale = stale_batches(self._engine, stall_after_s())
        if not stale:
            return
        present = batches_in_broker(self._client, QUEUES)
        lost = [entry for entry in stale if entry[0] not in present]
        if not lost:
            return
        sent = requeue_lost(self._engine, lost, stall_after_s())
        if sent:
            runs = sorted({run_id for batch_id, run_id, _ in lost if batch_id in set(sent)})
            log.warning("sweeper: %d batches of runs %s had no message in the broker (lost); sent again: %s",
                        len(sent), runs, sent[:20])


def stale_batches(engine: Engine, older_than_s: float, *, limit: int = 1000) -> list[tuple[int, int, str]]:
    """Batches of running Celery runs still queued ``older_than_s`` seconds after their message was sent:
    ``(batch id, run id, queue)``, oldest first.

    A run whose submitter is alive and still queueing is left to it. These
    batches are waiting in the broker, being processed, or lost: the
    sweeper (:class:`Sweeper`) asks the broker which.
    """
    batches, runs = RunBatchRow.__table__, RunRow.__table__
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    with engine.connect() as connection:
        rows = connection.execute(
            select(batches.c.id, batches.c.run_id, runs.c.config, runs.c.owner, runs.c.heartbeat_at)
            .join(runs, runs.c.id == batches.c.run_id)
            .where(
                runs.c.executor == "celery", runs.c.status == "running", batches.c.status == "queued",
                batches.c.queued_at < cutoff,
            )
            .order_by(batches.c.queued_at)
            .limit(limit)
        ).all()
    submitting = {
        row.run_id for row in rows if row.heartbeat_at is not None and not owner_dead(row.owner, row.heartbeat_at)
    }
    return [
        (row.id, row.run_id, (row.config or {}).get("queue", "cpu")) for row in rows if row.run_id not in submitting
    ]


def requeue_lost(engine: Engine, lost: Sequence[tuple[int, int, str]], older_than_s: float) -> list[int]:
    """Send again the batches of ``lost`` (from :func:`stale_batches`, absent from the broker) still queued
    and stale; returns the ids sent.

    Each batch is claimed in the database first (its ``queued_at`` moved to
    now, only if it was still stale), so of several sweepers one sends it.
    A run whose submitter died is adopted: the workers own it from now on.
    """
    batches, runs = RunBatchRow.__table__, RunRow.__table__
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    queue_of = {batch_id: queue for batch_id, _, queue in lost}
    with engine.begin() as connection:
        claimed = list(
            connection.execute(
                update(batches)
                .where(batches.c.id.in_(list(queue_of)), batches.c.status == "queued", batches.c.queued_at < cutoff)
                .values(queued_at=utcnow())
                .returning(batches.c.id, batches.c.run_id)
            ).all()
        )
        if claimed:
            connection.execute(
                update(runs).where(runs.c.id.in_({run_id for _, run_id in claimed})).values(heartbeat_at=None)
            )
    sent = []
    for queue in sorted({queue_of[batch_id] for batch_id, _ in claimed}):
        ids = [batch_id for batch_id, _ in claimed if queue_of[batch_id] == queue]
        enqueue_batches(engine, ids, queue=queue)
        sent += ids
    return sent
