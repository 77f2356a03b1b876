"""The ``cnn`` stage: a transfer-learned classifier run by ONNX Runtime.

The model is a directory (or its ``model.json``) written by
``survey-classifier train cnn``: ``model.onnx`` plus the record holding its
sha256, classes and preprocessing. The default is the shipped FR I / FR II
model, ``survey_classifier/models/fr-cnn``.

One ONNX Runtime session is created per process, lazily in :meth:`setup`,
with the CUDA provider first when it is available and the CPU provider
otherwise; the provider in use is logged.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import numpy as np

from survey_classifier.errors import ModelError, NotFittedError, StageConfigError
from survey_classifier.preprocess import PreprocessConfig
from survey_classifier.stages.base import CutoutFailure, Stage

__all__ = ["CNNStage", "DEFAULT_MODEL", "load_model_record"]

logger = logging.getLogger(__name__)

#: The shipped FR I / FR II model.
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "fr-cnn"

_SESSIONS: dict[tuple, object] = {}
_SESSIONS_LOCK = threading.Lock()


def load_model_record(model) -> tuple[dict, Path]:
    """Read a model's JSON record; returns ``(record, onnx_path)``.

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


def _file_sha256(path: Path) -> str:
    from survey_classifier.cnn.export import file_sha256

    return file_sha256(path)


