"""The fast core: rotation as a cyclic shift of a polar image.

An image is resampled (bilinear interpolation) onto ``n_rings`` rings of radii
``r_k = (k + 1/2) dr`` inside the circular distance region of radius ``R``,
each ring sampled at the ``n_angles`` angles ``theta_j = 2 pi j / n_angles``.
A rotation of the image by ``s`` angular steps is then a cyclic shift of the
angle axis, and a mirror flip (``y -> -y`` about the centre) reverses it.

Each sample stands for the area ``r_k dr dtheta`` it covers, so weighted sums
over samples approximate sums over the pixels of the region. With ``X`` and
``W`` the angular Fourier transforms (``rfft`` along the angle) of an image
and a neuron, and ``w_k`` the ring weights, the squared distance of the
image rotated by ``s`` steps to the neuron is

    d(s) = |X|^2 + |W|^2 - 2 c(s),   c = irfft( sum_k w_k conj(X_k) W_k ),

and for the flipped image ``conj(X_k)`` becomes ``X_k``. For a batch, the sum
over rings is one complex matrix product per angular frequency, and one
inverse FFT gives the distances at all angles. Neurons are kept in this
Fourier domain; rotating an image by ``s`` steps there multiplies frequency
``m`` by ``exp(-2 pi i m s / n_angles)``, so an update needs no new transform.

Angles: ``theta`` is measured from the +x axis (increasing column) towards
+y (increasing row); a rotation by ``+phi`` turns the image counter-clockwise
as displayed with ``origin="lower"``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.sparse as sp

__all__ = [
    "PolarGrid",
    "rotation_correlations",
    "rotation_distances",
    "rotate_fourier",
    "best_rotations",
]

_INTERPOLATIONS = ("bilinear", "cubic")


class PolarGrid:
    """Polar sampling of the circular distance region and its Fourier domain.

    Parameters
    ----------
    region_diameter : float
        Diameter of the circular distance region, in pixels.
    n_angles : int
        Number of angles (= rotations tested), e.g. 360 for 1-degree steps.
    n_freq : int, "auto" or None
        Angular frequencies kept (0 .. n_freq-1). ``None`` keeps all
        ``n_angles // 2 + 1``; ``"auto"`` keeps ``ceil(pi R) + 1``: a ring of
        radius ``R`` pixels holds ``2 pi R`` pixels, so higher angular
        frequencies are beyond the pixel grid's Nyquist limit even on the
        outermost ring. Fewer is faster.
    radial_step : float
        Ring spacing in pixels.
    """

    def __init__(self, region_diameter, n_angles=360, *, n_freq="auto", radial_step=1.0):
        self.region_diameter = float(region_diameter)
        self.n_angles = int(n_angles)
        if self.region_diameter <= 1.0:
            msg = f"region diameter must exceed 1 pixel, got {region_diameter}"
            raise ValueError(msg)
        if self.n_angles < 4:
            msg = f"at least 4 rotations are needed, got {n_angles}"
            raise ValueError(msg)
        full = self.n_angles // 2 + 1
        radius = self.region_diameter / 2.0
        if n_freq == "auto":
            n_freq = int(np.ceil(np.pi * radius)) + 1
        self.n_freq = full if n_freq is None else int(min(max(int(n_freq), 1), full))
        self.n_rings = int(np.ceil(radius / float(radial_step)))
        self.dr = radius / self.n_rings
        self.radii = (np.arange(self.n_rings) + 0.5) * self.dr
        self.ring_weights = (self.radii * self.dr * 2.0 * np.pi / self.n_angles).astype(np.float32)
        # Parseval factors of the half spectrum: |X|^2 = sum_m f_m |X_m|^2 / n_angles.
        factors = np.full(self.n_freq, 2.0)
        factors[0] = 1.0
        if self.n_angles % 2 == 0 and self.n_freq == full:
            factors[-1] = 1.0
        self.parseval = (factors / self.n_angles).astype(np.float32)
        self.angles = 2.0 * np.pi * np.arange(self.n_angles) / self.n_angles

    # --- cartesian <-> polar -------------------------------------------------
    def sampling_matrix(self, shape, interpolation="bilinear") -> sp.csr_matrix:
        """Sparse (n_rings * n_angles, ny * nx) sampling matrix."""
        if interpolation not in _INTERPOLATIONS:
            msg = f"interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}"
            raise ValueError(msg)
        return _sampling_matrix(
            tuple(int(n) for n in shape), self.n_rings, self.dr, self.n_angles, interpolation
        )

    def to_polar(self, images: np.ndarray, interpolation="bilinear") -> np.ndarray:
        """(n, ny, nx) images -> (n, n_rings, n_angles) float32 polar samples.

        ``"bilinear"`` (for the images being mapped) smooths an image as a
        bilinear rotation does; ``"cubic"`` (Keys cubic convolution, for
        prototypes given as cartesian images) keeps their pixel energy.
        """
        images = np.asarray(images, dtype=np.float32)
        n, ny, nx = images.shape
        matrix = self.sampling_matrix((ny, nx), interpolation)
        polar = (matrix @ images.reshape(n, ny * nx).T).T
        return np.ascontiguousarray(polar, dtype=np.float32).reshape(
            n, self.n_rings, self.n_angles
        )

    def to_fourier(self, images: np.ndarray, interpolation="bilinear") -> np.ndarray:
        """(n, ny, nx) images -> (n, n_rings, n_freq) complex64 angular spectra."""
        polar = self.to_polar(images, interpolation)
        spectrum = np.fft.rfft(polar, axis=-1)[..., : self.n_freq]
        return spectrum.astype(np.complex64)

    def to_cartesian(self, spectra: np.ndarray, size: int) -> np.ndarray:
        """(n, n_rings, n_freq) spectra -> (n, size, size) images.

        Pixels outside the distance region are zero: the map is only
        defined (and trained) inside it.
        """
        spectra = np.asarray(spectra)
        polar = np.fft.irfft(spectra, n=self.n_angles, axis=-1).astype(np.float32)
        n = polar.shape[0]
        matrix = _inverse_matrix(int(size), self.n_rings, self.dr, self.n_angles)
        images = (matrix @ polar.reshape(n, -1).T).T
        return np.ascontiguousarray(images, dtype=np.float32).reshape(n, size, size)

    def squared_norms(self, spectra: np.ndarray) -> np.ndarray:
        """Area-weighted squared norms of (..., n_rings, n_freq) spectra."""
        power = spectra.real**2 + spectra.imag**2
        return np.einsum("...km,k,m->...", power, self.ring_weights, self.parseval)

    def weighted(self, spectra: np.ndarray) -> np.ndarray:
        """Spectra multiplied by the ring weights (for the correlation)."""
        return spectra * self.ring_weights[:, None]

    def to_dict(self) -> dict:
        return {
            "region_diameter": self.region_diameter,
            "n_angles": self.n_angles,
            "n_freq": self.n_freq,
            "n_rings": self.n_rings,
        }


@lru_cache(maxsize=16)
def _sampling_matrix(shape, n_rings, dr, n_angles, interpolation):
    ny, nx = shape
    cy, cx = (ny - 1) / 2.0, (nx - 1) / 2.0
    radii = (np.arange(n_rings) + 0.5) * dr
    angles = 2.0 * np.pi * np.arange(n_angles) / n_angles
    cols = (cx + radii[:, None] * np.cos(angles)[None, :]).ravel()
    rows = (cy + radii[:, None] * np.sin(angles)[None, :]).ravel()
    return _interpolation_matrix(rows, cols, ny, nx, interpolation)


def _keys(t):
    """Keys (a = -1/2) cubic convolution kernel."""
    t = np.abs(t)
    return np.where(
        t <= 1.0,
        1.5 * t**3 - 2.5 * t**2 + 1.0,
        np.where(t < 2.0, -0.5 * t**3 + 2.5 * t**2 - 4.0 * t + 2.0, 0.0),
    )


def _tent(t):
    """Linear interpolation kernel (bilinear in two dimensions)."""
    return np.maximum(1.0 - np.abs(t), 0.0)


#: interpolation -> (kernel, offsets of the pixels it reaches from floor(x))
_KERNELS = {"cubic": (_keys, (-1, 0, 1, 2)), "bilinear": (_tent, (0, 1))}


def _interpolation_matrix(rows, cols, ny, nx, interpolation):
    """Sparse (samples x pixels) matrix interpolating an image at (rows, cols).

    Pixels outside the image contribute nothing (zero padding).
    """
    kernel, offsets = _KERNELS[interpolation]
    row0 = np.floor(rows).astype(int)
    col0 = np.floor(cols).astype(int)
    entries_r, entries_c, entries_v = [], [], []
    sample = np.arange(len(rows))
    for drow in offsets:
        r = row0 + drow
        wrow = kernel(rows - r)
        for dcol in offsets:
            c = col0 + dcol
            wcol = kernel(cols - c)
            inside = (r >= 0) & (r < ny) & (c >= 0) & (c < nx)
            entries_r.append(sample[inside])
            entries_c.append((r * nx + c)[inside])
            entries_v.append((wrow * wcol)[inside])
    matrix = sp.coo_matrix(
        (np.concatenate(entries_v), (np.concatenate(entries_r), np.concatenate(entries_c))),
        shape=(len(rows), ny * nx),
        dtype=np.float32,
    )
    return matrix.tocsr()


@lru_cache(maxsize=16)
def _inverse_matrix(size, n_rings, dr, n_angles):
    centre = (size - 1) / 2.0
    rows, cols = np.mgrid[0:size, 0:size]
    dy = (rows - centre).ravel()
    dx = (cols - centre).ravel()
    radius = np.hypot(dx, dy)
    theta = np.mod(np.arctan2(dy, dx), 2.0 * np.pi)
    inside = radius <= n_rings * dr
    pixel = np.nonzero(inside)[0]
    ring = np.clip(radius[inside] / dr - 0.5, 0.0, n_rings - 1.0)
    step = theta[inside] / (2.0 * np.pi / n_angles)
    ring0 = np.minimum(np.floor(ring).astype(int), n_rings - 1)
    ring1 = np.minimum(ring0 + 1, n_rings - 1)
    fring = ring - ring0
    angle0 = np.floor(step).astype(int) % n_angles
    angle1 = (angle0 + 1) % n_angles
    fangle = step - np.floor(step)
    entries_r, entries_c, entries_v = [], [], []
    for rk, wr in ((ring0, 1.0 - fring), (ring1, fring)):
        for aj, wa in ((angle0, 1.0 - fangle), (angle1, fangle)):
            entries_r.append(pixel)
            entries_c.append(rk * n_angles + aj)
            entries_v.append(wr * wa)
    matrix = sp.coo_matrix(
        (np.concatenate(entries_v), (np.concatenate(entries_r), np.concatenate(entries_c))),
        shape=(size * size, n_rings * n_angles),
        dtype=np.float32,
    )
    return matrix.tocsr()


def rotation_correlations(weighted_spectra, neurons, *, flip, n_angles, scales=None):
    """Weighted inner products <image rotated by s, neuron> for every s, flip and neuron.

    Parameters are those of :func:`rotation_distances`. Returns an
    (n, n_flips, n_neurons, n_angles) float32 array.
    """
    n = weighted_spectra.shape[0]
    stacked = np.conj(weighted_spectra)
    if flip:
        stacked = np.concatenate([stacked, weighted_spectra], axis=0)
    # (n_freq, n*flips, n_rings) @ (n_freq, n_rings, n_neurons)
    products = np.matmul(stacked.transpose(2, 0, 1), neurons)
    if scales is not None:
        products *= scales
    # contiguous, zero-padded half spectrum: pocketfft is fastest on that layout
    half = np.zeros((*products.shape[1:], n_angles // 2 + 1), dtype=np.complex64)
    half[..., : products.shape[0]] = products.transpose(1, 2, 0)
    correlation = np.fft.irfft(half, n=n_angles, axis=-1)
    n_flips = 2 if flip else 1
    correlation = correlation.astype(np.float32, copy=False)
    return correlation.reshape(n_flips, n, neurons.shape[2], n_angles).transpose(1, 0, 2, 3)


def rotation_distances(
    weighted_spectra, image_norms, neurons, neuron_norms, *, flip, n_angles, scales=None
):
    """Squared distances of every image, at every rotation (and flip), to every neuron.

    Parameters
    ----------
    weighted_spectra : ndarray, (n, n_rings, n_freq) complex64
        Image spectra multiplied by the ring weights.
    image_norms : ndarray, (n,)
    neurons : ndarray, (n_freq, n_rings, n_neurons) complex64
    neuron_norms : ndarray, (n_neurons,)
    flip : bool
    n_angles : int
    scales : ndarray, (n_neurons,), optional
        The neurons are ``scales * neurons`` (lazy scaling used in training).

    Returns
    -------
    ndarray, (n, n_flips, n_neurons, n_angles) float32
        ``[i, f, j, s]``: image ``i``, mirrored if ``f == 1``, then rotated
        by ``s`` steps, against neuron ``j``.
    """
    distances = rotation_correlations(
        weighted_spectra, neurons, flip=flip, n_angles=n_angles, scales=scales
    )
    distances *= np.float32(-2.0)
    distances += np.asarray(image_norms, np.float32)[:, None, None, None]
    distances += np.asarray(neuron_norms, np.float32)[None, None, :, None]
    return np.maximum(distances, np.float32(0.0), out=distances)


def best_rotations(distances):
    """Per image and neuron the best (flip, shift) and its squared distance.

    Parameters
    ----------
    distances : ndarray, (n, n_flips, n_neurons, n_angles)

    Returns
    -------
    node_distance : (n, n_neurons) float32
    flips : (n, n_neurons) int
    shifts : (n, n_neurons) int
    """
    n, n_flips, n_neurons, n_angles = distances.shape
    flat = distances.transpose(0, 2, 1, 3).reshape(n, n_neurons, n_flips * n_angles)
    index = flat.argmin(axis=-1)
    node_distance = np.take_along_axis(flat, index[..., None], axis=-1)[..., 0]
    flips, shifts = np.divmod(index, n_angles)
    return node_distance, flips, shifts


def rotate_fourier(spectra, shifts, flips, n_angles):
    """Spectra of images mirrored (where ``flips``) then rotated by ``shifts`` steps.

    Parameters
    ----------
    spectra : (n, n_rings, n_freq) complex
    shifts, flips : (n,) int
    """
    n_freq = spectra.shape[-1]
    out = np.where(np.asarray(flips, bool)[:, None, None], np.conj(spectra), spectra)
    phase = np.exp(
        -2j * np.pi * np.outer(np.asarray(shifts, float), np.arange(n_freq)) / n_angles
    ).astype(np.complex64)
    return (out * phase[:, None, :]).astype(np.complex64, copy=False)
