"""Distances in the pixel domain, as PINK measures them.

PINK rotates the image with bilinear interpolation and compares it with the
neuron pixel by pixel inside the circular region. The fast core
(:mod:`survey_classifier.som._polar`) approximates that distance on a polar
grid, within a few per cent, for every angle at once. :class:`PixelDistances`
measures it exactly, for a short list of (image, flip, neuron, angle)
choices: :meth:`RotationInvariantSOM.map` uses it to re-measure the
orientations the fast core ranks near the best (filter, then refine), and
the brute-force reference in :mod:`survey_classifier.som.reference` uses the
same geometry for every angle.

Geometry: an output pixel at offset ``(dy, dx)`` from the centre of the
region, for a rotation by ``phi`` (counter-clockwise as displayed with
``origin="lower"``, i.e. :func:`scipy.ndimage.rotate` by ``-phi``), takes
the input at ``(dx cos phi + dy sin phi, -dx sin phi + dy cos phi)``; a flip
mirrors the rows (``y -> -y``) before the rotation.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from survey_classifier.som._polar import best_rotations

__all__ = ["circular_mask", "rotation_sources", "PixelDistances", "refine_best"]


def circular_mask(size: int, diameter: float) -> np.ndarray:
    """Boolean (size, size) mask of the pixels whose centre lies in the circle."""
    centre = (size - 1) / 2.0
    rows, cols = np.mgrid[0:size, 0:size]
    return np.hypot(rows - centre, cols - centre) <= diameter / 2.0


def rotation_sources(image_size, mask, angles_rad, flips):
    """Input (row, col) of every masked output pixel, per orientation.

    Parameters
    ----------
    image_size : int
        Side of the (square) input images; the region is centred in them.
    mask : ndarray of bool, (size, size)
        The output pixels (the circular region of a neuron).
    angles_rad, flips : array_like, (t,)
        Rotation angle and mirror flag of each orientation.

    Returns
    -------
    rows, cols : ndarray, (t, n_masked)
    """
    centre_out = (mask.shape[0] - 1) / 2.0
    centre_in = (int(image_size) - 1) / 2.0
    out_rows, out_cols = np.nonzero(mask)
    dy = (out_rows - centre_out)[None, :]
    dx = (out_cols - centre_out)[None, :]
    angles = np.asarray(angles_rad, dtype=np.float64)[:, None]
    cos, sin = np.cos(angles), np.sin(angles)
    src_x = cos * dx + sin * dy
    src_y = -sin * dx + cos * dy
    src_y = np.where(np.asarray(flips, dtype=bool)[:, None], -src_y, src_y)
    return centre_in + src_y, centre_in + src_x


class PixelDistances:
    """Exact squared distances of rotated images to cartesian neurons.

    Parameters
    ----------
    neurons : ndarray, (n_nodes, size, size)
        Cartesian neurons (for a fitted SOM, its ``prototypes_``).
    region_diameter : float
        Diameter of the circular region compared, in pixels.
    n_rotations : int
        Angle steps: a shift ``s`` is a rotation by ``360 s / n_rotations``
        degrees.
    """

    def __init__(self, neurons, region_diameter, n_rotations):
        neurons = np.asarray(neurons, dtype=np.float32)
        self.mask = circular_mask(neurons.shape[-1], region_diameter)
        self.targets = np.ascontiguousarray(neurons[:, self.mask])  # (n_nodes, p)
        self.n_rotations = int(n_rotations)
        self._tables = {}

    def _table(self, image_size):
        """Per orientation ``flip * n_rotations + shift`` and masked pixel: the
        flat index of the top-left neighbour in the zero-padded image and the
        bilinear weights. A sample outside the image reads the zero corner."""
        if image_size not in self._tables:
            n = self.n_rotations
            angles = np.tile(2.0 * np.pi * np.arange(n) / n, 2)
            rows, cols = rotation_sources(image_size, self.mask, angles, np.repeat([0, 1], n))
            rows, cols = rows + 1.0, cols + 1.0  # into the padded image
            # as scipy.ndimage.map_coordinates(mode="constant"): outside the image is 0
            inside = (rows >= 1) & (rows <= image_size) & (cols >= 1) & (cols <= image_size)
            row0, col0 = np.floor(rows), np.floor(cols)
            base = np.where(inside, row0 * (image_size + 2) + col0, 0).astype(np.int32)
            frow = np.where(inside, rows - row0, 0).astype(np.float32)
            fcol = np.where(inside, cols - col0, 0).astype(np.float32)
            self._tables[image_size] = (base, frow, fcol)
        return self._tables[image_size]

    def __call__(self, images, image_index, flips, nodes, shifts) -> np.ndarray:
        """Squared distance of ``images[image_index]`` mirrored by ``flips``
        and turned by ``shifts`` steps to ``neurons[nodes]``, for each entry.

        The image is sampled with bilinear interpolation (zero outside it),
        exactly as :func:`scipy.ndimage.rotate` with ``order=1`` does.
        """
        images = np.asarray(images, dtype=np.float32)
        n, size = images.shape[0], images.shape[-1]
        width = size + 2
        # one pixel of zeros around each image: the last row and column have neighbours
        padded = np.zeros((n, width, width), np.float32)
        padded[:, 1:-1, 1:-1] = images
        base, frow, fcol = self._table(size)
        orientation = np.asarray(flips, np.int64) * self.n_rotations + np.asarray(shifts, np.int64)
        out = np.empty(len(orientation), np.float64)
        _kernel()(
            padded.reshape(-1), width, base, frow, fcol, self.targets,
            np.asarray(image_index, np.int64), orientation, np.asarray(nodes, np.int64), out,
        )  # fmt: skip
        return out


def _compile(function):
    """numba-compile ``function``, caching the machine code on disk where numba
    can write (next to this module or in the user's cache); on a read-only
    install without a writable home it compiles in memory in each process."""
    import numba

    try:
        return numba.njit(cache=True, nogil=True)(function)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(function)


@cache
def _kernel():
    """The compiled :func:`_squared_distances`, built on first use (importing
    numba costs a quarter of a second, which commands that never map need not pay)."""
    return _compile(_squared_distances)


def _squared_distances(pixels, width, base, frow, fcol, targets, image_index, orientation, nodes, out):
    """The hot loop of :class:`PixelDistances`: for each entry, sample the padded
    image through the orientation's table row and sum the squared differences
    with the neuron. Compiled, since numpy would build a dozen temporaries per
    entry and run several times slower."""
    plane = width * width
    for entry in range(orientation.shape[0]):
        row = orientation[entry]
        offset = image_index[entry] * plane
        node = nodes[entry]
        total = 0.0
        for pixel in range(base.shape[1]):
            at = base[row, pixel] + offset
            corner, right = pixels[at], pixels[at + 1]
            below, both = pixels[at + width], pixels[at + width + 1]
            across = fcol[row, pixel]
            top = corner + across * (right - corner)
            bottom = below + across * (both - below)
            value = top + frow[row, pixel] * (bottom - top) - targets[node, pixel]
            total += value * value
        out[entry] = total


def refine_best(distances, images, pixels, within, limit=None, *, every_node=False):
    """Best (flip, shift) and squared distance per image and neuron, re-measured.

    Every orientation whose fast squared distance lies within ``within``
    (a fraction) of the image's best, but at most the ``limit`` best-ranked
    of each image, is measured again in pixels by ``pixels``; a neuron with
    such candidates takes the best of its exact values, the others keep
    their fast best.

    Parameters
    ----------
    distances : ndarray, (n, n_flips, n_neurons, n_angles)
        Fast squared distances of ``images``.
    images : ndarray, (n, size, size)
    pixels : PixelDistances
    within : float
    limit : int or None
    every_node : bool
        Also re-measure every other neuron at its own fast best orientation,
        so that all the distances returned are pixel-domain values.

    Returns
    -------
    As :func:`~survey_classifier.som._polar.best_rotations`, with float64
    distances. The lowest distance of each image is an exact one: a neuron
    left out by ``limit`` whose fast distance is below the best exact value
    is re-measured at its own fast best orientation.
    """
    node_distance, flips, shifts = best_rotations(distances)
    node_distance = node_distance.astype(np.float64)
    n, _, n_neurons, _ = distances.shape
    flat = distances.reshape(n, -1)
    best = flat.min(axis=1, keepdims=True)
    image, candidate = np.nonzero(flat <= best + float(within) * np.abs(best))
    if limit is not None:
        image, candidate = _lowest_per_image(image, candidate, flat[image, candidate], limit)
    flip, node, shift = np.unravel_index(candidate, distances.shape[1:])
    exact = pixels(images, image, flip, node, shift)
    measured = np.zeros(node_distance.shape, bool)
    _keep_lowest(node_distance, flips, shifts, measured, image, node, flip, shift, exact)
    # neurons not measured whose fast value undercuts the image's best exact one (or all)
    best_exact = np.where(measured, node_distance, np.inf).min(axis=1, keepdims=True)
    image, node = np.nonzero(~measured & ((node_distance < best_exact) | every_node))
    if len(image):
        flip, shift = flips[image, node], shifts[image, node]
        exact = pixels(images, image, flip, node, shift)
        _keep_lowest(node_distance, flips, shifts, measured, image, node, flip, shift, exact)
    return node_distance, flips, shifts


def _keep_lowest(node_distance, flips, shifts, measured, image, node, flip, shift, exact):
    """Write the lowest exact value of each (image, neuron) pair, with its orientation."""
    key = image * node_distance.shape[1] + node
    order = np.lexsort((exact, key))
    first = order[np.r_[True, key[order][1:] != key[order][:-1]]]
    image, node = image[first], node[first]
    node_distance[image, node] = exact[first]
    flips[image, node] = flip[first]
    shifts[image, node] = shift[first]
    measured[image, node] = True


def _lowest_per_image(image, candidate, value, limit):
    """Keep at most ``limit`` candidates of each image, those of lowest value."""
    order = np.lexsort((value, image))
    image, candidate = image[order], candidate[order]
    starts = np.searchsorted(image, image, side="left")
    keep = np.arange(len(image)) - starts < limit
    return image[keep], candidate[keep]
