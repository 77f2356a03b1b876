"""Deliveries counted in the database (SQLite here; real workers: tests/workers/test_batch_faults.py)."""

from __future__ import annotations

from sqlalchemy import select

from survey_classifier.cutout import CutoutSource
from survey_classifier.db.models import ErrorRow, RunBatchRow
from survey_classifier.deliveries import (
    begin_cutout,
    begin_delivery,
    begin_split,
    death_reason,
    finish_split,
    note_hard_timeout,
    record_culprit,
    store_cutout,
)
from survey_classifier.pipeline import Pipeline
from survey_classifier.runs import register_run
from survey_classifier.stages.registry import load_stage


def test_a_cutout_left_in_flight_counts_as_a_death_until_it_is_recorded(engine, mirabest_files):
    stages = [load_stage("measure")]
    sources = [CutoutSource(str(p)) for p in mirabest_files[:3]]
    run_id, [(batch_id, _)] = register_run(engine, sources, stages, batch_size=3, config={}, executor="celery")
    with engine.connect() as connection:
        cutout_ids = connection.execute(select(RunBatchRow.cutout_ids).where(RunBatchRow.id == batch_id)).scalar_one()
    for number in (1, 2, 3, 4):
        delivery = begin_delivery(engine, batch_id, "w1@host")
        assert (delivery.number, delivery.one_at_a_time(3)) == (number, number > 3)
    split = begin_split(engine, batch_id, "delivered 4 times")
    pipeline = Pipeline(stages)
    assert not store_cutout(engine, run_id, stages, batch_id, cutout_ids[0],
                            pipeline.process_batch([sources[0]]).outcomes)
    for death in (1, 2, 3):  # the second cutout is named, then its process dies
        begin_cutout(engine, batch_id, cutout_ids[1])
        split = begin_delivery(engine, batch_id, "w2@host").split
        assert split["deaths"] == {str(cutout_ids[1]): death} and split["current"] is None
    assert split["stored"] == [cutout_ids[0]]
    assert death_reason(split, cutout_ids[1], 3, 900) == (
        "WorkerLost", "worker process died while processing this cutout 3 times: memory or a crash")
    assert death_reason(split, cutout_ids[2], 3, 900) is None
    record_culprit(engine, run_id, batch_id, cutout_ids[1], *death_reason(split, cutout_ids[1], 3, 900))
    begin_cutout(engine, batch_id, cutout_ids[2])
    note_hard_timeout(engine, batch_id, 900)  # seen by the worker's main process
    split = begin_delivery(engine, batch_id, "w2@host").split
    assert split["timeouts"] == {str(cutout_ids[2]): 1} and split["deaths"] == {str(cutout_ids[1]): 3}
    assert death_reason(split, cutout_ids[2], 1, 900) == (
        "TimeLimitExceeded", "processing took longer than the 900 s hard time limit once")
    store_cutout(engine, run_id, stages, batch_id, cutout_ids[2], pipeline.process_batch([sources[2]]).outcomes)
    assert finish_split(engine, batch_id, "w2@host") == 1
    with engine.connect() as connection:
        row = connection.execute(select(RunBatchRow.__table__).where(RunBatchRow.id == batch_id)).one()
        errors = connection.execute(select(ErrorRow.cutout_id, ErrorRow.error_type)).all()
    assert (row.status, row.n_failed, row.deliveries, row.last_worker, row.failure) == ("done", 1, 8, "w2@host", None)
    assert row.last_attempt_at is not None
    assert errors == [(cutout_ids[1], "WorkerLost")]


def test_a_retry_after_an_outage_counts_no_death(engine, mirabest_files):
    """A cutout left named by a delivery that ended with a retry (the database was away) is not a death; the
    same message delivered again (its process died) is."""
    stages = [load_stage("measure")]
    sources = [CutoutSource(str(p)) for p in mirabest_files[:2]]
    _, [(batch_id, _)] = register_run(engine, sources, stages, batch_size=2, config={}, executor="celery")
    with engine.connect() as connection:
        cutout_ids = connection.execute(select(RunBatchRow.cutout_ids).where(RunBatchRow.id == batch_id)).scalar_one()
    begin_delivery(engine, batch_id, "w1@host")
    begin_split(engine, batch_id, "split")
    begin_cutout(engine, batch_id, cutout_ids[0], retries=0)
    split = begin_delivery(engine, batch_id, "w1@host", retries=1).split  # the retry after the outage
    assert split["deaths"] == {} and split["current"] is None
    begin_cutout(engine, batch_id, cutout_ids[0], retries=1)
    split = begin_delivery(engine, batch_id, "w1@host", retries=1).split  # the same message again: a death
    assert split["deaths"] == {str(cutout_ids[0]): 1} and split["current"] is None
