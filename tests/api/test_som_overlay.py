"""What the SOM view lays over the map (#20): each neuron's class and purity, and the U-matrix, from the map itself.

On real MiraBest cutouts classified by the default stages (the shipped map som-mirabest 3, labelled with
the MiraBest classes when it was trained: its neurons.json), and on the same sources mapped with
som-mirabest 1, which was shipped without neuron labels.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers.browser import CHROMIUM_ARGS, chromium, keep_screenshot
from helpers.server import serving

from survey_classifier.api import create_app
from survey_classifier.cutout import CutoutSource
from survey_classifier.db import make_engine
from survey_classifier.pipeline import run_pipeline
from survey_classifier.query import query_results
from survey_classifier.som import RotationInvariantSOM
from survey_classifier.som.labels import NEURON_LABELS_FILE, NeuronLabels
from survey_classifier.som.plots import CLASS_COLOURS, u_matrix
from survey_classifier.stages.registry import load_stage
from survey_classifier.stages.som import SOM_MIRABEST, SOM_MIRABEST_3


@pytest.fixture(scope="module")
def client(classified_db):
    with TestClient(create_app(classified_db["url"])) as client:
        yield client


@pytest.fixture(scope="module")
def two_maps(classified_db, tmp_path_factory):
    """A copy of the classified database where 8 of its sources are also mapped with som-mirabest 1."""
    path = tmp_path_factory.mktemp("two-maps") / "two.db"
    shutil.copy(classified_db["path"], path)
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    paths = [str(p) for p in query_results(engine)["path"][:8]]
    summary = run_pipeline([CutoutSource(p) for p in paths], [load_stage("som", model="som-mirabest:1")], engine)
    assert summary.n_processed == 8
    engine.dispose()
    return url


def _by_place(answer) -> dict:
    return {(n["x"], n["y"]): n for n in answer["neurons"]}


def test_the_shipped_maps_neuron_classes_and_u_matrix(client):
    answer = client.get("/som").json()
    assert answer["model_ref"] == "som-mirabest:3" and answer["layout"] == "cartesian"
    som = RotationInvariantSOM.load(SOM_MIRABEST_3.path())
    labels = NeuronLabels.read(SOM_MIRABEST_3.path().with_name(NEURON_LABELS_FILE))
    neurons = _by_place(answer)
    assert len(answer["neurons"]) == som.grid_.n_nodes == len(labels.counts) == 100
    assert set(neurons) == {(int(x), int(y)) for x, y in som.grid_.index_xy}
    expected_u = u_matrix(som)
    for node, (x, y) in enumerate(som.grid_.index_xy.tolist()):
        neuron = neurons[(x, y)]
        assert neuron["u_distance"] == pytest.approx(expected_u[node], rel=1e-12)
        assert neuron["neuron_class"] == labels.classes[labels.labels[node]]
        assert neuron["class_counts"] == dict(zip(labels.classes, labels.counts[node].tolist(), strict=True))
        assert neuron["purity"] == pytest.approx(labels.purity[node], rel=1e-12)
    classes = answer["neuron_classes"]
    assert [c["name"] for c in classes["classes"]] == ["FRI", "FRII", "hybrid"]
    assert [c["sources"] for c in classes["classes"]] == labels.counts.sum(axis=0).tolist() == [486, 511, 30]
    assert [c["neurons"] for c in classes["classes"]] == [56, 44, 0]  # as the model card says
    assert classes["labelled_sources"] == 1027 and classes["mean_purity"] == pytest.approx(labels.mean_purity)
    assert "75.0 %" in answer["neuron_classes_note"] and NEURON_LABELS_FILE in answer["neuron_classes_note"]
    assert classes["classes"][0]["colour"] == "#1f77b4" and CLASS_COLOURS["FRI"] == "tab:blue"  # show som's colours
    # the map's neighbours differ most across its borders: the U-matrix is not flat
    values = np.array([n["u_distance"] for n in answer["neurons"]])
    assert values.max() > 2 * values.min() > 0


def test_a_map_without_neuron_labels_says_so_and_still_has_its_u_matrix(client, two_maps):
    with TestClient(create_app(two_maps)) as other:
        bare = other.get("/som", params={"version": "som=2@som-mirabest:1"})
        labelled = other.get("/som", params={"version": "som=2@som-mirabest:3"}).json()
    assert bare.status_code == 200, bare.text
    bare = bare.json()
    assert bare["model_ref"] == "som-mirabest:1" and sum(n["count"] for n in bare["nodes"]) == 8
    assert not SOM_MIRABEST.path().with_name(NEURON_LABELS_FILE).exists()
    assert bare["neuron_classes"] is None and "released without a neurons.json" in bare["neuron_classes_note"]
    assert all(n["neuron_class"] is None and n["purity"] is None for n in bare["neurons"])
    som = RotationInvariantSOM.load(SOM_MIRABEST.path())
    neurons = _by_place(bare)
    got = [neurons[(x, y)]["u_distance"] for x, y in som.grid_.index_xy.tolist()]
    assert np.allclose(got, u_matrix(som), rtol=1e-12) and len(got) == som.grid_.n_nodes
    # the same stage, version picked as everywhere else: the default map's classes are there
    assert labelled == client.get("/som").json()
    assert labelled["neuron_classes"]["labelled_sources"] == 1027


def test_a_hexagonal_map_kept_in_a_folder_with_its_neuron_labels(classified_db, mirabest_dir, tmp_path):
    """A small hexagonal map trained on real cutouts, registered into a shared folder (``--store file://``) with the
    neurons.json beside it: /som answers its 19 neurons with their U-matrix and classes."""
    from astropy.table import Table

    from survey_classifier.artefacts import fetch
    from survey_classifier.io.fits import read_cutout
    from survey_classifier.preprocess import PreprocessConfig
    from survey_classifier.registry import register_model, stored_ref
    from survey_classifier.stages.plan import bind_models

    catalogue = Table.read(mirabest_dir / "labels.csv")
    rows = catalogue[::40]
    config = PreprocessConfig(size=32, extent="islands", islands_only=True, circle_diameter=32, scaling="peak")
    images = np.stack([read_cutout(mirabest_dir / "fits" / name).preprocessed(config) for name in rows["file"]])
    som = RotationInvariantSOM(grid_shape=(5, 5), layout="hexagonal", neuron_size=32, n_rotations=16, n_epochs=2,
                               random_state=0, preprocess_config=config).fit(images)
    som.save(tmp_path / "som.npz")
    labels = NeuronLabels.fit(som.grid_, som.map(images)["node"], list(rows["fr_class"]), ("FRI", "FRII", "hybrid"))
    (tmp_path / NEURON_LABELS_FILE).write_text(json.dumps(labels.to_dict()))
    shutil.copy(classified_db["path"], tmp_path / "hex.db")
    url = f"sqlite:///{tmp_path / 'hex.db'}"
    engine = make_engine(url)
    register_model(engine, tmp_path / "som.npz", stage="som", name="hex-test", version="1",
                   store=f"file://{tmp_path / 'shared-models'}")
    ref = stored_ref(engine, "hex-test:1")
    kept = [fetch(ref, engine).path, fetch(ref.companion(NEURON_LABELS_FILE), engine).path]
    assert [path.parent.parent for path in kept] == [tmp_path / "shared-models"] * 2  # each under its own sha256
    paths = [str(p) for p in query_results(engine)["path"][:6]]
    stage = load_stage("som", model="hex-test:1")
    bind_models(engine, [stage])  # as classify resolves it, through the registry
    run_pipeline([CutoutSource(p) for p in paths], [stage], engine)
    engine.dispose()
    with TestClient(create_app(url)) as hexagonal:
        answer = hexagonal.get("/som", params={"version": "som=2@hex-test:1"}).json()
    assert answer["layout"] == "hexagonal" and len(answer["neurons"]) == som.grid_.n_nodes == 19
    neurons = _by_place(answer)
    expected_u = u_matrix(som)
    for node, (x, y) in enumerate(som.grid_.index_xy.tolist()):
        assert neurons[(x, y)]["u_distance"] == pytest.approx(expected_u[node], rel=1e-12)
        assert neurons[(x, y)]["class_counts"] == dict(zip(labels.classes, labels.counts[node].tolist(), strict=True))
        given = labels.labels[node]
        assert neurons[(x, y)]["neuron_class"] == (labels.classes[given] if given >= 0 else None)
    assert answer["neuron_classes"]["labelled_sources"] == len(rows) == 26


def test_neuron_labels_that_do_not_fit_the_map_are_refused(tmp_path):
    shipped = SOM_MIRABEST_3.path().with_name(NEURON_LABELS_FILE)
    labels = NeuronLabels.read(shipped, n_nodes=100)
    assert NeuronLabels.from_dict(labels.to_dict()).to_dict() == labels.to_dict()
    with pytest.raises(ValueError, match=r"neurons.json: neuron labels of 100 neurons do not fit a map of 19"):
        NeuronLabels.read(shipped, n_nodes=19)
    broken = tmp_path / NEURON_LABELS_FILE
    broken.write_text('{"classes": ["FRI"], "counts": [[1], [2]], "labels": [0, 3]}')
    with pytest.raises(ValueError, match="index of 1 classes"):
        NeuronLabels.read(broken)


#: Users' labels of two neurons of som-mirabest 3: (0, 0) the other class than the map's, (1, 0) the map's own.
USER_LABELS = {(0, 0): "differs", (1, 0): "agrees"}


@pytest.fixture(scope="module")
def labelled_copy(classified_db, tmp_path_factory):
    """A copy of the classified database where a user labelled two neurons (:data:`USER_LABELS`)."""
    from survey_classifier.labels.store import add_neuron_labels

    path = tmp_path_factory.mktemp("labelled") / "labelled.db"
    shutil.copy(classified_db["path"], path)
    labels = NeuronLabels.read(SOM_MIRABEST_3.path().with_name(NEURON_LABELS_FILE))
    som = RotationInvariantSOM.load(SOM_MIRABEST_3.path())
    given = {}
    for (x, y), how in USER_LABELS.items():
        node = int(np.flatnonzero((som.grid_.index_xy[:, 0] == x) & (som.grid_.index_xy[:, 1] == y))[0])
        own = labels.classes[labels.labels[node]]
        given[(x, y)] = own if how == "agrees" else ({"FRI": "FRII", "FRII": "FRI"}[own])
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        add_neuron_labels(connection, [{"model_ref": "som-mirabest:3", "node_x": x, "node_y": y, "label": label,
                                        "author": "ann"} for (x, y), label in given.items()])
    engine.dispose()
    return {"url": f"sqlite:///{path}", "given": given}


@pytest.fixture(scope="module")
def page(labelled_copy):
    executable = chromium()
    from playwright.sync_api import sync_playwright

    with serving(create_app(labelled_copy["url"])) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url + "/#/som")
        page.wait_for_selector("#som-map .som-cell img")
        yield page
        browser.close()
        assert errors == [], f"JavaScript errors on the page: {errors}"


def _cells(page) -> list[dict]:
    return page.eval_on_selector_all("#som-map .som-cell", """cells => cells.map(c => ({
        x: Number(c.dataset.x), y: Number(c.dataset.y), neuron_class: c.dataset.neuronClass || null,
        purity: c.dataset.purity === undefined ? null : Number(c.dataset.purity),
        u: c.dataset.uDistance === undefined ? null : Number(c.dataset.uDistance), title: c.title,
        badge: c.querySelector('.class-badge').textContent, differs: c.classList.contains('differs'),
        shade: getComputedStyle(c.querySelector('.overlay')).backgroundColor}))""")


def _brightness(css: str) -> float:
    red, green, blue = (float(v) for v in css[css.index("(") + 1:].split(",")[:3])
    return red + green + blue


def test_the_page_lays_the_maps_classes_and_u_matrix_over_it(page, client, labelled_copy, tmp_path):
    answer = client.get("/som").json()
    neurons = _by_place(answer)
    colours = {c["name"]: c["colour"] for c in answer["neuron_classes"]["classes"]}
    assert {c["neuron_class"] for c in _cells(page)} == {None}  # no overlay until one is chosen

    page.select_option("#som-overlay", "class")
    page.wait_for_function("location.hash.includes('overlay=class')")
    cells = _cells(page)
    assert len(cells) == 100
    for cell in cells:
        neuron = neurons[(cell["x"], cell["y"])]
        assert cell["neuron_class"] == neuron["neuron_class"]
        assert cell["purity"] == pytest.approx(neuron["purity"], rel=1e-12)
        shown = math.floor(100 * neuron["purity"] + 0.5)  # rounded half up, as JavaScript rounds
        assert f"purity {shown} %" in cell["title"] and cell["badge"].startswith(f"{neuron['neuron_class']} {shown}%")
        counts = ", ".join(f"{name} {n}" for name, n in neuron["class_counts"].items())
        assert f"({counts})" in cell["title"]
        red, green, blue = (int(colours[neuron["neuron_class"]][i:i + 2], 16) for i in (1, 3, 5))
        assert cell["shade"].startswith(f"rgba({red}, {green}, {blue}, ")
    purest = max(cells, key=lambda c: c["purity"])
    faintest = min(cells, key=lambda c: c["purity"])
    alpha = {id(c): float(c["shade"].rsplit(",", 1)[1].rstrip(")")) for c in (purest, faintest)}
    assert alpha[id(purest)] > alpha[id(faintest)]  # the purer neuron in the stronger colour
    # a user's label that is not the map's class is pointed out; one that is, is not
    given = labelled_copy["given"]
    for cell in cells:
        place = (cell["x"], cell["y"])
        assert cell["differs"] == (USER_LABELS.get(place) == "differs")
        assert (f"your label {given.get(place)} differs" in cell["title"]) == cell["differs"]
    legend = page.inner_text("#som-legend")
    assert "FRI: 56 neurons" in legend and "FRII: 44 neurons" in legend
    shot = tmp_path / "som-overlay-class.png"
    page.screenshot(path=str(shot), full_page=True)
    keep_screenshot(shot)

    page.select_option("#som-overlay", "umatrix")
    page.wait_for_function("location.hash.includes('overlay=umatrix')")
    cells = _cells(page)
    assert all(c["neuron_class"] is None and c["badge"] == "" for c in cells)
    for cell in cells:
        u = neurons[(cell["x"], cell["y"])]["u_distance"]
        assert cell["u"] == pytest.approx(u, rel=1e-12) and f"U-matrix {u:.3f}" in cell["title"]
    by_u = sorted(cells, key=lambda c: c["u"])
    assert _brightness(by_u[0]["shade"]) > _brightness(by_u[len(by_u) // 2]["shade"]) > _brightness(by_u[-1]["shade"])
    low, high = min(c["u"] for c in cells), max(c["u"] for c in cells)
    assert f"{low:.2f}" in page.inner_text("#som-legend") and f"{high:.2f}" in page.inner_text("#som-legend")

    # the choice is in the address: a chosen neuron keeps it, and a reload draws it again
    page.click('#som-map .som-cell[data-x="3"][data-y="4"]')
    page.wait_for_function("location.hash.includes('x=3') && location.hash.includes('overlay=umatrix')")
    page.reload()
    page.wait_for_selector('#som-map .som-cell[data-u-distance]')
    assert page.input_value("#som-overlay") == "umatrix"
    page.wait_for_selector("#node-class")
    assert f"the map's class {neurons[(3, 4)]['neuron_class']}" in page.inner_text("#node-class")

    page.select_option("#som-overlay", "")
    page.wait_for_function("!location.hash.includes('overlay=')")
    assert all(c["u"] is None and c["shade"] == "rgba(0, 0, 0, 0)" for c in _cells(page))
    assert page.inner_text("#som-legend") == ""
