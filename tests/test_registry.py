"""The model registry: store, sha256, default per stage, retire, refuse tampered files; its CLI."""

import json

import click
import numpy as np
import pytest
from click.testing import CliRunner

from survey_classifier.errors import ModelError, SurveyClassifierError
from survey_classifier.registry import (
    file_sha256,
    get_model,
    list_models,
    model_store_dir,
    register_model,
    resolve_model,
    retire_model,
    set_default,
)
from survey_classifier.registry_cli import models


def _linear_onnx(path, weight: float):
    """A real ONNX model (y = weight * x), small enough to build in the test."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [1], [weight])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("SURVEY_CLASSIFIER_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "models"


def test_store_location_follows_the_environment(store):
    assert model_store_dir() == store


def test_register_copies_hashes_and_loads(engine, store, tmp_path):
    artefact = _linear_onnx(tmp_path / "model.onnx", 2.0)
    (tmp_path / "model.json").write_text(json.dumps({"name": "lin", "classes": ["a"]}))
    card = tmp_path / "card.md"
    card.write_text("# lin\nTrained on nothing; multiplies by two.\n")
    model = register_model(
        engine, artefact, stage="cnn", name="lin", version="1", metrics={"accuracy": 0.5}, card=card
    )
    assert model["model_ref"] == "lin:1" and model["is_default"]  # first of its stage
    assert model["sha256"] == file_sha256(artefact)
    stored = store / "cnn" / "lin" / "1"
    assert sorted(p.name for p in stored.iterdir()) == ["card.md", "model.json", "model.onnx"]
    assert model["metrics"] == {"accuracy": 0.5} and "multiplies by two" in model["details"]["card"]
    path, row = resolve_model(engine, "cnn")
    assert path == stored / "model.onnx" and row["id"] == model["id"]
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out = session.run(None, {"x": np.array([[3.0]], dtype=np.float32)})[0]
    assert out[0, 0] == pytest.approx(6.0)


def test_one_default_per_stage_and_retire(engine, store, tmp_path):
    v1 = register_model(engine, _linear_onnx(tmp_path / "a.onnx", 1.0), stage="cnn", name="lin", version="1")
    v2 = register_model(engine, _linear_onnx(tmp_path / "b.onnx", 2.0), stage="cnn", name="lin", version="2")
    other = register_model(engine, _linear_onnx(tmp_path / "c.onnx", 3.0), stage="anomaly", name="iso", version="1")
    assert v1["is_default"] and not v2["is_default"] and other["is_default"]  # other stage: its own default
    set_default(engine, "lin", "2")
    table = list_models(engine)
    defaults = {(r["stage"], r["model_ref"]) for r in table if r["is_default"]}
    assert defaults == {("cnn", "lin:2"), ("anomaly", "iso:1")}
    assert resolve_model(engine, "cnn")[1]["version"] == "2"
    assert resolve_model(engine, "cnn", "lin")[1]["version"] == "2"  # newest not retired
    retire_model(engine, "lin", "2")
    assert get_model(engine, "lin", "2")["retired"] and not get_model(engine, "lin", "2")["is_default"]
    with pytest.raises(ModelError, match="no default model for stage 'cnn'"):
        resolve_model(engine, "cnn")
    assert resolve_model(engine, "cnn", "lin")[1]["version"] == "1"
    with pytest.raises(ModelError, match="retired"):
        resolve_model(engine, "cnn", "lin", "2")
    with pytest.raises(ModelError, match="retired"):
        set_default(engine, "lin", "2")
    assert [r["model_ref"] for r in list_models(engine, stage="cnn", include_retired=False)] == ["lin:1"]


def test_a_tampered_artefact_is_refused(engine, store, tmp_path):
    model = register_model(engine, _linear_onnx(tmp_path / "m.onnx", 2.0), stage="cnn", name="lin", version="1")
    path = resolve_model(engine, "cnn")[0]
    _linear_onnx(path, 5.0)  # overwritten in the store after registration
    with pytest.raises(ModelError, match=f"not the registered {model['sha256']}"):
        resolve_model(engine, "cnn")
    path.unlink()
    with pytest.raises(ModelError, match="missing from the model store"):
        resolve_model(engine, "cnn")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"name": "../evil"}, SurveyClassifierError, "is not allowed"),
        ({"version": "1/2"}, SurveyClassifierError, "is not allowed"),
        ({"stage": ""}, SurveyClassifierError, "is not allowed"),
        ({"metrics": [1, 2]}, SurveyClassifierError, "mapping"),
    ],
)
def test_bad_registrations_are_refused(engine, store, tmp_path, kwargs, error, match):
    artefact = _linear_onnx(tmp_path / "m.onnx", 1.0)
    args = {"stage": "cnn", "name": "lin", "version": "1", **kwargs}
    with pytest.raises(error, match=match):
        register_model(engine, artefact, **args)
    assert not store.exists() or not any(store.rglob("*.onnx"))


def test_registering_twice_is_refused(engine, store, tmp_path):
    artefact = _linear_onnx(tmp_path / "m.onnx", 1.0)
    register_model(engine, artefact, stage="cnn", name="lin", version="1")
    with pytest.raises(ModelError, match="already registered"):
        register_model(engine, artefact, stage="cnn", name="lin", version="1")
    with pytest.raises(ModelError, match="is not a file"):
        register_model(engine, tmp_path / "absent.onnx", stage="cnn", name="lin", version="2")


def test_cli_register_list_show_default_retire(sqlite_url, store, tmp_path):
    cli = click.Group(commands={"models": models})
    runner = CliRunner()
    a = _linear_onnx(tmp_path / "a.onnx", 1.0)
    b = _linear_onnx(tmp_path / "b.onnx", 2.0)
    card = tmp_path / "card.md"
    card.write_text("card text")

    def invoke(*args):
        result = runner.invoke(cli, ["models", *args, "--db", sqlite_url])
        return result

    done = invoke("register", "--stage", "cnn", "--name", "fr-cnn", "--version", "1", str(a))
    assert done.exit_code == 0, done.output
    done = invoke("register", "--stage", "cnn", "--name", "fr-cnn", "--version", "2", "--metrics",
                  '{"accuracy": 0.9}', "--card", str(card), str(b))
    assert done.exit_code == 0 and file_sha256(b) in done.output
    shown = json.loads(invoke("show", "fr-cnn", "2").output)
    assert shown["metrics"] == {"accuracy": 0.9} and shown["details"]["card"] == "card text"
    assert "default of stage cnn: fr-cnn:2" in invoke("set-default", "fr-cnn", "2").output
    assert "retired fr-cnn:1" in invoke("retire", "fr-cnn", "1").output
    listing = invoke("list").output
    assert "fr-cnn:1" in listing and "fr-cnn:2" in listing and "2 models" in listing
    bad = invoke("register", "--stage", "cnn", "--name", "x", "--version", "1", "--metrics", "{oops", str(a))
    assert bad.exit_code == 2 and "--metrics" in bad.output
    missing = invoke("show", "nope")
    assert missing.exit_code == 1 and "no registered model named 'nope'" in missing.output
