"""Neuron labels carried to the sources of the neuron, with a reliability calibrated on labelled sources."""

from __future__ import annotations

import numpy as np
import pytest

from survey_classifier.labels.neurons import PRIOR_WEIGHT, calibrate
from survey_classifier.labels.store import add_neuron_labels, add_source_labels
from survey_classifier.query import find_variants, query_results


def _placed(engine):
    table = query_results(engine)
    nodes = list(zip(table["som_node_x"].tolist(), table["som_node_y"].tolist()))
    return table, nodes


def _label_every_neuron(engine, table, nodes) -> dict:
    """Each occupied neuron labelled with the most common MiraBest class of its sources."""
    labels = {}
    for node in sorted(set(nodes)):
        classes = [c for c, n in zip(table["fr_class"], nodes) if n == node]
        labels[node] = max(sorted(set(classes)), key=classes.count)
    with engine.begin() as connection:
        add_neuron_labels(connection, [{"model_ref": "som-mirabest:3", "node_x": x, "node_y": y, "label": label,
                                        "author": "ann"} for (x, y), label in labels.items()])
    return labels


def test_neuron_labels_reach_their_sources_with_a_calibrated_reliability(db_engine, cli, db_url):
    table, nodes = _placed(db_engine)
    neuron_label = _label_every_neuron(db_engine, table, nodes)
    by_distance = np.argsort(np.asarray(table["som_distance"]), kind="stable")[:30]
    own = {}  # the nearest 15 agree with their neuron, the farthest 15 do not
    for rank, row in enumerate(by_distance):
        node = nodes[row]
        own[int(table["cutout_id"][row])] = neuron_label[node] if rank < 15 else f"not {neuron_label[node]}"
    with db_engine.begin() as connection:
        add_source_labels(connection, [{"cutout_id": i, "label": label, "author": "bob"} for i, label in own.items()])
        add_source_labels(connection, [{"cutout_id": int(table["cutout_id"][row]), "interesting": True,
                                        "author": "bob"} for row in np.argsort(-np.asarray(table["som_distance"]))[:5]])

    carried = query_results(db_engine)
    assert [carried["som_neuron_label"][i] for i in range(len(carried))] == [neuron_label[n] for n in nodes]
    overall = (15 + 1) / (30 + 2)
    expected = [(agree + PRIOR_WEIGHT * overall) / (10 + PRIOR_WEIGHT) for agree in (10, 5, 0)]
    reliability = dict(zip(carried["cutout_id"].tolist(), carried["som_neuron_label_reliability"].tolist()))
    for rank, row in enumerate(by_distance):
        assert reliability[int(table["cutout_id"][row])] == pytest.approx(expected[rank // 10])
    values = np.array(carried["som_neuron_label_reliability"])
    order = np.argsort(np.asarray(carried["som_distance"]))
    assert np.all(np.diff(values[order]) <= 1e-12)  # farther from its neuron: trusted less
    assert set(np.round(values, 6)) == set(np.round(expected, 6))

    with db_engine.connect() as connection:
        variants = find_variants(connection)
        calibration = calibrate(connection, "som", variants["som"]).as_dict()
    assert [b["n"] for b in calibration["bins"]] == [10, 10, 10]
    assert [b["agree"] for b in calibration["bins"]] == [10, 5, 0]
    assert calibration["bins"][0]["distance_min"] == 0.0 and calibration["bins"][-1]["distance_max"] is None
    shown = cli("labels", "calibration", "--db", db_url)
    assert shown.exit_code == 0 and "30 labelled sources on labelled neurons" in shown.output, shown.output


def test_without_labelled_sources_the_reliability_is_unknown(db_engine):
    table, nodes = _placed(db_engine)
    x, y = max(set(nodes), key=nodes.count)
    with db_engine.begin() as connection:
        add_neuron_labels(connection, [{"model_ref": "som-mirabest:3", "node_x": x, "node_y": y, "label": "FRII",
                                        "author": "ann"}])
        add_neuron_labels(connection, [{"model_ref": "som-mirabest:3", "node_x": x, "node_y": y, "label": "FRI",
                                        "author": "bob"}])  # the newer label is the neuron's
    carried = query_results(db_engine)
    on_node = np.array([n == (x, y) for n in nodes])
    assert list(carried["som_neuron_label"][on_node]) == ["FRI"] * on_node.sum()
    assert np.ma.getmaskarray(carried["som_neuron_label"])[~on_node].all()
    assert np.ma.getmaskarray(carried["som_neuron_label_reliability"]).all()


def test_labels_of_another_map_do_not_reach_these_sources(db_engine):
    with db_engine.begin() as connection:
        add_neuron_labels(connection, [{"model_ref": "som-other:1", "node_x": 0, "node_y": 0, "label": "FRI",
                                        "author": "ann"}])
    assert "som_neuron_label" not in query_results(db_engine).colnames
