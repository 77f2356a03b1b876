"""The Keras layers shared by the group-equivariant backbones (C8 in ``equivariant``, D8 in ``dihedral``).

A group with ``order`` elements ``g`` acts on a ``k × k`` filter. A
group's layers say only how, with three class attributes/methods of a
subclass of :func:`group_conv_layer`'s class:

- ``order`` (and ``elements``, how messages name them);
- ``_transforms()``: ``(order, k², n)``, slice ``g`` maps the ``n``
  learnt coefficients of a filter to the pixels of that filter
  transformed by ``g`` (C8: the coefficients are the pixels and the
  slices turn them; D8: they weigh steerable basis functions);
- ``_relative_indices()``: ``(order, order)``, the index of ``g⁻¹ g'``
  for output element ``g`` (rows) and input element ``g'`` (columns).

With ``group_input = False`` (lifting) the layer maps an image
``(h, w, c)`` to ``(h, w, order f)``, output channel ``g f + i`` being
filter ``i`` transformed by ``g``; with ``group_input = True`` it maps
``(h, w, order c)`` (input channel ``g' c + j``) to ``(h, w, order f)``,
the filter from input element ``g'`` to output element ``g`` being the
base filter's component ``g⁻¹ g'``, transformed by ``g``. The filter
bank is made from the weights by matrix products inside the layer and
applied by one ``Conv2D``.

The weights are initialised so that a filter's sum, its gain on a
smooth map, has He's variance ``2 / channels``: the coefficients have
variance ``2 / (channels · Σ_b s_b²)``, ``s_b`` the sum of the pixels of
basis array ``b`` untransformed. For pixel filters (``s_b = 1``) that is
He's own ``2 / (channels k²)``.

:func:`group_pool_layer`'s class is the maximum over the ``order``
elements (invariant features).
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["group_conv_layer", "group_pool_layer"]


@functools.lru_cache(maxsize=1)
def group_conv_layer():
    """The base class of the lifting and group convolutions (defined on first use: no Keras on import)."""
    import keras
    from keras import ops

    class GroupConv(keras.layers.Layer):
        """A lifting (``group_input = False``) or group convolution; see the module docstring."""

        order: int
        elements: str
        group_input = False

        def __init__(self, filters: int, kernel_size: int = 3, **kwargs):
            super().__init__(**kwargs)
            self.filters = int(filters)
            self.kernel_size = int(kernel_size)

        def _transforms(self) -> np.ndarray:
            raise NotImplementedError

        def _relative_indices(self) -> np.ndarray:
            raise NotImplementedError

        def _coefficient_shape(self) -> tuple[int, ...]:
            """Leading axes of the kernel weight (the coefficients of one filter)."""
            return (self._transforms().shape[-1],)

        def build(self, input_shape):
            channels = int(input_shape[-1])
            if self.group_input:
                if channels % self.order:
                    msg = (f"{self.name}: input has {channels} channels, not a multiple of the {self.order} "
                           f"{self.elements}")
                    raise ValueError(msg)
                shape = (*self._coefficient_shape(), self.order, channels // self.order, self.filters)
            else:
                shape = (*self._coefficient_shape(), channels, self.filters)
            dc_gain = float(np.sum(self._transforms()[0].sum(axis=0) ** 2))
            self.kernel = self.add_weight(
                name="kernel", shape=shape,
                initializer=keras.initializers.RandomNormal(stddev=float(np.sqrt(2.0 / (channels * dc_gain)))),
            )
            self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
            self.in_channels = channels

        def _bank(self):
            """``(k, k, in channels, order · filters)``: every filter transformed by every element."""
            k, f, order = self.kernel_size, self.filters, self.order
            transforms = ops.convert_to_tensor(self._transforms())  # (g, k², n)
            if self.group_input:
                c = self.in_channels // order
                relative = ops.convert_to_tensor(self._relative_indices().ravel().astype(np.int32))
                kernel = ops.reshape(self.kernel, (-1, order, c, f))  # (n, g', c, f)
                shifted = ops.take(kernel, relative, axis=1)  # (n, g g', c, f): component g^-1 g'
                shifted = ops.reshape(shifted, (-1, order, order * c * f))
                shifted = ops.transpose(shifted, (1, 0, 2))  # (g, n, g' c f)
                filters = ops.matmul(transforms, shifted)  # (g, k², g' c f): a batched MatMul
                c *= order
            else:
                c = self.in_channels
                flat = ops.reshape(self.kernel, (-1, c * f))  # (n, c f)
                filters = ops.matmul(ops.reshape(transforms, (order * k * k, -1)), flat)  # (g k², c f)
            filters = ops.reshape(filters, (order, k, k, c, f))
            return ops.reshape(ops.transpose(filters, (1, 2, 3, 0, 4)), (k, k, c, order * f))

        def call(self, inputs):
            outputs = ops.conv(inputs, self._bank(), strides=1, padding="same")
            return outputs + ops.tile(self.bias, [self.order])

        def compute_output_shape(self, input_shape):
            return (*input_shape[:-1], self.order * self.filters)

        def get_config(self):
            return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size}

    return GroupConv


@functools.lru_cache(maxsize=1)
def group_pool_layer():
    """The base class of the pooling over a group's elements (defined on first use)."""
    import keras
    from keras import ops

    class GroupPool(keras.layers.Layer):
        """The maximum over the ``order`` elements: ``(..., order f)`` → ``(..., f)``."""

        order: int

        def call(self, inputs):
            shape = ops.shape(inputs)
            grouped = ops.reshape(inputs, (-1, *shape[1:-1], self.order, shape[-1] // self.order))
            return ops.max(grouped, axis=-2)

        def compute_output_shape(self, input_shape):
            return (*input_shape[:-1], input_shape[-1] // self.order)

    return GroupPool
