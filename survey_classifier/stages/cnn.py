"""The ``cnn`` stage: a transfer-learned classifier run by ONNX Runtime.

The model is one ONNX file written by ``survey-classifier train cnn``: its
``metadata_props`` hold the record the stage needs (classes and the
:class:`~survey_classifier.preprocess.PreprocessConfig` it was trained
with). The shipped FR I / FR II model is ``fr-cnn:1``
(``survey_classifier/models/fr-cnn``), the default; ``fr-cnn:2``
(``survey_classifier/models/fr-cnn-2``, calibrated) is registered beside it.

One ONNX Runtime session is created per process and model, lazily in
:meth:`CNNStage.setup`, with the CUDA provider first when it can start
and the CPU provider otherwise (decided beforehand, and said once per
process, by :mod:`survey_classifier.onnx_providers`).

A model trained with ``--uncertain-below P`` records ``P`` in its metadata;
the stage then stores ``uncertain`` (True when the top probability is below
``P``) with every result. A calibrated model has its temperature inside the
graph, so the probabilities and the flag are the calibrated ones. Models
without the entry (``fr-cnn:1``) give no flag: their results are unchanged.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import numpy as np

from survey_classifier.columns import Column
from survey_classifier.errors import ModelError, NotFittedError, StageConfigError
from survey_classifier.modelref import ShippedModel
from survey_classifier.preprocess import PreprocessConfig
from survey_classifier.stages.base import Stage

__all__ = ["CNNStage", "DEFAULT_MODEL", "FR_CNN", "FR_CNN_2", "FR_CNN_3", "load_model_record", "read_onnx_record"]

logger = logging.getLogger(__name__)

#: The shipped FR I / FR II model.
FR_CNN = ShippedModel(
    name="fr-cnn",
    version="1",
    package="survey_classifier",
    resource="models/fr-cnn/model.onnx",
    sha256="8c171d6a5e5d3298d41d1cad9ee8c813a65124aeca50b442c76b437b488c9f99",
    card="models/fr-cnn/MODEL_CARD.md",
    metrics={"test_accuracy": 0.893, "test_sources": 131},
)
#: The recipe of fr-cnn:1 trained on all 524 development sources, chosen by cross-validation (#16, docs/cnn.md
#: "Choosing fr-cnn:2"), calibrated; registered beside version 1, which stays the default because the shipped
#: anomaly scorer was fitted on fr-cnn:1's results (``models set-default fr-cnn 2`` switches).
FR_CNN_2 = ShippedModel(
    name="fr-cnn",
    version="2",
    package="survey_classifier",
    resource="models/fr-cnn-2/model.onnx",
    sha256="e6520c4c117f6fcb9248d68d402e51aae9a4b88860467f0f041de6230eb13b02",
    card="models/fr-cnn-2/MODEL_CARD.md",
    metrics={"cv_accuracy": 0.930, "cv_runs": 15, "recipe_test_accuracy": 0.893, "test_sources": 131,
             "temperature": 0.908, "ece_out_of_fold": 0.016},
)
#: fr-cnn:2's network averaged with the D8-equivariant ``d8`` network trained from scratch on the same 524 sources
#: (ensemble E2, chosen by cross-validation and within the 4x cost budget: #16, docs/cnn.md "Ensembles with D2"),
#: one temperature; registered beside versions 1 and 2, not the default (the anomaly scorer is fitted on fr-cnn:1).
FR_CNN_3 = ShippedModel(
    name="fr-cnn",
    version="3",
    package="survey_classifier",
    resource="models/fr-cnn-3/model.onnx",
    sha256="a7344e7cff19179dacef535d3fb9eaa32f07292f8bc442d7f8ff29802b40acbb",
    card="models/fr-cnn-3/MODEL_CARD.md",
    metrics={"cv_accuracy": 0.947, "cv_runs": 15, "recipe_test_accuracy": 0.924, "test_sources": 131,
             "temperature": 0.587, "ece_out_of_fold": 0.014},
)
#: Folder of the shipped model (the ONNX file, its JSON record, the Keras model, card and split).
DEFAULT_MODEL = FR_CNN.path().parent

_SESSIONS: dict[tuple, object] = {}
_SESSIONS_LOCK = threading.Lock()
_RECORD_KEYS = ("classes", "preprocess")
_OPTIONAL_KEYS = ("temperature", "uncertain_below")


def load_model_record(model) -> tuple[dict, Path]:
    """Read the JSON record training writes beside a model; returns ``(record, onnx_path)``.

    ``model`` is a model directory, its JSON record, or its ``.onnx`` file
    (the record is then the ``.json`` beside it).
    """
    path = Path(model).expanduser()
    if path.is_dir():
        candidates = sorted(path.glob("*.json"))
        record_path = path / "model.json" if (path / "model.json").exists() else (
            candidates[0] if len(candidates) == 1 else path / "model.json"
        )
    elif path.suffix == ".onnx":
        record_path = path.with_suffix(".json")
    else:
        record_path = path
    if not record_path.exists():
        msg = f"model record {record_path} not found (expected the JSON written with the model)"
        raise ModelError(msg)
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError) as exc:
        msg = f"{record_path}: cannot read the model record: {exc}"
        raise ModelError(msg) from exc
    missing = [key for key in ("name", "version", "sha256", "classes", "preprocess") if key not in record]
    if missing:
        msg = f"{record_path}: the model record lacks {missing}"
        raise ModelError(msg)
    onnx_path = record_path.parent / record.get("file", "model.onnx")
    return record, onnx_path


def read_onnx_record(session, path: Path) -> dict:
    """Classes and preprocessing from an ONNX model's ``metadata_props``."""
    metadata = session.get_modelmeta().custom_metadata_map
    missing = [key for key in _RECORD_KEYS if key not in metadata]
    if missing:
        msg = (
            f"{path.name} is not a survey-classifier CNN: its ONNX metadata lacks {missing} "
            "(export it with `survey-classifier train cnn`)"
        )
        raise ModelError(msg)
    try:
        record = {key: json.loads(metadata[key]) for key in _RECORD_KEYS}
        record["preprocess_config"] = PreprocessConfig.from_dict(record["preprocess"])
        for key in _OPTIONAL_KEYS:
            record[key] = float(json.loads(metadata[key])) if key in metadata else None
    except (ValueError, TypeError) as exc:
        msg = f"{path.name}: the ONNX metadata holds an unreadable classes, preprocess or calibration entry: {exc}"
        raise ModelError(msg) from exc
    threshold = record["uncertain_below"]
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        msg = f"{path.name}: the ONNX metadata's uncertain_below is {threshold}, not a probability in [0, 1]"
        raise ModelError(msg)
    return record


