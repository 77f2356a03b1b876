"""Brute-force rotation distances and SOM: the yardstick for the fast core.

Nothing here is fast. :func:`reference_distances` rotates the image with
:func:`scipy.ndimage.rotate` (bilinear, ``order=1``) at every angle and
compares it pixel by pixel with each neuron inside the circular region; the
tests hold :mod:`survey_classifier.som._polar` to it. :class:`BruteForceSOM`
is a PINK-style rotation SOM in vectorised numpy (every training step
rotates the image to every angle and compares with every neuron), used by
``bench/bench_som.py`` for the side-by-side comparison.

Conventions match the fast core: a flip mirrors the rows (``y -> -y``)
before the rotation; a rotation by ``+phi`` turns the image counter-clockwise
as displayed with ``origin="lower"`` (which is ``scipy.ndimage.rotate`` by
``-phi``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy import ndimage

from survey_classifier.som._grid import MapGrid, decayed, neighbourhood_weights
from survey_classifier.som._pixels import circular_mask, rotation_sources

__all__ = ["circular_mask", "rotated_stack", "reference_distances", "BruteForceSOM"]


def _central(image: np.ndarray, size: int) -> np.ndarray:
    ny, nx = image.shape[-2:]
    y0, x0 = (ny - size) // 2, (nx - size) // 2
    return image[..., y0 : y0 + size, x0 : x0 + size]


def rotated_stack(image, n_rotations=360, *, flip=True, size=None):
    """The image at every rotation (and flip), by :func:`scipy.ndimage.rotate`.

    Returns
    -------
    ndarray, (n_flips, n_rotations, size, size)
    """
    image = np.asarray(image, dtype=np.float64)
    size = image.shape[0] if size is None else int(size)
    versions = [image, image[::-1, :]] if flip else [image]
    out = np.empty((len(versions), n_rotations, size, size))
    for f, version in enumerate(versions):
        for s in range(n_rotations):
            angle = 360.0 * s / n_rotations
            turned = ndimage.rotate(version, -angle, reshape=False, order=1, mode="constant")
            out[f, s] = _central(turned, size)
    return out


def reference_distances(image, neurons, *, n_rotations=360, flip=True, region_diameter=None):
    """Squared distances by brute force, pixel by pixel in the circular region.

    Parameters
    ----------
    image : ndarray, (ny, nx)
    neurons : ndarray, (n_neurons, size, size)

    Returns
    -------
    ndarray, (n_flips, n_neurons, n_rotations)
    """
    neurons = np.asarray(neurons, dtype=np.float64)
    size = neurons.shape[-1]
    diameter = size if region_diameter is None else region_diameter
    mask = circular_mask(size, diameter)
    stack = rotated_stack(image, n_rotations, flip=flip, size=size)[..., mask]
    target = neurons[:, mask]
    # (flips, rot, p) vs (n, p)
    squared = (
        (stack**2).sum(-1)[:, None, :]
        + (target**2).sum(-1)[None, :, None]
        - 2.0 * np.einsum("frp,np->fnr", stack, target)
    )
    return np.maximum(squared, 0.0)


def _source_coordinates(image_size, n_rotations, flip, mask):
    """(2, n_orientations * n_masked) input (row, col) of every rotated output pixel."""
    n_flips = 2 if flip else 1
    angles = np.tile(2.0 * np.pi * np.arange(n_rotations) / n_rotations, n_flips)
    flips = np.repeat(np.arange(n_flips), n_rotations)
    rows, cols = rotation_sources(image_size, mask, angles, flips)
    return np.array([rows.ravel(), cols.ravel()])


def _rotation_matrix(image_size, n_rotations, flip, mask):
    """Sparse bilinear matrix: image pixels -> masked pixels of every rotation."""
    src_rows, src_cols = _source_coordinates(image_size, n_rotations, flip, mask)
    row0 = np.floor(src_rows).astype(int)
    col0 = np.floor(src_cols).astype(int)
    frow, fcol = src_rows - row0, src_cols - col0
    index = np.arange(len(src_rows))
    data, ri, ci = [], [], []
    for drow, wrow in ((0, 1 - frow), (1, frow)):
        for dcol, wcol in ((0, 1 - fcol), (1, fcol)):
            r, c = row0 + drow, col0 + dcol
            ok = (r >= 0) & (r < image_size) & (c >= 0) & (c < image_size)
            data.append((wrow * wcol)[ok])
            ri.append(index[ok])
            ci.append((r * image_size + c)[ok])
    return sp.csr_matrix(
        (np.concatenate(data), (np.concatenate(ri), np.concatenate(ci))),
        shape=(len(src_rows), image_size * image_size),
        dtype=np.float32,
    )


class BruteForceSOM:
    """Online rotation/flip SOM that rotates every image to every angle.

    Same algorithm and options (subset) as
    :class:`~survey_classifier.som.RotationInvariantSOM`, on cartesian
    neurons: each step rotates the image to all ``n_rotations`` angles (and
    flips) with bilinear interpolation, compares every rotated copy with
    every neuron in the circular region (one matrix product), and pulls the
    neighbourhood of the best-matching unit toward the best rotated copy.

    ``rotation="map_coordinates"`` rotates with one vectorised
    :func:`scipy.ndimage.map_coordinates` call (order 1) over all
    orientations per step, the straightforward brute force;
    ``rotation="sparse"`` precomputes the whole rotation as one sparse
    matrix, an optimised brute force (same numbers, several times faster).
    """

    def __init__(
        self,
        *,
        grid_shape=(10, 10),
        layout="cartesian",
        neuron_size=64,
        region_diameter=None,
        n_rotations=360,
        flip=True,
        neighbourhood="gaussian",
        learning_rate=(0.5, 0.01),
        sigma=None,
        decay="exponential",
        random_state=None,
        rotation="map_coordinates",
    ):
        self.rotation = rotation
        self.grid_shape = grid_shape
        self.layout = layout
        self.neuron_size = neuron_size
        self.region_diameter = region_diameter
        self.n_rotations = n_rotations
        self.flip = flip
        self.neighbourhood = neighbourhood
        self.learning_rate = learning_rate
        self.sigma = sigma
        self.decay = decay
        self.random_state = random_state

    def fit(self, images, *, initial_neurons=None, n_steps=None):
        """One online epoch over ``images`` ((n, size, size), already preprocessed)."""
        images = np.asarray(images, dtype=np.float32)
        size = int(self.neuron_size)
        diameter = size if self.region_diameter is None else float(self.region_diameter)
        self.mask_ = circular_mask(size, diameter)
        grid = MapGrid(self.grid_shape, self.layout)
        self.grid_ = grid
        rng = np.random.default_rng(self.random_state)
        if initial_neurons is None:
            picks = rng.choice(len(images), grid.n_nodes, replace=len(images) < grid.n_nodes)
            initial_neurons = _central(images[picks], size)
        self.neurons_ = np.array(initial_neurons, dtype=np.float32).reshape(grid.n_nodes, -1)
        rotate = self._rotator(images.shape[-1], size)
        full = _rotation_matrix(images.shape[-1], self.n_rotations, self.flip, np.ones((size, size), bool))
        masked = self.mask_.ravel()
        n_pixels = int(masked.sum())
        sigma = self.sigma or (max(grid.shape) / 2.0, 0.5)
        total = len(images) if n_steps is None else n_steps
        for step, image in enumerate(images[:total]):
            fraction = step / max(total - 1, 1)
            lr = decayed(*self.learning_rate, fraction, self.decay)
            width = decayed(*sigma, fraction, self.decay)
            turned = rotate(image).reshape(-1, n_pixels)  # (flips*rot, p)
            target = self.neurons_[:, masked]
            squared = (
                (turned**2).sum(-1)[:, None]
                + (target**2).sum(-1)[None, :]
                - 2.0 * turned @ target.T
            )
            version, node = np.unravel_index(np.argmin(squared), squared.shape)
            best = full[version * size * size : (version + 1) * size * size] @ image.ravel()
            theta = neighbourhood_weights(grid.distances[node], width, self.neighbourhood)
            self.neurons_ += (lr * theta)[:, None].astype(np.float32) * (best[None, :] - self.neurons_)
        self.neurons_ = self.neurons_.reshape(grid.n_nodes, size, size)
        return self

    def _rotator(self, image_size, size):
        if self.rotation == "sparse":
            matrix = _rotation_matrix(image_size, self.n_rotations, self.flip, self.mask_)
            return lambda image: matrix @ image.ravel()
        if self.rotation == "map_coordinates":
            coords = _source_coordinates(image_size, self.n_rotations, self.flip, self.mask_)
            return lambda image: ndimage.map_coordinates(
                image, coords, order=1, mode="constant", cval=0.0, prefilter=False
            )
        msg = f"rotation must be 'map_coordinates' or 'sparse', got {self.rotation!r}"
        raise ValueError(msg)

    def quantization_error(self, images) -> float:
        """Mean over images of the Euclidean distance to the best neuron and rotation."""
        images = np.asarray(images, dtype=np.float32)
        rotation = _rotation_matrix(images.shape[-1], self.n_rotations, self.flip, self.mask_)
        target = self.neurons_.reshape(len(self.neurons_), -1)[:, self.mask_.ravel()]
        n_pixels = target.shape[1]
        errors = []
        for image in images:
            turned = (rotation @ image.ravel()).reshape(-1, n_pixels)
            squared = (
                (turned**2).sum(-1)[:, None] + (target**2).sum(-1)[None, :] - 2.0 * turned @ target.T
            )
            errors.append(np.sqrt(max(float(squared.min()), 0.0)))
        return float(np.mean(errors))