class CNNStage(Stage):
    """Classify cutouts with an ONNX CNN (FR I / FR II by default).

    Parameters
    ----------
    model : str or Path, optional
        Model directory, JSON record or ``.onnx`` file; the shipped
        ``fr-cnn`` model by default.
    sha256 : str, optional
        Expected sha256 of the ONNX file (e.g. from the model registry);
        the record's value is used when not given. A mismatch refuses to load.
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

    def __init__(
        self,
        *,
        model=None,
        sha256=None,
        batch_size=64,
        embedding=True,
        providers=None,
        intra_op_threads=None,
        inter_op_threads=None,
    ):
        self.model = model
        self.sha256 = sha256
        self.batch_size = batch_size
        self.embedding = embedding
        self.providers = providers
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads
        if int(batch_size) < 1:
            msg = f"batch_size must be at least 1, got {batch_size}"
            raise StageConfigError(msg)
        self._record = None

    # -- model identity -------------------------------------------------
    def _model_path(self) -> Path:
        return Path(self.model) if self.model is not None else DEFAULT_MODEL

    @property
    def record_(self) -> dict:
        """The model's JSON record (read on first use)."""
        if self._record is None:
            self._record, _ = load_model_record(self._model_path())
        return self._record

    @property
    def model_ref(self) -> str:
        record = self.record_
        return f"{record['name']}:{record['version']}"

    @property
    def classes_(self) -> list[str]:
        return list(self.record_["classes"])

    @property
    def preprocess_config_(self) -> PreprocessConfig:
        return PreprocessConfig.from_dict(self.record_["preprocess"])

    # -- session ----------------------------------------------------------
    def _wanted_providers(self) -> list[str]:
        import onnxruntime as ort

        wanted = list(self.providers or ("CUDAExecutionProvider", "CPUExecutionProvider"))
        available = set(ort.get_available_providers())
        chosen = [p for p in wanted if p in available]
        if not chosen:
            msg = f"none of the ONNX Runtime providers {wanted} is available here ({sorted(available)})"
            raise StageConfigError(msg)
        return chosen

    def setup(self) -> None:
        """Verify the model file and open (or reuse) this process's session."""
        record, onnx_path = load_model_record(self._model_path())
        self._record = record
        providers = self._wanted_providers()
        key = (str(onnx_path.resolve()), record["sha256"], self.sha256, tuple(providers),
               self.intra_op_threads, self.inter_op_threads, os.getpid())
        with _SESSIONS_LOCK:
            session = _SESSIONS.get(key)
            if session is None:
                session = self._open_session(record, onnx_path, providers)
                _SESSIONS[key] = session
        self.session_ = session

    def _open_session(self, record, onnx_path: Path, providers):
        import onnxruntime as ort

        if not onnx_path.exists():
            msg = f"model file {onnx_path} not found"
            raise ModelError(msg)
        expected = self.sha256 or record["sha256"]
        actual = _file_sha256(onnx_path)
        if actual != expected:
            msg = (
                f"{onnx_path}: sha256 {actual} does not match the registered {expected}; "
                "the file was changed or corrupted, refusing to load it"
            )
            raise ModelError(msg)
        options = ort.SessionOptions()
        if self.intra_op_threads:
            options.intra_op_num_threads = int(self.intra_op_threads)
        if self.inter_op_threads:
            options.inter_op_num_threads = int(self.inter_op_threads)
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(onnx_path), options, providers=providers)
        except Exception as exc:
            msg = f"{onnx_path}: ONNX Runtime cannot load the model: {exc}"
            raise ModelError(msg) from exc
        self._check_shapes(session, record, onnx_path)
        running = session.get_providers()[0]
        logger.info(
            "cnn stage: model %s:%s on %s (asked for %s)",
            record["name"], record["version"], running, providers,
        )
        if providers[0] == "CUDAExecutionProvider" and running != "CUDAExecutionProvider":
            logger.warning(
                "cnn stage: the CUDA provider could not start (ONNX Runtime's own message above names "
                "the missing CUDA or cuDNN library); model %s:%s runs on %s instead",
                record["name"], record["version"], running,
            )
        return session

    def _check_shapes(self, session, record, onnx_path: Path) -> None:
        config = PreprocessConfig.from_dict(record["preprocess"])
        inputs = session.get_inputs()
        if len(inputs) != 1:
            msg = f"{onnx_path}: expected a model with one image input, it has {len(inputs)}"
            raise ModelError(msg)
        shape = list(inputs[0].shape)
        expected = [config.size, config.size, 1]
        if len(shape) != 4 or [s if isinstance(s, int) else None for s in shape[1:]] != expected:
            msg = (
                f"{onnx_path}: the model takes input of shape {shape}, but its preprocessing "
                f"makes images of shape (batch, {config.size}, {config.size}, 1); the model "
                "and its preprocessing record do not belong together"
            )
            raise ModelError(msg)
        outputs = {output.name: output.shape for output in session.get_outputs()}
        if "probabilities" not in outputs:
            msg = f"{onnx_path}: the model has no 'probabilities' output (outputs: {sorted(outputs)})"
            raise ModelError(msg)
        n_out = outputs["probabilities"][-1]
        if isinstance(n_out, int) and n_out != len(record["classes"]):
            msg = (
                f"{onnx_path}: the model outputs {n_out} probabilities but its record names "
                f"{len(record['classes'])} classes {record['classes']}"
            )
            raise ModelError(msg)
        if self.embedding and "embedding" not in outputs:
            msg = f"{onnx_path}: embedding=True but the model has no 'embedding' output"
            raise StageConfigError(msg)

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
        config = self.preprocess_config_
        classes = self.classes_
        results: list = [None] * len(batch)
        images, positions = [], []
        for index, cutout in enumerate(batch):
            try:
                images.append(cutout.preprocessed(config))
                positions.append(index)
            except ValueError as exc:
                results[index] = CutoutFailure(f"{cutout.path}: cannot be preprocessed: {exc}")
        if images:
            probabilities, embeddings = self.predict(np.stack(images))
            for row, index in enumerate(positions):
                p = probabilities[row]
                result = {
                    "label": classes[int(np.argmax(p))],
                    "probabilities": {name: float(p[k]) for k, name in enumerate(classes)},
                }
                if embeddings is not None:
                    result["embedding"] = np.ascontiguousarray(embeddings[row], dtype=np.float32)
                results[index] = result
        return results
