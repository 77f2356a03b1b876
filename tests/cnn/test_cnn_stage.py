"""The ``cnn`` inference stage with the shipped FR I / FR II model (no TensorFlow)."""

import json
import shutil

import numpy as np
import pytest
from astropy.table import Table

from survey_classifier.errors import ModelError, NotFittedError
from survey_classifier.io.fits import read_cutout
from survey_classifier.stages.cnn import DEFAULT_MODEL, CNNStage, load_model_record
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


def _edit_record(model_dir, **changes):
    record_path = model_dir / "model.json"
    record = json.loads(record_path.read_text())
    record.update(changes)
    record_path.write_text(json.dumps(record))


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
        CNNStage(model=DEFAULT_MODEL).predict(np.zeros((1, 64, 64, 1), np.float32))


def test_changed_model_file_refuses_to_load(model_copy):
    data = bytearray((model_copy / "model.onnx").read_bytes())
    data[-1] ^= 0xFF
    (model_copy / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"model.onnx: sha256 .* does not match the registered"):
        CNNStage(model=model_copy).setup()


def test_registry_sha256_overrides_the_record(model_copy):
    with pytest.raises(ModelError, match="does not match the registered 0000"):
        CNNStage(model=model_copy, sha256="0" * 64).setup()


def test_input_shape_must_fit_the_preprocessing(model_copy):
    record = json.loads((model_copy / "model.json").read_text())
    _edit_record(model_copy, preprocess={**record["preprocess"], "size": 80})
    with pytest.raises(ModelError, match=r"takes input of shape .*makes images of shape \(batch, 80, 80, 1\)"):
        CNNStage(model=model_copy).setup()


def test_missing_record_is_named(tmp_path):
    with pytest.raises(ModelError, match=r"model record .*model.json not found"):
        CNNStage(model=tmp_path).setup()


def test_provider_in_use_is_logged_and_a_cuda_fallback_warned(caplog):
    import logging

    stage = CNNStage(intra_op_threads=3)  # a session of its own, not one cached by another test
    with caplog.at_level(logging.INFO, logger="survey_classifier.stages.cnn"):
        stage.setup()
    messages = [record.getMessage() for record in caplog.records]
    assert any(f"fr-cnn:1 on {stage.provider_}" in m for m in messages)
    fallback = [
        r for r in caplog.records
        if r.levelno == logging.WARNING and "CUDA provider could not start" in r.getMessage()
    ]
    assert len(fallback) == (0 if stage.provider_ == "CUDAExecutionProvider" else 1)
