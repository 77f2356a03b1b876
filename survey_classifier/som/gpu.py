"""The same polar/Fourier SOM algorithm on a GPU, through TensorFlow.

Why TensorFlow: it is already the project's training dependency (the
``[train]`` extra used for the CNN), it has complex matrix products, batched
real FFTs (``tf.signal.irfft``) and sparse-dense products on GPU and CPU
alike, and ``tf.function`` compiles the per-image online loop into one graph
so an epoch is not dominated by Python and kernel-launch overhead. CuPy
would add a CUDA-only dependency that cannot be tested on the CPU-only CI;
ONNX Runtime has no training loop. On a machine without a GPU this module
runs on the CPU, which is how the tests check that it agrees with numpy.

Usage::

    core = TensorFlowSOM(som)          # som: a built or fitted RotationInvariantSOM
    core.train_epoch(images)           # online (batch_size=1) or mini-batch
    core.write_back()                  # neurons back into ``som``
    mapping = core.map(images)         # node, flip, angle_deg, distance
"""

from __future__ import annotations

import numpy as np

from survey_classifier.som._pixels import PixelDistances, refine_best
from survey_classifier.som.som import REFINE_LIMIT, REFINE_WITHIN

__all__ = ["TensorFlowSOM"]


class TensorFlowSOM:
    """GPU (or CPU) twin of :class:`RotationInvariantSOM`'s fast core.

    Parameters
    ----------
    som : RotationInvariantSOM
        Supplies the settings, the polar grid, the schedules and the current
        neurons (fit it, load it, or give it ``init`` and call ``_build``).
    device : str or None
        TensorFlow device; default the first GPU, else the CPU.
    """

    def __init__(self, som, *, device=None):
        import tensorflow as tf

        self.tf = tf
        self.som = som
        gpus = tf.config.list_physical_devices("GPU")
        self.device = device or ("/GPU:0" if gpus else "/CPU:0")
        polar = som.polar_
        self.n_angles = polar.n_angles
        self.n_freq = polar.n_freq
        with tf.device(self.device):
            self.neurons = tf.Variable(som.neurons_)  # (n_freq, n_rings, n_nodes)
            self.ring_weights = tf.constant(polar.ring_weights, tf.float32)
            self.parseval = tf.constant(polar.parseval, tf.float32)
            self.grid_distances = tf.constant(som.grid_.distances, tf.float32)
            self.frequencies = tf.constant(np.arange(self.n_freq), tf.float32)
        self._samplers = {}

    # --- building blocks ---------------------------------------------------
    def _sampler(self, size):
        tf = self.tf
        if size not in self._samplers:
            coo = self.som.polar_.sampling_matrix((size, size)).tocoo()
            indices = np.column_stack([coo.row, coo.col]).astype(np.int64)
            with tf.device(self.device):
                matrix = tf.sparse.SparseTensor(indices, coo.data.astype(np.float32), coo.shape)
                self._samplers[size] = tf.sparse.reorder(matrix)
        return self._samplers[size]

    def spectra(self, images):
        """(n, size, size) images -> (n, n_rings, n_freq) complex64 spectra on the device."""
        tf = self.tf
        images = np.asarray(images, np.float32)
        n, size, _ = images.shape
        polar_grid = self.som.polar_
        with tf.device(self.device):
            flat = tf.constant(images.reshape(n, -1).T)
            polar = tf.sparse.sparse_dense_matmul(self._sampler(size), flat)
            polar = tf.reshape(tf.transpose(polar), (n, polar_grid.n_rings, self.n_angles))
            return tf.signal.rfft(polar)[..., : self.n_freq]

    def _norms(self, spectra):
        # spectra (..., n_rings, n_freq)
        tf = self.tf
        power = tf.math.real(spectra) ** 2 + tf.math.imag(spectra) ** 2
        return tf.einsum("...km,k,m->...", power, self.ring_weights, self.parseval)

    def _neuron_norms(self):
        tf = self.tf
        power = tf.math.real(self.neurons) ** 2 + tf.math.imag(self.neurons) ** 2
        return tf.einsum("mkn,k,m->n", power, self.ring_weights, self.parseval)

    def distances(self, spectra):
        """(n, n_flips, n_nodes, n_angles) squared distances, as the numpy core."""
        tf = self.tf
        weighted = spectra * tf.cast(self.ring_weights[:, None], tf.complex64)
        stacked = tf.math.conj(weighted)
        if self.som.flip:
            stacked = tf.concat([stacked, weighted], axis=0)
        products = tf.linalg.matmul(tf.transpose(stacked, (2, 0, 1)), self.neurons)
        correlation = tf.signal.irfft(tf.transpose(products, (1, 2, 0)), fft_length=[self.n_angles])
        n = tf.shape(spectra)[0]
        n_flips = 2 if self.som.flip else 1
        correlation = tf.reshape(correlation, (n_flips, n, -1, self.n_angles))
        correlation = tf.transpose(correlation, (1, 0, 2, 3))
        norms = self._norms(spectra)
        result = norms[:, None, None, None] + self._neuron_norms()[None, None, :, None] - 2.0 * correlation
        return tf.maximum(result, 0.0)

    def _neighbourhood(self, distance, width):
        tf = self.tf
        ratio = (distance / tf.maximum(width, 1e-12)) ** 2
        kind = self.som.neighbourhood
        if kind == "gaussian":
            return tf.exp(-0.5 * ratio)
        if kind == "mexican_hat":
            return (1.0 - ratio) * tf.exp(-0.5 * ratio)
        return tf.cast(ratio <= 1.0 + 1e-12, tf.float32)

    def _best(self, distances):
        tf = self.tf
        n = tf.shape(distances)[0]
        flat = tf.reshape(distances, (n, -1))
        index = tf.argmin(flat, axis=1, output_type=tf.int32)
        n_nodes = tf.shape(self.neurons)[2]
        per_flip = n_nodes * self.n_angles
        flips = index // per_flip
        nodes = (index % per_flip) // self.n_angles
        shifts = index % self.n_angles
        return flips, nodes, shifts, tf.reduce_min(flat, axis=1)

    def _rotate(self, spectra, flips, shifts):
        tf = self.tf
        flipped = tf.where(tf.cast(flips, tf.bool)[:, None, None], tf.math.conj(spectra), spectra)
        angle = -2.0 * np.pi * tf.cast(shifts, tf.float32)[:, None] * self.frequencies[None, :] / self.n_angles
        phase = tf.complex(tf.cos(angle), tf.sin(angle))
        return flipped * phase[:, None, :]

    # --- training and mapping ---------------------------------------------
    def _step(self, spectra, lr, width):
        tf = self.tf
        flips, nodes, shifts, _ = self._best(self.distances(spectra))
        theta = lr * self._neighbourhood(tf.gather(self.grid_distances, nodes), width)  # (b, nodes)
        rotated = self._rotate(spectra, flips, shifts)  # (b, k, m)
        total = tf.reduce_sum(theta, axis=0)
        scale = 1.0 / tf.maximum(tf.abs(total) / tf.maximum(lr, 1e-12), 1.0)
        pulled = tf.linalg.matmul(tf.transpose(rotated, (2, 1, 0)), tf.cast(theta * scale, tf.complex64))
        keep = tf.cast(1.0 - total * scale, tf.complex64)
        self.neurons.assign(self.neurons * keep + pulled)

    def train_epoch(self, images, *, batch_size=None, order=None):
        """One epoch over ``images``; schedules and step counter follow ``som``.

        ``batch_size`` defaults to the SOM's (1 = online, as PINK).
        """
        tf = self.tf
        som = self.som
        batch_size = int(batch_size or som.batch_size)
        order = np.arange(len(images)) if order is None else np.asarray(order)
        steps = som.step_ + np.arange(0, len(order), batch_size)
        schedule = np.array([som.schedule(step) for step in steps], np.float32)
        chunk = 4096
        for start in range(0, len(order), chunk):
            spectra = self.spectra(np.asarray(images)[order[start : start + chunk]])
            first = start // batch_size
            n_batches = -(-spectra.shape[0] // batch_size)
            with tf.device(self.device):
                self._run(spectra, tf.constant(schedule[first : first + n_batches]), batch_size)
        som.step_ += len(order)
        return self

    def _run(self, spectra, schedule, batch_size):
        if not hasattr(self, "_compiled"):
            self._compiled = {}
        if batch_size not in self._compiled:
            tf = self.tf

            polar = self.som.polar_
            # any number of images and batches: one trace per batch size, so a
            # warm-up call compiles what a timed epoch runs
            signature = [
                tf.TensorSpec([None, polar.n_rings, self.n_freq], tf.complex64),
                tf.TensorSpec([None, 2], tf.float32),
            ]

            @tf.function(input_signature=signature)
            def run(spectra, schedule):
                n = tf.shape(spectra)[0]
                for i in tf.range(tf.shape(schedule)[0]):
                    start = i * batch_size
                    stop = tf.minimum(start + batch_size, n)
                    self._step(spectra[start:stop], schedule[i, 0], schedule[i, 1])

            self._compiled[batch_size] = run
        self._compiled[batch_size](spectra, schedule)

    def map(self, images, *, batch_size=256, refine_within=REFINE_WITHIN, refine_limit=REFINE_LIMIT):
        """Best node, flip, angle and Euclidean distance of each image.

        With ``refine_within`` set, the distances come back to the host and
        the candidate orientations are measured in pixels there, exactly as
        :meth:`RotationInvariantSOM.map` does; None keeps the whole search
        on the device and reports the fast distances.
        """
        tf = self.tf
        pixels = None if refine_within is None else self._pixel_distances()
        parts = []
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            with tf.device(self.device):
                distances = self.distances(self.spectra(batch))
                if pixels is None:
                    flips, nodes, shifts, best = (t.numpy() for t in self._best(distances))
            if pixels is not None:
                per_node, node_flips, node_shifts = refine_best(
                    distances.numpy(), batch, pixels, refine_within, refine_limit
                )
                nodes = per_node.argmin(axis=1)
                rows = np.arange(len(nodes))
                flips, shifts = node_flips[rows, nodes], node_shifts[rows, nodes]
                best = per_node[rows, nodes]
            parts.append([flips, nodes, shifts, np.sqrt(best)])
        flips, nodes, shifts, distance = (np.concatenate(p) for p in zip(*parts, strict=True))
        return {
            "node": nodes,
            "flip": flips.astype(bool),
            "angle_deg": shifts * (360.0 / self.n_angles),
            "distance": distance,
        }

    def _pixel_distances(self):
        """Exact distances to the device's current neurons (not yet written back)."""
        som = self.som
        prototypes = som.polar_.to_cartesian(
            self.neurons.numpy().transpose(2, 1, 0), int(som.neuron_size)
        )
        return PixelDistances(prototypes, som.region_diameter_, self.n_angles)

    def write_back(self):
        """Copy the trained neurons into the numpy SOM."""
        self.som.set_neurons(self.neurons.numpy().transpose(2, 1, 0))
        return self.som
