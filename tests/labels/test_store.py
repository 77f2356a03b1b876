"""Source and neuron labels in a real results database: who, when, history, refusals, query columns."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import func, select

from survey_classifier.db import make_engine, upgrade
from survey_classifier.db.models import AnomalyScoreRow, ClassificationRow, MeasurementRow, SOMPlacementRow
from survey_classifier.errors import LabelError
from survey_classifier.labels.store import (
    LABEL_CLASSES,
    add_neuron_labels,
    add_source_labels,
    current_source_labels,
    delete_source_label,
    label_classes,
    list_source_labels,
    same_class,
    source_label_history,
)
from survey_classifier.query import query_results


def _results(engine) -> list[tuple]:
    rows = []
    with engine.connect() as connection:
        for row_class in (MeasurementRow, ClassificationRow, SOMPlacementRow, AnomalyScoreRow):
            t = row_class.__table__
            rows += [tuple(r) for r in connection.execute(select(t).order_by(t.c.id))]
    return rows


def test_newest_label_is_current_and_history_is_kept(db_engine):
    with db_engine.begin() as connection:
        first, second = add_source_labels(connection, [
            {"cutout_id": 3, "label": "FRII", "author": "ann", "created_at": datetime(2026, 1, 1, tzinfo=UTC)},
            {"cutout_id": 3, "label": " hybrid ", "interesting": True, "note": "one-sided\njet", "author": "bob"},
        ])
        add_source_labels(connection, [{"cutout_id": 4, "interesting": False, "author": "ann"}])
    with db_engine.connect() as connection:
        current = current_source_labels(connection)
        history = source_label_history(connection, 3)
    assert set(current) == {3, 4}
    assert current[3]["id"] == second and current[3]["label"] == "hybrid" and current[3]["interesting"] is True
    assert current[3]["note"] == "one-sided\njet" and current[3]["author"] == "bob"
    assert current[3]["created_at"].tzinfo is not None and current[3]["created_at"] > history[1]["created_at"]
    assert [r["id"] for r in history] == [second, first] and history[1]["created_at"].year == 2026
    assert current[4]["label"] is None and current[4]["interesting"] is False

    with db_engine.begin() as connection:
        delete_source_label(connection, second)
        assert current_source_labels(connection, [3])[3]["label"] == "FRII"
        with pytest.raises(LabelError, match=f"no source label with id {second}"):
            delete_source_label(connection, second)


def test_labels_never_touch_pipeline_results(db_engine):
    before = _results(db_engine)
    table_before = query_results(db_engine)
    with db_engine.begin() as connection:
        add_source_labels(connection, [{"cutout_id": i, "label": "FRI", "interesting": i % 2 == 0, "author": "ann"}
                                       for i in range(1, 21)])
        add_neuron_labels(connection, [{"model_ref": "som-mirabest:3", "node_x": 0, "node_y": 0, "label": "FRI",
                                        "author": "ann"}])
    assert _results(db_engine) == before
    table = query_results(db_engine)
    for name in table_before.colnames:
        assert np.array_equal(np.ma.filled(table[name], 0), np.ma.filled(table_before[name], 0)), name
    assert set(table.colnames) - set(table_before.colnames) == {
        "label_class", "label_interesting", "label_note", "label_author", "label_time",
        "som_neuron_label", "som_neuron_label_reliability",
    }
    labelled = table[~np.ma.getmaskarray(table["label_class"])]
    assert sorted(labelled["cutout_id"]) == list(range(1, 21))
    assert list(labelled["label_interesting"]) == [i % 2 == 0 for i in labelled["cutout_id"]]


def test_query_filters_on_the_current_label(db_engine):
    with db_engine.begin() as connection:
        add_source_labels(connection, [
            {"cutout_id": 5, "label": "FR II", "interesting": True, "author": "ann"},
            {"cutout_id": 6, "label": "frii", "interesting": False, "author": "ann"},
            {"cutout_id": 7, "label": "FRII", "author": "ann"},
            {"cutout_id": 7, "label": "hybrid", "interesting": True, "author": "bob"},
        ])
    assert list(query_results(db_engine, label_class="FRII")["cutout_id"]) == [5, 6]
    assert list(query_results(db_engine, interesting=True)["cutout_id"]) == [5, 7]
    assert list(query_results(db_engine, interesting=False, label_class="FR II")["cutout_id"]) == [6]
    with db_engine.connect() as connection:
        assert [r["cutout_id"] for r in list_source_labels(connection, label="fr ii")] == [6, 5]
        assert [r["cutout_id"] for r in list_source_labels(connection, author="bob")] == [7]
        assert [r["cutout_id"] for r in list_source_labels(connection, interesting=True, limit=1)] == [7]
        assert label_classes(connection, ["FRI", "Bent", "Ring"]) == [*LABEL_CLASSES, "Ring"]  # case, spaces aside
    assert same_class("FR II", "frii") and not same_class("FRI", "FRII") and not same_class(None, "FRI")


@pytest.mark.parametrize(
    ("label", "match"),
    [
        ({"cutout_id": 3, "author": "ann"}, "says nothing"),
        ({"cutout_id": 3, "label": "FRI"}, "the author is required"),
        ({"cutout_id": 3, "label": "FRI", "author": "  "}, "the author is required"),
        ({"cutout_id": 3, "label": "x" * 129, "author": "ann"}, "129 characters long; at most 128"),
        ({"cutout_id": 3, "label": "FR\x00I", "author": "ann"}, "control characters"),
        ({"cutout_id": 3, "interesting": "yes", "author": "ann"}, "'interesting' must be true, false or empty"),
        ({"cutout_id": 99999, "label": "FRI", "author": "ann"}, "no cutout with id 99999 in this database"),
        ({"cutout_id": "3", "label": "FRI", "author": "ann"}, "needs the cutout id"),
        ({"cutout_id": 3, "label": "FRI", "author": "ann", "created_at": "yesterday"}, "not an ISO 8601 time"),
    ],
)
def test_bad_source_labels_are_refused(db_engine, label, match):
    with db_engine.begin() as connection, pytest.raises(LabelError, match=match):
        add_source_labels(connection, [{"cutout_id": 4, "label": "FRI", "author": "ann"}, label])
    with db_engine.connect() as connection:
        assert current_source_labels(connection) == {}  # all or nothing


def test_neuron_labels_are_checked_against_the_map(db_engine):
    with db_engine.begin() as connection:
        with pytest.raises(LabelError, match=r"neuron \(10, 2\) is outside the SOM map som-mirabest:3 \(10 nodes"):
            add_neuron_labels(connection, [{"model_ref": "som-mirabest:3", "node_x": 10, "node_y": 2,
                                            "label": "FRI", "author": "ann"}])
        with pytest.raises(LabelError, match="needs node_y"):
            add_neuron_labels(connection, [{"model_ref": "som-mirabest:3", "node_x": 1, "label": "FRI",
                                            "author": "ann"}])
        with pytest.raises(LabelError, match="the class label is required"):
            add_neuron_labels(connection, [{"model_ref": "som-mirabest:3", "node_x": 1, "node_y": 1,
                                            "author": "ann"}])
        (label_id,) = add_neuron_labels(connection, [{"model_ref": "som-mirabest:3", "node_x": 9, "node_y": 9,
                                                      "label": "FRII", "author": "ann"}])
    assert label_id == 1


@pytest.mark.postgres
def test_labels_on_postgres_survive_a_new_engine(postgres_url):
    """The same writes, current labels and filters on PostgreSQL (window functions, booleans)."""
    from survey_classifier.labels.catalogue import export_source_labels

    upgrade(postgres_url)
    engine = make_engine(postgres_url)
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO cutouts (id, path, updated_at) VALUES (1, '/a.fits', now()), (2, '/b.fits', now())"
        )
        add_source_labels(connection, [{"cutout_id": 1, "label": "FRI", "author": "ann"},
                                       {"cutout_id": 1, "label": "hybrid", "interesting": True, "author": "ann"},
                                       {"cutout_id": 2, "interesting": False, "author": "bob"}])
    engine.dispose()
    again = make_engine(postgres_url)
    with again.connect() as connection:
        current = current_source_labels(connection)
        assert {i: (r["label"], r["interesting"]) for i, r in current.items()} == {1: ("hybrid", True),
                                                                                   2: (None, False)}
        assert connection.execute(select(func.count()).select_from(AnomalyScoreRow)).scalar_one() == 0
    assert list(query_results(again, interesting=False)["cutout_id"]) == [2]
    exported = export_source_labels(again, history=True)
    assert list(exported["label_class"].filled("")) == ["FRI", "hybrid", ""]
    assert list(exported["label_interesting"].filled(-1)) == [-1, 1, 0]
    again.dispose()
