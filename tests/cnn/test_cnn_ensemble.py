"""Out-of-fold predictions, temperatures fitted on them, and ensembles of different backbones.

One module-scoped run on 32 real MiraBest cutouts trains two tiny
classifiers of different backbones (``compact`` and the equivariant ``c8``)
on the same split, and cross-validates both recipes in 2 folds; the tests
check the out-of-fold records and the ensemble built from them.
"""

import json

import numpy as np
import pytest
from astropy.table import Table
from click.testing import CliRunner

pytestmark = [
    pytest.mark.train,
    pytest.mark.filterwarnings("ignore:.*np.object.*:FutureWarning"),
]

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
onnxruntime = pytest.importorskip("onnxruntime")

from survey_classifier.cnn.cli import cnn_ensemble, train_cnn  # noqa: E402

SIZE = 32
RECIPES = {
    "a": ("--backbone", "compact:4", "--freeze", "0", "--head-epochs", "2"),
    "b": ("--backbone", "c8:2", "--freeze", "0", "--head-epochs", "2"),
}


def _catalogue_args(catalogue):
    return ["--catalogue", str(catalogue), "--file-column", "path", "--label-column", "fr"]


def _invoke(command, args):
    result = CliRunner().invoke(command, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _train(catalogue, output, *extra):
    return _invoke(train_cnn, [
        *_catalogue_args(catalogue), "--size", SIZE, "--crop", 100, "--head", 8, "--batch-size", 8,
        "--test-fraction", 0.25, "--valid-fraction", 0.25, "--min-per-class", 5, "--output", output, *extra,
    ])


@pytest.fixture(scope="module")
def runs(tmp_path_factory, catalogue):
    root = tmp_path_factory.mktemp("ensemble")
    for name, recipe in RECIPES.items():
        # members as for the ensemble's one test evaluation: their own test figures never computed
        _train(catalogue, root / name, *recipe, "--no-export", "--no-score-test")
        _train(catalogue, root / f"cv-{name}", *recipe, "--cross-validate", 2)
    return root


def _ensemble(catalogue, runs, output, *extra):
    return _invoke(cnn_ensemble, [
        "--member", runs / "a", "--member", runs / "b", *_catalogue_args(catalogue),
        "--output", output, *extra,
    ])


def test_crossval_records_out_of_fold_probabilities_of_every_development_source(runs):
    split = Table.read(runs / "a" / "split.csv", format="ascii.csv")
    development = {str(f).rsplit("/", 1)[-1] for f, part in zip(split["file"], split["split"], strict=True)
                   if part != "test"}
    test = {str(f) for f, part in zip(split["file"], split["split"], strict=True) if part == "test"}
    record = json.loads((runs / "cv-a" / "crossval.json").read_text())
    assert record["complete"] is True and len(record["fold_records"]) == 2
    seen = []
    for accuracy, fold in zip(record["folds"], record["fold_records"], strict=True):
        p = np.asarray(fold["probabilities_t1"])
        calibrated = np.asarray(fold["probabilities"])
        assert p.shape == (len(fold["files"]), 2) and np.allclose(p.sum(axis=1), 1.0)
        # the temperature changes no answer of one network
        assert (p.argmax(axis=1) == calibrated.argmax(axis=1)).all()
        assert np.mean(p.argmax(axis=1) == np.asarray(fold["targets"])) == pytest.approx(accuracy)
        assert fold["temperature"] > 0 and set(fold["best_epoch"]) == {"head"}
        seen += fold["files"]
    assert sorted(seen) == sorted(development) and not set(seen) & test


def test_out_of_fold_pairs_recipes_by_fold_and_source(runs):
    from survey_classifier.cnn.calibration import softmax
    from survey_classifier.cnn.ensemble import fold_accuracies, out_of_fold

    oof = out_of_fold([[runs / "cv-a" / "crossval.json", runs / "cv-b" / "crossval.json"]])
    assert oof["logits"].shape == (2, len(oof["targets"]), 2)
    for member, name in enumerate("ab"):
        record = json.loads((runs / f"cv-{name}" / "crossval.json").read_text())
        np.testing.assert_allclose(fold_accuracies(oof, [member])[0], record["folds"])
        # the logits give back the recorded probabilities of the same source
        fold = record["fold_records"][1]
        pick = np.flatnonzero(oof["fold"] == 1)
        order = [list(oof["files"][pick]).index(f) for f in fold["files"]]
        np.testing.assert_allclose(softmax(oof["logits"][member, pick[order]]), fold["probabilities_t1"],
                                   atol=1e-12)
    mean = softmax(oof["logits"]).mean(axis=0)
    for f in range(2):
        pick = oof["fold"] == f
        assert fold_accuracies(oof)[0, f] == pytest.approx(np.mean(mean[pick].argmax(axis=1) == oof["targets"][pick]))


def test_ensemble_of_two_backbones_is_the_mean_of_its_members_and_exports_within_1e_4(catalogue, runs):
    from survey_classifier.cnn.backbones import load_keras_model
    from survey_classifier.cnn.calibration import classifier_logits, softmax
    from survey_classifier.cnn.data import load_images, read_catalogue
    from survey_classifier.preprocess import PreprocessConfig

    for name in "ab":
        assert json.loads((runs / name / "metrics.json").read_text())["test"] == {"n": 0, "scored": False}
    log = _ensemble(catalogue, runs, runs / "e")
    output = runs / "e"
    record = json.loads((output / "model.json").read_text())
    assert record["export_check"]["max_abs_diff_probabilities"] <= 1e-4
    temperature = record["metrics"]["calibration"]["temperature"]
    assert "validation part" in record["metrics"]["calibration"]["fitted_on"]
    assert [m["directory"] for m in record["metrics"]["members"]] == [str(runs / "a"), str(runs / "b")]
    assert "test accuracy" in log and (output / "reliability.png").stat().st_size > 0

    dataset = read_catalogue(catalogue, file_column="path", label_column="fr")
    images = load_images(dataset.paths, PreprocessConfig(size=SIZE, crop=100))
    members = [load_keras_model(runs / name / "model.keras") for name in "ab"]
    expected = np.mean([softmax(classifier_logits(m, images) / temperature) for m in members], axis=0)
    ensemble = load_keras_model(output / "model.keras")
    keras_p, keras_e = ensemble.predict(images, verbose=0)
    np.testing.assert_allclose(keras_p, expected, atol=1e-5)
    session = onnxruntime.InferenceSession(str(output / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_p, onnx_e = session.run(["probabilities", "embedding"], {"image": images.astype(np.float32)})
    assert np.max(np.abs(onnx_p - keras_p)) <= 1e-4
    np.testing.assert_allclose(onnx_p, expected, atol=1e-4)
    # the embedding is the members' features side by side
    assert onnx_e.shape == (len(images), 16)
    np.testing.assert_allclose(onnx_e, keras_e, atol=1e-4)
    # the recorded test accuracy is the ensemble's on the members' test part
    split = Table.read(runs / "a" / "split.csv", format="ascii.csv")
    test = np.isin([p.name for p in dataset.paths], [str(f) for f in split["file"][split["split"] == "test"]])
    accuracy = np.mean(onnx_p[test].argmax(axis=1) == dataset.targets[test])
    assert record["metrics"]["test"]["accuracy"] == pytest.approx(accuracy)


def test_temperature_from_out_of_fold_predictions(catalogue, runs):
    from survey_classifier.cnn.ensemble import out_of_fold, out_of_fold_calibration

    pair = f"{runs / 'cv-a' / 'crossval.json'},{runs / 'cv-b' / 'crossval.json'}"
    _ensemble(catalogue, runs, runs / "e-oof", "--temperature-from", pair, "--no-score-test")
    record = json.loads((runs / "e-oof" / "model.json").read_text())
    oof = out_of_fold([pair.split(",")])
    expected, _ = out_of_fold_calibration(oof, uncertain_below=0.6)
    calibration = record["metrics"]["calibration"]
    assert calibration["temperature"] == pytest.approx(expected["temperature"])
    assert calibration["out_of_fold"]["n"] == len(oof["targets"])
    assert record["metrics"]["test"] == {"n": 0, "scored": False}
    assert "out-of-fold predictions" in (runs / "e-oof" / "calibration.md").read_text()


def test_single_network_on_every_development_source_with_out_of_fold_temperature(catalogue, runs):
    from survey_classifier.cnn.ensemble import out_of_fold, out_of_fold_calibration

    crossval = runs / "cv-b" / "crossval.json"
    log = _train(catalogue, runs / "all-b", *RECIPES["b"], "--valid-fraction", 0, "--no-score-test",
                 "--temperature-from", crossval)
    assert "test accuracy" not in log
    record = json.loads((runs / "all-b" / "model.json").read_text())
    split = Table.read(runs / "all-b" / "split.csv", format="ascii.csv")
    assert sorted(set(split["split"])) == ["test", "train"] and list(split["split"]).count("train") == 24
    assert record["metrics"]["test"] == {"n": 0, "scored": False} and record["metrics"]["valid"] == {"n": 0}
    expected, _ = out_of_fold_calibration(out_of_fold([[crossval]]), uncertain_below=0.6)
    assert record["metrics"]["calibration"]["temperature"] == pytest.approx(expected["temperature"])
    assert record["export_check"]["max_abs_diff_probabilities"] <= 1e-4
    session = onnxruntime.InferenceSession(str(runs / "all-b" / "model.onnx"), providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    assert float(metadata["temperature"]) == pytest.approx(expected["temperature"])
    assert (runs / "all-b" / "reliability.png").stat().st_size > 0


def test_members_on_different_splits_are_refused(catalogue, runs, tmp_path):
    _train(catalogue, tmp_path / "other", *RECIPES["a"], "--no-export", "--split-seed", 1)
    result = CliRunner().invoke(cnn_ensemble, [
        "--member", str(runs / "a"), "--member", str(tmp_path / "other"), *_catalogue_args(catalogue),
        "--output", str(tmp_path / "e"),
    ])
    assert result.exit_code != 0 and "share one split" in result.output
