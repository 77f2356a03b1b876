"""``show som NAME:VERSION --db URL``: a registered map drawn with the neurons.json registered with it (#20).

Real maps (the shipped som-mirabest:3, a small labelled hexagonal map trained
by ``train som --labels``), real MiraBest cutouts and a real SQLite results
database seeded by ``upgrade``; the map's bytes and its neurons.json are kept
in the database or in a ``file://`` store and fetched and verified as a
worker fetches them.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from matplotlib.pyplot import imread

from survey_classifier.artefacts import fetch
from survey_classifier.cli import main
from survey_classifier.db import make_engine, upgrade
from survey_classifier.registry import register_model, stored_ref
from survey_classifier.som.labels import NEURON_LABELS_FILE
from survey_classifier.stages.som import SOM_MIRABEST_3

pytestmark = pytest.mark.filterwarnings("ignore::survey_classifier.errors.SurveyClassifierWarning")

#: What ``show som`` always draws of a map.
ALWAYS = ["prototypes.png", "prototypes_tiles.png", "umatrix.png"]


@pytest.fixture(params=["sqlite"])
def results_db(request, tmp_path, monkeypatch):
    """A fresh results database (SQLite, or PostgreSQL where a test asks; shipped maps seeded), a private cache."""
    monkeypatch.setenv("SURVEY_CLASSIFIER_CACHE", str(tmp_path / "cache"))
    sqlite = f"sqlite:///{tmp_path / 'results.db'}"
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else sqlite
    upgrade(url)
    engine = make_engine(url)
    yield url, engine
    engine.dispose()


def _show(*args):
    return CliRunner().invoke(main, ["show", "som", *map(str, args)])


def _drawn(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _same_pixels(first, second) -> bool:
    return np.array_equal(imread(first), imread(second))


def test_a_shipped_map_by_reference_draws_what_its_file_draws(results_db, tmp_path, mirabest_dir, mirabest_files):
    url, _ = results_db
    names = {path.name for path in mirabest_files[::150]}
    catalogue = tmp_path / "few.csv"
    rows = (mirabest_dir / "labels.csv").read_text().splitlines()
    catalogue.write_text("\n".join(row for row in rows if row.split(",")[0] in names | {"file"}))
    classified = CliRunner().invoke(main, ["classify", str(catalogue), "--base-dir", str(mirabest_dir / "fits"),
                                           "--db", url, "--stages", "measure", "--quiet"])  # fmt: skip
    assert classified.exit_code == 0, classified.output

    by_ref = _show("som-mirabest:3", "--db", url, "--out", tmp_path / "by-ref")
    assert by_ref.exit_code == 0, by_ref.output
    by_path = _show(SOM_MIRABEST_3.path(), "--db", url, "--out", tmp_path / "by-path")
    assert by_path.exit_code == 0, by_path.output
    assert by_ref.output.count("picture: ") == by_path.output.count("picture: ") == 5
    assert _drawn(tmp_path / "by-ref") == _drawn(tmp_path / "by-path") == sorted([*ALWAYS, "hits.png", "labels.png"])
    # the same map, the same neuron classes (its neurons.json) and the same cutouts mapped for hit counts
    for name in ("labels.png", "hits.png", "prototypes.png"):
        assert _same_pixels(tmp_path / "by-ref" / name, tmp_path / "by-path" / name), name


@pytest.mark.parametrize("results_db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
                         indirect=True)
def test_a_registered_map_is_drawn_with_the_neurons_json_registered_with_it(results_db, tmp_path, labelled_map):
    url, engine = results_db
    register_model(engine, labelled_map.map, stage="som", name="my-map", version="1")  # kept in the database
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(labelled_map.map, bare / "som.npz")
    register_model(engine, bare / "som.npz", stage="som", name="my-map", version="2")

    beside = _show(labelled_map.folder, "--out", tmp_path / "beside")
    assert beside.exit_code == 0, beside.output
    shown = _show("my-map:1", "--db", url, "--out", tmp_path / "registered")
    assert shown.exit_code == 0, shown.output
    assert _drawn(tmp_path / "registered") == _drawn(tmp_path / "beside") == sorted([*ALWAYS, "labels.png"])
    assert "has no cutouts: the map is drawn without hit counts" in shown.output
    assert _same_pixels(tmp_path / "registered" / "labels.png", tmp_path / "beside" / "labels.png")

    # a neurons.json that happens to lie beside the fetched copy is not the registered one: never read
    fetched = fetch(stored_ref(engine, "my-map:1"), engine).path
    record = json.loads(labelled_map.neurons.read_text())
    record["labels"] = [0] * len(record["labels"])
    (fetched.parent / NEURON_LABELS_FILE).write_text(json.dumps(record))
    again = _show("my-map:1", "--db", url, "--out", tmp_path / "again")
    assert again.exit_code == 0, again.output
    assert _same_pixels(tmp_path / "again" / "labels.png", tmp_path / "beside" / "labels.png")

    without = _show("my-map:2", "--db", url, "--out", tmp_path / "without")
    assert without.exit_code == 0, without.output
    assert "the map my-map:2 carries no neuron classes (no neurons.json was beside its file" in without.output
    assert _drawn(tmp_path / "without") == ALWAYS


def test_a_changed_neurons_json_in_the_store_is_refused_and_the_map_still_drawn(results_db, tmp_path, labelled_map):
    url, engine = results_db
    model = register_model(engine, labelled_map.map, stage="som", name="my-map", version="1",
                           store=(tmp_path / "shared").as_uri())  # fmt: skip
    stored = tmp_path / "shared" / model["companions"][0]["sha256"] / NEURON_LABELS_FILE
    record = json.loads(stored.read_text())
    record["labels"] = [0] * len(record["labels"])  # every neuron FRI: still a well-formed neurons.json
    stored.write_text(json.dumps(record))
    shown = _show("my-map:1", "--db", url, "--out", tmp_path / "pictures")
    assert shown.exit_code == 0, shown.output
    [refusal] = [line for line in shown.output.splitlines() if "refused" in line]
    assert refusal.startswith(f"the neuron classes registered with the map my-map:1 ({NEURON_LABELS_FILE}) are "
                              "refused")  # fmt: skip
    assert "not the registered" in refusal and refusal.endswith("the map is drawn without its neuron classes")
    assert _drawn(tmp_path / "pictures") == ALWAYS


def test_references_that_draw_no_map_are_refused_and_an_existing_path_wins(results_db, tmp_path, labelled_map,
                                                                          monkeypatch):
    url, _ = results_db
    cnn = _show("fr-cnn:1", "--db", url, "--out", tmp_path / "cnn")
    assert cnn.exit_code != 0
    assert "fr-cnn:1 is a model of the 'cnn' stage, not a map of the 'som' stage" in cnn.output
    unknown = _show("no-such-map:7", "--db", url, "--out", tmp_path / "unknown")
    assert unknown.exit_code != 0
    assert "no registered model no-such-map:7" in unknown.output
    assert f"survey-classifier models list --db {url}" in unknown.output
    no_db = _show("som-mirabest:3", "--out", tmp_path / "no-db")
    assert no_db.exit_code != 0 and "give the results database it is registered in with --db URL" in no_db.output
    neither = _show(tmp_path / "runs" / "map:1", "--out", tmp_path / "neither")
    assert neither.exit_code != 0 and "is neither an existing file or folder nor a registered map" in neither.output
    assert not any((tmp_path / name).exists() for name in ("cnn", "unknown", "no-db", "neither"))

    monkeypatch.chdir(tmp_path)  # a folder named like a reference is a path: its map, its neurons.json beside it
    shutil.copytree(labelled_map.folder, tmp_path / "map:1")
    by_path = _show("map:1", "--out", "folder")
    assert by_path.exit_code == 0, by_path.output
    assert _drawn(tmp_path / "folder") == sorted([*ALWAYS, "labels.png"])

    # neurons.json of another map beside a file: the map is drawn without classes, and says so
    shutil.copy(SOM_MIRABEST_3.path().with_name(NEURON_LABELS_FILE), tmp_path / "map:1" / NEURON_LABELS_FILE)
    misfit = _show("map:1", "--out", "misfit")
    assert misfit.exit_code == 0, misfit.output
    assert "the map is drawn without its neuron classes:" in misfit.output and "do not fit" in misfit.output
    assert _drawn(tmp_path / "misfit") == ALWAYS
