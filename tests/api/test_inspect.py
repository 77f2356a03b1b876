"""The endpoints behind the per-source and SOM views, on real MiraBest cutouts classified by the default stages."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.table import Table
from fastapi.testclient import TestClient
from PIL import Image

from survey_classifier.api import create_app
from survey_classifier.api.inspect import load_map, map_layout
from survey_classifier.display import stretch_prepared
from survey_classifier.io.fits import read_cutout
from survey_classifier.preprocess import PreprocessConfig
from survey_classifier.query import query_results
from survey_classifier.som import MapGrid


@pytest.fixture(scope="module")
def client(classified_db):
    with TestClient(create_app(classified_db["url"])) as client:
        yield client


@pytest.fixture(scope="module")
def table(classified_db):
    return query_results(classified_db["engine"])


def _grey(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))[..., 0].astype(float) / 255.0


def test_a_source_turned_into_its_neurons_frame_matches_the_neuron_better(client, classified_db, table):
    """As the SOM stage mapped it, the source is closer to its neuron's prototype than the same image unturned."""
    som = load_map(classified_db["engine"], str(table["som_model_ref"][0]))
    config = PreprocessConfig.from_dict(som.preprocess_dict_)
    size = int(som.image_size_)
    region = som.prototypes_[0] != 0  # the prototypes are zero outside the circular region the SOM compares
    closer = []
    for row in table:
        if min(row["som_angle_deg"] % 360, 360 - row["som_angle_deg"] % 360) < 20 and not row["som_flip"]:
            continue  # nearly unturned: nothing to tell apart
        params = {"size": size, "cmap": "gray"}
        turned = _grey(client.get(f"/cutouts/{row['cutout_id']}/som.png", params=params))
        neuron = _grey(client.get(f"/som/nodes/{row['som_node_x']}/{row['som_node_y']}/prototype.png", params=params))
        prepared = read_cutout(row["path"]).preprocessed(config)
        unturned = stretch_prepared(prepared)[::-1]  # drawn as the page draws it, rows from the top as the PNG
        distance = [np.abs(image - neuron)[region[::-1]].sum() for image in (turned, unturned)]
        closer.append(distance[0] < distance[1])
    assert len(closer) >= 20 and np.mean(closer) >= 0.9, closer


def test_neuron_pictures_and_the_maps_layout(client, table):
    som = client.get("/som").json()
    assert som["layout"] == "cartesian" and som["has_neuron_images"] is True
    assert len(som["neurons"]) == 100 and (som["width"], som["height"]) == (10, 10)
    assert {(n["x"], n["y"]) for n in som["neurons"]} == {(x, y) for x in range(10) for y in range(10)}
    assert all((n["px"], n["py"]) == (n["x"], n["y"]) for n in som["neurons"])
    picture = client.get("/som/nodes/9/9/prototype.png", params={"size": 40})
    assert Image.open(io.BytesIO(picture.content)).size == (40, 40)
    assert client.get("/som/nodes/10/0/prototype.png").status_code == 404
    refused = client.get("/cutouts/1/som.png", params={"stage": "cnn"})
    assert refused.status_code == 400 and "som" in refused.json()["detail"]


def test_hexagonal_layout_places_neighbours_one_spacing_apart():
    layout = map_layout(type("Map", (), {"grid_": MapGrid((5, 5), "hexagonal")})())
    assert layout["layout"] == "hexagonal" and len(layout["neurons"]) == 19
    places = np.array([(n["px"], n["py"]) for n in layout["neurons"]])
    assert places.min(axis=0).tolist() == [0.0, 0.0]
    grid = MapGrid((5, 5), "hexagonal")
    apart = np.linalg.norm(places[:, None] - places[None, :], axis=-1)
    neighbours = np.isclose(grid.distances, 1.0)
    assert np.allclose(apart[neighbours], 1.0) and (apart[~neighbours & ~np.eye(19, dtype=bool)] > 1.5).all()


def test_neighbours_in_the_embedding_space(client, table):
    answer = client.get("/cutouts/5/neighbours", params={"k": 6}).json()
    assert answer["stage"] == "cnn" and answer["metric"] == "cosine" and answer["model_ref"] == "fr-cnn:1"
    found = answer["neighbours"]
    assert len(found) == 6 and 5 not in [n["cutout_id"] for n in found]
    assert [n["distance"] for n in found] == sorted(n["distance"] for n in found)
    names = dict(zip(table["cutout_id"].tolist(), table["catalogue_id"].tolist()))
    assert all(n["catalogue_id"] == names[n["cutout_id"]] and n["label"] in ("FRI", "FRII") for n in found)
    everyone = client.get("/cutouts/5/neighbours", params={"k": 100}).json()["neighbours"]
    assert len(everyone) == len(table) - 1
    refused = client.get("/cutouts/5/neighbours", params={"stage": "measure"})
    assert refused.status_code == 400 and "cnn" in refused.json()["detail"]
    assert client.get("/cutouts/99999/neighbours").status_code == 404


def test_stretch_controls(client):
    def mean(**params):
        return _grey(client.get("/cutouts/3/image.png", params={"size": 64, "cmap": "gray", **params})).mean()

    assert mean(softening=1) > mean(softening=3) > mean(softening=30)  # a lower knee lifts the faint emission
    assert mean(scale="linear") < min(mean(scale="sqrt"), mean(scale="asinh"), mean(scale="log"))
    assert client.get("/cutouts/3/image.png", params={"scale": "cube"}).status_code == 422
    assert client.get("/cutouts/3/image.png", params={"softening": 0}).status_code == 422


def test_results_sorted_by_a_result_column_and_exported_whole(client, table):
    def ids(**params):
        return [row["cutout_id"] for row in client.get("/results", params=params).json()["rows"]]

    scores = dict(zip(table["cutout_id"].tolist(), table["anomaly_score"].tolist()))
    by_score = sorted(scores, key=lambda i: (-scores[i], i))
    assert ids(sort="-anomaly_score", limit=10) == by_score[:10]
    assert ids(sort="-anomaly_score", limit=10, offset=10) == by_score[10:20]
    assert ids(sort="anomaly_score", limit=5) == sorted(scores, key=lambda i: (scores[i], i))[:5]
    assert ids(sort="-dec_deg", limit=3) == [int(i) for i in table[np.argsort(-table["dec_deg"])]["cutout_id"][:3]]
    frii = [i for i in by_score if table["cnn_label"][table["cutout_id"] == i][0] == "FRII"]
    assert ids(sort="-anomaly_score", label="FRII") == frii
    # an export without a limit is every row of the filtered set, in the order asked
    exported = client.get("/results", params={"sort": "-anomaly_score", "format": "csv", "columns": "cutout_id"})
    assert Table.read(exported.text, format="ascii.ecsv")["cutout_id"].tolist() == by_score
    assert len(by_score) == len(table) > 5
    for params, words in (({"sort": "nosuch"}, "anomaly_score"), ({"sort": "cutout_id", "after_id": 3}, "offset")):
        refused = client.get("/results", params=params)
        assert refused.status_code == 400 and words in refused.json()["detail"]
