"""The label endpoints of the results service: token rules, reading back, a restart, the re-ranked list."""

from __future__ import annotations

import pytest
from astropy.table import Table
from fastapi.testclient import TestClient

from survey_classifier.api import create_app

TOKEN = "label-t0ken-for-the-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(db_url):
    with TestClient(create_app(db_url, write_token=TOKEN)) as client:
        yield client


WRITES = [
    ("post", "/cutouts/3/labels", {"label": "FRII", "author": "ann"}),
    ("post", "/som/nodes/2/5/labels", {"label": "FRI", "author": "ann"}),
    ("delete", "/labels/sources/1", None),
    ("delete", "/labels/neurons/1", None),
    ("post", "/anomalies/rerank", {"author": "ann"}),
]


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_every_label_write_needs_the_token(db_url, client, method, path, body):
    send = getattr(client, method)
    kwargs = {"json": body} if body is not None else {}
    assert send(path, **kwargs).status_code == 401
    wrong = send(path, headers={"Authorization": "Bearer not-the-token-at-all"}, **kwargs)
    assert wrong.status_code == 401 and "Bearer TOKEN" in wrong.text
    assert send(path, headers={"Authorization": TOKEN}, **kwargs).status_code == 401
    with TestClient(create_app(db_url)) as read_only:
        refused = getattr(read_only, method)(path, headers=AUTH, **kwargs)
        assert refused.status_code == 403 and "read-only" in refused.text
    assert client.get("/labels/sources").json()["count"] == 0
    assert client.get("/labels/neurons").json()["labels"] == []


def test_labels_written_read_back_and_after_a_restart(db_url, client):
    made = client.post("/cutouts/3/labels", headers=AUTH,
                       json={"label": "hybrid", "interesting": True, "note": "FR I jet west", "author": "ann"})
    assert made.status_code == 201, made.text
    label = made.json()
    assert label["cutout_id"] == 3 and label["origin"] == "api" and label["created_at"].endswith("+00:00")
    client.post("/cutouts/4/labels", headers=AUTH, json={"interesting": False, "author": "bob"})
    occupied = client.get("/som").json()["nodes"][0]
    x, y = occupied["x"], occupied["y"]
    neuron = client.post(f"/som/nodes/{x}/{y}/labels", headers=AUTH, json={"label": "FRI", "author": "ann"})
    assert neuron.status_code == 201 and neuron.json()["model_ref"] == "som-mirabest:3"

    with TestClient(create_app(db_url)) as restarted:  # a new process would see the same: it is all in the database
        assert restarted.get("/cutouts/3/labels").json()["current"] == label
        cutout = restarted.get("/cutouts/3").json()["cutout"]
        assert cutout["label_class"] == "hybrid" and cutout["label_interesting"] is True
        assert cutout["label_note"] == "FR I jet west" and cutout["label_author"] == "ann"
        def ids(path, **params):
            return [row["cutout_id"] for row in restarted.get(path, params=params).json()["rows"]]

        assert ids("/results", interesting=True) == [3] and ids("/results", label_class="Hybrid") == [3]
        listed = restarted.get("/labels/sources").json()
        assert [r["cutout_id"] for r in listed["rows"]] == [4, 3]
        assert listed["rows"][1]["catalogue_id"] == cutout["catalogue_id"] and cutout["catalogue_id"].startswith("MB")
        assert ids("/labels/sources", interesting=False) == [4]
        exported = restarted.get("/labels/sources", params={"format": "csv"})
        csv = Table.read(exported.text, format="ascii.ecsv")  # CSV with an ECSV header
        assert sorted(csv["cutout_id"]) == [3, 4]
        som = restarted.get("/som").json()
        node = next(n for n in som["nodes"] if (n["x"], n["y"]) == (x, y))
        assert node["label"] == "FRI" and som["labelled_nodes"][0]["label_id"] == neuron.json()["id"]
        assert restarted.get(f"/som/nodes/{x}/{y}/labels").json()["current"]["label"] == "FRI"
        assert restarted.get("/results", params={"som_x": x, "som_y": y}).json()["rows"][0]["som_neuron_label"] == "FRI"
        assert "hybrid" in restarted.get("/labels/classes").json()["classes"]

    second = client.post("/cutouts/3/labels", headers=AUTH, json={"label": "WAT", "author": "cy"}).json()
    history = client.get("/cutouts/3/labels").json()
    assert history["current"]["label"] == "WAT" and len(history["history"]) == 2
    assert client.delete(f"/labels/sources/{second['id']}", headers=AUTH).status_code == 200
    assert client.get("/cutouts/3/labels").json()["current"]["label"] == "hybrid"
    assert client.delete(f"/labels/sources/{second['id']}", headers=AUTH).status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/cutouts/99999/labels", {"label": "FRI", "author": "ann"}, 404, "no cutout with id 99999"),
        ("/cutouts/3/labels", {"author": "ann"}, 400, "says nothing"),
        ("/cutouts/3/labels", {"label": "FRI"}, 422, "author"),
        ("/cutouts/3/labels", {"label": "x" * 200, "author": "ann"}, 422, "label"),
        ("/cutouts/3/labels", {"interesting": "maybe", "author": "ann"}, 422, "interesting"),
        ("/som/nodes/12/0/labels", {"label": "FRI", "author": "ann"}, 400, "outside the SOM map som-mirabest:3"),
        ("/anomalies/rerank", {}, 400, "labelled interesting or not interesting yet"),
    ],
)
def test_bad_label_writes_are_refused_clearly(client, path, body, status, words):
    refused = client.post(path, headers=AUTH, json=body)
    assert refused.status_code == status and words in refused.text, refused.text


def test_rerank_from_the_service(client):
    top = client.get("/anomalies", params={"top": 12}).json()["rows"]
    for i, row in enumerate(top):
        interesting = row["fr_class"] == "hybrid" or row["morphology"] != "standard"
        assert client.post(f"/cutouts/{row['cutout_id']}/labels", headers=AUTH,
                           json={"interesting": interesting or i == 0, "author": "sim"}).status_code == 201
    fit = client.post("/anomalies/rerank", headers=AUTH, json={"author": "ann"})
    assert fit.status_code == 200, fit.text
    assert fit.json()["n_labels"] == 12 and fit.json()["model_ref"].startswith("label-ranking:")
    fits = client.get("/anomalies/rerank").json()
    assert fits["fits"][0]["id"] == fit.json()["id"] and fits["labels_since_last_fit"] == 0
    reranked = client.get("/anomalies", params={"stage": "reranked", "top": 10, "unlabelled": True}).json()
    labelled = {row["cutout_id"] for row in top}
    assert len(reranked["rows"]) == 10 and not labelled & {r["cutout_id"] for r in reranked["rows"]}
    assert all(r["reranked_model_ref"] == fit.json()["model_ref"] for r in reranked["rows"])
    columns = {column["name"]: column for column in reranked["columns"]}
    assert {"reranked_interest", "reranked_trust", "reranked_unsupervised"} <= set(columns)
    assert columns["label_interesting"]["ucd"] == "meta.code" and columns["reranked_trust"]["unit"] == ""
    client.post("/cutouts/50/labels", headers=AUTH, json={"interesting": True, "author": "sim"})
    assert client.get("/anomalies/rerank").json()["labels_since_last_fit"] == 1
