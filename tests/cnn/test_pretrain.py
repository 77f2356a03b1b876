"""Self-supervised pre-training (``train encoder``) and transfer from the encoder, on real cutouts.

One module-scoped run pre-trains a tiny encoder on 16 real images (12
MiraBest FITS cutouts of every kind, 4 first4 PNG images) for a few
epochs; the tests check its loss, its files, the augmentations, and that
``train cnn --backbone encoder:DIR`` transfers from it and exports.
"""

import json
import zipfile

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

from survey_classifier.cli import main  # noqa: E402
from survey_classifier.cnn import pretrain  # noqa: E402
from survey_classifier.cnn.data import load_images, read_image  # noqa: E402
from survey_classifier.preprocess import PreprocessConfig  # noqa: E402

SIZE = 32
CONFIG = PreprocessConfig(size=SIZE, crop=100, clip_sigma=3.0)


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory, data_dir):
    """12 MiraBest cutouts (FR I, FR II, hybrid; confident and uncertain) and 4 first4 PNGs, linked."""
    labels = Table.read(data_dir / "mirabest" / "labels.csv", format="ascii.csv")
    picks = []
    for fr_class in ("FRI", "FRII", "hybrid"):
        for confidence in ("confident", "uncertain"):
            rows = labels[(labels["fr_class"] == fr_class) & (labels["confidence"] == confidence)]
            picks += [data_dir / "mirabest" / "fits" / name for name in rows["file"][:2]]
    picks += sorted((data_dir / "first4" / "png").glob("*.png"))[::300][:4]
    folder = tmp_path_factory.mktemp("unlabelled")
    for path in picks:
        (folder / path.name).symlink_to(path)
    return folder, picks


