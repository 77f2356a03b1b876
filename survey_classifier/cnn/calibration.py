"""Calibrated probabilities: temperature scaling, calibration error, reliability diagrams.

A network trained with cross-entropy and early stopping is often over- (or
under-) confident: among the cutouts it gives 0.9, fewer (or more) than
90 % are right. Temperature scaling (Guo et al. 2017) divides the logits
``z`` (the input of the softmax) by one number ``T > 0`` fitted on the
validation part,

.. math::

    p_k = \\frac{\\exp(z_k / T)}{\\sum_j \\exp(z_j / T)},
    \\qquad T = \\arg\\min_T \\; -\\frac{1}{n}\\sum_i \\log p_{y_i}(T),

which changes no prediction (the order of the logits stays) but makes the
probabilities honest. ``T`` is found by a bounded 1-D search over
``log T`` (the negative log-likelihood is smooth and, for one class
boundary, unimodal in ``T``). For an ensemble the same ``T`` divides every
member's logits before their probabilities are averaged.

The expected calibration error (Naeini et al. 2015) sorts predictions by
their top probability into ``bins`` equal-width bins and averages
``|accuracy - confidence|`` over them, weighted by their counts:

.. math::

    \\mathrm{ECE} = \\sum_b \\frac{n_b}{n} \\left|\\mathrm{acc}_b - \\mathrm{conf}_b\\right|.

:func:`calibrated_classifier` rebuilds a trained classifier so that the
division happens inside the network (a ``temperature`` layer between the
logits and the softmax); the ONNX export then carries it, and every
consumer of the model gets calibrated probabilities.
"""

from __future__ import annotations

import numpy as np

from survey_classifier.errors import StageConfigError

__all__ = [
    "LOGITS_LAYER",
    "TEMPERATURE_LAYER",
    "softmax",
    "negative_log_likelihood",
    "fit_temperature",
    "expected_calibration_error",
    "reliability_bins",
    "plot_reliability",
    "classifier_logits",
    "calibrated_classifier",
    "features_of",
    "T_BOUNDS",
]

#: Name of the dense layer giving the logits in a calibrated classifier.
LOGITS_LAYER = "logits"
#: Name of the layer multiplying the logits by ``1 / T``.
TEMPERATURE_LAYER = "temperature"
_PROBABILITIES_LAYER = "probabilities"

