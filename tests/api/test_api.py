"""The REST API over a database filled by the real pipeline: filters, cone search, pages, exports, refusals."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.table import Table
from PIL import Image

from survey_classifier.api import create_app
from survey_classifier.query import query_results


def _ids(response):
    assert response.status_code == 200, response.text
    return [row["cutout_id"] for row in response.json()["rows"]]


def _peaks(service_db):
    return {i: m["peak_flux_jy"] for i, m in service_db["measured"].items()}


def _bright(peak, threshold):
    return 1.0 / (1.0 + np.exp(-(peak - threshold) / 0.004)) > 0.5


def test_everything_then_pages_and_keyset(client, service_db):
    everything = _ids(client.get("/results", params={"limit": 1000}))
    assert everything == sorted(service_db["measured"]) and len(everything) == 30
    by_offset = [
        i for offset in range(0, 30, 7) for i in _ids(client.get("/results", params={"limit": 7, "offset": offset}))
    ]
    assert by_offset == everything
    keyset, after = [], None
    while True:
        page = client.get("/results", params={"limit": 7, **({"after_id": after} if after is not None else {})}).json()
        keyset += [row["cutout_id"] for row in page["rows"]]
        after = page["next_after_id"]
        if after is None:
            break
    assert keyset == everything


def test_label_and_probability_filters(client, service_db):
    peaks = _peaks(service_db)
    first20 = sorted(service_db["measured"])[:20]  # the second model (threshold 0.03) ran on these
    newest = _ids(client.get("/results", params={"stage": "peak", "label": "bright"}))
    assert newest == [i for i in first20 if _bright(peaks[i], 0.03)]
    older = _ids(client.get("/results", params={"label": "bright", "version": "peak=1@peak:0.01"}))
    assert older == [i for i in sorted(peaks) if _bright(peaks[i], 0.01)]
    assert older and newest != older
    params = {"label": "faint", "min_probability": 0.99, "version": "peak=1@peak:0.01"}
    sure = _ids(client.get("/results", params=params))
    p_faint = {i: 1 - 1 / (1 + np.exp(-(peaks[i] - 0.01) / 0.004)) for i in peaks}
    assert sure == [i for i in sorted(peaks) if p_faint[i] >= 0.99]
    unsure = _ids(client.get("/results", params={"max_probability": 0.9, "version": "peak=1@peak:0.01"}))
    assert unsure == [i for i in sorted(peaks) if max(p_faint[i], 1 - p_faint[i]) <= 0.9]
    # a label no classification stage gave is answered with the labels they hold (not 0 rows, silently)
    unknown = client.get("/results", params={"label": "FRII"})
    assert unknown.status_code == 400
    assert "no classification stage has results labelled 'FRII'; labels stored: peak: bright, faint" in \
        unknown.json()["detail"]


def test_run_som_node_and_anomaly_rank_filters(client, service_db):
    assert len(_ids(client.get("/results", params={"run": service_db["run_id"]}))) == 30
    placements = service_db["placements"]
    for node in {(p["node_x"], p["node_y"]) for p in placements.values()}:
        found = _ids(client.get("/results", params={"som_x": node[0], "som_y": node[1]}))
        assert found == sorted(i for i, p in placements.items() if (p["node_x"], p["node_y"]) == node)
    scores = service_db["scores"]
    ranked = sorted(scores, key=lambda i: (-scores[i]["score"], i))
    found = _ids(client.get("/results", params={"anomaly_rank_min": 3, "anomaly_rank_max": 7}))
    assert found == sorted(ranked[2:7])


def test_cone_search(client, service_db):
    table = query_results(service_db["engine"])
    coords = SkyCoord(table["ra_deg"], table["dec_deg"])
    centre = coords[4]
    for radius in (0.001, 5.0, 10.0):
        expected = sorted(table["cutout_id"][centre.separation(coords).deg <= radius].tolist())
        response = client.get("/results", params={"ra": centre.ra.deg, "dec": centre.dec.deg, "radius": radius})
        assert _ids(response) == expected
        assert all(row["separation_arcsec"] <= radius * 3600 for row in response.json()["rows"])


@pytest.mark.parametrize(
    "fmt, reader", [("csv", "ascii.ecsv"), ("ecsv", "ascii.ecsv"), ("votable", "votable"), ("fits", "fits")]
)
def test_exports_read_back(client, service_db, fmt, reader):
    response = client.get("/results", params={"format": fmt, "limit": 1000})
    assert response.status_code == 200 and "attachment" in response.headers["content-disposition"]
    back = Table.read(io.BytesIO(response.content), format=reader)
    assert list(back["cutout_id"]) == sorted(service_db["measured"])
    peaks = _peaks(service_db)
    assert np.allclose(back["measure_peak_flux_jy"], [peaks[i] for i in back["cutout_id"]])


def test_one_cutout_and_its_image(client, service_db):
    cutout_id = sorted(service_db["measured"])[3]
    record = client.get(f"/cutouts/{cutout_id}").json()
    assert record["cutout"]["cutout_id"] == cutout_id and record["errors"] == []
    assert record["cutout"]["measure_peak_flux_jy"] == pytest.approx(service_db["measured"][cutout_id]["peak_flux_jy"])
    response = client.get(f"/cutouts/{cutout_id}/image.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = np.asarray(Image.open(io.BytesIO(response.content)).convert("L"), dtype=float)
    assert image.shape == (150, 150)
    assert "path" not in record["cutout"]  # the file's name and its download link instead
    data = fits.getdata(io.BytesIO(client.get(record["cutout"]["fits_url"]).content)).squeeze()
    y, x = np.unravel_index(np.nanargmax(data), data.shape)
    # the brightest FITS pixel is among the brightest of the picture, with north up (rows flipped)
    assert image[149 - y, x] >= np.percentile(image, 99)
    small = client.get(f"/cutouts/{cutout_id}/image.png", params={"size": 64})
    assert Image.open(io.BytesIO(small.content)).size == (64, 64)
    assert client.get("/cutouts/999999").status_code == 404
    assert client.get("/cutouts/999999/image.png").status_code == 404


def test_anomalies_labels_som_runs_compare(client, service_db):
    scores = service_db["scores"]
    ranked = sorted(scores, key=lambda i: (-scores[i]["score"], i))
    top = client.get("/anomalies", params={"top": 5}).json()
    assert [r["cutout_id"] for r in top["rows"]] == ranked[:5]
    assert [r["anomaly_rank"] for r in top["rows"]] == [1, 2, 3, 4, 5]
    peaks = _peaks(service_db)
    counts = client.get("/labels", params={"version": "peak=1@peak:0.01"}).json()
    n_bright = sum(_bright(p, 0.01) for p in peaks.values())
    assert {c["label"]: c["count"] for c in counts["labels"]} == {"bright": n_bright, "faint": 30 - n_bright}
    grid = client.get("/som").json()
    assert (grid["width"], grid["height"]) == (4, 1 + max(p["node_y"] for p in service_db["placements"].values()))
    assert sum(n["count"] for n in grid["nodes"]) == 30
    for node in grid["nodes"]:
        placements = service_db["placements"]
        members = [i for i, p in placements.items() if (p["node_x"], p["node_y"]) == (node["x"], node["y"])]
        assert node["count"] == len(members)
        assert node["best_cutout_id"] == min(members, key=lambda i: (service_db["placements"][i]["distance"], i))
    hit_map = Image.open(io.BytesIO(client.get("/som/image.png").content))
    assert hit_map.size == (4 * 24, grid["height"] * 24)
    runs = client.get("/runs").json()["runs"]
    assert [r["n_cutouts"] for r in runs] == [20, 30]
    compare = client.get("/compare", params={"stage": "peak", "a": "1@peak:0.01", "b": "1@peak:0.03"}).json()
    assert compare["meta"]["n_common"] == 20 and compare["meta"]["n_only_a"] == 10


def test_sexagesimal_cones_and_chosen_columns(client, service_db):
    table = query_results(service_db["engine"])
    centre = SkyCoord(table["ra_deg"][4], table["dec_deg"][4], unit="deg")
    in_degrees = client.get("/results", params={"ra": centre.ra.deg, "dec": centre.dec.deg, "radius": 8.0})
    written = {"ra": centre.ra.to_string(unit="hourangle", sep=":", precision=4),
               "dec": centre.dec.to_string(sep=":", precision=3, alwayssign=True), "radius": "480arcmin"}
    sexagesimal = client.get("/results", params=written)
    assert _ids(sexagesimal) == _ids(in_degrees) and len(_ids(in_degrees)) >= 2
    chosen = client.get("/results", params={"columns": "cutout_id,ra_deg,measure_*", "limit": 3}).json()
    names = [c["name"] for c in chosen["columns"]]
    assert names[:2] == ["cutout_id", "ra_deg"] and all(n.startswith("measure_") for n in names[2:])
    assert list(chosen["rows"][0]) == names
    ra = next(c for c in chosen["columns"] if c["name"] == "ra_deg")
    assert (ra["unit"], ra["ucd"]) == ("deg", "pos.eq.ra;meta.main") and "Right ascension" in ra["description"]
    flux = next(c for c in chosen["columns"] if c["name"] == "measure_peak_flux_jy")
    assert flux["unit"] == "Jy / beam" and flux["ucd"] == "phot.flux.density;stat.max"
    votable = client.get("/results", params={"columns": "cutout_id,ra_deg,dec_deg", "format": "votable"})
    assert Table.read(io.BytesIO(votable.content), format="votable").colnames == ["cutout_id", "ra_deg", "dec_deg"]
    unknown = client.get("/results", params={"columns": "cutout_id,nosuch"})
    assert unknown.status_code == 400 and "no column 'nosuch'" in unknown.json()["detail"]


@pytest.mark.parametrize(
    "path, params, status, words",
    [
        ("/results", {"ra": "abc", "dec": 0, "radius": 1}, 400, "ra"),
        ("/results", {"ra": "25:00:00", "dec": 0, "radius": 1}, 400, "ra: '25:00:00' is not an angle"),
        ("/results", {"ra": 10, "dec": 0, "radius": "30kg"}, 400, "radius: '30kg' is not an angle"),
        ("/results", {"ra": 400, "dec": 0, "radius": 1}, 400, "ra"),
        ("/results", {"ra": "nan", "dec": 0, "radius": 1}, 400, "ra"),
        ("/results", {"ra": 10, "dec": -91, "radius": 1}, 400, "dec"),
        ("/results", {"ra": 10, "dec": "inf", "radius": 1}, 400, "dec"),
        ("/results", {"ra": 10, "dec": 0, "radius": 0}, 400, "radius"),
        ("/results", {"ra": 10, "dec": 0, "radius": 1e9}, 400, "radius"),
        ("/results", {"ra": 10, "dec": 0}, 400, "needs all of ra, dec and radius"),
        ("/results", {"limit": 100000}, 422, "limit"),
        ("/results", {"limit": 0}, 422, "limit"),
        ("/results", {"offset": -1}, 422, "offset"),
        ("/results", {"after_id": "1; DROP TABLE cutouts"}, 422, "after_id"),
        ("/results", {"label": "x' OR 1=1 --"}, 422, "label"),
        ("/results", {"label": "bright\" OR \"1\"=\"1"}, 422, "label"),
        ("/results", {"stage": "peak; DROP TABLE cutouts"}, 422, "stage"),
        ("/results", {"version": "peak=1' OR '1'='1"}, 422, "version"),
        ("/results", {"version": "peak=9"}, 400, "no results of stage 'peak' version '9'"),
        ("/results", {"stage": "nosuch"}, 400, "no results of stage 'nosuch'"),
        ("/results", {"label": "bright", "stage": "measure"}, 400,
         "label or probability filters need a classification"),
        ("/results", {"som_x": 1}, 400, "som_x and som_y"),
        ("/results", {"min_probability": 2}, 422, "min_probability"),
        ("/results", {"min_probability": 0.9, "max_probability": 0.1}, 400, "range is empty"),
        ("/results", {"anomaly_rank_min": 0}, 422, "anomaly_rank_min"),
        ("/results", {"run": 999}, 400, "no run with id 999"),
        ("/results", {"format": "xls"}, 422, "format"),
        ("/anomalies", {"top": 5000}, 422, "top"),
        ("/cutouts/abc", {}, 422, "cutout_id"),
        ("/cutouts/0", {}, 422, "cutout_id"),
        ("/cutouts/1/image.png", {"size": 100000}, 422, "size"),
        ("/compare", {"stage": "peak", "a": "1' --", "b": "1"}, 422, "a"),
        ("/som", {"stage": "peak"}, 400, "gives classification results"),
    ],
)
def test_bad_input_is_refused_clearly(client, service_db, path, params, status, words):
    response = client.get(path, params=params)
    assert response.status_code == status, response.text
    assert words in response.text
    assert len(_ids(client.get("/results", params={"limit": 1000}))) == 30  # and nothing was harmed


def test_openapi_docs(client):
    schema = client.get("/openapi.json").json()
    assert {"/results", "/cutouts/{cutout_id}", "/cutouts/{cutout_id}/image.png", "/anomalies", "/som", "/runs",
            "/models", "/labels"} <= set(schema["paths"])
    assert "swagger" in client.get("/docs").text.lower()


def test_writes_need_the_token(service_db, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from survey_classifier.registry import register_model
    from survey_classifier.stages.anomaly import DEFAULT_SCORER

    engine = service_db["engine"]
    first = register_model(engine, DEFAULT_SCORER, stage="anomaly", name="scorer", version="1", make_default=True)
    second = register_model(engine, DEFAULT_SCORER, stage="anomaly", name="scorer", version="2")
    assert first["is_default"] and not second["is_default"]
    token = "another-t0ken-for-tests"
    with TestClient(create_app(service_db["url"], write_token=token)) as client:
        url = f"/models/{second['id']}/default"
        assert client.post(url).status_code == 401
        assert client.post(url, headers={"Authorization": "Bearer wrong-token-wrong-token"}).status_code == 401
        assert client.get(f"/models/{first['id']}").json()["is_default"]
        done = client.post(url, headers={"Authorization": f"Bearer {token}"})
        assert done.status_code == 200 and done.json()["is_default"]
        assert not client.get(f"/models/{first['id']}").json()["is_default"]
        shown = client.get(f"/models/{first['id']}").json()
        assert "artefact_path" not in shown and shown["store"] == "database"  # no server path in any answer
        assert all(not str(m["store"]).startswith(("/", "file:")) for m in client.get("/models").json()["models"])
        assert client.post("/models/99999/default", headers={"Authorization": f"Bearer {token}"}).status_code == 404
    with TestClient(create_app(service_db["url"])) as read_only:
        refused = read_only.post(f"/models/{first['id']}/retire", headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 403 and "read-only" in refused.text
        assert read_only.get("/models").status_code == 200
