"""Encoder files: the saved result of ``survey-classifier train encoder``.

An encoder is a directory holding

- ``encoder.keras``: the backbone network, from a ``(size, size, 1)``
  image to its layer named ``embedding`` (the feature vector);
- ``encoder.json``: ``format`` (:data:`ENCODER_FORMAT`), ``objective``,
  ``preprocess`` (the :class:`~survey_classifier.preprocess.PreprocessConfig`
  it was trained on), ``architecture``, ``pretraining`` (the settings),
  ``epochs``, ``loss`` (per epoch), ``inputs`` (count, folders, sha256 of
  the files), ``keras_sha256`` and ``command``.

``train cnn --backbone encoder:DIR`` transfers from it (frozen, i.e. a
linear probe with ``--head ''``, or fine-tuned with ``--fine-tune-epochs``);
the classifier must be trained on the same preprocessing
(:func:`check_encoder`). Written by :mod:`survey_classifier.cnn.pretrain`.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from survey_classifier.errors import ModelError, StageConfigError
from survey_classifier.preprocess import PreprocessConfig

__all__ = [
    "ENCODER_FILE",
    "ENCODER_FORMAT",
    "ENCODER_PREFIX",
    "METADATA_FILE",
    "check_encoder",
    "encoder_path",
    "load_encoder",
    "read_encoder_metadata",
]

#: ``format`` of an encoder's metadata file.
ENCODER_FORMAT = "survey-classifier-encoder/1"
ENCODER_FILE = "encoder.keras"
METADATA_FILE = "encoder.json"
#: ``--backbone encoder:DIR`` names an encoder.
ENCODER_PREFIX = "encoder:"


def encoder_path(backbone: str) -> Path | None:
    """The encoder named by a backbone spec ``encoder:DIR`` (None for other backbones)."""
    backbone = str(backbone)
    return Path(backbone[len(ENCODER_PREFIX):]).expanduser() if backbone.startswith(ENCODER_PREFIX) else None


def _encoder_files(path) -> tuple[Path, Path]:
    path = Path(path).expanduser()
    if path.is_dir() or path.suffix != ".keras":
        return path / ENCODER_FILE, path / METADATA_FILE
    return path, path.with_suffix(".json")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def read_encoder_metadata(path) -> dict:
    """``encoder.json`` of an encoder directory (or of ``encoder.keras``), checked.

    Raises
    ------
    ModelError
        One line naming the file: missing, not JSON, not an encoder's, or
        without its preprocessing.
    """
    if not Path(path).expanduser().exists():
        msg = f"{Path(path).expanduser()}: encoder not found"
        raise ModelError(msg)
    _, metadata_path = _encoder_files(path)
    if not metadata_path.exists():
        msg = f"{metadata_path}: encoder metadata not found (an encoder is a directory written by " \
              "'survey-classifier train encoder')"
        raise ModelError(msg)
    try:
        metadata = json.loads(metadata_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"{metadata_path}: not a readable encoder metadata file: {_first_line(exc)}"
        raise ModelError(msg) from exc
    if not isinstance(metadata, dict) or metadata.get("format") != ENCODER_FORMAT:
        found = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
        msg = f"{metadata_path}: not an encoder metadata file (format {found!r}, expected {ENCODER_FORMAT!r})"
        raise ModelError(msg)
    if not isinstance(metadata.get("preprocess"), dict):
        msg = f"{metadata_path}: the encoder metadata has no 'preprocess' settings"
        raise ModelError(msg)
    return metadata


def check_encoder(path, preprocess_config: PreprocessConfig) -> dict:
    """The encoder's metadata, after checking it was pre-trained on ``preprocess_config``'s pixels.

    The network is loaded once too, so that a damaged file stops a training
    run before any work is done.
    """
    metadata = read_encoder_metadata(path)
    _, metadata_path = _encoder_files(path)
    try:
        theirs = PreprocessConfig.from_dict(metadata["preprocess"])
    except (TypeError, ValueError) as exc:
        msg = f"{metadata_path}: the encoder's preprocessing cannot be read: {_first_line(exc)}"
        raise ModelError(msg) from exc
    if theirs != preprocess_config:
        differ = {k: (v, preprocess_config.to_dict().get(k)) for k, v in theirs.to_dict().items()
                  if preprocess_config.to_dict().get(k) != v}
        msg = (f"{metadata_path}: the encoder was pre-trained on other preprocessing than this "
               f"training uses ((encoder, training): {differ}); use the encoder's settings")
        raise StageConfigError(msg)
    load_encoder(path, preprocess_config.size)
    return metadata


def load_encoder(path, size: int, *, embedding_layer: str = "embedding"):
    """The saved encoder (image to ``embedding``) as a transfer base for ``size`` pixel images.

    Raises
    ------
    ModelError
        One line naming the file that is missing, unreadable or not an encoder.
    StageConfigError
        An encoder for another input size.
    """
    import keras

    keras_path, _ = _encoder_files(path)
    read_encoder_metadata(path)
    if not keras_path.exists():
        msg = f"{keras_path}: encoder network not found"
        raise ModelError(msg)
    if not zipfile.is_zipfile(keras_path):
        msg = f"{keras_path}: not a Keras (.keras zip) file; damaged or not an encoder's network"
        raise ModelError(msg)
    try:
        encoder = keras.models.load_model(keras_path, compile=False)
    except Exception as exc:  # zip, HDF5 and deserialisation errors of Keras
        msg = f"{keras_path}: cannot load the encoder network: {_first_line(exc)}"
        raise ModelError(msg) from exc
    shape = tuple(encoder.input_shape[1:])
    if shape != (size, size, 1):
        msg = (f"{keras_path}: the encoder takes images of shape {shape}, but the preprocessing "
               f"makes ({size}, {size}, 1)")
        raise StageConfigError(msg)
    if embedding_layer not in [layer.name for layer in encoder.layers]:
        msg = f"{keras_path}: the network has no layer named {embedding_layer!r}; not an encoder"
        raise ModelError(msg)
    return encoder