#: Search range of ``T`` (a factor 100 either way of 1).
T_BOUNDS = (0.01, 100.0)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``(n, k)`` or ``(members, n, k)`` logits, in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Mean over members (first axis of 3-d logits) of softmax(logits / T)."""
    p = softmax(np.asarray(logits, dtype=np.float64) / float(temperature))
    return p.mean(axis=0) if p.ndim == 3 else p


def negative_log_likelihood(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """Mean ``-log p_y`` of softmax(logits / T) (members' probabilities averaged first)."""
    p = _probabilities(logits, temperature)
    targets = np.asarray(targets, dtype=int)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(targets)), targets], 1e-12, None))))


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The ``T`` minimising the validation negative log-likelihood of softmax(logits / T).

    Parameters
    ----------
    logits : ndarray, shape (n, k) or (members, n, k)
        Softmax inputs on the validation part (one slice per ensemble member).
    targets : ndarray of int, shape (n,)

    Returns
    -------
    float
        ``T`` within :data:`T_BOUNDS`; 1.0 is kept unless another value
        gives a lower likelihood.
    """
    from scipy.optimize import minimize_scalar

    targets = np.asarray(targets, dtype=int)
    if len(targets) == 0:
        msg = "temperature scaling needs a validation part; there is none"
        raise StageConfigError(msg)
    low, high = np.log(T_BOUNDS)
    found = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, targets, float(np.exp(log_t))),
        bounds=(low, high), method="bounded", options={"xatol": 1e-6},
    )
    best = float(np.exp(found.x))
    if negative_log_likelihood(logits, targets, best) > negative_log_likelihood(logits, targets, 1.0):
        return 1.0
    return best


def reliability_bins(probabilities: np.ndarray, targets: np.ndarray, bins: int = 15) -> dict:
    """Per-bin counts, mean confidence and accuracy of the top-probability predictions.

    Bins are ``bins`` equal-width intervals of the top probability over
    [0, 1], each closed on the right (the first also on the left).
    """
    p = np.asarray(probabilities, dtype=np.float64)
    targets = np.asarray(targets, dtype=int)
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == targets).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / count
        accuracy = np.bincount(index, weights=correct, minlength=bins) / count
    return {"edges": edges, "count": count, "confidence": mean_confidence, "accuracy": accuracy}


def expected_calibration_error(probabilities: np.ndarray, targets: np.ndarray, bins: int = 15) -> float:
    """ECE with ``bins`` equal-width bins of the top probability (see the module docstring)."""
    table = reliability_bins(probabilities, targets, bins)
    used = table["count"] > 0
    if not used.any():
        return float("nan")
    gaps = np.abs(table["accuracy"][used] - table["confidence"][used])
    return float(np.sum(table["count"][used] * gaps) / table["count"].sum())


def plot_reliability(curves: dict, targets: np.ndarray, path, *, bins: int = 15, title: str = "") -> None:
    """Reliability diagram PNG: accuracy against confidence per bin, one line per entry of ``curves``.

    ``curves`` maps a legend label (e.g. ``"before (T = 1)"``) to ``(n, k)``
    probabilities of the same cutouts; each label gets its ECE added.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.8, 4.6))
    axis = figure.subplots()
    axis.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfectly calibrated")
    for index, (label, probabilities) in enumerate(curves.items()):
        table = reliability_bins(probabilities, targets, bins)
        used = table["count"] > 0
        ece = expected_calibration_error(probabilities, targets, bins)
        axis.plot(table["confidence"][used], table["accuracy"][used], marker="o", ms=3 + index, lw=1,
                  color=f"C{index}", label=f"{label}: ECE {ece:.3f}")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.set_xlabel(f"confidence (top probability, {bins} bins)")
    axis.set_ylabel("accuracy in the bin")
    axis.legend(fontsize=8, loc="lower right")
    if title:
        axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def features_of(model):
    """The classifier's feature tensor: the input of its logits (or softmax) layer."""
    names = {layer.name for layer in model.layers}
    head = LOGITS_LAYER if LOGITS_LAYER in names else _PROBABILITIES_LAYER
    return model.get_layer(head).input


def classifier_logits(model, images: np.ndarray) -> np.ndarray:
    """Softmax inputs (before any temperature) of a classifier on ``images``."""
    import keras

    names = {layer.name for layer in model.layers}
    dense = model.get_layer(LOGITS_LAYER if LOGITS_LAYER in names else _PROBABILITIES_LAYER)
    features = keras.Model(model.input, dense.input).predict(images, batch_size=256, verbose=0)
    kernel, bias = dense.get_weights()
    return np.asarray(features, dtype=np.float64) @ kernel + bias


def calibrated_classifier(model, temperature: float):
    """``model`` with softmax(logits / T): its features, a ``logits`` dense layer, ``temperature``, softmax.

    The dense layer takes the trained softmax layer's weights; the
    temperature is a ``Rescaling(1 / T)`` layer, so the network (and its
    ONNX export) stays plain dense, multiply and softmax operations. The
    embedding (the features) is unchanged.
    """
    import keras

    if not temperature > 0:
        msg = f"the temperature must be positive, got {temperature}"
        raise StageConfigError(msg)
    names = {layer.name for layer in model.layers}
    dense = model.get_layer(LOGITS_LAYER if LOGITS_LAYER in names else _PROBABILITIES_LAYER)
    kernel, bias = dense.get_weights()
    logits_layer = keras.layers.Dense(kernel.shape[1], name=LOGITS_LAYER)
    x = logits_layer(dense.input)
    logits_layer.set_weights([kernel, bias])
    x = keras.layers.Rescaling(1.0 / float(temperature), name=TEMPERATURE_LAYER)(x)
    outputs = keras.layers.Activation("softmax", name=_PROBABILITIES_LAYER)(x)
    return keras.Model(model.input, outputs, name=model.name)
