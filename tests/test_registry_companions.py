"""A map's neurons.json travels with it through the registry (#20), checked against the map and verified.

A small hexagonal map is trained by ``train som --labels`` on 26 real MiraBest
cutouts, registered into each store the registry has (the results database on
SQLite and PostgreSQL, a shared folder ``file://``, an S3 bucket), resolved,
and run by the ``som`` stage on real cutouts: ``/som`` then gives the neuron
classes of the ``neurons.json`` that was beside the map, as for a shipped map.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from survey_classifier.api import create_app
from survey_classifier.artefacts import fetch
from survey_classifier.checksum import sha256_file
from survey_classifier.cli import main
from survey_classifier.cutout import CutoutSource
from survey_classifier.db import make_engine, upgrade
from survey_classifier.db.models import ArtefactRow, ModelRow
from survey_classifier.errors import ModelError
from survey_classifier.pipeline import run_pipeline
from survey_classifier.preprocess import PreprocessConfig
from survey_classifier.registry import get_model, register_model, resolve_model
from survey_classifier.som import RotationInvariantSOM
from survey_classifier.som.labels import NEURON_LABELS_FILE, NeuronLabels
from survey_classifier.stages.plan import bind_models
from survey_classifier.stages.registry import load_stage
from survey_classifier.stages.som import SOM_MIRABEST_3

pytestmark = pytest.mark.filterwarnings("ignore::survey_classifier.errors.SurveyClassifierWarning")

#: Where each case keeps a registered model's bytes.
STORES = [
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
    "file",
    pytest.param("s3", marks=pytest.mark.slow),
]


@pytest.fixture(params=STORES)
def registry(request, tmp_path, monkeypatch):
    """A fresh results database, and the ``store`` a registration keeps the bytes in (None: the database)."""
    monkeypatch.setenv("SURVEY_CLASSIFIER_CACHE", str(tmp_path / "cache"))
    kind = request.param
    url = request.getfixturevalue("postgres_url") if kind == "postgres" else f"sqlite:///{tmp_path / 'results.db'}"
    store, objects = None, None
    if kind == "file":
        store = (tmp_path / "shared-models").as_uri()
        objects = _FolderObjects(tmp_path / "shared-models")
    elif kind == "s3":
        server = request.getfixturevalue("s3_server")
        server.filesystem().mkdir("models")
        store, objects = "s3://models/registry", _BucketObjects(server.filesystem(), "models/registry")
    upgrade(url)
    engine = make_engine(url)
    yield SimpleNamespace(kind=kind, url=url, engine=engine, store=store, objects=objects)
    engine.dispose()


class _FolderObjects:
    """The objects a ``file://`` store holds: ``{name: bytes}``."""

    def __init__(self, folder):
        self.folder = folder

    def read(self) -> dict[str, bytes]:
        found = sorted(p for p in self.folder.rglob("*") if p.is_file()) if self.folder.exists() else []
        return {p.relative_to(self.folder).as_posix(): p.read_bytes() for p in found}


class _BucketObjects:
    """The objects under a prefix of an S3 bucket: ``{name: bytes}``."""

    def __init__(self, filesystem, prefix):
        self.filesystem, self.prefix = filesystem, prefix

    def read(self) -> dict[str, bytes]:
        if not self.filesystem.exists(self.prefix):
            return {}
        return {key[len(self.prefix) + 1:]: self.filesystem.cat_file(key) for key in self.filesystem.find(self.prefix)}


def _mapped(registry, model_ref: str, files) -> None:
    """The ``som`` stage, its map resolved through the registry as ``classify`` resolves it, run on ``files``."""
    stage = load_stage("som", model=model_ref)
    bind_models(registry.engine, [stage])
    summary = run_pipeline([CutoutSource(path) for path in files], [stage], registry.engine)
    assert summary.n_processed == len(files)


