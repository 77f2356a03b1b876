"""The Celery application, configured once, from the environment.

==========================================  ===================================  ==========================
variable                                    meaning                              default
==========================================  ===================================  ==========================
``SURVEY_CLASSIFIER_BROKER``                broker URL                           ``redis://127.0.0.1:6379/0``
``SURVEY_CLASSIFIER_DB``                    results database URL                 the SQLite default
``SURVEY_CLASSIFIER_SOFT_TIME_LIMIT``       seconds before a batch is told to    ``600``
                                            stop (SoftTimeLimitExceeded)
``SURVEY_CLASSIFIER_TIME_LIMIT``            seconds before its process is killed ``900``
``SURVEY_CLASSIFIER_STALL_AFTER``           seconds after which the batch of a   ``120``
                                            worker that died, or whose message
                                            the broker lost, is sent again
                                            (the sweeper: ``workers/sweeper.py``)
``SURVEY_CLASSIFIER_WARM``                  ``0``: do not load and warm the      ``1``
                                            default stages when a worker
                                            process starts
``SURVEY_CLASSIFIER_WARM_TIMEOUT``          seconds a worker process may take    ``300``
                                            to start (warming included)
``SURVEY_CLASSIFIER_DB_RETRIES``            retries of a batch, with backoff,    ``12``
                                            while the database or broker is
                                            unreachable; then its message goes
                                            back to the queue
``SURVEY_CLASSIFIER_RETRY_BACKOFF_MAX``     longest wait between two retries, s  ``30``
==========================================  ===================================  ==========================

Messages are JSON only (pickle is refused), acknowledged late (after the
batch's outcome is committed), rejected back to the queue when the worker
process is lost or killed by the hard time limit, and prefetched one at a
time, so a killed worker loses no batch and a slow batch does not hold
others hostage.
"""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

from survey_classifier.distributed import stall_after_s
from survey_classifier.workers.queues import QUEUES
from survey_classifier.workers.sweeper import Sweeper, sweep_interval_s

__all__ = ["app", "QUEUES", "broker_url", "use_broker", "retry_budget"]


def broker_url() -> str:
    return os.environ.get("SURVEY_CLASSIFIER_BROKER", "redis://127.0.0.1:6379/0")


app = Celery("survey_classifier", include=["survey_classifier.workers.tasks"])
app.steps["consumer"].add(Sweeper)  # leases of held messages renewed, lost batches sent again
app.conf.update(
    broker_url=broker_url(),
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    event_serializer="json",
    task_ignore_result=True,
    result_backend=None,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_acks_on_timeout=False,  # a batch killed by the hard time limit goes back to the queue
    worker_prefetch_multiplier=1,
    task_soft_time_limit=int(os.environ.get("SURVEY_CLASSIFIER_SOFT_TIME_LIMIT", "600")),
    task_time_limit=int(os.environ.get("SURVEY_CLASSIFIER_TIME_LIMIT", "900")),
    task_queues=[Queue(name) for name in QUEUES],
    task_default_queue="cpu",
    broker_transport_options={
        # a message taken by a worker is given back after this long without its lease renewed (workers/sweeper.py)
        "visibility_timeout": stall_after_s(),
        # look for such messages every interval seconds (not every 10 x interval)
        "unacked_restore_interval": sweep_interval_s(),
        "unacked_restore_throttle": 1,
        # a worker killed while giving messages back holds their lock this long at most (not 300 s)
        "unacked_mutex_expire": max(5, int(stall_after_s())),
        "socket_timeout": 30,
        "socket_connect_timeout": 10,
        "health_check_interval": 10,
    },
    broker_connection_retry_on_startup=True,
    broker_connection_max_retries=None,
    worker_hijack_root_logger=False,
    # a process warms its stages before it reports up (workers/warm.py): give it time to
    worker_proc_alive_timeout=float(os.environ.get("SURVEY_CLASSIFIER_WARM_TIMEOUT", "300")),
    worker_send_task_events=True,
    task_send_sent_event=True,
)


def retry_budget() -> tuple[int, float]:
    """Retries of a batch on a transient error, and the longest wait between two (seconds)."""
    retries = int(os.environ.get("SURVEY_CLASSIFIER_DB_RETRIES", "12"))
    backoff_max = float(os.environ.get("SURVEY_CLASSIFIER_RETRY_BACKOFF_MAX", "30"))
    return retries, backoff_max


def use_broker(url: str) -> None:
    """Send this process's messages to ``url`` from now on (CLI ``--broker``, tests)."""
    app.conf.broker_url = url
    app._pool = None
    app.amqp._producer_pool = None
