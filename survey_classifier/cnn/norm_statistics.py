"""Precise normalisation statistics: each norm layer's population mean and variance, recomputed.

A batch-normalisation layer normalises a training batch by the batch's own
mean and variance and keeps exponential moving averages of them for
inference. While the weights change quickly (a high learning rate, 15
batches an epoch) the averages lag the network that made them, and the
inference-mode answers drift away from the training-mode ones: the fixed
``d8`` gave its validation part one constant answer at 8 epochs of an
80-epoch run (docs/cnn.md). "Precise BN" (Wu & Johnson 2021, *Rethinking
"Batch" in BatchNorm*; fvcore's ``update_bn_stats``) replaces the averages
before they are used: with the weights fixed, training images go through
the network in training mode (each layer normalised by the batch's own
statistics, as in training), in batches of the training batch size, and
each layer's moving mean and variance are set to the statistics of its
inputs over all of them. From a batch's mean ``m_b`` and (biased)
variance ``v_b``, as the layer computes them over ``n_b`` images::

    mean = Σ_b n_b m_b / N,        variance = Σ_b n_b (v_b + m_b²) / N - mean²,

the mean and variance of every value the layer saw (the population's,
not a mean of batch variances).

With ``precise`` the images are the training part *without*
augmentation: inference sees upright cutouts without the zero corners of
a turned one, and population statistics taken on data like the inference
data are the better estimate (Wu & Johnson, section 4). With
``precise-augmented`` they are a fresh augmented copy each epoch (turns
and flips as in training, drawn by an augmenter of their own), the data
the layers' scales and offsets were fitted on. The model's random-seed
states (dropout) are put back after the forward passes, and the
augmenter is not the training's, so the training itself (its batches,
masks and weight updates) is the same as without the recompute, and
only the moving statistics, hence the validation answers and the epoch
kept, differ.

Applies to :class:`~survey_classifier.cnn.dihedral` ``FieldBatchNorm``
layers and Keras ``BatchNormalization`` layers (without renorm) that are
trainable; frozen ones (a transferred base) keep their statistics. A
layer called more than once in a forward pass (``--invariance d4`` calls
the base network on 8 turned copies) gets the statistics of its last
call; for ``d8``'s field norms all 8 give the same statistics (its fields
pool over the turns and flips), for other networks it is an approximation.
"""

from __future__ import annotations

import numpy as np

__all__ = ["NORM_STATISTICS", "PRECISE_NORM_BATCHES", "flat_layers", "norm_layers", "statistics_images",
           "recompute_norm_statistics", "precise_norm_callback"]

#: ``train cnn --norm-statistics``: how the trainable norm layers' moving statistics are set.
NORM_STATISTICS = {
    "precise": "recomputed from the un-augmented training images after every epoch, before validation",
    "precise-augmented": "the same from an augmented copy of them (turns and flips as in training)",
    "running": "the layers' own moving averages (momentum)",
}

#: At most this many batches of training images are used for the statistics (a seeded subset beyond).
PRECISE_NORM_BATCHES = 32


def flat_layers(model) -> list:
    """Every layer of ``model``, nested models opened, input layers left out."""
    layers = []
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            layers.extend(flat_layers(layer))
        elif layer.__class__.__name__ != "InputLayer":
            layers.append(layer)
    return layers


def norm_layers(model) -> list:
    """The trainable batch-normalisation layers of ``model`` (field norms and Keras's, no renorm)."""
    import keras

    from survey_classifier.cnn.dihedral import field_norm_class

    kinds = (field_norm_class(), keras.layers.BatchNormalization)
    return [layer for layer in flat_layers(model)
            if isinstance(layer, kinds) and layer.trainable and not getattr(layer, "renorm", False)]


def statistics_images(images: np.ndarray, batch_size: int, *, seed: int) -> np.ndarray:
    """The training images the statistics are taken on: all of them, or a seeded subset.

    At most :data:`PRECISE_NORM_BATCHES` ``× batch_size`` images, drawn
    without replacement by ``seed`` (a generator of its own: the global
    random state is untouched), kept in their order.
    """
    limit = PRECISE_NORM_BATCHES * int(batch_size)
    if len(images) <= limit:
        return images
    chosen = np.sort(np.random.default_rng(seed).choice(len(images), size=limit, replace=False))
    return images[chosen]


def recompute_norm_statistics(model, images: np.ndarray, *, batch_size: int, forward=None, augment=None) -> int:
    """Set the moving mean and variance of ``model``'s norm layers to the population statistics of ``images``.

    See the module docstring. Every other state of the model (its
    weights, the norm layers' momenta, the seed states of its random
    layers) is as before. ``forward(batch)`` runs the model in training
    mode (default: an eager call; :func:`precise_norm_callback` passes a
    compiled one, traced while the momenta are 0, about twice as fast).
    ``augment(batch)``, if given, transforms each batch first.
    Returns the number of layers set (0 when the model has none, and
    nothing is run).
    """
    layers = norm_layers(model)
    if not layers or not len(images):
        return 0
    saved = [(variable, np.array(variable.numpy())) for variable in model.non_trainable_variables]
    momenta = [layer.momentum for layer in layers]
    sums = [[0.0, 0.0] for _ in layers]  # per layer: Σ n_b m_b, Σ n_b (v_b + m_b²)
    try:
        for layer in layers:  # the moving statistics become the batch's own after each call
            layer.momentum = 0.0
        for start in range(0, len(images), int(batch_size)):
            batch = images[start:start + int(batch_size)]
            seen = batch if augment is None else augment(batch)
            forward(seen) if forward is not None else model(seen, training=True)
            for layer, total in zip(layers, sums):
                mean = np.asarray(layer.moving_mean.numpy(), dtype=np.float64)
                variance = np.asarray(layer.moving_variance.numpy(), dtype=np.float64)
                total[0] = total[0] + len(batch) * mean
                total[1] = total[1] + len(batch) * (variance + mean**2)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        for variable, value in saved:
            variable.assign(value)
    for layer, (first, second) in zip(layers, sums):
        mean = first / len(images)
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(np.maximum(second / len(images) - mean**2, 0.0).astype(np.float32))
    return len(layers)


def precise_norm_callback(images: np.ndarray, *, batch_size: int, augment=None):
    """A Keras callback: :func:`recompute_norm_statistics` at the end of every epoch, before validation.

    Keras validates inside ``fit`` before the callbacks' ``on_epoch_end``;
    the recompute runs at ``on_test_begin`` (the start of that validation),
    or at ``on_epoch_end`` when there is no validation part. Put it before
    any callback that keeps weights at the end of an epoch.
    """
    import keras
    import tensorflow as tf

    class PreciseNormStatistics(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.fresh = False
            self.forward = None

        def on_epoch_begin(self, epoch, logs=None):
            self.fresh = False

        def _recompute(self):
            if self.fresh:
                return
            if self.forward is None:  # traced on its first call, inside the recompute (momenta at 0)
                self.forward = tf.function(lambda batch: self.model(batch, training=True), reduce_retracing=True)
            recompute_norm_statistics(self.model, images, batch_size=batch_size, forward=self.forward,
                                      augment=augment)
            self.fresh = True

        def on_test_begin(self, logs=None):
            self._recompute()

        def on_epoch_end(self, epoch, logs=None):
            self._recompute()

    return PreciseNormStatistics()
