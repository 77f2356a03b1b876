"""Whether the process that drives a run is still alive: its owner tag and heartbeat.

A run is driven by one process: ``classify`` processes it, ``submit``
queues it (from then on the workers own it). That process writes its
``PID@HOST`` in ``runs.owner`` and, every :func:`heartbeat_s` seconds,
the time in ``runs.heartbeat_at``. A run still ``running`` whose owner is
certainly dead (on this host: no such process) or has been silent for
:data:`SILENT_BEATS` heartbeats was interrupted: ``status`` says so, and
``classify`` or ``submit`` of the same inputs resumes it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.engine import Engine

from survey_classifier.db.models import RunRow, utcnow

__all__ = ["HEARTBEAT_ENV", "SILENT_BEATS", "heartbeat_s", "owner_tag", "owner_dead", "Heartbeat"]

log = logging.getLogger(__name__)

#: Seconds between two heartbeats of a run's owner (default 10).
HEARTBEAT_ENV = "SURVEY_CLASSIFIER_HEARTBEAT"
#: An owner silent for this many heartbeats is taken for dead.
SILENT_BEATS = 3


def heartbeat_s() -> float:
    return float(os.environ.get(HEARTBEAT_ENV, "10"))


def owner_tag() -> str:
    """``PID@HOST`` of this process."""
    return f"{os.getpid()}@{socket.gethostname()}"


def owner_dead(owner: str | None, heartbeat_at: datetime | None, now: datetime | None = None) -> bool:
    """True when the process ``owner`` that last beat at ``heartbeat_at`` is certainly gone.

    On this host, the process is looked up: one that no longer exists is
    dead at once, one that exists is alive. On another host, an owner
    silent for :data:`SILENT_BEATS` heartbeats is. A run without a
    heartbeat (none recorded, or cleared once a Celery run was queued) has
    no owner to lose.
    """
    if owner is None or heartbeat_at is None:
        return False
    pid, _, host = owner.partition("@")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return False
    now = now or utcnow()
    if heartbeat_at.tzinfo is None:  # SQLite returns naive UTC
        now = now.replace(tzinfo=None)
    return now - heartbeat_at > timedelta(seconds=SILENT_BEATS * heartbeat_s())


class Heartbeat:
    """Claim run ``run_id`` for this process and beat until the ``with`` block ends.

    A database error in a beat is logged and the next beat tries again: a
    short outage must not stop the run.
    """

    def __init__(self, engine: Engine, run_id: int, *, interval_s: float | None = None):
        self.engine = engine
        self.run_id = run_id
        self.interval_s = heartbeat_s() if interval_s is None else interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-run-{run_id}", daemon=True)

    def beat(self) -> None:
        table = RunRow.__table__
        with self.engine.begin() as connection:
            connection.execute(
                update(table).where(table.c.id == self.run_id).values(owner=owner_tag(), heartbeat_at=utcnow())
            )

    def _try_beat(self) -> None:
        try:
            self.beat()
        except Exception as exc:  # a missed beat is tried again; the run goes on
            reason = " ".join(str(getattr(exc, "orig", None) or exc).split())[:200]
            log.warning("run %s: heartbeat not recorded (%s: %s)", self.run_id, type(exc).__name__, reason)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._try_beat()

    def __enter__(self) -> Heartbeat:
        self._try_beat()
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
