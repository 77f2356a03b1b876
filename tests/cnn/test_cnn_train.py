"""Training, transfer, verified ONNX export and inference, on tiny real models.

TensorFlow costs seconds to import and each model a few seconds to train,
so one module-scoped run trains a tiny base network and one transfer from
it, and the tests check their outputs.
"""

import json
import re

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
onnx = pytest.importorskip("onnx")

from survey_classifier.cnn.cli import train_cnn  # noqa: E402
from survey_classifier.cnn.data import load_turned_images  # noqa: E402
from survey_classifier.errors import ModelError  # noqa: E402

SIZE = 32


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, data_dir):
    """16 FRI and 16 FRII confident MiraBest sources, then 5 + 5 uncertain ones, as ECSV."""
    labels = Table.read(data_dir / "mirabest" / "labels.csv", format="ascii.csv")
    rows = [
        labels[(labels["confidence"] == confidence) & (labels["fr_class"] == name)][:count]
        for confidence, count in (("confident", 16), ("uncertain", 5))
        for name in ("FRI", "FRII")
    ]
    files = [str(data_dir / "mirabest" / "fits" / f) for part in rows for f in part["file"]]
    table = Table({
        "path": files,
        "fr": [str(v) for part in rows for v in part["fr_class"]],
        "conf": [str(v) for part in rows for v in part["confidence"]],
        "ra_deg": [float(v) for part in rows for v in part["ra_deg"]],
        "dec_deg": [float(v) for part in rows for v in part["dec_deg"]],
    })
    path = tmp_path_factory.mktemp("catalogue") / "tiny.ecsv"
    table.write(path)
    return path


def _train(catalogue, output, *extra):
    args = [
        "--catalogue", str(catalogue), "--file-column", "path", "--label-column", "fr",
        "--size", str(SIZE), "--crop", "100", "--head", "8", "--batch-size", "8",
        "--test-fraction", "0.25", "--valid-fraction", "0.25", "--min-per-class", "5",
        "--where", "conf=confident", "--output", str(output), *extra,
    ]
    result = CliRunner().invoke(train_cnn, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory, catalogue):
    root = tmp_path_factory.mktemp("models")
    base_log = _train(catalogue, root / "base", "--backbone", "compact:4", "--freeze", "0",
                      "--head-epochs", "2", "--name", "tiny-base")
    transfer_log = _train(catalogue, root / "transfer", "--backbone", str(root / "base" / "model.keras"),
                          "--freeze", "all", "--head-epochs", "2", "--fine-tune-epochs", "1",
                          "--model-version", "3")
    return root, base_log, transfer_log


def test_training_writes_model_metrics_curves_and_split(trained):
    root, base_log, _ = trained
    for name in ("model.keras", "model.onnx", "model.json", "metrics.json", "curves.png", "split.csv"):
        assert (root / "base" / name).stat().st_size > 0, name
    assert "[head] epoch 1/2" in base_log and "[head] epoch 2/2" in base_log
    metrics = json.loads((root / "base" / "metrics.json").read_text())
    assert metrics["classes"] == ["FRI", "FRII"]
    test = metrics["test"]
    assert test["n"] == 8
    assert np.sum(test["confusion_matrix"]) == 8
    assert test["accuracy"] == pytest.approx(np.trace(test["confusion_matrix"]) / 8)
    assert set(test["per_class"]) == {"FRI", "FRII"}
    split = Table.read(root / "base" / "split.csv", format="ascii.csv")
    assert sorted(set(split["split"])) == ["test", "train", "valid"] and len(split) == 32


def test_frozen_base_layers_keep_their_weights_fine_tuning_moves_them(trained):
    root, _, transfer_log = trained
    assert "[fine-tune] epoch 1/1" in transfer_log
    base = keras.models.load_model(root / "base" / "model.keras", compile=False)
    transferred = keras.models.load_model(root / "transfer" / "model.keras", compile=False)
    conv_names = [layer.name for layer in base.layers if layer.name.endswith("_conv0")]
    assert conv_names
    moved = [
        not np.array_equal(base.get_layer(name).get_weights()[0],
                           transferred.get_layer(name).get_weights()[0])
        for name in conv_names
    ]
    # Frozen during the head phase, then fine-tuned for one epoch: they moved,
    # but only a little (low learning rate).
    assert any(moved)
    for name in conv_names:
        before = base.get_layer(name).get_weights()[0]
        after = transferred.get_layer(name).get_weights()[0]
        assert np.max(np.abs(after - before)) < 0.05 * np.max(np.abs(before)) + 1e-3