def _som_view(url: str, model_ref: str) -> dict:
    with TestClient(create_app(url)) as client:
        answer = client.get("/som", params={"version": f"som=2@{model_ref}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def _count(engine, table) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(table)).scalar_one()


@pytest.mark.parametrize("registry", STORES, indirect=True)
def test_a_registered_maps_neuron_classes_are_those_of_its_neurons_json(registry, labelled_map):
    model = register_model(registry.engine, labelled_map.map, stage="som", name="hex-labelled", version="1",
                           store=registry.store)
    original = NeuronLabels.read(labelled_map.neurons)
    neurons_sha = sha256_file(labelled_map.neurons)
    [companion] = model["companions"]
    assert companion["filename"] == NEURON_LABELS_FILE and companion["sha256"] == neurons_sha
    assert companion["details"] == {"classes": ["FRI", "FRII", "hybrid"], "labelled_sources": labelled_map.n,
                                    "mean_purity": round(original.mean_purity, 4), "smoothing": 0.0}
    # kept where the map is kept, each under its own sha256
    if registry.store is None:
        assert model["store"] == companion["store"] == "database"
        with registry.engine.connect() as connection:
            kept = dict(connection.execute(select(ArtefactRow.sha256, ArtefactRow.content)).all())
        assert kept[neurons_sha] == labelled_map.neurons.read_bytes()
    else:
        assert companion["store"] == f"{registry.store}/{neurons_sha}/{NEURON_LABELS_FILE}"
        assert registry.objects.read() == {f"{model['sha256']}/som.npz": labelled_map.map.read_bytes(),
                                           f"{neurons_sha}/{NEURON_LABELS_FILE}": labelled_map.neurons.read_bytes()}
    # resolved, the map brings its neurons.json, fetched and verified as the map is
    ref = resolve_model(registry.engine, "som", "hex-labelled", "1")
    assert ref.companions == ((NEURON_LABELS_FILE, neurons_sha, companion["store"]),)
    fetched = fetch(ref.companion(NEURON_LABELS_FILE), registry.engine).path
    assert fetched.read_bytes() == labelled_map.neurons.read_bytes()
    assert ref.companion("labels.png") is None

    _mapped(registry, "hex-labelled:1", labelled_map.files[:6])
    answer = _som_view(registry.url, "hex-labelled:1")
    som = RotationInvariantSOM.load(labelled_map.map)
    assert answer["layout"] == "hexagonal" and len(answer["neurons"]) == som.grid_.n_nodes == 19
    neurons = {(n["x"], n["y"]): n for n in answer["neurons"]}
    for node, (x, y) in enumerate(som.grid_.index_xy.tolist()):
        given = original.labels[node]
        assert neurons[(x, y)]["neuron_class"] == (original.classes[given] if given >= 0 else None)
        assert neurons[(x, y)]["class_counts"] == dict(zip(original.classes, original.counts[node].tolist(),
                                                           strict=True))
    classes = answer["neuron_classes"]
    assert [c["name"] for c in classes["classes"]] == list(original.classes)
    assert [c["sources"] for c in classes["classes"]] == original.counts.sum(axis=0).tolist()
    assert classes["labelled_sources"] == labelled_map.n == 26
    assert classes["mean_purity"] == pytest.approx(original.mean_purity)
    assert NEURON_LABELS_FILE in answer["neuron_classes_note"] and "hex-labelled:1" in answer["neuron_classes_note"]


def test_a_changed_neurons_json_in_the_store_is_refused(labelled_map, tmp_path, monkeypatch, caplog):
    """The stored neurons.json is checked against its registered sha256 before the page uses it."""
    monkeypatch.setenv("SURVEY_CLASSIFIER_CACHE", str(tmp_path / "cache"))
    url = f"sqlite:///{tmp_path / 'results.db'}"
    upgrade(url)
    registry = SimpleNamespace(url=url, engine=make_engine(url))
    model = register_model(registry.engine, labelled_map.map, stage="som", name="hex-changed", version="1",
                           store=(tmp_path / "shared").as_uri())
    stored = tmp_path / "shared" / model["companions"][0]["sha256"] / NEURON_LABELS_FILE
    record = json.loads(stored.read_text())
    record["labels"] = [0] * len(record["labels"])  # every neuron FRI: still a well-formed neurons.json
    stored.write_text(json.dumps(record))
    _mapped(registry, "hex-changed:1", labelled_map.files[:3])
    registry.engine.dispose()
    answer = _som_view(url, "hex-changed:1")
    assert answer["neuron_classes"] is None and all(n["neuron_class"] is None for n in answer["neurons"])
    assert "do not have their registered sha256" in answer["neuron_classes_note"]
    assert any("not the registered" in r.getMessage() and NEURON_LABELS_FILE in r.getMessage()
               for r in caplog.records)
    assert len(answer["neurons"]) == 19  # the map itself is still shown, with its U-matrix
    assert all(n["u_distance"] > 0 for n in answer["neurons"])
    # the registered bytes put back in the store: the page shows the classes, without a restart
    stored.write_bytes(labelled_map.neurons.read_bytes())
    mended = _som_view(url, "hex-changed:1")
    assert mended["neuron_classes"]["labelled_sources"] == labelled_map.n


@pytest.mark.parametrize("registry", ["sqlite", "file"], indirect=True)
def test_neurons_json_of_another_map_is_refused_at_registration(registry, labelled_map, tmp_path):
    """som-mirabest 3's neurons.json (10x10 cartesian) beside the 19-neuron hexagonal map: refused, nothing kept."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(labelled_map.map, folder / "som.npz")
    shutil.copy(SOM_MIRABEST_3.path().with_name(NEURON_LABELS_FILE), folder / NEURON_LABELS_FILE)
    before = (_count(registry.engine, ModelRow), _count(registry.engine, ArtefactRow))
    with pytest.raises(ModelError, match=r"neuron labels of 100 neurons do not fit the hexagonal 5x5 map of 19 "
                                         r"\(som.npz beside it\); label this map again"):
        register_model(registry.engine, folder / "som.npz", stage="som", name="hex-mixed", version="1",
                       store=registry.store)
    assert (_count(registry.engine, ModelRow), _count(registry.engine, ArtefactRow)) == before
    if registry.objects is not None:
        assert registry.objects.read() == {}


def test_labels_of_a_map_of_another_grid_with_as_many_neurons_are_refused(labelled_map, tmp_path, sqlite_url):
    """A neurons.json records its map's grid: labels of a 4x5 map do not fit a 5x4 one, though both have 20."""
    som = RotationInvariantSOM.load(labelled_map.map)
    config = PreprocessConfig.from_dict(som.preprocess_dict_)
    images = som.prototypes_[:12]
    folder = tmp_path / "wide"
    folder.mkdir()
    wide = RotationInvariantSOM(grid_shape=(5, 4), neuron_size=32, n_rotations=16, n_epochs=1, random_state=0,
                                preprocess_config=config).fit(images)
    wide.save(folder / "som.npz")
    tall = RotationInvariantSOM(grid_shape=(4, 5), neuron_size=32, n_rotations=16, n_epochs=1, random_state=0,
                                preprocess_config=config).fit(images)
    classes = ["FRI", "FRII"] * 6
    labels = NeuronLabels.fit(tall.grid_, tall.map(images)["node"], classes, ("FRI", "FRII"))
    (folder / NEURON_LABELS_FILE).write_text(json.dumps(labels.to_dict()))
    result = CliRunner().invoke(main, ["models", "register", "--db", sqlite_url, "--stage", "som", "--name",
                                       "wide", "--version", "1", str(folder / "som.npz")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "neuron labels of a cartesian 4x5 map do not fit a cartesian 5x4 map" in lines[0]


@pytest.mark.parametrize("registry", ["sqlite", "file"], indirect=True)
def test_a_map_without_neurons_json_still_registers_and_the_page_says_why(registry, labelled_map, tmp_path):
    folder = tmp_path / "bare"
    folder.mkdir()
    shutil.copy(labelled_map.map, folder / "som.npz")
    model = register_model(registry.engine, folder / "som.npz", stage="som", name="hex-bare", version="1",
                           store=registry.store)
    assert model["companions"] is None and resolve_model(registry.engine, "som", "hex-bare").companions == ()
    _mapped(registry, "hex-bare:1", labelled_map.files[:3])
    answer = _som_view(registry.url, "hex-bare:1")
    assert answer["neuron_classes"] is None and all(n["neuron_class"] is None for n in answer["neurons"])
    assert "carries no neuron classes (no neurons.json was beside its file when it was registered" in \
        answer["neuron_classes_note"]
    assert len(answer["neurons"]) == 19


def test_models_register_and_show_name_the_files_kept_with_the_map(labelled_map, sqlite_url, tmp_path, monkeypatch):
    monkeypatch.setenv("SURVEY_CLASSIFIER_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()
    registered = runner.invoke(main, ["models", "register", "--db", sqlite_url, "--stage", "som", "--name", "hex",
                                      "--version", "2", str(labelled_map.map)], catch_exceptions=False)
    assert registered.exit_code == 0, registered.output
    neurons_sha = sha256_file(labelled_map.neurons)
    assert f"with neurons.json sha256 {neurons_sha}, stored in database" in registered.output
    shown = runner.invoke(main, ["models", "show", "--db", sqlite_url, "hex", "2"], catch_exceptions=False)
    assert "kept with it:" in shown.output and f"neurons.json  sha256 {neurons_sha}" in shown.output
    assert '"labelled_sources": 26' in shown.output
    engine = make_engine(sqlite_url)
    assert get_model(engine, "hex", "2")["companions"][0]["sha256"] == neurons_sha
    engine.dispose()


def test_shipped_maps_are_seeded_with_their_neurons_json_and_verified(tmp_path, monkeypatch, mirabest_files):
    """A new database records a shipped map's neurons.json with its sha256; /som reads it through the registry."""
    monkeypatch.setenv("SURVEY_CLASSIFIER_CACHE", str(tmp_path / "cache"))
    url = f"sqlite:///{tmp_path / 'results.db'}"
    upgrade(url)
    engine = make_engine(url)
    shipped_file = SOM_MIRABEST_3.path().with_name(NEURON_LABELS_FILE)
    row = get_model(engine, "som-mirabest", "3")
    [companion] = row["companions"]
    assert (companion["filename"], companion["sha256"]) == (NEURON_LABELS_FILE, sha256_file(shipped_file))
    ref = resolve_model(engine, "som", "som-mirabest", "3")
    assert fetch(ref.companion(NEURON_LABELS_FILE), engine).path == shipped_file
    assert get_model(engine, "som-mirabest", "1")["companions"] is None  # version 1 has no neuron classes

    _mapped(SimpleNamespace(url=url, engine=engine), "som-mirabest:3", [str(p) for p in mirabest_files[:3]])
    expected = NeuronLabels.read(shipped_file)
    classes = _som_view(url, "som-mirabest:3")["neuron_classes"]
    assert [c["sources"] for c in classes["classes"]] == expected.counts.sum(axis=0).tolist()
    assert classes["mean_purity"] == pytest.approx(expected.mean_purity)

    # a file that is not the released one is refused, as the map itself would be
    altered = tmp_path / NEURON_LABELS_FILE
    altered.write_text(shipped_file.read_text().replace('"FRII"', '"FRI"', 1))
    with pytest.raises(ModelError, match="sha256"):
        fetch(replace(ref.companion(NEURON_LABELS_FILE), store=f"file://{altered}"))


def test_a_database_seeded_before_shipped_maps_carried_neurons_json_gets_the_released_record(tmp_path, monkeypatch,
                                                                                            mirabest_files):
    """Upgrading a database whose shipped map rows have no companions records the released ones (sha256 checked)."""
    monkeypatch.setenv("SURVEY_CLASSIFIER_CACHE", str(tmp_path / "cache"))
    url = f"sqlite:///{tmp_path / 'results.db'}"
    upgrade(url)
    engine = make_engine(url)
    released = get_model(engine, "som-mirabest", "3")["companions"]
    _mapped(SimpleNamespace(url=url, engine=engine), "som-mirabest:3", [str(p) for p in mirabest_files[:3]])
    with engine.begin() as connection:  # as the rows were before shipped maps carried their neurons.json
        connection.execute(ModelRow.__table__.update().where(ModelRow.name == "som-mirabest").values(companions=None))
    assert resolve_model(engine, "som", "som-mirabest", "3").companion(NEURON_LABELS_FILE) is None

    upgrade(url)
    assert get_model(engine, "som-mirabest", "3")["companions"] == released
    assert get_model(engine, "som-mirabest", "1")["companions"] is None  # released without neuron classes
    ref = resolve_model(engine, "som", "som-mirabest", "3")
    assert fetch(ref.companion(NEURON_LABELS_FILE), engine).path == SOM_MIRABEST_3.path().with_name(NEURON_LABELS_FILE)
    assert _som_view(url, "som-mirabest:3")["neuron_classes"]["mean_purity"] > 0.5

    # a row that is not the released map (other bytes under the same name) is left as it is
    with engine.begin() as connection:
        connection.execute(ModelRow.__table__.update().where(ModelRow.name == "som-mirabest", ModelRow.version == "2")
                           .values(companions=None, sha256="0" * 64))
    upgrade(url)
    assert get_model(engine, "som-mirabest", "2")["companions"] is None
