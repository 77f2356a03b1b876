"""No answer of the service holds a filesystem path of the server: every route walked over a real database."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from helpers.stages import peak_classifier

from survey_classifier.api import create_app
from survey_classifier.cutout import CutoutSource
from survey_classifier.db import make_engine, upgrade
from survey_classifier.formats import EXPORT_FORMATS
from survey_classifier.pipeline import run_pipeline
from survey_classifier.registry import register_model
from survey_classifier.stages.anomaly import DEFAULT_SCORER
from survey_classifier.stages.registry import load_stage

TOKEN = "paths-t0ken-for-the-tests"
#: A path-like run of characters: a slash, then a name, then another slash.
_PATHLIKE = re.compile(r"(?<![\w.:/-])/([A-Za-z0-9_.+-]+)/")
_ROOT = set(os.listdir("/"))
#: The answers that are a picture or the cutout's own file; every other answer (exports too) is searched.
_PICTURES = ("image/png", "application/fits", "application/gzip", "application/x-bzip2")


def _server_paths(text: str, prefixes: list[str]) -> list[str]:
    """Absolute paths in ``text``: under a folder of this machine's root, or under one of ``prefixes``."""
    found = [m.group(0) for m in _PATHLIKE.finditer(text) if m.group(1) in _ROOT]
    found += [p for p in prefixes if p in text]
    return found + re.findall(r"file://\S+", text)


@pytest.fixture(scope="module")
def served(tmp_path_factory, mirabest_files):
    """Four real cutouts and a truncated one, classified, a model kept in a file:// store, the app over it."""
    folder = tmp_path_factory.mktemp("server-paths")
    inputs = folder / "inputs"
    inputs.mkdir()
    files = [shutil.copy(p, inputs) for p in mirabest_files[:4]]
    broken = inputs / "truncated.fits"
    broken.write_bytes(mirabest_files[5].read_bytes()[:4000])
    url = f"sqlite:///{folder / 'paths.db'}"
    upgrade(url)
    engine = make_engine(url)
    sources_paths = [Path(p) for p in [*files, broken]]
    sources = [CutoutSource(str(p)) for p in sources_paths]
    summary = run_pipeline(sources, [load_stage("measure"), peak_classifier(folder, 0.01)], engine)
    assert summary.n_failed == 1
    store = (folder / "store").as_uri()
    kept = register_model(engine, DEFAULT_SCORER, stage="anomaly", name="scorer", version="1", store=store,
                          details={"trained_on": str(inputs), "notes": f"catalogue {inputs}/labels.csv"})
    assert kept["store"].startswith("file://")
    yield {"url": url, "engine": engine, "prefixes": [str(folder), str(mirabest_files[0].parent)],
           "model_id": kept["id"], "names": [p.name for p in sources_paths]}
    engine.dispose()


def _walk(client: TestClient, ids: dict[str, list[int]]):
    """Every GET route of the OpenAPI description, with each known id; the table routes in every format."""
    for route, operations in client.get("/openapi.json").json()["paths"].items():
        if "get" not in operations:
            continue
        names = re.findall(r"{(\w+)}", route)
        fillings = [{}]
        for name in names:
            fillings = [{**f, name: value} for f in fillings for value in ids.get(name, [1])]
        for filling in fillings:
            path = route.format(**filling)
            yield path, client.get(path)
            if {p["name"] for p in operations["get"].get("parameters", [])} >= {"format"}:
                for fmt in EXPORT_FORMATS:
                    yield f"{path}?format={fmt}", client.get(path, params={"format": fmt})


def test_no_answer_holds_a_server_path(served):
    from sqlalchemy import select

    from survey_classifier.db.models import CutoutRow, ModelRow

    with served["engine"].connect() as connection:
        cutout_ids = list(connection.execute(select(CutoutRow.id)).scalars())
        model_ids = list(connection.execute(select(ModelRow.id)).scalars())
    ids = {"cutout_id": cutout_ids, "model_id": model_ids, "node_x": [0], "node_y": [0], "label_id": [1]}
    auth = {"Authorization": f"Bearer {TOKEN}"}
    leaks, walked = {}, 0
    with TestClient(create_app(served["url"], write_token=TOKEN)) as client:
        answers = [("label", client.post(f"/cutouts/{cutout_ids[0]}/labels", headers=auth,
                                         json={"label": "FRII", "author": "tester"}))]
        answers += list(_walk(client, ids))
        for model_id in (served["model_id"], model_ids[0]):
            answers.append(("default", client.post(f"/models/{model_id}/default", headers=auth)))
            answers.append(("retire", client.post(f"/models/{model_id}/retire", headers=auth)))
        for path, response in answers:
            if response.headers.get("content-type", "").split(";")[0] in _PICTURES and path.endswith(("png", "fits")):
                continue
            walked += 1
            found = _server_paths(response.content.decode("latin-1"), served["prefixes"])
            if found:
                leaks[path] = sorted(set(found))[:3]
        assert walked > 40
        assert not leaks, "\n".join(f"{k}: {v}" for k, v in leaks.items())
        # instead of the path: the file's name and where to download it
        rows = client.get("/results").json()["rows"]
        assert {r["file_name"] for r in rows} == set(served["names"])
        first = rows[0]
        assert first["fits_url"] == f"/cutouts/{first['cutout_id']}/fits"
        assert client.get(first["fits_url"]).status_code == 200
        shown = client.get(f"/models/{served['model_id']}").json()
        assert shown["store"] == "file" and shown["details"]["trained_on"] == "inputs"
