"""Base networks for transfer learning.

A backbone maps a ``(size, size, 1)`` image in [0, 1] to a feature vector.
Three kinds are understood by :func:`build_backbone`:

- ``"compact"``: the project's own small network (:func:`compact_network`),
  trained offline on a base task such as the four FIRST classes;
- ``"c8"`` (or ``"c8:WIDTH"``): its rotation-equivariant counterpart over
  the group of turns by 45° (:mod:`~survey_classifier.cnn.equivariant`),
  whose features are invariant to turns of the image;
- ``"d8"`` (or ``"d8:WIDTH"``): the same over turns by 45° and mirror
  flips, with steerable filters, anti-aliased pooling (MaxBlurPool) and
  batch normalisation per field (:mod:`~survey_classifier.cnn.dihedral`);
  ``"d8-sharp"`` leaves out both, ``"d8-max"`` only the blur;
- the name of any ``keras.applications`` model (``"MobileNetV2"``,
  ``"ResNet50"``, ...), fed the grey image as three identical channels,
  scaled to the range that family expects;
- the path of a saved Keras model (``.keras``/``.h5``): its layer named
  ``"embedding"`` (or the input of its last layer) is the feature vector;
- ``"encoder:DIR"``: a self-supervised encoder written by ``train encoder``
  (:mod:`survey_classifier.cnn.encoder`).

Weights are ``"imagenet"`` (``keras.applications`` only; Keras' normal
cache under ``~/.keras/models`` is used, and offline a missing file is
reported by name), the path of a local weights file, or ``None``.
"""

from __future__ import annotations

import functools
from pathlib import Path

from survey_classifier.errors import ModelError, StageConfigError

__all__ = [
    "EMBEDDING_LAYER",
    "INVARIANCES",
    "build_backbone",
    "invariant_backbone",
    "compact_network",
    "keras_cache_dir",
    "list_applications",
    "load_keras_model",
]

#: Name of the feature layer of the project's networks (kept by exports).
EMBEDDING_LAYER = "embedding"

#: Symmetries a backbone can be made exactly invariant to (see invariant_backbone).
INVARIANCES = ("none", "d4")

# Input scaling of keras.applications families, as (scale, offset) applied
# to [0, 1] pixels or a ("caffe"/"torch") mean/std normalisation.
_RANGE_255 = ("scale", 255.0, 0.0)
_RANGE_PM1 = ("scale", 2.0, -1.0)
_CAFFE = ("normalize", (103.939, 116.779, 123.68), (1.0, 1.0, 1.0), 255.0)
_TORCH = ("normalize", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 1.0)
_FAMILY_SCALING = {
    "vgg": _CAFFE,
    "resnet50": _CAFFE,
    "resnet101": _CAFFE,
    "resnet152": _CAFFE,
    "densenet": _TORCH,
    "resnet50v2": _RANGE_PM1,
    "resnet101v2": _RANGE_PM1,
    "resnet152v2": _RANGE_PM1,
    "mobilenet": _RANGE_PM1,
    "mobilenetv2": _RANGE_PM1,
    "inception": _RANGE_PM1,
    "inceptionv3": _RANGE_PM1,
    "xception": _RANGE_PM1,
    "nasnet": _RANGE_PM1,
}


def list_applications() -> list[str]:
    """Names of the model constructors in ``keras.applications``."""
    import keras

    return sorted(
        name for name in dir(keras.applications) if name[:1].isupper() and callable(
            getattr(keras.applications, name)
        )
    )


def keras_cache_dir() -> Path:
    """Where Keras caches downloaded weights: ``<keras home>/models``.

    The Keras home is ``$KERAS_HOME`` as set when Keras was imported, by
    default ``~/.keras``. The file name within differs per family and is
    taken from Keras' own download error when offline.
    """
    import os

    try:
        from keras.src.backend.config import keras_home
    except ImportError:  # a Keras without this helper: its documented default
        return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    return Path(keras_home()) / "models"


