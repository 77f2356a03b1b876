"""The shipped fr-cnn:2: registered files, card, calibrated answers on real MiraBest cutouts.

Its test part is never scored here (the recipe was evaluated once on it,
docs/cnn.md); the checks use its training sources and a few other cutouts.
"""


import numpy as np
import pytest
from astropy.table import Table

from survey_classifier.checksum import sha256_file
from survey_classifier.io.fits import read_cutout
from survey_classifier.stages.cnn import FR_CNN, FR_CNN_2, CNNStage, load_model_record

FOLDER = FR_CNN_2.path().parent


def test_files_record_and_card_agree():
    assert sha256_file(FR_CNN_2.path()) == FR_CNN_2.sha256 != FR_CNN.sha256
    record, _ = load_model_record(FOLDER)
    assert (record["name"], record["version"], record["sha256"]) == ("fr-cnn", "2", FR_CNN_2.sha256)
    calibration = record["metrics"]["calibration"]
    assert calibration["temperature"] == pytest.approx(FR_CNN_2.metrics["temperature"], abs=5e-4)
    assert calibration["out_of_fold"]["n"] == 1572 and "out-of-fold" in calibration["fitted_on"]
    assert record["metrics"]["test"] == {"n": 0, "scored": False}
    assert record["export_check"]["max_abs_diff_probabilities"] <= 1e-4
    card = (FOLDER / "MODEL_CARD.md").read_text()
    for text in (FR_CNN_2.sha256, f"T = {calibration['temperature']:.3f}",
                 f"| {calibration['out_of_fold']['ece_before']:.3f} | {calibration['out_of_fold']['ece_after']:.3f} |",
                 "89.3 %", "82.9-93.5 %", "93.0 ± 0.8 %", "--temperature-from", "## Transfer table",
                 "reliability.png"):
        assert text in card, text
    assert (FOLDER / "reliability.png").stat().st_size > 0
    assert FR_CNN_2.path().stat().st_size < 2_000_000
    split = Table.read(FOLDER / "split.csv", format="ascii.csv")
    assert list(split["split"]).count("train") == 524 and list(split["split"]).count("test") == 131
    # the test part is fr-cnn:1's
    first = Table.read(FR_CNN.path().parent / "split.csv", format="ascii.csv")
    assert set(split["file"][split["split"] == "test"]) == set(first["file"][first["split"] == "test"])


def test_classifies_real_cutouts_calibrated_with_the_uncertain_flag(mirabest_dir):
    record, _ = load_model_record(FOLDER)
    split = Table.read(FOLDER / "split.csv", format="ascii.csv")
    train = split[split["split"] == "train"]
    stage = CNNStage(model=str(FOLDER), batch_size=64)
    stage.setup()
    results = stage.process([read_cutout(mirabest_dir / "fits" / name) for name in train["file"]])
    assert stage.model_ref.startswith("file:") or stage.model_ref == "fr-cnn:2"
    labels = np.array([r["label"] for r in results])
    assert np.mean(labels == np.array(train["label"], dtype=str)) == pytest.approx(
        record["metrics"]["train"]["accuracy"], abs=1.5 / len(train))
    top = np.array([max(r["probabilities"].values()) for r in results])
    assert [bool(r["uncertain"]) for r in results] == list(top < 0.6)
    assert all(r["embedding"].shape == (64,) for r in results)


def test_onnx_matches_the_shipped_keras_model(mirabest_files):
    pytest.importorskip("tensorflow")
    from survey_classifier.cnn.backbones import load_keras_model
    from survey_classifier.cnn.data import load_images

    stage = CNNStage(model=str(FOLDER))
    stage.setup()
    images = load_images(mirabest_files[::10], stage.preprocess_config)
    keras_p = load_keras_model(FOLDER / "model.keras").predict(images, verbose=0)
    onnx_p = stage.session_.run(["probabilities"], {"image": images})[0]
    assert np.max(np.abs(onnx_p - keras_p)) <= 1e-4