def test_onnx_export_metadata_and_dynamic_batch(trained):
    root = trained[0] / "transfer"
    model = onnx.load(root / "model.onnx")
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["classes"]) == ["FRI", "FRII"]
    assert json.loads(props["preprocess"])["size"] == SIZE
    assert props["model_name"] == "transfer" and props["model_version"] == "3"
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [o.name for o in model.graph.output] == ["probabilities", "embedding"]
    record = json.loads((root / "model.json").read_text())
    assert record["export_check"]["max_abs_diff_probabilities"] <= 1e-4
    assert record["stage"] == "cnn" and len(record["sha256"]) == 64


def test_stage_on_exported_model_matches_keras(trained, mirabest_files):
    from survey_classifier.cnn.data import load_images
    from survey_classifier.io.fits import read_cutout
    from survey_classifier.stages.cnn import CNNStage, load_model_record

    root = trained[0] / "transfer"
    stage = CNNStage(model=root, embedding=True, batch_size=3)
    stage.setup()
    record, onnx_path = load_model_record(root)
    assert record["name"] == "transfer" and record["version"] == "3"  # what training wrote; outside the
    assert stage.model_ref == f"file:model.onnx@{record['sha256'][:12]}"  # registry a file is named by its bytes
    files = mirabest_files[:7]
    results = stage.process([read_cutout(path) for path in files])
    keras_model = keras.models.load_model(root / "model.keras", compile=False)
    expected = keras_model.predict(load_images(files, stage.preprocess_config), verbose=0)
    got = np.array([[r["probabilities"]["FRI"], r["probabilities"]["FRII"]] for r in results])
    assert np.max(np.abs(got - expected)) <= 1e-4
    assert results[0]["embedding"].shape == (8,)


def test_export_that_disagrees_writes_nothing(trained, tmp_path):
    from survey_classifier.cnn.export import export_onnx
    from survey_classifier.preprocess import PreprocessConfig

    root = trained[0] / "base"
    model = keras.models.load_model(root / "model.keras", compile=False)
    images = np.random.default_rng(0).random((4, SIZE, SIZE, 1), dtype=np.float32)
    target = tmp_path / "bad.onnx"
    with pytest.raises(ModelError, match="disagrees with Keras.*nothing was written"):
        export_onnx(model, target, classes=["FRI", "FRII"],
                    preprocess_config=PreprocessConfig(size=SIZE, crop=100),
                    name="bad", version="1", check_images=images, tolerance=-1.0)
    assert not target.exists()