def _scaling_for(name: str):
    key = name.lower()
    for family in sorted(_FAMILY_SCALING, key=len, reverse=True):
        if key == family or key.startswith(family) and not key[len(family):].startswith("v"):
            return _FAMILY_SCALING[family]
    # EfficientNet, ConvNeXt, RegNet, MobileNetV3 rescale inside the model.
    return _RANGE_255


def compact_network(size: int, *, width: int = 16, name: str = "compact"):
    """The project's small CNN: four conv blocks and global max pooling.

    Widths ``width, 2 width, 4 width, 4 width``; one 3x3 convolution with
    ReLU per block (two in the last), each block followed by 2x2 max
    pooling; about 0.1 M parameters and 15 MFLOP per 64x64 image at
    ``width=16``, so it trains in minutes on a laptop CPU. Global *max*
    pooling suits radio cutouts, which are mostly empty sky around a
    compact source. There is no batch normalisation: with a few hundred
    sparse images its moving statistics lag far behind the batch ones.
    The output layer is named :data:`EMBEDDING_LAYER`.
    """
    import keras
    from keras import layers

    inputs = keras.Input((size, size, 1), name="image")
    x = inputs
    widths = (width, 2 * width, 4 * width, 4 * width)
    for block, filters in enumerate(widths):
        for conv in range(2 if block == len(widths) - 1 else 1):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu",
                              name=f"block{block}_conv{conv}")(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    x = layers.GlobalMaxPooling2D(name=EMBEDDING_LAYER)(x)
    return keras.Model(inputs, x, name=name)


def build_backbone(backbone: str, size: int, *, weights=None):
    """A Keras model from a ``(size, size, 1)`` image to a feature vector.

    Parameters
    ----------
    backbone : str
        ``"compact"`` (or ``"compact:WIDTH"``, default width 16), ``"c8"``
        (or ``"c8:WIDTH"``, default 3), ``"d8"`` (or ``"d8:WIDTH"``, default
        2), a ``keras.applications`` model
        name, the path of a saved Keras model, or ``"encoder:DIR"`` (a
        pre-trained encoder written by ``train encoder``).
    size : int
        Input image side in pixels (from the preprocessing configuration).
    weights : str or None
        ``"imagenet"``, the path of a weights file, or None.

    Raises
    ------
    StageConfigError
        Unknown backbone name, or an input size the saved model cannot take.
    ModelError
        Weights that cannot be found or loaded; offline ImageNet weights
        name the cache file Keras looked for.
    """
    import keras

    from survey_classifier.cnn.encoder import encoder_path, load_encoder

    path = Path(str(backbone)).expanduser()
    family = str(backbone).split(":", 1)[0]
    if encoder_path(backbone) is not None:
        model = load_encoder(encoder_path(backbone), size, embedding_layer=EMBEDDING_LAYER)
    elif family in _OWN_NETWORKS and (backbone == family or str(backbone).startswith(f"{family}:")):
        constructor, default_width = _OWN_NETWORKS[family]
        model = constructor(size, width=_width(backbone, default_width))
        if weights == "imagenet":
            msg = f"ImageNet weights exist only for keras.applications backbones, not {family!r}"
            raise StageConfigError(msg)
    elif path.suffix in (".keras", ".h5") or path.exists():
        model = _saved_backbone(path, size)
    elif hasattr(keras.applications, backbone):
        # keras.applications take "imagenet", None or a weights file themselves.
        if weights not in (None, "imagenet") and not Path(weights).expanduser().exists():
            msg = f"weights file {Path(weights).expanduser()} not found"
            raise ModelError(msg)
        return _application_backbone(backbone, size, weights)
    else:
        msg = (
            f"unknown backbone {backbone!r}: use 'compact', 'c8', 'd8', a keras.applications name "
            f"(e.g. {', '.join(list_applications()[:5])}, ...) or the path of a saved "
            ".keras model"
        )
        raise StageConfigError(msg)
    if weights is not None and weights != "imagenet":
        _load_weights(model, weights)
    return model


def _check_equivariant_size(family: str, size: int) -> None:
    if size % 16:
        msg = (f"the {family} backbone needs an input size that is a multiple of 16 (for exact invariance to "
               f"quarter turns), got --size {size}")
        raise StageConfigError(msg)


def _c8_network(size: int, *, width: int, blur: bool = False):
    from survey_classifier.cnn.equivariant import c8_network

    _check_equivariant_size("c8", size)
    return c8_network(size, width=width, blur=blur)


def _d8_network(size: int, *, width: int, blur: bool = True, norms: bool | None = None):
    from survey_classifier.cnn.dihedral import d8_network

    _check_equivariant_size("d8", size)
    return d8_network(size, width=width, blur=blur, norms=norms)


#: The project's own networks: ``{name: (constructor, default width)}``; ``NAME:WIDTH`` picks the width.
_OWN_NETWORKS = {
    "compact": (compact_network, 16),
    "c8": (_c8_network, 3),
    "c8-blur": (functools.partial(_c8_network, blur=True), 3),  # c8 with d8's MaxBlurPool and field norms
    "d8": (_d8_network, 2),
    "d8-sharp": (functools.partial(_d8_network, blur=False), 2),  # d8 without blur nor norms, for comparison
    "d8-max": (functools.partial(_d8_network, blur=False, norms=True), 2),  # d8's norms, plain 2x2 max pooling
}


def _width(backbone: str, default: int) -> int:
    if ":" not in backbone:
        return default
    text = backbone.split(":", 1)[1]
    if not text.isdigit() or int(text) < 1:
        msg = f"backbone {backbone!r}: the width after ':' must be a whole number of filters, got {text!r}"
        raise StageConfigError(msg)
    return int(text)


def _load_weights(model, weights) -> None:
    weights_path = Path(weights).expanduser()
    if not weights_path.exists():
        msg = f"weights file {weights_path} not found"
        raise ModelError(msg)
    try:
        model.load_weights(weights_path)
    except Exception as exc:
        msg = f"{weights_path}: cannot load these weights into the backbone: {exc}"
        raise ModelError(msg) from exc


def _saved_backbone(path: Path, size: int):
    import keras

    if not path.exists():
        msg = f"saved backbone {path} not found"
        raise ModelError(msg)
    try:
        saved = load_keras_model(path)
    except Exception as exc:
        msg = f"{path}: cannot load the saved Keras model: {exc}"
        raise ModelError(msg) from exc
    shape = tuple(saved.input_shape[1:])
    if shape[:2] not in ((size, size), (None, None)) or shape[-1] != 1:
        msg = (
            f"{path}: the saved base network takes images of shape {shape}, but the "
            f"preprocessing makes ({size}, {size}, 1); train the base with --size {size}"
        )
        raise StageConfigError(msg)
    names = [layer.name for layer in saved.layers]
    if EMBEDDING_LAYER in names:
        features = saved.get_layer(EMBEDDING_LAYER).output
    else:
        features = saved.layers[-1].input
    return keras.Model(saved.input, features, name=f"base_{saved.name}")


def _application_backbone(name: str, size: int, weights):
    import keras
    from keras import layers

    constructor = getattr(keras.applications, name)
    inputs = keras.Input((size, size, 1), name="image")
    x = layers.Concatenate(name="grey_to_rgb")([inputs, inputs, inputs])
    scaling = _scaling_for(name)
    if scaling[0] == "scale":
        x = layers.Rescaling(scaling[1], offset=scaling[2], name="input_scaling")(x)
    else:
        _, mean, std, factor = scaling
        x = layers.Rescaling(factor, name="input_scaling")(x)
        x = layers.Normalization(
            mean=list(mean), variance=[s * s for s in std], name="input_normalization"
        )(x)
    try:
        base = constructor(
            include_top=False,
            weights=weights if weights in (None, "imagenet") else str(Path(weights).expanduser()),
            input_shape=(size, size, 3),
            pooling="avg",
        )
    except Exception as exc:  # urllib/HTTP errors when offline, bad shapes, bad files
        if weights not in (None, "imagenet"):
            msg = f"{weights}: cannot load these weights into keras.applications.{name}: {exc}"
            raise ModelError(msg) from exc
        if weights is None or isinstance(exc, ValueError):
            msg = f"keras.applications.{name} cannot be built for {size}x{size} inputs: {exc}"
            raise StageConfigError(msg) from exc
        cache = keras_cache_dir()
        origin = getattr(exc, "url", None) or ""
        looked_for = _expected_weights_name(exc)
        msg = (
            f"ImageNet weights for keras.applications.{name} are not in the Keras cache "
            f"({cache / looked_for if looked_for else cache}) and could not be downloaded "
            f"({type(exc).__name__}: {exc}) {origin}. Copy the weights file there from a "
            "machine that is online, pass a local weights file with --weights PATH, or "
            "use --weights none or the offline base network (see docs/cnn.md)."
        )
        raise ModelError(msg) from exc
    features = base(x)
    features = layers.Identity(name=EMBEDDING_LAYER)(features)
    return keras.Model(inputs, features, name=f"base_{name.lower()}")


def _expected_weights_name(exc: Exception) -> str:
    """The weights file name Keras was fetching, taken from its error text."""
    import re

    text = str(exc)
    match = re.search(r"[\w.\-]+\.(?:h5|keras)", text)
    return match.group(0) if match else ""


@functools.lru_cache(maxsize=1)
def _d4_transform_layer():
    """The Keras layer turning images by ``k`` quarter turns, after an optional mirror flip.

    Defined (and registered with Keras) on first use, so that importing this
    module does not import Keras; :func:`load_keras_model` makes sure it is
    registered before a saved model is read.
    """
    import keras

    @keras.saving.register_keras_serializable(package="survey_classifier")
    class D4Transform(keras.layers.Layer):
        def __init__(self, quarter_turns: int = 0, flip: bool = False, **kwargs):
            super().__init__(**kwargs)
            self.quarter_turns = int(quarter_turns)
            self.flip = bool(flip)

        def call(self, images):
            if self.flip:
                images = keras.ops.flip(images, axis=1)
            if self.quarter_turns:
                images = keras.ops.rot90(images, k=self.quarter_turns, axes=(1, 2))
            return images

        def get_config(self):
            return {**super().get_config(), "quarter_turns": self.quarter_turns, "flip": self.flip}

    return D4Transform


def invariant_backbone(base, invariance: str = "d4"):
    """``base`` made exactly invariant to quarter turns and mirror flips.

    The one (weight-shared) base network sees the 8 images of the dihedral
    group D4 and their features are averaged, so a turned or mirrored
    cutout gets exactly the same features (cyclic pooling, as in Dieleman
    et al. 2015 for Galaxy Zoo). It costs 8 evaluations of the base per
    image. Random rotations in training cover the angles in between.
    """
    import keras

    if invariance == "none":
        return base
    if invariance != "d4":
        msg = f"invariance must be one of {INVARIANCES}, got {invariance!r}"
        raise StageConfigError(msg)
    transform = _d4_transform_layer()
    inputs = keras.Input(tuple(base.input.shape[1:]), name="image")
    features = [
        base(transform(turns, flip, name=f"d4_{'flip_' if flip else ''}rot{90 * turns}")(inputs))
        for flip in (False, True)
        for turns in range(4)
    ]
    pooled = keras.layers.Average(name="d4_mean")(features)
    return keras.Model(inputs, pooled, name=f"d4_{base.name}")


def load_keras_model(path):
    """``keras.models.load_model`` for the project's models (custom layers registered)."""
    import keras

    from survey_classifier.cnn.dihedral import d8_layers, field_norm_class
    from survey_classifier.cnn.equivariant import c8_layers

    _d4_transform_layer()
    c8_layers()
    d8_layers()
    field_norm_class()  # the d8 and c8-blur networks' FieldBatchNorm
    return keras.models.load_model(path, compile=False)
