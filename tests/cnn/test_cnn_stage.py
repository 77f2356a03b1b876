"""The ``cnn`` inference stage with the shipped FR I / FR II model (no TensorFlow)."""

import json
import shutil

import numpy as np
import pytest
from astropy.table import Table

from survey_classifier.errors import ModelError, NotFittedError
from survey_classifier.io.fits import read_cutout
from survey_classifier.stages.cnn import DEFAULT_MODEL, FR_CNN, CNNStage, load_model_record
from survey_classifier.stages.registry import available_stages, load_stage
from survey_classifier.testing import check_stage


@pytest.fixture(scope="module")
def cutouts(mirabest_files):
    return [read_cutout(path) for path in mirabest_files[::120]]


@pytest.fixture
def model_copy(tmp_path):
    target = tmp_path / "fr-cnn"
    shutil.copytree(DEFAULT_MODEL, target)
    return target


def test_entry_point_names_the_stage():
    if "cnn" not in available_stages():
        pytest.skip('entry point cnn = "survey_classifier.stages.cnn:CNNStage" not installed yet')
    assert isinstance(load_stage("cnn", batch_size=8), CNNStage)


def test_shipped_model_classifies_real_cutouts(cutouts):
    stage = CNNStage()
    stage.setup()
    assert stage.model_ref == "fr-cnn:1"
    assert stage.provider_ in ("CUDAExecutionProvider", "CPUExecutionProvider")
    results = stage.process(cutouts)
    assert len(results) == len(cutouts)
    for result in results:
        assert result["label"] in ("FRI", "FRII")
        assert set(result["probabilities"]) == {"FRI", "FRII"}
        assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert result["label"] == max(result["probabilities"], key=result["probabilities"].get)
        assert result["embedding"].dtype == np.float32 and result["embedding"].ndim == 1  # on by default
    bare = CNNStage(embedding=False)
    bare.setup()
    assert all("embedding" not in result for result in bare.process(cutouts))


def test_shipped_model_reproduces_its_recorded_test_accuracy(mirabest_dir):
    record, _ = load_model_record(DEFAULT_MODEL)
    split = Table.read(DEFAULT_MODEL / "split.csv", format="ascii.csv")
    test = split[split["split"] == "test"]
    assert len(test) == record["metrics"]["test"]["n"]
    stage = CNNStage(batch_size=50)
    stage.setup()
    results = stage.process([read_cutout(mirabest_dir / "fits" / name) for name in test["file"]])
    predicted = np.array([result["label"] for result in results])
    accuracy = float((predicted == np.array(test["label"], dtype=str)).mean())
    assert accuracy == pytest.approx(record["metrics"]["test"]["accuracy"], abs=1.5 / len(test))


def test_embedding_is_float32_and_independent_of_batch_size(cutouts):
    small = CNNStage(embedding=True, batch_size=2)
    large = CNNStage(embedding=True, batch_size=64)
    small.setup()
    large.setup()
    for a, b in zip(small.process(cutouts), large.process(cutouts)):
        assert a["embedding"].dtype == np.float32 and a["embedding"].ndim == 1
        np.testing.assert_allclose(a["embedding"], b["embedding"], rtol=1e-5, atol=1e-6)
        assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)


def test_conformance_kit(cutouts):
    check_stage(CNNStage(embedding=True), cutouts)


def test_one_session_per_process(cutouts):
    first, second = CNNStage(), CNNStage(batch_size=8)
    first.setup()
    second.setup()
    assert first.session_ is second.session_


def test_process_before_setup_is_refused(cutouts):
    with pytest.raises(NotFittedError, match="setup"):
        CNNStage(model=str(DEFAULT_MODEL)).predict(np.zeros((1, 64, 64, 1), np.float32))