@pytest.mark.filterwarnings("ignore:`input_shape` is undefined or non-square:UserWarning")
def test_imagenet_offline_names_the_file_it_looked_for():
    from survey_classifier.cnn.backbones import build_backbone, keras_cache_dir

    try:
        model = build_backbone("MobileNetV2", 32, weights="imagenet")
    except ModelError as exc:  # offline, as on the project's machines
        message = str(exc)
        assert str(keras_cache_dir() / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels") in message
        assert "no_top.h5" in message and "--weights" in message
    else:  # online: Keras' normal cache under ~/.keras/models was used
        assert model.output.shape[-1] == 1280
        assert any(keras_cache_dir().glob("mobilenet_v2_weights*.h5"))


def test_transfer_table_runs_every_setting_and_seed(trained, catalogue):
    from survey_classifier.cnn.data import read_catalogue
    from survey_classifier.cnn.table import _setting_config, format_table, transfer_table
    from survey_classifier.cnn.train import TrainingConfig
    from survey_classifier.preprocess import PreprocessConfig

    base = trained[0] / "base" / "model.keras"
    dataset = read_catalogue(catalogue, file_column="path", label_column="fr", min_per_class=5,
                             where={"conf": "confident"})
    config = TrainingConfig(head=(8,), head_epochs=1, fine_tune_epochs=1, batch_size=8,
                            test_fraction=0.25, valid_fraction=0.25)
    scratch = _setting_config("scratch", base, config, 5)
    assert (scratch.backbone, scratch.freeze, scratch.head_epochs, scratch.seed) == ("compact", 0, 2, 5)
    tuned = _setting_config("fine-tuned", base, config, 5)
    assert (tuned.backbone, tuned.freeze, tuned.fine_tune_epochs) == (str(base), "all", 1)
    lines = []
    settings = ("frozen",)  # the fine-tuned path is trained by the `trained` fixture
    table = transfer_table(dataset, PreprocessConfig(size=SIZE, crop=100), base, config=config,
                           seeds=(0, 1), settings=settings, progress=lines.append)
    assert [(r["setting"], r["seed"]) for r in table["runs"]] == [
        (s, seed) for s in settings for seed in (0, 1)]
    for setting in settings:
        accuracies = [r["test_accuracy"] for r in table["runs"] if r["setting"] == setting]
        assert table["summary"][setting]["mean"] == pytest.approx(np.mean(accuracies))
        assert table["summary"][setting]["std"] == pytest.approx(np.std(accuracies, ddof=1))
    text = format_table(table)
    assert text.count("\n") == 2 and "| frozen |" in text
    assert any(line.startswith("== frozen, seed 1") for line in lines)


def test_ensemble_with_extra_rows_averages_its_members_and_exports_one_model(trained, catalogue):
    from survey_classifier.cnn.data import load_images
    from survey_classifier.io.fits import read_cutout
    from survey_classifier.preprocess import PreprocessConfig
    from survey_classifier.stages.cnn import CNNStage

    root = trained[0]
    output = root / "ensemble"
    log = _train(catalogue, output, "--backbone", str(root / "base" / "model.keras"),
                 "--head-epochs", "1", "--members", "2", "--seed", "4",
                 "--extra-train-where", "conf=uncertain")
    assert "member 1/2 (seed 4)" in log and "member 2/2 (seed 5)" in log
    record = json.loads((output / "model.json").read_text())
    extra_used = record["training"]["extra_training_rows"]
    assert 0 < extra_used <= 10 and re.search(rf"train \d+ \+ {extra_used} extra", log)
    assert [m["seed"] for m in record["metrics"]["members"]] == [4, 5]
    assert record["training"]["members"] == 2 and record["export_check"]["max_abs_diff_probabilities"] <= 1e-4

    ensemble = keras.models.load_model(output / "model.keras", compile=False)
    split = Table.read(output / "split.csv", format="ascii.csv")
    files = [str(f) for f in Table.read(catalogue)["path"][:6]]
    images = load_images(files, PreprocessConfig(size=SIZE, crop=100))
    members = [ensemble.get_layer(f"member{k}") for k in range(2)]
    member_outputs = [member.predict(images, verbose=0) for member in members]
    probabilities, embedding = ensemble.predict(images, verbose=0)
    np.testing.assert_allclose(probabilities, (member_outputs[0][0] + member_outputs[1][0]) / 2, atol=1e-6)
    np.testing.assert_allclose(embedding, np.concatenate([m[1] for m in member_outputs], axis=1), atol=1e-6)
    assert not np.allclose(member_outputs[0][0], member_outputs[1][0])  # two different networks
    assert len(split) == 32  # the split holds the catalogue's selection; extra rows only train

    stage = CNNStage(model=output, embedding=True)
    stage.setup()
    results = stage.process([read_cutout(f) for f in files])
    got = np.array([[r["probabilities"]["FRI"], r["probabilities"]["FRII"]] for r in results])
    assert np.max(np.abs(got - probabilities)) <= 1e-4
    assert results[0]["embedding"].shape == (16,)


def test_extra_rows_near_a_held_out_source_are_left_out(catalogue):
    from survey_classifier.cnn.data import read_catalogue
    from survey_classifier.cnn.train import extra_training_rows

    confident = read_catalogue(catalogue, file_column="path", label_column="fr", min_per_class=5,
                               where={"conf": "confident"}, check_images=False)
    extra = read_catalogue(catalogue, file_column="path", label_column="fr", min_per_class=0,
                           where={"conf": "uncertain"}, check_images=False)
    split = {"train": np.arange(2, 32), "valid": np.array([0]), "test": np.array([1])}
    assert list(extra_training_rows(confident, split, extra, radius_arcsec=60.0)) == list(range(10))
    # move two uncertain rows next to the validation and the test source
    extra.ra_deg[3], extra.dec_deg[3] = confident.ra_deg[0] + 0.005, confident.dec_deg[0]
    extra.ra_deg[7], extra.dec_deg[7] = confident.ra_deg[1], confident.dec_deg[1] - 0.01
    kept = extra_training_rows(confident, split, extra, radius_arcsec=60.0)
    assert list(kept) == [0, 1, 2, 4, 5, 6, 8, 9]
    # a row whose image is already in the catalogue is never added twice
    extra.paths[0] = confident.paths[5]
    assert 0 not in extra_training_rows(confident, split, extra, radius_arcsec=60.0)


def test_cross_validation_folds_cover_development_part_and_never_test(trained, catalogue):
    from survey_classifier.cnn.crossval import cross_validate, fold_splits
    from survey_classifier.cnn.data import read_catalogue, source_groups
    from survey_classifier.cnn.train import TrainingConfig, make_split
    from survey_classifier.preprocess import PreprocessConfig

    dataset = read_catalogue(catalogue, file_column="path", label_column="fr", min_per_class=5,
                             where={"conf": "confident"})
    config = TrainingConfig(backbone=str(trained[0] / "base" / "model.keras"), head=(8,), head_epochs=1,
                            batch_size=8, test_fraction=0.25, valid_fraction=0.25)
    usual = make_split(dataset, config)
    folds = fold_splits(dataset, config, 3)
    assert len(folds) == 3
    groups = source_groups(dataset.ra_deg, dataset.dec_deg)
    held = np.zeros(len(dataset), dtype=int)
    for split in folds:
        assert list(np.flatnonzero(split == "test")) == list(usual["test"])
        held += split == "valid"
        valid_groups = set(groups[split == "valid"])
        assert not valid_groups & set(groups[split == "train"])
    development = np.sort(np.concatenate([usual["train"], usual["valid"]]))
    assert list(np.flatnonzero(held == 1)) == list(development) and held.max() == 1

    lines = []
    summary = cross_validate(dataset, PreprocessConfig(size=SIZE, crop=100), config, folds=3,
                             progress=lines.append)
    assert summary["n"] == len(development) and len(summary["folds"]) == 3
    assert summary["correct"] == pytest.approx(summary["mean"] * summary["n"])
    assert [line.split(":")[0] for line in lines] == ["fold 1/3", "fold 2/3", "fold 3/3"]
    assert not any("test" in line for line in lines)


def test_preloaded_extra_images_train_the_same_model(trained, catalogue):
    """cross_validate reads the extra rows once and hands each fold their images."""
    from survey_classifier.cnn.data import load_images, read_catalogue
    from survey_classifier.cnn.train import TrainingConfig, train_cnn
    from survey_classifier.preprocess import PreprocessConfig

    dataset = read_catalogue(catalogue, file_column="path", label_column="fr", min_per_class=5,
                             where={"conf": "confident"})
    extra = read_catalogue(catalogue, file_column="path", label_column="fr", min_per_class=0,
                           where={"conf": "uncertain"})
    preprocess = PreprocessConfig(size=SIZE, crop=100)
    config = TrainingConfig(backbone=str(trained[0] / "base" / "model.keras"), head=(8,), head_epochs=1,
                            batch_size=8, seed=2)
    read = train_cnn(dataset, preprocess, config, extra=extra, progress=lambda line: None)
    given = train_cnn(dataset, preprocess, config, extra=extra, progress=lambda line: None,
                      extra_images=load_images(extra.paths, preprocess))
    assert read.metrics["extra_training_rows"] == given.metrics["extra_training_rows"] > 0
    for left, right in zip(read.model.get_weights(), given.model.get_weights(), strict=True):
        np.testing.assert_array_equal(left, right)


def test_same_command_and_seed_give_the_same_model(trained, catalogue, tmp_path):
    for run in ("a", "b"):
        _train(catalogue, tmp_path / run, "--backbone", str(trained[0] / "base" / "model.keras"),
               "--head-epochs", "1", "--fine-tune-epochs", "1", "--seed", "3", "--no-export")
    a, b = (keras.models.load_model(tmp_path / run / "model.keras", compile=False) for run in ("a", "b"))
    for left, right in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(left, right)


def test_cross_validate_option_writes_its_summary_and_no_model(trained, catalogue, tmp_path):
    log = _train(catalogue, tmp_path / "cv", "--backbone", str(trained[0] / "base" / "model.keras"),
                 "--head-epochs", "1", "--cross-validate", "2")
    summary = json.loads((tmp_path / "cv" / "crossval.json").read_text())
    assert len(summary["folds"]) == 2 and summary["training"]["head_epochs"] == 1
    assert f"({summary['correct']}/{summary['n']})" in log
    assert summary["command"].startswith("survey-classifier train cnn")
    assert not (tmp_path / "cv" / "model.onnx").exists() and not (tmp_path / "cv" / "model.keras").exists()


def test_d4_invariant_model_gives_turned_and_mirrored_images_the_same_answer(trained, catalogue):
    from survey_classifier.cnn.backbones import load_keras_model
    from survey_classifier.cnn.data import load_images
    from survey_classifier.stages.cnn import CNNStage

    root = trained[0]
    output = root / "d4"
    _train(catalogue, output, "--backbone", str(root / "base" / "model.keras"), "--head-epochs", "1",
           "--fine-tune-epochs", "1", "--invariance", "d4")
    stage = CNNStage(model=output, embedding=True)
    stage.setup()
    files = [str(f) for f in Table.read(catalogue)["path"][:4]]
    images = load_images(files, stage.preprocess_config)
    probabilities, embedding = stage.predict(images)
    for turned in (np.rot90(images, 1, axes=(1, 2)), np.rot90(images, 3, axes=(1, 2)),
                   images[:, ::-1], images[:, :, ::-1], np.swapaxes(images, 1, 2)):
        p, e = stage.predict(np.ascontiguousarray(turned))
        np.testing.assert_allclose(p, probabilities, atol=1e-5)
        np.testing.assert_allclose(e, embedding, atol=1e-4)
    keras_model = load_keras_model(output / "model.keras")
    assert np.max(np.abs(keras_model.predict(images, verbose=0) - probabilities)) <= 1e-4
    # a network without the symmetry does not give these answers by itself
    plain = CNNStage(model=root / "transfer")
    plain.setup()
    plain_images = load_images(files, plain.preprocess_config)
    assert not np.allclose(plain.predict(plain_images)[0],
                           plain.predict(np.ascontiguousarray(plain_images[:, ::-1]))[0], atol=1e-5)


def _part_images(root, part):
    from survey_classifier.cnn.data import load_images
    from survey_classifier.stages.cnn import CNNStage

    split = Table.read(root / "split.csv", format="ascii.csv")
    rows = split[split["split"] == part]
    stage = CNNStage(model=root)
    stage.setup()
    paths = {p.name: p for p in _catalogue_paths(root)}
    images = load_images([paths[name] for name in rows["file"]], stage.preprocess_config)
    return images, np.array([["FRI", "FRII"].index(label) for label in rows["label"]]), stage


def _catalogue_paths(root):
    from pathlib import Path

    record = json.loads((root / "metrics.json").read_text())
    return [Path(p) for p in Table.read(record["catalogue"])["path"]]


def test_temperature_fitted_on_validation_lowers_its_nll_and_is_its_minimum(trained):
    from survey_classifier.cnn.backbones import load_keras_model
    from survey_classifier.cnn.calibration import T_BOUNDS, classifier_logits, negative_log_likelihood

    root = trained[0] / "transfer"
    calibration = json.loads((root / "metrics.json").read_text())["calibration"]
    images, targets, _ = _part_images(root, "valid")
    logits = classifier_logits(load_keras_model(root / "model.keras"), images)
    t = calibration["temperature"]
    nll = negative_log_likelihood(logits, targets, t)
    assert nll == pytest.approx(calibration["valid"]["nll_after"], abs=1e-5)
    assert negative_log_likelihood(logits, targets, 1.0) == pytest.approx(calibration["valid"]["nll_before"],
                                                                         abs=1e-5)
    assert nll < calibration["valid"]["nll_before"] and t != 1.0
    nearby = [t * f for f in (0.95, 1.05) if T_BOUNDS[0] <= t * f <= T_BOUNDS[1]]
    assert nll <= min(negative_log_likelihood(logits, targets, other) for other in nearby) + 1e-9
    card = (root / "calibration.md").read_text()
    assert f"{calibration['valid']['ece_before']:.3f} | {calibration['valid']['ece_after']:.3f}" in card
    assert (root / "reliability.png").read_bytes()[:4] == b"\x89PNG"


def test_onnx_probabilities_are_softmax_of_logits_over_t(trained):
    from survey_classifier.cnn.backbones import load_keras_model
    from survey_classifier.cnn.calibration import classifier_logits, softmax

    root = trained[0] / "transfer"
    images, _, stage = _part_images(root, "test")
    record = json.loads((root / "model.json").read_text())
    t = record["metrics"]["calibration"]["temperature"]
    props = {p.key: p.value for p in onnx.load(root / "model.onnx").metadata_props}
    assert float(props["temperature"]) == pytest.approx(t) and float(props["uncertain_below"]) == 0.6
    logits = classifier_logits(load_keras_model(root / "model.keras"), images)
    probabilities, _ = stage.predict(images)
    np.testing.assert_allclose(probabilities, softmax(logits / t), atol=1e-5)
    assert np.max(np.abs(probabilities - softmax(logits))) > 1e-3  # the temperature did change them


def test_uncertain_flag_is_stored_and_queryable(trained, tmp_path, engine):
    from survey_classifier.cnn.data import load_images
    from survey_classifier.cutout import CutoutSource
    from survey_classifier.pipeline import run_pipeline
    from survey_classifier.query import query_results
    from survey_classifier.stages.cnn import CNNStage

    root = trained[0] / "transfer"
    paths = _catalogue_paths(root)[::3]
    top = CNNStage(model=root)
    top.setup()
    confidence = top.predict(load_images(paths, top.preprocess_config))[0].max(axis=1)
    # the same network with a threshold between its answers, so both flags occur
    threshold = float(np.median(confidence))
    model = onnx.load(root / "model.onnx")
    for prop in model.metadata_props:
        if prop.key == "uncertain_below":
            prop.value = json.dumps(threshold)
    onnx.save(model, tmp_path / "model.onnx")
    stage = CNNStage(model=tmp_path / "model.onnx", embedding=False)
    summary = run_pipeline([CutoutSource(str(p)) for p in paths], [stage], engine)
    assert summary.n_processed == len(paths)
    table = query_results(engine, stage="cnn")
    expected = {p.name: bool(c < threshold) for p, c in zip(paths, confidence)}
    assert [bool(v) for v in table["cnn_uncertain"]] == [expected[name.rsplit("/", 1)[-1]]
                                                        for name in table["path"]]
    assert 0 < np.sum(table["cnn_uncertain"]) < len(paths)
    assert table["cnn_uncertain"].info.meta["ucd"] == "meta.code.qual"
    assert "uncertain_below" in table["cnn_uncertain"].info.description


def test_c8_backbone_exported_model_is_invariant_to_quarter_turns_and_near_it_at_45_degrees(trained, catalogue):
    from survey_classifier.cnn.backbones import load_keras_model
    from survey_classifier.stages.cnn import CNNStage

    output = trained[0] / "c8"
    _train(catalogue, output, "--backbone", "c8:2", "--freeze", "0", "--head-epochs", "2")
    stage = CNNStage(model=output, embedding=True)
    stage.setup()
    files = [str(f) for f in Table.read(catalogue)["path"][::4]]
    images = load_turned_images(files, stage.preprocess_config, 0.0)
    probabilities, embedding = stage.predict(images)
    scale = np.abs(embedding).max()
    for turns in (1, 2, 3):
        p, e = stage.predict(np.ascontiguousarray(np.rot90(images, turns, axes=(1, 2))))
        np.testing.assert_allclose(p, probabilities, atol=1e-4)
        np.testing.assert_allclose(e, embedding, atol=1e-4 * scale)
    keras_model = load_keras_model(output / "model.keras")
    assert np.max(np.abs(keras_model.predict(images, verbose=0) - probabilities)) <= 1e-4
    # 45 degrees: not exact (bilinear filter turns, pixel grid), but close; a plain CNN moves more
    p45, e45 = stage.predict(load_turned_images(files, stage.preprocess_config, 45.0))
    change = np.linalg.norm(e45 - embedding, axis=1) / np.linalg.norm(embedding, axis=1)
    plain = CNNStage(model=trained[0] / "base", embedding=True)
    plain.setup()
    plain_e = plain.predict(load_turned_images(files, plain.preprocess_config, 0.0))[1]
    plain_e45 = plain.predict(load_turned_images(files, plain.preprocess_config, 45.0))[1]
    plain_change = np.linalg.norm(plain_e45 - plain_e, axis=1) / np.linalg.norm(plain_e, axis=1)
    print(f"45 deg: max |dp| {np.abs(p45 - probabilities).max():.3g}, embedding change c8 "
          f"{np.median(change):.3f}, compact {np.median(plain_change):.3f}")
    assert np.median(change) < 0.6 * np.median(plain_change)
    assert np.abs(p45 - probabilities).max() < 0.2


def test_collapsed_training_is_reported_in_the_output_and_the_records(trained, catalogue, tmp_path):
    from survey_classifier.cnn.train import collapse_check

    # a learning rate of 30 kills every ReLU in a step or two: the model answers its bias, whatever the cutout
    log = _train(catalogue, tmp_path / "dead", "--backbone", "compact:4", "--freeze", "0",
                 "--head-epochs", "2", "--head-lr", "30", "--no-score-test")
    metrics = json.loads((tmp_path / "dead" / "metrics.json").read_text())
    record = json.loads((tmp_path / "dead" / "model.json").read_text())
    assert metrics["collapse"]["collapsed"] and metrics["collapse"]["part"] == "valid"
    assert record["metrics"]["collapse"] == metrics["collapse"]
    assert "WARNING: the model collapsed" in log and "recorded under 'collapse'" in log
    # the record is what the saved model answers on its validation cutouts
    model = keras.models.load_model(tmp_path / "dead" / "model.keras", compile=False)
    split = (tmp_path / "dead" / "split.csv").read_text().splitlines()[1:]
    valid = [row.split(",")[0] for row in split if row.endswith(",valid")]
    from survey_classifier.cnn.data import load_images
    from survey_classifier.preprocess import PreprocessConfig

    files = {path.split("/")[-1]: path for path in Table.read(catalogue)["path"]}
    config = PreprocessConfig(size=SIZE, crop=100)
    probabilities = model.predict(load_images([files[name] for name in valid], config), verbose=0)
    again = collapse_check(probabilities, metrics["classes"])
    assert again["collapsed"] and again["majority_share"] == metrics["collapse"]["majority_share"]
    # the base model of this module, trained at the usual rate, has its own record, consistent with its answers
    base = json.loads((trained[0] / "base" / "metrics.json").read_text())["collapse"]
    assert set(base) >= {"collapsed", "majority_share", "probability_spread", "n"}
    assert base["collapsed"] == (base["majority_share"] >= 0.95 or base["probability_spread"] < 0.05)


def test_collapse_check_passes_the_shipped_model_on_real_cutouts(data_dir):
    from astropy.table import Table

    from survey_classifier.cnn.train import collapse_check
    from survey_classifier.io.fits import read_cutout
    from survey_classifier.stages.cnn import CNNStage

    labels = Table.read(data_dir / "mirabest" / "labels.csv", format="ascii.csv")
    confident = labels[labels["confidence"] == "confident"]
    chosen = [confident[confident["fr_class"] == name][:12] for name in ("FRI", "FRII")]
    files = [data_dir / "mirabest" / "fits" / f for part in chosen for f in part["file"]]
    stage = CNNStage(embedding=False)
    stage.setup()
    results = stage.process([read_cutout(path) for path in files])
    probabilities = np.array([[r["probabilities"]["FRI"], r["probabilities"]["FRII"]] for r in results])
    record = collapse_check(probabilities, ["FRI", "FRII"])
    assert not record["collapsed"] and record["majority_share"] < 0.8 and record["probability_spread"] > 0.5
    # the same answers, all but one made alike, are a collapse
    flat = np.repeat(probabilities[:1], len(probabilities), axis=0)
    flat[-1] = probabilities[-1]
    assert collapse_check(flat[:-1], ["FRI", "FRII"])["collapsed"]
