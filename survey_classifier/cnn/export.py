"""ONNX export of a trained classifier, verified against Keras.

The exported graph has one input ``image`` of shape ``(batch, size, size, 1)``
with a dynamic batch axis and two outputs, ``probabilities`` and
``embedding`` (the input of the softmax layer, for the anomaly stage). The
class names, the :class:`~survey_classifier.preprocess.PreprocessConfig`
and the model name and version travel in the ONNX ``metadata_props``; a
calibrated model adds its ``temperature`` (already applied inside the
graph, recorded for reference) and ``uncertain_below``, the top
probability under which the ``cnn`` stage flags a result uncertain.

The export runs the Keras model and ONNX Runtime on a real batch and
refuses to write the file unless the probabilities agree within
``tolerance`` (1e-4 by default).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from survey_classifier.checksum import sha256_file
from survey_classifier.errors import ModelError
from survey_classifier.preprocess import PreprocessConfig

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAMES",
    "MIN_OPSET",
    "export_onnx",
    "write_model_record",
]

INPUT_NAME = "image"
OUTPUT_NAMES = ("probabilities", "embedding")
MIN_OPSET = 17


def _rename_outputs(onnx_model, new_names) -> None:
    graph = onnx_model.graph
    for output, new in zip(graph.output, new_names):
        old = output.name
        if old == new:
            continue
        for node in graph.node:
            node.output[:] = [new if name == old else name for name in node.output]
            node.input[:] = [new if name == old else name for name in node.input]
        output.name = new


def export_onnx(
    model,
    path,
    *,
    classes,
    preprocess_config: PreprocessConfig,
    name: str,
    version: str,
    check_images: np.ndarray,
    opset: int = MIN_OPSET,
    tolerance: float = 1e-4,
    calibration: dict | None = None,
) -> dict:
    """Convert a Keras classifier to ONNX, check it, and write it.

    Parameters
    ----------
    model : keras.Model
        A classifier whose last layer is named ``"probabilities"``, or an
        ensemble with outputs ``(probabilities, embedding)``
        (:func:`~survey_classifier.cnn.train.ensemble_classifier`).
    path : str or Path
        The ``.onnx`` file to write.
    classes : list of str
        Output order of the probabilities.
    preprocess_config : PreprocessConfig
    name, version : str
        Model identity, written into the metadata.
    check_images : ndarray, shape (n, size, size, 1)
        Real preprocessed images for the Keras / ONNX Runtime comparison.
    opset : int
        ONNX opset, at least :data:`MIN_OPSET`.
    tolerance : float
        Largest allowed absolute difference between the probabilities.
    calibration : dict, optional
        ``{"temperature", "uncertain_below", ...}`` of a calibrated model
        (the training metrics' ``calibration``); those two go into the metadata.

    Returns
    -------
    dict
        ``{"max_abs_diff_probabilities", "max_abs_diff_embedding", "n_checked", "opset"}``.

    Raises
    ------
    ModelError
        If the conversion fails or the outputs disagree beyond ``tolerance``
        (nothing is written then).
    """
    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx

    from survey_classifier.cnn.calibration import features_of

    path = Path(path)
    if opset < MIN_OPSET:
        msg = f"opset {opset} is too old; use {MIN_OPSET} or later"
        raise ModelError(msg)
    check_images = np.asarray(check_images, dtype=np.float32)
    size = int(preprocess_config.size)
    if check_images.ndim != 4 or check_images.shape[1:] != (size, size, 1) or not len(check_images):
        msg = (
            f"check_images must be a non-empty batch of shape (n, {size}, {size}, 1), "
            f"got {check_images.shape}"
        )
        raise ModelError(msg)
    if isinstance(model.output, (list, tuple)):  # an ensemble: (probabilities, embedding)
        export_model = keras.Model(model.input, list(model.output), name=name)
    else:
        export_model = keras.Model(model.input, [model.output, features_of(model)], name=name)
    spec = (tf.TensorSpec((None, size, size, 1), tf.float32, name=INPUT_NAME),)
    try:
        onnx_model, _ = tf2onnx.convert.from_keras(export_model, input_signature=spec, opset=opset)
    except Exception as exc:
        msg = f"tf2onnx could not convert model {name!r}: {exc}"
        raise ModelError(msg) from exc
    _rename_outputs(onnx_model, OUTPUT_NAMES)
    graph_input = onnx_model.graph.input[0]
    batch_dim = graph_input.type.tensor_type.shape.dim[0]
    batch_dim.ClearField("dim_value")
    batch_dim.dim_param = "batch"
    for output in onnx_model.graph.output:
        dim = output.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = "batch"
    metadata = {
        "model_name": name,
        "model_version": str(version),
        "classes": json.dumps(list(classes)),
        "preprocess": json.dumps(preprocess_config.to_dict(), sort_keys=True),
        "stage": "cnn",
        "outputs": json.dumps(list(OUTPUT_NAMES)),
    }
    for key in ("temperature", "uncertain_below"):
        if calibration and calibration.get(key) is not None:
            metadata[key] = json.dumps(float(calibration[key]))
    del onnx_model.metadata_props[:]
    for key, value in metadata.items():
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx_model.doc_string = f"survey-classifier CNN {name}:{version}"
    onnx.checker.check_model(onnx_model)
    serialized = onnx_model.SerializeToString()
    check = _compare(export_model, serialized, check_images, graph_input.name)
    check["opset"] = opset
    if not check["max_abs_diff_probabilities"] <= tolerance:
        msg = (
            f"ONNX export of {name!r} disagrees with Keras: max |dp| = "
            f"{check['max_abs_diff_probabilities']:.3g} > {tolerance:g} on "
            f"{check['n_checked']} images; nothing was written"
        )
        raise ModelError(msg)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(serialized)
    return check


def _compare(export_model, serialized: bytes, images: np.ndarray, input_name: str) -> dict:
    import onnxruntime as ort

    keras_probabilities, keras_embedding = export_model.predict(images, verbose=0)
    session = ort.InferenceSession(serialized, providers=["CPUExecutionProvider"])
    onnx_probabilities, onnx_embedding = session.run(list(OUTPUT_NAMES), {input_name: images})
    return {
        "n_checked": int(len(images)),
        "max_abs_diff_probabilities": float(np.max(np.abs(onnx_probabilities - keras_probabilities))),
        "max_abs_diff_embedding": float(np.max(np.abs(onnx_embedding - keras_embedding))),
    }


def write_model_record(
    onnx_path,
    *,
    name: str,
    version: str,
    classes,
    preprocess_config: PreprocessConfig,
    metrics: dict,
    training: dict | None = None,
    export_check: dict | None = None,
    command: str = "",
    extra: dict | None = None,
) -> Path:
    """Write ``model.json`` beside the ONNX file: the registry record.

    Holds name, version, stage, file, sha256, classes, preprocessing,
    metrics and how the model was made.
    """
    onnx_path = Path(onnx_path)
    record = {
        "name": name,
        "version": str(version),
        "stage": "cnn",
        "file": onnx_path.name,
        "sha256": sha256_file(onnx_path),
        "classes": list(classes),
        "preprocess": preprocess_config.to_dict(),
        "input": {"name": INPUT_NAME, "shape": [None, preprocess_config.size,
                                                preprocess_config.size, 1]},
        "outputs": list(OUTPUT_NAMES),
        "metrics": metrics,
        "training": training or {},
        "export_check": export_check or {},
        "command": command,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **(extra or {}),
    }
    record_path = onnx_path.with_suffix(".json")
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return record_path
