"""Rotation- and mirror-equivariant convolutions over the dihedral group D8, with steerable filters.

D8 has 16 elements ``g = (m, r)``: a mirror flip ``F`` (``x → -x``) if
``m = 1``, then a turn ``R`` by ``r × 45°`` anticlockwise, ``T_g = R^r F^m``.
They compose as ``(s, a)(t, b) = (s ⊕ t, a + (-1)^s b mod 8)``; element
``(m, r)`` has index ``8 m + r`` along the *group axis* of a feature map.

**Steerable filters.** Where :mod:`~survey_classifier.cnn.equivariant`
(C8) turns pixel filters by bilinear resampling, a D8 filter is a
combination of continuous, band-limited basis functions (circular
harmonics times Gaussian rings, after the design of e2cnn / escnn,
Weiler & Cesa 2019)::

    psi_{j,k}(rho, phi) = exp(-(rho - rho_j)² / (2 sigma²)) · {cos, sin}(k phi),   k ≤ K_j

with rings ``rho_j = 0, 1, ..., (size - 1) / 2``, ``sigma = 0.6`` and the
highest frequency ``K_j`` of a ring growing with its radius (``0`` at the
centre, ``2`` at radius 1, ``3`` beyond), so that each basis function
varies slowly on the pixel grid. The learnt weights are the coefficients
on this basis. The filter for ``g`` is the same combination of the basis
functions *transformed by g and then sampled*: turned by 45° it is the
same continuous filter sampled turned, not a resampling of the pixels.

**Exact where the grid allows.** The basis is sampled analytically only
at 0° and 45°; the other 14 elements are ``np.rot90`` and ``np.fliplr`` of
those two arrays (``sampled(R^{2j+o} ψ) = rot90^j(sampled(R^{o·45°} ψ))``,
``sampled(R^r F ψ) = fliplr(sampled(R^{-r} ψ))``), i.e. exact pixel
permutations. With odd filter sizes, ``same`` padding and 2×2 pooling of
even-sized maps, the network is therefore exactly invariant to the 8
quarter turns and flips of the pixel grid (up to the order of
floating-point sums), and close to invariant to the turns by 45° and the
angles in between, limited there by the max pooling on the pixel grid
(hence the blur below) and the image's own sampling. Harmonics with
``k > 0`` are 0 at the centre pixel, where the angle has no value.

Layers (plain Keras layers; the filter banks are matrix products of
constant basis arrays with the weights, which tf2onnx constant-folds at
export, so the ONNX graph is plain ``Conv``):

- :class:`D8Lifting` (``lift``): image ``(h, w, c)`` → ``(h, w, 16 f)``,
  output channel ``16``-block ``g``, filter ``i`` at ``g · f + i``;
- :class:`D8GroupConv`: ``(h, w, 16 c)`` → ``(h, w, 16 f)``; the filter
  from input element ``g'`` to output element ``g`` is the base filter's
  component ``g⁻¹ g'``, transformed by ``g``;
- :class:`D8GroupPool`: the maximum over the 16 elements (invariant);
- :class:`Blur`: a fixed binomial blur of every channel; :func:`pool_layers`
  makes each 2×2 pooling a MaxBlurPool (max with stride 1, then the blur
  with stride 2; anti-aliasing, Zhang 2019; symmetric under D4, so still
  exact);
- :func:`field_norm`: batch normalisation whose statistics, scale and
  offset are shared by the 16 channels of a field (so still exact).

The weights are initialised so that a filter's sum, its gain on a smooth
map, has He's variance ``2 / channels`` (as a pixel filter with He's
``2 / (channels k²)`` has): the basis concentrates the filters' energy at
low frequencies, and a He scale over the basis size made the activations
of real cutouts grow about 1.6× per layer.

:func:`d8_network` is the backbone ``train cnn --backbone d8[:WIDTH]``
(``d8-sharp[:WIDTH]`` without the blur).
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["ORDER", "ELEMENTS", "compose", "inverse", "basis_functions", "filter_basis", "d8_layers",
           "d8_widths", "d8_network", "field_norm_class"]

#: Elements of D8 (8 turns × mirror).
ORDER = 16
#: ``(m, r)`` of each index along the group axis.
ELEMENTS = tuple((m, r) for m in (0, 1) for r in range(8))

#: Gaussian width of the rings, in pixels.
RING_SIGMA = 0.6


def compose(first: tuple[int, int], second: tuple[int, int]) -> tuple[int, int]:
    """The element ``first · second`` (apply ``second``, then ``first``)."""
    (s, a), (t, b) = first, second
    return (s ^ t, (a + (-1) ** s * b) % 8)


def inverse(element: tuple[int, int]) -> tuple[int, int]:
    """``g⁻¹``: a turn is undone by the opposite turn; a reflection is its own inverse."""
    m, r = element
    return (m, r) if m else (0, (-r) % 8)


def _index(element: tuple[int, int]) -> int:
    return 8 * element[0] + element[1]


def _frequencies(radius: float) -> int:
    """Highest angular frequency of a ring: 0 at the centre, 2 at radius 1, 3 beyond."""
    return 0 if radius == 0 else 2 if radius <= 1 else 3


def basis_functions(size: int) -> list[tuple[float, int, str]]:
    """``(ring radius, frequency, 'cos' | 'sin')`` of each basis function of a ``size × size`` filter."""
    functions = []
    for radius in np.arange((size + 1) // 2, dtype=float):
        for k in range(_frequencies(radius) + 1):
            functions.append((radius, k, "cos"))
            if k:
                functions.append((radius, k, "sin"))
    return functions


def _evaluate(size: int, degrees: float) -> np.ndarray:
    """``(size, size, n_basis)``: each basis function turned by ``degrees`` and sampled on the pixels.

    Pixel ``(i, j)`` (row, column) sits at ``x = j - c``, ``y = c - i`` with
    ``c = (size - 1) / 2``; the turned function at ``u`` is the original at
    ``R(-θ) u``, i.e. its angle is ``phi - θ``. Harmonics with ``k > 0``
    are 0 at the centre pixel, where ``phi`` has no value.
    """
    c = (size - 1) / 2
    rows, columns = np.mgrid[0:size, 0:size].astype(float)
    x, y = columns - c, c - rows
    rho, phi = np.hypot(x, y), np.arctan2(y, x) - np.deg2rad(degrees)
    arrays = []
    for radius, k, kind in basis_functions(size):
        ring = np.exp(-((rho - radius) ** 2) / (2 * RING_SIGMA**2))
        angular = np.cos(k * phi) if kind == "cos" else np.sin(k * phi)
        if k:  # no direction at the centre: a harmonic's mean over the circle, 0
            angular[rho == 0] = 0.0
        arrays.append(ring * angular)
    return np.stack(arrays, axis=-1)


def _sampled(size: int, degrees: float) -> np.ndarray:
    """:func:`_evaluate`, each function scaled to unit norm at 0° (the same factor at every angle)."""
    norms = np.linalg.norm(_evaluate(size, 0.0).reshape(size * size, -1), axis=0)
    return _evaluate(size, degrees) / norms


@functools.lru_cache(maxsize=8)
def filter_basis(size: int) -> np.ndarray:
    """``(16, size², n_basis)`` float32: the basis transformed by each element of D8, sampled.

    Only the turns by 0° and 45° are sampled analytically; every other
    element is an exact pixel permutation (``np.rot90``, ``np.fliplr``) of
    one of them.
    """
    if size % 2 != 1:
        msg = f"D8 filters need an odd size (a centre pixel to turn about), got {size}"
        raise ValueError(msg)
    turned = {0: _sampled(size, 0.0), 1: _sampled(size, 45.0)}

    def turn(r: int) -> np.ndarray:  # sampled(R^r psi)
        return np.rot90(turned[r % 2], r // 2, axes=(0, 1))

    banks = []
    for m, r in ELEMENTS:
        bank = np.fliplr(turn((-r) % 8)) if m else turn(r)  # R^r F psi = F R^-r psi
        banks.append(bank.reshape(size * size, -1))
    return np.stack(banks).astype(np.float32)


def _relative_indices() -> np.ndarray:
    """``(16, 16)``: ``index(g⁻¹ g')`` for output element ``g`` (rows) and input element ``g'``."""
    return np.array([[_index(compose(inverse(g), h)) for h in ELEMENTS] for g in ELEMENTS], dtype=np.int32)


@functools.lru_cache(maxsize=1)
def d8_layers():
    """The Keras layer classes, defined and registered on first use (importing this module needs no Keras)."""
    import keras
    from keras import ops

    from survey_classifier.cnn._group_conv import group_conv_layer, group_pool_layer

    class _D8Conv(group_conv_layer()):
        """D8's action on a filter: the steerable basis (:func:`filter_basis`) transformed; weights: coefficients."""

        order = ORDER
        elements = "elements of D8"

        def _transforms(self):
            return filter_basis(self.kernel_size)

        def _relative_indices(self):
            return _relative_indices()

    @keras.saving.register_keras_serializable(package="survey_classifier")
    class D8Lifting(_D8Conv):
        """Image → the 16 transforms of each filter (channel ``g * filters + i``)."""

    @keras.saving.register_keras_serializable(package="survey_classifier")
    class D8GroupConv(_D8Conv):
        """16 elements in (channel ``g' * c + j``) → 16 elements out (``g * filters + i``)."""

        group_input = True

    @keras.saving.register_keras_serializable(package="survey_classifier")
    class D8GroupPool(group_pool_layer()):
        """The maximum over the 16 elements: ``(..., 16 f)`` → ``(..., f)``."""

        order = ORDER

    @keras.saving.register_keras_serializable(package="survey_classifier")
    class Blur(keras.layers.Layer):
        """A fixed binomial [1, 2, 1]² / 16 blur of every channel (no weights; symmetric under D4).

        ``strides=2`` keeps every other pixel of the blurred map (BlurPool's
        subsampling); on a map of odd side ``n`` the kept pixels are
        ``0, 2, ..., n - 1``, symmetric under the grid's turns and flips.
        """

        def __init__(self, strides: int = 1, **kwargs):
            super().__init__(**kwargs)
            self.strides = int(strides)

        def call(self, inputs):
            return ops.depthwise_conv(inputs, ops.convert_to_tensor(_blur_kernel(int(inputs.shape[-1]))),
                                      strides=self.strides, padding="same")

        def compute_output_shape(self, input_shape):
            if self.strides == 1:
                return input_shape
            side = [None if n is None else -(-n // self.strides) for n in input_shape[1:3]]
            return (input_shape[0], *side, input_shape[-1])

        def get_config(self):
            return {**super().get_config(), "strides": self.strides}

    return D8Lifting, D8GroupConv, D8GroupPool, Blur


def d8_widths(width: int) -> tuple[int, ...]:
    """Fields (filters, each in 16 transforms) of the lifting layer and the four group convolutions."""
    return (width, (3 * width + 1) // 2, 3 * width, 3 * width, 4 * width)


def _blur_kernel(channels: int) -> np.ndarray:
    """``(3, 3, channels, 1)``: the binomial [1, 2, 1]² / 16 blur, depthwise (symmetric under all of D4)."""
    taps = np.array([1.0, 2.0, 1.0])
    kernel = np.outer(taps, taps) / 16.0
    return np.repeat(kernel[:, :, None, None], channels, axis=2).astype(np.float32)


def d8_network(size: int, *, width: int = 2, blur: bool = True, norms: bool | None = None, name: str = "d8"):
    """The D8-equivariant counterpart of the ``compact`` network, invariant features.

    A 5×5 lifting layer, then four 3×3 group convolutions, with the fields
    of :func:`d8_widths` (``2, 3, 6, 6, 8`` at width 2: ``32`` ... ``128``
    channels), ReLU after each and 2×2 max pooling after the lifting layer
    and the first three blocks as in ``compact``; then the maximum over the
    16 elements and the mean over the image: ``4 width`` invariant
    features, the layer named ``embedding``. ``size`` must be a multiple
    of 16 (even maps at every pooling, for exact invariance to quarter
    turns and flips).

    With ``blur`` (``d8``) each pooling is a MaxBlurPool
    (:func:`pool_layers`) and each convolution is followed by
    :func:`field_norm` before its ReLU. The blur alone (first placed
    before plain pooling, without the norms) halved the change of the
    answer at 45° but made 80-epoch runs collapse to a constant answer:
    the network sat ~15 epochs at chance with tiny gradients, and when it
    began to learn its gradients grew 10-15× faster than Adam's running
    second moment, so the steps overshot and killed the features. With
    the norms it no longer collapses (docs/cnn.md: 80 epochs, 92.0 % on
    validation). ``blur=False`` (``d8-sharp``) has neither; ``norms``
    (default: as ``blur``) sets the norms alone: ``blur=False, norms=True``
    (``d8-max``) is ``d8`` with plain 2×2 max pooling, the cheaper network
    with the norms' stability.
    """
    import keras
    from keras import layers

    from survey_classifier.cnn.backbones import EMBEDDING_LAYER

    lift, *convs = d8_widths(width)
    lifting, group_conv, group_pool, _ = d8_layers()

    def pool(x, name):
        return pool_layers(x, name, blur=blur)

    norms = blur if norms is None else norms

    def norm(x, name):
        return field_norm(x, ORDER, name) if norms else x

    inputs = keras.Input((size, size, 1), name="image")
    x = layers.ReLU(name="lift_relu")(norm(lifting(lift, 5, name="lift")(inputs), "lift_norm"))
    x = pool(x, "block0_pool")
    blocks = ((convs[0],), (convs[1],), (convs[2], convs[3]))
    for block, widths in enumerate(blocks, start=1):
        for conv, filters in enumerate(widths):
            x = group_conv(filters, 3, name=f"block{block}_gconv{conv}")(x)
            x = layers.ReLU(name=f"block{block}_relu{conv}")(norm(x, f"block{block}_norm{conv}"))
        x = pool(x, f"block{block}_pool")
    x = group_pool(name="group_pool")(x)
    x = layers.GlobalAveragePooling2D(name=EMBEDDING_LAYER)(x)
    return keras.Model(inputs, x, name=name)


def pool_layers(x, name: str, *, blur: bool):
    """2×2 max pooling; with ``blur``, Zhang's (2019) MaxBlurPool.

    The maximum over each 2×2 window with stride 1 (``n - 1`` outputs on
    an ``n``-pixel side), then :class:`Blur` with stride 2 (``n / 2``
    outputs): the peak is found before the blur, which then removes the
    aliasing of the subsampling (a blur *before* a plain 2×2 pooling
    lowers a one-pixel peak to a quarter of its height). On even maps both
    are exactly symmetric under the grid's quarter turns and flips, like
    plain 2×2 pooling.
    """
    from keras import layers

    if not blur:
        return layers.MaxPooling2D(2, name=name)(x)
    x = layers.MaxPooling2D(2, strides=1, name=f"{name}_max")(x)
    return d8_layers()[3](strides=2, name=name)(x)




#: Momentum of the fields' running statistics (Keras's 0.99 lagged the fast-changing weights of a
#: 15-batch epoch: validation answers went constant while training learnt). ``train cnn`` replaces them
#: after every epoch by the precise ones (:mod:`~survey_classifier.cnn.norm_statistics`).
NORM_MOMENTUM = 0.9


def field_norm(x, order: int, name: str):
    """Batch normalisation with one mean, variance, scale and offset per *field* (e2cnn's InnerBatchNorm).

    Channel ``g · fields + i`` is element ``g`` of field ``i``. The
    statistics are taken over the batch, the pixels *and* the ``order``
    elements of a field, and its ``order`` channels share the learnt scale
    and offset, so the layer commutes with the group (turning or flipping
    the cutout permutes the elements) and the network stays exactly
    invariant. After training it is a fixed scale and shift per channel,
    exported as a ``Mul`` and an ``Add`` on the feature map (no reshape,
    which would make tf2onnx wrap every one in transposes).
    """
    return field_norm_class()(order, momentum=NORM_MOMENTUM, name=name)(x)


@functools.lru_cache(maxsize=1)
def field_norm_class():
    """The ``FieldBatchNorm`` Keras layer class of :func:`field_norm`, defined and registered on first use."""
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="survey_classifier")
    class FieldBatchNorm(keras.layers.Layer):
        """See :func:`field_norm`; running statistics as Keras's ``BatchNormalization``."""

        def __init__(self, order: int, momentum: float = NORM_MOMENTUM, epsilon: float = 1e-3, **kwargs):
            super().__init__(**kwargs)
            self.order, self.momentum, self.epsilon = int(order), float(momentum), float(epsilon)

        def build(self, input_shape):
            fields = int(input_shape[-1]) // self.order
            self.gamma = self.add_weight(name="gamma", shape=(fields,), initializer="ones")
            self.beta = self.add_weight(name="beta", shape=(fields,), initializer="zeros")
            self.moving_mean = self.add_weight(name="moving_mean", shape=(fields,), initializer="zeros",
                                               trainable=False)
            self.moving_variance = self.add_weight(name="moving_variance", shape=(fields,), initializer="ones",
                                                   trainable=False)

        def _per_field(self, per_channel):  # (order · fields,) → (fields,): the mean over a field's elements
            return ops.mean(ops.reshape(per_channel, (self.order, -1)), axis=0)

        def call(self, inputs, training=False):
            if training and self.trainable:  # as Keras's: a frozen layer normalises by its moving statistics
                mean = self._per_field(ops.mean(inputs, axis=(0, 1, 2)))
                variance = self._per_field(ops.mean(ops.square(inputs), axis=(0, 1, 2))) - ops.square(mean)
                self.moving_mean.assign(self.momentum * self.moving_mean + (1 - self.momentum) * mean)
                self.moving_variance.assign(self.momentum * self.moving_variance + (1 - self.momentum) * variance)
            else:
                mean, variance = self.moving_mean, self.moving_variance
            scale = self.gamma / ops.sqrt(variance + self.epsilon)
            shift = self.beta - mean * scale
            return inputs * ops.tile(scale, [self.order]) + ops.tile(shift, [self.order])

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {**super().get_config(), "order": self.order, "momentum": self.momentum,
                    "epsilon": self.epsilon}

    return FieldBatchNorm
