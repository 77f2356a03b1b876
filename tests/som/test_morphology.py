"""A map trained on morphology preprocessing: labelled neurons, the stage, refusals, show som."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from survey_classifier.errors import ModelError, StageConfigError
from survey_classifier.preprocess import PreprocessConfig
from survey_classifier.som import MapGrid, RotationInvariantSOM
from survey_classifier.som.cli import show_som, train_som
from survey_classifier.som.labels import NeuronLabels, reliable_distance
from survey_classifier.stages.som import SOMStage

MORPHOLOGY = PreprocessConfig(
    size=48, centre="emission", extent="islands", islands_only=True, circle_diameter=48, scaling="peak"
)


@pytest.fixture(scope="module")
def classes(mirabest_dir, som_cutouts):
    with open(mirabest_dir / "labels.csv", newline="") as handle:
        by_file = {row["file"]: row["fr_class"] for row in csv.DictReader(handle)}
    return np.array([by_file[cutout.path.rsplit("/", 1)[-1]] for cutout in som_cutouts])


@pytest.fixture(scope="module")
def morphology_som(som_cutouts):
    images = np.stack([cutout.preprocessed(MORPHOLOGY) for cutout in som_cutouts])
    som = RotationInvariantSOM(grid_shape=(3, 3), neuron_size=48, n_rotations=36, n_epochs=2,
                               random_state=0, preprocess_config=MORPHOLOGY)  # fmt: skip
    return som.fit(images), images


def test_neurons_take_the_majority_of_their_sources(morphology_som, classes):
    som, images = morphology_som
    mapping = som.map(images)
    labels = NeuronLabels.fit(som.grid_, mapping["node"], classes, ("FRI", "FRII", "hybrid"))
    assert labels.counts.sum() == len(images)
    for node in np.flatnonzero(labels.hits):
        members = classes[mapping["node"] == node]
        majority = max(("FRI", "FRII", "hybrid"), key=lambda name: (members == name).sum())
        assert labels.purity[node] == pytest.approx((members == majority).mean())
    said = labels.read_off(mapping["node"])
    assert np.mean(said == classes) == pytest.approx(labels.mean_purity, abs=0.02)  # ties aside
    assert 0.4 < labels.mean_purity <= 1.0


def test_empty_neuron_takes_its_neighbours_vote():
    grid = MapGrid((1, 4))
    labels = NeuronLabels.fit(grid, [0, 0, 2, 3], ["FRI", "FRI", "FRII", "FRII"], ("FRI", "FRII"))
    # node 1 is empty: its neighbours 0 (2 FRI) and 2 (1 FRII) say FRI
    assert list(labels.read_off([0, 1, 2, 3])) == ["FRI", "FRI", "FRII", "FRII"]
    assert list(labels.hits) == [2, 0, 1, 1]
    # a lone FR I beside three FR II: its own vote, or with smoothing its neighbours' too
    nodes, names = [0, 1, 1, 1], ["FRI", "FRII", "FRII", "FRII"]
    assert NeuronLabels.fit(grid, nodes, names, ("FRI", "FRII")).read_off([0])[0] == "FRI"
    smoothed = NeuronLabels.fit(grid, nodes, names, ("FRI", "FRII"), smoothing=1.0)
    assert smoothed.read_off([0])[0] == "FRII" and list(smoothed.hits) == [1, 3, 0, 0]
    assert reliable_distance([0.5, 1.0, 2.0, 3.0], [True, True, False, False], target=0.6, minimum=1) == 2.0
    assert reliable_distance([0.5, 1.0], [False, False], minimum=1) is None


def test_stage_prepares_cutouts_as_the_map_records(tmp_path, morphology_som, som_cutouts):
    som, images = morphology_som
    path = som.save(tmp_path / "som.npz")
    loaded = RotationInvariantSOM.load(path)
    assert PreprocessConfig.from_dict(loaded.preprocess_dict_) == MORPHOLOGY
    stage = SOMStage(model=str(path))
    results = stage.process(som_cutouts[:6])
    mapping = som.map(images[:6])
    assert [r["node"] for r in results] == list(mapping["node"])
    np.testing.assert_allclose([r["distance"] for r in results], mapping["distance"], rtol=1e-5)
    with pytest.raises(ModelError, match=r"preprocess extent='fixed' \(trained with 'islands'\)"):
        loaded.check_settings(preprocess=PreprocessConfig(size=48, centre="emission", islands_only=True,
                                                          circle_diameter=48, scaling="peak"))  # fmt: skip
    loaded.check_settings(preprocess=MORPHOLOGY)
    # a map whose preparation this release does not know is refused, naming the file
    metadata = som.metadata()
    metadata["preprocess"]["sharpen"] = True
    with open(tmp_path / "newer.npz", "wb") as handle:
        np.savez_compressed(handle, neurons=som.neurons_, metadata=np.array(json.dumps(metadata)))
    with pytest.raises(StageConfigError, match=r"newer.npz: its preprocessing record cannot be used.*sharpen"):
        SOMStage(model=str(tmp_path / "newer.npz")).setup()


def test_train_with_labels_and_show_from_a_database(tmp_path, mirabest_dir, mirabest_files, sqlite_url):
    from survey_classifier.cli import main

    files = mirabest_files[::50]
    out = tmp_path / "som"
    args = [*map(str, files), "--out", str(out), "--grid", "2x2", "--rotations", "24", "--size", "48",
            "--neuron-size", "48",
            "--centre", "emission", "--extent", "islands", "--islands-only", "--circle", "48", "--scaling", "peak",
            "--stretch", "sqrt", "--island-reach", "30",
            "--labels", str(mirabest_dir / "labels.csv"), "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(train_som, args)
    assert result.exit_code == 0, result.output
    neurons = json.loads((out / "neurons.json").read_text())
    assert sum(map(sum, neurons["counts"])) == len(files) and set(neurons["classes"]) <= {"FRI", "FRII", "hybrid"}
    record = RotationInvariantSOM.load(out / "som.npz").preprocess_dict_
    assert record["stretch"] == "sqrt" and record["island_reach"] == 30
    for name in ("prototypes.png", "labels.png", "umatrix.png", "prototypes_tiles.png"):
        assert (out / name).stat().st_size > 1000
    catalogue = tmp_path / "few.csv"
    with open(mirabest_dir / "labels.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    names = {path.name for path in files}
    catalogue.write_text("\n".join(",".join(row) for row in rows if row[0] == "file" or row[0] in names))
    classified = CliRunner().invoke(main, ["classify", str(catalogue), "--base-dir", str(mirabest_dir / "fits"),
                                           "--db", sqlite_url, "--stages", "measure", "--quiet"])  # fmt: skip
    assert classified.exit_code == 0, classified.output
    shown = CliRunner().invoke(show_som, [str(out), "--db", sqlite_url, "--label-column", "fr_class",
                                          "--node", "1,0", "--out", str(tmp_path / "pictures")])  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert shown.output.count("picture: ") == 6 and "node_1_0.png" in shown.output
    wrong = CliRunner().invoke(show_som, [str(out), "--db", sqlite_url, "--label-column", "colour",
                                          "--out", str(tmp_path / "p1")])  # fmt: skip
    assert wrong.exit_code != 0 and "no column 'colour'" in wrong.output
    assert not (tmp_path / "p1").exists()  # refused before drawing anything
    outside = CliRunner().invoke(show_som, [str(out), "--node", "5,5", "--out", str(tmp_path / "p2")])
    assert outside.exit_code != 0 and "no neuron at (5, 5)" in outside.output