def _cpu_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime raises its own types for unreadable files
        reason = " ".join(str(exc).split()).rsplit(":", 1)[-1].strip()[:200]
        msg = f"{path.name} is not an ONNX model that ONNX Runtime can load ({reason})"
        raise ModelError(msg) from exc


class CNNStage(Stage):
    """Classify cutouts with an ONNX CNN (FR I / FR II by default).

    Parameters
    ----------
    model : str, optional
        ``NAME[:VERSION]`` of a registered model, or a model file (its
        ``.onnx``, or the folder or ``model.json`` training wrote); the
        registry's default (the shipped ``fr-cnn:1``) when not given.
    batch_size : int
        Cutouts per ONNX Runtime call.
    embedding : bool
        Also return the penultimate-layer features under ``"embedding"``
        (float32 array; stored as bytes, used by the anomaly stage).
    providers : sequence of str, optional
        ONNX Runtime providers in order of preference; default CUDA, CPU.
    intra_op_threads, inter_op_threads : int, optional
        ONNX Runtime thread counts (0 or None: its default).
    """

    name = "cnn"
    version = "1"
    result_kind = "classification"
    requires = ("pixels",)
    enabled_by_default = True
    model_param = "model"
    shipped_models = (FR_CNN, FR_CNN_2, FR_CNN_3)
    result_columns = (
        Column("uncertain", "Set when the top class probability is below the model's uncertain_below threshold "
               "(models trained with one): an answer to check by eye", ucd="meta.code.qual"),
    )

    def __init__(
        self,
        *,
        model=None,
        batch_size=64,
        embedding=True,
        providers=None,
        intra_op_threads=None,
        inter_op_threads=None,
    ):
        self.model = model
        self.batch_size = batch_size
        self.embedding = embedding
        self.providers = providers
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads
        if int(batch_size) < 1:
            msg = f"batch_size must be at least 1, got {batch_size}"
            raise StageConfigError(msg)
        self._record = None

    # -- the artefact -------------------------------------------------------
    @classmethod
    def artefact_file(cls, path: Path) -> Path:
        """The ``.onnx`` file of a model folder, of its ``model.json``, or the file itself."""
        if path.is_dir() or path.suffix == ".json":
            return load_model_record(path)[1]
        return super().artefact_file(path)

    @classmethod
    def validate_artefact(cls, path: Path) -> dict:
        """An ONNX model with this stage's metadata, one image input matching its preprocessing."""
        session = _cpu_session(path)
        record = read_onnx_record(session, path)
        _check_shapes(session, record, path, embedding=False)
        return {"classes": record["classes"], "preprocess": record["preprocess"]}

    @property
    def classes_(self) -> list[str]:
        return list(self._loaded_record()["classes"])

    @property
    def preprocess_config(self) -> PreprocessConfig:
        """The preprocessing the model was trained with (from its ONNX metadata)."""
        return self._loaded_record()["preprocess_config"]

    def _loaded_record(self) -> dict:
        if self._record is None:
            self.setup()
        return self._record

    # -- session ----------------------------------------------------------
    def _wanted_providers(self) -> list[str]:
        from survey_classifier.onnx_providers import CPU, CUDA, usable_providers

        wanted = list(self.providers or (CUDA, CPU))
        return usable_providers(wanted, stage=self.name, explicit=self.providers is not None)

    def setup(self) -> None:
        """Open (or reuse) this process's session on the verified model file."""
        model = self.model_
        providers = self._wanted_providers()
        key = (str(model.path), model.sha256, tuple(providers), self.intra_op_threads, self.inter_op_threads,
               os.getpid())
        with _SESSIONS_LOCK:
            entry = _SESSIONS.get(key)
            if entry is None:
                entry = self._open_session(model, providers)
                _SESSIONS[key] = entry
        self.session_, self._record = entry
        if self.embedding and "embedding" not in {o.name for o in self.session_.get_outputs()}:
            msg = f"stage {self.name!r}: embedding=True but model {model.ref} has no 'embedding' output"
            raise StageConfigError(msg)

    def _open_session(self, model, providers):
        import onnxruntime as ort

        from survey_classifier.onnx_providers import session_log_severity

        options = ort.SessionOptions()
        if self.intra_op_threads:
            options.intra_op_num_threads = int(self.intra_op_threads)
        if self.inter_op_threads:
            options.inter_op_num_threads = int(self.inter_op_threads)
        options.log_severity_level = session_log_severity()
        try:
            session = ort.InferenceSession(str(model.path), options, providers=providers)
        except Exception as exc:
            msg = f"model {model.ref}: ONNX Runtime cannot load {model.filename}: {exc}"
            raise ModelError(msg) from exc
        record = read_onnx_record(session, model.path)
        _check_shapes(session, record, model.path, embedding=False)
        running = session.get_providers()[0]
        logger.info("%s stage: model %s on %s (asked for %s)", self.name, model.ref, running, providers)
        if running != providers[0]:
            logger.warning("%s stage: ONNX Runtime could not start %s after all; model %s runs on %s (-v for its "
                           "message)", self.name, providers[0], model.ref, running)
        return session, record

    @property
    def provider_(self) -> str:
        """The ONNX Runtime provider that runs the model."""
        return self._session().get_providers()[0]

    def _session(self):
        session = getattr(self, "session_", None)
        if session is None:
            msg = "the cnn stage is not set up; call setup() before process()"
            raise NotFittedError(msg)
        return session

    # -- inference --------------------------------------------------------
    def predict(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (and embeddings) for preprocessed images (n, size, size[, 1])."""
        session = self._session()
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 3:
            images = images[..., None]
        outputs = ["probabilities", "embedding"] if self.embedding else ["probabilities"]
        probabilities, embeddings = [], []
        step = int(self.batch_size)
        for start in range(0, len(images), step):
            result = session.run(outputs, {session.get_inputs()[0].name: images[start:start + step]})
            probabilities.append(result[0])
            if self.embedding:
                embeddings.append(result[1])
        n_classes = len(self.classes_)
        probabilities = np.concatenate(probabilities) if probabilities else np.zeros((0, n_classes))
        embedding = np.concatenate(embeddings).astype(np.float32) if embeddings else None
        return probabilities, embedding

    def process(self, batch):
        if not batch:
            return []
        classes = self.classes_
        images = np.stack([cutout.preprocessed(self.preprocess_config) for cutout in batch])
        probabilities, embeddings = self.predict(images)
        threshold = self._loaded_record().get("uncertain_below")
        results = []
        for row, p in enumerate(probabilities):
            result = {
                "label": classes[int(np.argmax(p))],
                "probabilities": {name: float(p[k]) for k, name in enumerate(classes)},
            }
            if threshold is not None:
                result["uncertain"] = bool(np.max(p) < threshold)
            if embeddings is not None:
                result["embedding"] = np.ascontiguousarray(embeddings[row], dtype=np.float32)
            results.append(result)
        return results


def _check_shapes(session, record: dict, path: Path, *, embedding: bool) -> None:
    """Refuse a model whose input or outputs do not fit its record."""
    config = record["preprocess_config"]
    inputs = session.get_inputs()
    if len(inputs) != 1:
        msg = f"{path.name}: expected a model with one image input, it has {len(inputs)}"
        raise ModelError(msg)
    shape = list(inputs[0].shape)
    expected = [config.size, config.size, 1]
    if len(shape) != 4 or [s if isinstance(s, int) else None for s in shape[1:]] != expected:
        msg = (
            f"{path.name}: the model takes input of shape {shape}, but its preprocessing makes images of "
            f"shape (batch, {config.size}, {config.size}, 1); the model and its preprocessing record do not "
            "belong together"
        )
        raise ModelError(msg)
    outputs = {output.name: output.shape for output in session.get_outputs()}
    if "probabilities" not in outputs:
        msg = f"{path.name}: the model has no 'probabilities' output (outputs: {sorted(outputs)})"
        raise ModelError(msg)
    n_out = outputs["probabilities"][-1]
    if isinstance(n_out, int) and n_out != len(record["classes"]):
        msg = (
            f"{path.name}: the model outputs {n_out} probabilities but its metadata names "
            f"{len(record['classes'])} classes {record['classes']}"
        )
        raise ModelError(msg)
    if embedding and "embedding" not in outputs:
        msg = f"{path.name}: the model has no 'embedding' output"
        raise ModelError(msg)
