"""Training, transfer, verified ONNX export and inference, on tiny real models.

TensorFlow costs seconds to import and each model a few seconds to train,
so one module-scoped run trains a tiny base network and one transfer from
it, and the tests check their outputs.
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
onnx = pytest.importorskip("onnx")

from survey_classifier.cnn.cli import train_cnn  # noqa: E402
from survey_classifier.errors import ModelError  # noqa: E402

SIZE = 32


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory, data_dir):
    """16 FRI and 16 FRII confident MiraBest sources, absolute paths, as ECSV."""
    labels = Table.read(data_dir / "mirabest" / "labels.csv", format="ascii.csv")
    labels = labels[labels["confidence"] == "confident"]
    rows = [labels[labels["fr_class"] == name][:16] for name in ("FRI", "FRII")]
    files = [str(data_dir / "mirabest" / "fits" / f) for part in rows for f in part["file"]]
    table = Table({
        "path": files,
        "fr": [str(v) for part in rows for v in part["fr_class"]],
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
        "--output", str(output), *extra,
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
    from survey_classifier.stages.cnn import CNNStage

    root = trained[0] / "transfer"
    stage = CNNStage(model=root, embedding=True, batch_size=3)
    stage.setup()
    assert stage.model_ref == "transfer:3"
    files = mirabest_files[:7]
    results = stage.process([read_cutout(path) for path in files])
    keras_model = keras.models.load_model(root / "model.keras", compile=False)
    expected = keras_model.predict(load_images(files, stage.preprocess_config_), verbose=0)
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
    dataset = read_catalogue(catalogue, file_column="path", label_column="fr", min_per_class=5)
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
