"""The shipped fr-cnn:2 and fr-cnn:3: registered files, cards, calibrated answers on real MiraBest cutouts.

Their test part is never scored here (each recipe was evaluated once on it,
docs/cnn.md); the checks use their training sources and a few other cutouts.
"""


import numpy as np
import pytest
from astropy.table import Table

from survey_classifier.checksum import sha256_file
from survey_classifier.cnn.data import load_images
from survey_classifier.io.fits import read_cutout
from survey_classifier.stages.cnn import FR_CNN, FR_CNN_2, FR_CNN_3, CNNStage, load_model_record

#: Per shipped version: the card's own figures (test look, cross-validation, cost) and the embedding's width.
SHIPPED = {
    "2": (FR_CNN_2, ("89.3 %", "82.9-93.5 %", "93.0 ± 0.8 %", "## Transfer table"), 64),
    "3": (FR_CNN_3, ("92.4 %", "86.5-95.8 %", "94.7 ± 0.5 %", "+1.65 ± 0.58", "3.89×", "--norm-statistics running"),
          128),
}
VERSIONS = pytest.mark.parametrize("version", sorted(SHIPPED))


@VERSIONS
def test_files_record_and_card_agree(version):
    shipped, figures, _ = SHIPPED[version]
    folder = shipped.path().parent
    assert sha256_file(shipped.path()) == shipped.sha256 != FR_CNN.sha256
    record, _ = load_model_record(folder)
    assert (record["name"], record["version"], record["sha256"]) == ("fr-cnn", version, shipped.sha256)
    calibration = record["metrics"]["calibration"]
    assert calibration["temperature"] == pytest.approx(shipped.metrics["temperature"], abs=5e-4)
    assert calibration["out_of_fold"]["n"] == 1572 and "out-of-fold" in calibration["fitted_on"]
    assert calibration["out_of_fold"]["ece_after"] == pytest.approx(shipped.metrics["ece_out_of_fold"], abs=5e-4)
    assert record["metrics"]["test"] == {"n": 0, "scored": False}
    assert record["export_check"]["max_abs_diff_probabilities"] <= 1e-4
    card = (folder / "MODEL_CARD.md").read_text()
    for text in (shipped.sha256, f"T = {calibration['temperature']:.3f}",
                 f"| {calibration['out_of_fold']['ece_before']:.3f} | {calibration['out_of_fold']['ece_after']:.3f} |",
                 "--temperature-from", "reliability.png", *figures):
        assert text in card, text
    assert (folder / "reliability.png").stat().st_size > 0
    assert shipped.path().stat().st_size < 2_000_000
    split = Table.read(folder / "split.csv", format="ascii.csv")
    assert list(split["split"]).count("train") == 524 and list(split["split"]).count("test") == 131
    # the test part is fr-cnn:1's
    first = Table.read(FR_CNN.path().parent / "split.csv", format="ascii.csv")
    assert set(split["file"][split["split"] == "test"]) == set(first["file"][first["split"] == "test"])


@VERSIONS
def test_classifies_real_cutouts_calibrated_with_the_uncertain_flag(version, mirabest_dir):
    shipped, _, width = SHIPPED[version]
    folder = shipped.path().parent
    record, _ = load_model_record(folder)
    split = Table.read(folder / "split.csv", format="ascii.csv")
    train = split[split["split"] == "train"]
    stage = CNNStage(model=str(folder), batch_size=64)
    stage.setup()
    results = stage.process([read_cutout(mirabest_dir / "fits" / name) for name in train["file"]])
    labels = np.array([r["label"] for r in results])
    assert np.mean(labels == np.array(train["label"], dtype=str)) == pytest.approx(
        record["metrics"]["train"]["accuracy"], abs=1.5 / len(train))
    top = np.array([max(r["probabilities"].values()) for r in results])
    assert [bool(r["uncertain"]) for r in results] == list(top < 0.6)
    assert all(r["embedding"].shape == (width,) for r in results)


@VERSIONS
def test_onnx_matches_the_shipped_keras_model(version, mirabest_files):
    pytest.importorskip("tensorflow")
    from survey_classifier.cnn.backbones import load_keras_model

    folder = SHIPPED[version][0].path().parent
    stage = CNNStage(model=str(folder))
    stage.setup()
    images = load_images(mirabest_files[::10], stage.preprocess_config)
    keras_p = load_keras_model(folder / "model.keras").predict(images, verbose=0)
    if isinstance(keras_p, list):  # an ensemble also returns its embedding
        keras_p = keras_p[0]
    onnx_p = stage.session_.run(["probabilities"], {"image": images})[0]
    assert np.max(np.abs(onnx_p - keras_p)) <= 1e-4


def test_fr_cnn_3_is_fr_cnn_2_averaged_with_an_exactly_d8_invariant_network(mirabest_files):
    """Take fr-cnn:2's calibrated share out of fr-cnn:3's answer: what is left is a D8-invariant classifier."""
    def run(shipped, images):
        stage = CNNStage(model=str(shipped.path().parent))
        stage.setup()
        return stage.session_.run(["probabilities", "embedding"], {"image": images})

    temperature = {v: load_model_record(s.path().parent)[0]["metrics"]["calibration"]["temperature"]
                   for v, s in (("2", FR_CNN_2), ("3", FR_CNN_3))}
    images = load_images(mirabest_files[3::67], CNNStage(model=str(FR_CNN_3.path().parent)).preprocess_config)

    def d8_member(batch):
        p3, e3 = run(FR_CNN_3, batch)
        p2, e2 = run(FR_CNN_2, batch)
        np.testing.assert_allclose(e3[:, :64], e2, atol=1e-5)  # member 1 is fr-cnn:2's network, unchanged
        logits = temperature["2"] * np.log(p2.astype(np.float64)) / temperature["3"]  # fr-cnn:2's logits over T3
        first = np.exp(logits - logits.max(axis=1, keepdims=True))
        first /= first.sum(axis=1, keepdims=True)
        return 2 * p3 - first, e3[:, 64:]

    member, features = d8_member(images)
    assert member.min() > -1e-5 and member.max() < 1 + 1e-5 and np.allclose(member.sum(axis=1), 1, atol=1e-5)
    assert features.shape[1] == 64 and np.ptp(member[:, 0]) > 0.5  # a classifier, not a constant
    for turned in (np.rot90(images, 1, axes=(1, 2)), np.rot90(images, 2, axes=(1, 2)), images[:, :, ::-1]):
        member_t, features_t = d8_member(np.ascontiguousarray(turned))
        assert np.max(np.abs(member_t - member)) < 1e-4
        assert np.max(np.abs(features_t - features)) < 1e-4 * max(1.0, np.abs(features).max())