@pytest.fixture(scope="module")
def encoder(tmp_path_factory, unlabelled):
    folder, _ = unlabelled
    output = tmp_path_factory.mktemp("encoder") / "enc"
    args = ["train", "encoder", "--images", str(folder), "--size", str(SIZE), "--epochs", "6",
            "--batch-size", "16", "--lr", "3e-3", "--output", str(output)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return output, result.output


def _train_cnn(catalogue, output, backbone, *extra):
    args = ["train", "cnn", "--catalogue", str(catalogue), "--file-column", "path", "--label-column", "fr",
            "--size", str(SIZE), "--crop", "100", "--batch-size", "8", "--test-fraction", "0.25",
            "--valid-fraction", "0.25", "--min-per-class", "5", "--backbone", backbone,
            "--output", str(output), *extra]
    return CliRunner().invoke(main, args)


def test_pretraining_loss_decreases_and_files_record_the_run(encoder, unlabelled):
    output, log = encoder
    _, picks = unlabelled
    metadata = json.loads((output / "encoder.json").read_text())
    losses = metadata["loss"]
    assert len(losses) == metadata["epochs"] == 6
    # 16 images, 2 views: chance level is log(31) = 3.43; the encoder learns to pair the views
    assert losses[0] > 3.0 and losses[-1] < losses[0] - 0.1, losses
    assert metadata["objective"] == "simclr" and metadata["format"] == "survey-classifier-encoder/1"
    assert PreprocessConfig.from_dict(metadata["preprocess"]) == CONFIG
    assert metadata["inputs"]["n"] == 16 and len(metadata["inputs"]["sha256"]) == 64
    assert metadata["inputs"]["sha256"] == pretrain.inputs_digest(sorted(p.resolve() for p in picks))
    assert metadata["architecture"]["embedding_size"] == 64
    assert "4 without a noise level of their own" in log  # the PNGs: background-clipped already
    for name in ("encoder.keras", "encoder.json", "loss.png"):
        assert (output / name).stat().st_size > 0


def test_rotations_and_flips_are_exact(data_dir, mirabest_files):
    images = load_images(mirabest_files[:3], CONFIG)
    zero = np.zeros(3, np.float32)
    shifts = np.zeros((3, 2), np.float32)
    turned = pretrain.transform(images, zero + np.pi / 2, zero > 0, zero + 1, shifts).numpy()
    assert turned.shape == images.shape
    np.testing.assert_allclose(turned, np.rot90(images, k=1, axes=(1, 2)), atol=1e-5)
    mirrored = pretrain.transform(images, zero, zero == 0, zero + 1, shifts).numpy()
    np.testing.assert_allclose(mirrored, images[:, :, ::-1], atol=1e-6)
    # any angle: the view of a turned image is the view of the image turned further
    angle = zero + 0.7
    of_turned = pretrain.transform(np.rot90(images, k=1, axes=(1, 2)), angle, zero > 0, zero + 1, shifts)
    turned_further = pretrain.transform(images, angle + np.pi / 2, zero > 0, zero + 1, shifts)
    np.testing.assert_allclose(of_turned.numpy(), turned_further.numpy(), atol=1e-4)
    assert np.abs(turned_further.numpy() - images).max() > 0.1  # it did turn


def test_random_views_keep_shape_range_and_flux(mirabest_files):
    paths = mirabest_files[:8]
    images = load_images(paths, CONFIG)
    sigmas = pretrain.noise_levels(paths, CONFIG, images)
    config = pretrain.PretrainConfig()
    views = pretrain.augment(tf.constant(images), tf.constant(sigmas), config,
                             tf.random.Generator.from_seed(1)).numpy()
    assert views.shape == images.shape
    assert views.min() >= 0 and np.allclose(views.max(axis=(1, 2, 3)), 1.0)
    assert not np.allclose(views, images, atol=1e-3)
    # a turn, a flip, a few % of scale and noise move the source, not its brightness
    ratio = views.sum(axis=(1, 2, 3)) / images.sum(axis=(1, 2, 3))
    assert np.all((ratio > 0.6) & (ratio < 1.6)), ratio


def test_noise_level_is_the_images_own_sigma_clipped_noise(mirabest_files, data_dir):
    from astropy.stats import sigma_clipped_stats

    from survey_classifier.preprocess import preprocess

    paths = [mirabest_files[0], mirabest_files[500], sorted((data_dir / "first4" / "png").glob("*.png"))[0]]
    images = load_images(paths, CONFIG)
    levels = pretrain.noise_levels(paths, CONFIG, images)
    for path, level in zip(paths[:2], levels):
        raw = read_image(path)
        _, _, std = sigma_clipped_stats(raw, sigma=3.0, maxiters=5)
        flux_peak = preprocess(raw, PreprocessConfig(size=SIZE, crop=100, clip_sigma=3.0, scaling="none")).max()
        assert level == pytest.approx(std / flux_peak, rel=1e-3)
        assert 1e-4 < level < 0.2  # a few % of the peak: real sources stand well above it
    assert levels[2] == 0.0  # first4's PNG has no noise of its own


def test_encoder_is_a_transfer_base_frozen_and_fine_tuned(encoder, catalogue, tmp_path):
    import onnxruntime as ort

    output, _ = encoder
    saved = keras.models.load_model(output / "encoder.keras", compile=False)
    result = _train_cnn(catalogue, tmp_path / "probe", f"encoder:{output}", "--freeze", "all",
                        "--head", "", "--head-epochs", "2")
    assert result.exit_code == 0, result.output
    probe = keras.models.load_model(tmp_path / "probe" / "model.keras", compile=False)
    # a linear probe: the encoder's convolutions are untouched
    for layer in saved.layers:
        if layer.weights:
            for before, after in zip(layer.get_weights(), probe.get_layer(layer.name).get_weights()):
                np.testing.assert_array_equal(before, after)
    record = json.loads((tmp_path / "probe" / "model.json").read_text())
    assert record["export_check"]["max_abs_diff_probabilities"] <= 1e-4
    assert record["training"]["backbone"] == f"encoder:{output}"
    images = load_images(Table.read(catalogue)["path"][:6], CONFIG)
    session = ort.InferenceSession(str(tmp_path / "probe" / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_probabilities = session.run(["probabilities"], {session.get_inputs()[0].name: images})[0]
    np.testing.assert_allclose(onnx_probabilities, probe.predict(images, verbose=0), atol=1e-4)

    result = _train_cnn(catalogue, tmp_path / "tuned", f"encoder:{output}", "--freeze", "all",
                        "--head-epochs", "1", "--fine-tune-epochs", "1", "--no-export")
    assert result.exit_code == 0, result.output
    tuned = keras.models.load_model(tmp_path / "tuned" / "model.keras", compile=False)
    assert not np.array_equal(saved.get_layer("block0_conv0").get_weights()[0],
                              tuned.get_layer("block0_conv0").get_weights()[0])


def test_bad_encoder_files_are_named_in_one_line(encoder, catalogue, tmp_path):
    output, _ = encoder
    missing = tmp_path / "nowhere"
    not_json = tmp_path / "not-json"
    not_json.mkdir()
    (not_json / "encoder.json").write_text("{ this is not JSON")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "encoder.json").write_text((output / "encoder.json").read_text())
    (broken / "encoder.keras").write_bytes(b"PK\x03\x04 truncated")
    not_keras = tmp_path / "not-keras"
    not_keras.mkdir()
    (not_keras / "encoder.json").write_text((output / "encoder.json").read_text())
    with zipfile.ZipFile(not_keras / "encoder.keras", "w") as archive:
        archive.writestr("notes.txt", "a zip, but no Keras model inside")
    cases = [
        (missing, [], str(missing), "encoder not found"),
        (not_json, [], str(not_json / "encoder.json"), "not a readable encoder metadata file"),
        (broken, [], str(broken / "encoder.keras"), "not a Keras (.keras zip) file"),
        (not_keras, [], str(not_keras / "encoder.keras"), "cannot load the encoder network"),
        (output, ["--crop", "80"], str(output / "encoder.json"), "pre-trained on other preprocessing"),
    ]
    for folder, extra, named, problem in cases:
        result = _train_cnn(catalogue, tmp_path / "out", f"encoder:{folder}", "--head-epochs", "1", *extra)
        assert result.exit_code == 1, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
        assert named in lines[0] and problem in lines[0], lines[0]
        assert not (tmp_path / "out" / "model.keras").exists()