def test_identity_follows_the_bytes_not_the_path(model_copy):
    """A copy of the shipped file is still fr-cnn:1; changed bytes are another model, named by their sha256."""
    from survey_classifier.checksum import sha256_file

    assert CNNStage(model=str(model_copy)).model_ref == "fr-cnn:1"
    assert CNNStage(model=str(model_copy / "model.onnx")).model_sha256 == FR_CNN.sha256
    onnx = pytest.importorskip("onnx")
    model = onnx.load(model_copy / "model.onnx")
    model.doc_string = "retouched"
    onnx.save(model, model_copy / "model.onnx")
    changed = CNNStage(model=str(model_copy))
    sha256 = sha256_file(model_copy / "model.onnx")
    assert changed.model_ref == f"file:model.onnx@{sha256[:12]}" and changed.model_sha256 == sha256
    changed.setup()  # still a valid model: it runs, under its own identity


def _with_metadata(model_copy, **entries):
    onnx = pytest.importorskip("onnx")
    model = onnx.load(model_copy / "model.onnx")
    for prop in model.metadata_props:
        if prop.key in entries:
            prop.value = entries[prop.key]
    onnx.save(model, model_copy / "model.onnx")
    return model_copy / "model.onnx"


def test_input_shape_must_fit_the_preprocessing(model_copy):
    record = json.loads((model_copy / "model.json").read_text())
    path = _with_metadata(model_copy, preprocess=json.dumps({**record["preprocess"], "size": 80}))
    with pytest.raises(ModelError, match=r"takes input of shape .*makes images of shape \(batch, 80, 80, 1\)"):
        CNNStage(model=str(path)).setup()
    with pytest.raises(ModelError, match=r"takes input of shape"):
        CNNStage.validate_artefact(path)


def test_classes_must_fit_the_output(model_copy):
    path = _with_metadata(model_copy, classes=json.dumps(["FRI", "FRII", "hybrid"]))
    with pytest.raises(ModelError, match=r"outputs 2 probabilities but its metadata names 3 classes"):
        CNNStage.validate_artefact(path)


def test_missing_record_is_named(tmp_path):
    with pytest.raises(ModelError, match=r"model record .*model.json not found"):
        CNNStage(model=str(tmp_path)).setup()


def test_provider_in_use_is_logged_and_cuda_asked_for_only_where_it_can_start(caplog):
    import logging

    from survey_classifier.onnx_providers import CUDA, provider_problem

    stage = CNNStage(intra_op_threads=3)  # a session of its own, not one cached by another test
    with caplog.at_level(logging.INFO, logger="survey_classifier.stages.cnn"):
        stage.setup()
    messages = [record.getMessage() for record in caplog.records]
    assert any(f"fr-cnn:1 on {stage.provider_}" in m for m in messages)
    # CUDA is asked for only where it can start (tests/test_onnx_providers.py: said once per process)
    assert (stage.provider_ == CUDA) == (provider_problem(CUDA) is None)
    assert not any(r.levelno >= logging.WARNING for r in caplog.records)


def test_a_cutout_too_small_for_the_crop_fails_alone(mirabest_files, tmp_path):
    """The pipeline prepares the stage's pixels (its preprocess_config) and records a failure per cutout."""
    import warnings

    from astropy.io import fits
    from astropy.nddata import Cutout2D
    from astropy.wcs import WCS

    from survey_classifier.cutout import CutoutSource
    from survey_classifier.pipeline import Pipeline

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(mirabest_files[0]) as hdus:
            small = Cutout2D(hdus[0].data, (75, 75), 80, wcs=WCS(hdus[0].header))
    path = tmp_path / "small.fits"
    fits.writeto(path, small.data, small.wcs.to_header())
    batch = Pipeline([CNNStage()]).process_batch([CutoutSource(str(path)), CutoutSource(str(mirabest_files[1]))])
    failed, classified = batch.outcomes
    assert [(e.stage, e.error_type) for e in failed.errors] == [("cnn", "PreprocessError")]
    assert "crop of 100 pixels is larger than the 80x80 image" in failed.errors[0].message
    assert not classified.errors and classified.cutout.results["cnn"]["label"] in ("FRI", "FRII")
