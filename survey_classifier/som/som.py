"""The rotation- and flip-invariant self-organising map (PINK-class).

The distance between an image and a neuron is the minimum, over rotations
(and mirror flips) of the image, of the squared pixel differences inside a
circular region (Polsterer et al. 2016; Galvin et al. 2019). Training repeats
competition (best-matching unit over all neurons and rotations), cooperation
(neighbourhood on the map) and adaptation ``W <- W + lr * theta * (x_rot - W)``
with decaying learning rate and width. The distances for all rotations come
from the polar/Fourier core in :mod:`survey_classifier.som._polar`.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import zipfile
from pathlib import Path

import numpy as np
from scipy.linalg import blas
from tqdm.auto import tqdm

from survey_classifier.errors import ModelError, NotFittedError
from survey_classifier.preprocess import PreprocessConfig
from survey_classifier.som._grid import (
    DECAYS,
    NEIGHBOURHOODS,
    MapGrid,
    decayed,
    neighbourhood_weights,
)
from survey_classifier.som._pixels import PixelDistances, circular_mask, refine_best
from survey_classifier.som._polar import (
    PolarGrid,
    best_rotations,
    rotate_fourier,
    rotation_correlations,
    rotation_distances,
)

__all__ = ["SOM_FORMAT", "SOM_FORMAT_VERSION", "RotationInvariantSOM", "SOMMapping"]

SOM_FORMAT = "survey-classifier-som"
SOM_FORMAT_VERSION = 1
_INITS = ("samples", "random")
_REGION_SHAPES = ("circle",)
_CHUNK = 256
#: Defaults of ``map(refine_within=..., refine_limit=...)``. The fast distances
#: are within a few per cent of PINK's pixel-domain distances on extended
#: sources but up to 30 % off on compact ones (a bilinear rotation smooths
#: those at off-grid angles). Re-measuring the orientations within 30 % of the
#: best, at most the 128 best-ranked per image, finds the brute force's choice
#: on every cutout of bench/som_exactness.py at about half the fast core's
#: mapping speed (docs/som.md, "Exact distances").
REFINE_WITHIN = 0.3
REFINE_LIMIT = 128
_geru = blas.cgeru


def _one_blas_thread():
    """BLAS limited to one thread: the core's products are small, and threaded
    BLAS on them is slower (tens of times on a busy machine, from spinning)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings threadpoolctl
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


class SOMMapping(dict):
    """Mapping of images onto a SOM: a dict of equal-length arrays.

    Keys: ``node`` (index), ``node_x``, ``node_y``, ``angle_deg`` (rotation
    applied to the image, after the flip, to match the neuron), ``flip``
    (bool), ``distance`` (Euclidean, over the circular region), ``second_node``
    (the next best node) and, on request, ``node_distances`` (n, n_nodes)
    with ``node_flips`` and ``node_angles_deg``, the best flip and angle per node.
    """


class RotationInvariantSOM:
    """Rotation- and flip-invariant SOM with a polar/Fourier fast core.

    Parameters
    ----------
    grid_shape : tuple of int
        ``(ny, nx)``; ``(d, d)`` with ``d`` odd for a hexagonal map (PINK's
        hexagon of ``3 r (r + 1) + 1`` nodes).
    layout : {"cartesian", "hexagonal"}
    periodic : bool
        Wrap the neighbourhood around the map edges (cartesian only).
    neuron_size : int
        Side of the neurons in pixels (their cartesian form).
    region_diameter : float or None
        Diameter in pixels of the circular region where distances are
        measured and neurons are defined; defaults to ``neuron_size``.
    n_rotations : int
        Rotations tested, evenly spaced over 360 degrees (360 = 1 degree).
    flip : bool
        Also test the mirrored image.
    n_freq : int, "auto" or None
        Angular frequencies kept per ring: ``"auto"`` = ceil(pi R) + 1 for a
        region of radius R pixels (the pixel grid's angular Nyquist limit at
        the region edge), None = all ``n_rotations // 2 + 1``.
    neighbourhood : {"gaussian", "mexican_hat", "bubble"}
    learning_rate : tuple of float
        ``(start, end)`` of the learning-rate schedule.
    sigma : tuple of float or None
        ``(start, end)`` neighbourhood width in grid units; default
        ``(max(grid_shape) / 2, 0.5)``.
    decay : {"exponential", "linear", "constant"}
        Shape of both schedules over all training steps (one step = one image).
    n_epochs : int
    batch_size : int
        1 for online updates (one image at a time, as PINK); larger for
        mini-batches: the BMUs of a batch are found with the same neurons,
        then each neuron moves toward the neighbourhood-weighted mean of its
        images' rotated copies, ``W += lr * sum_b theta_b (x_b - W) /
        max(sum_b theta_b, 1)`` (the online rule for one image).
    init : {"samples", "random"} or ndarray
        Neurons start as randomly drawn training images, uniform noise, or
        the given (n_nodes, neuron_size, neuron_size) images.
    shuffle : bool
        Visit the images in a random order each epoch.
    random_state : int or None
    preprocess_config : PreprocessConfig, dict or None
        How the training images were prepared; stored with the map so
        mapping prepares cutouts identically.
    track_errors : bool
        Compute quantization and topographic errors after each epoch.
    progress : bool
        Show a tqdm progress bar.
    checkpoint_path : str or None
        Save the map there after every ``checkpoint_every`` epochs.
    checkpoint_every : int
    """

    def __init__(
        self,
        *,
        grid_shape=(10, 10),
        layout="cartesian",
        periodic=False,
        neuron_size=64,
        region_diameter=None,
        n_rotations=360,
        flip=True,
        n_freq="auto",
        neighbourhood="gaussian",
        learning_rate=(0.5, 0.01),
        sigma=None,
        decay="exponential",
        n_epochs=1,
        batch_size=1,
        init="samples",
        shuffle=True,
        random_state=None,
        preprocess_config=None,
        track_errors=True,
        progress=False,
        checkpoint_path=None,
        checkpoint_every=1,
    ):
        self.grid_shape = grid_shape
        self.layout = layout
        self.periodic = periodic
        self.neuron_size = neuron_size
        self.region_diameter = region_diameter
        self.n_rotations = n_rotations
        self.flip = flip
        self.n_freq = n_freq
        self.neighbourhood = neighbourhood
        self.learning_rate = learning_rate
        self.sigma = sigma
        self.decay = decay
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.init = init
        self.shuffle = shuffle
        self.random_state = random_state
        self.preprocess_config = preprocess_config
        self.track_errors = track_errors
        self.progress = progress
        self.checkpoint_path = checkpoint_path
        self.checkpoint_every = checkpoint_every

    _SAVED_PARAMS = (
        "grid_shape", "layout", "periodic", "neuron_size", "region_diameter", "n_rotations",
        "flip", "n_freq", "neighbourhood", "learning_rate", "sigma", "decay", "n_epochs",
        "batch_size", "init", "shuffle", "random_state",
    )  # fmt: skip

    def get_params(self) -> dict:
        names = (*self._SAVED_PARAMS, "preprocess_config", "track_errors", "progress",
                 "checkpoint_path", "checkpoint_every")  # fmt: skip
        return {name: getattr(self, name) for name in names}

    # --- set-up ----------------------------------------------------------------
    @property
    def region_diameter_(self) -> float:
        size = float(self.neuron_size)
        return size if self.region_diameter is None else float(self.region_diameter)

    def _validate(self):
        if self.neighbourhood not in NEIGHBOURHOODS:
            msg = f"neighbourhood must be one of {NEIGHBOURHOODS}, got {self.neighbourhood!r}"
            raise ValueError(msg)
        if self.decay not in DECAYS:
            msg = f"decay must be one of {DECAYS}, got {self.decay!r}"
            raise ValueError(msg)
        if isinstance(self.init, str):
            if self.init not in _INITS:
                msg = f"init must be one of {_INITS} or an array of neurons, got {self.init!r}"
                raise ValueError(msg)
        else:
            shape = np.shape(self.init)
            expected = (MapGrid(self.grid_shape, self.layout).n_nodes, self.neuron_size, self.neuron_size)
            if shape != expected:
                msg = f"init array has shape {shape}, expected (n_nodes, size, size) = {expected}"
                raise ValueError(msg)
        if int(self.batch_size) < 1 or int(self.n_epochs) < 1:
            msg = f"batch_size and n_epochs must be >= 1, got {self.batch_size}, {self.n_epochs}"
            raise ValueError(msg)
        if self.region_diameter_ > int(self.neuron_size):
            msg = (
                f"region diameter {self.region_diameter_} exceeds the neuron size "
                f"{self.neuron_size}"
            )
            raise ValueError(msg)

    def _build(self):
        self._validate()
        self.grid_ = MapGrid(self.grid_shape, self.layout, self.periodic)
        self.polar_ = PolarGrid(self.region_diameter_, int(self.n_rotations), n_freq=self.n_freq)

    def _check_images(self, images, *, fitting=False) -> np.ndarray:
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 2:
            images = images[None]
        if images.ndim != 3 or images.shape[1] != images.shape[2]:
            msg = f"expected square images as an (n, size, size) array, got shape {images.shape}"
            raise ValueError(msg)
        size = images.shape[1]
        if size < self.region_diameter_:
            msg = (
                f"images of {size}x{size} pixels are smaller than the circular distance "
                f"region of diameter {self.region_diameter_}"
            )
            raise ValueError(msg)
        if not fitting and size != self.image_size_:
            msg = (
                f"this SOM was trained on {self.image_size_}x{self.image_size_} images; "
                f"got {size}x{size}. Prepare the images with the SOM's preprocessing "
                f"configuration ({self.preprocess_dict_})"
            )
            raise ValueError(msg)
        if not np.all(np.isfinite(images)):
            msg = "images contain NaN or infinite pixels; preprocess them first"
            raise ValueError(msg)
        return images

    @property
    def preprocess_dict_(self) -> dict | None:
        config = self.preprocess_config
        if config is None:
            return None
        if isinstance(config, PreprocessConfig):
            return config.to_dict()
        return PreprocessConfig.from_dict(dict(config)).to_dict()

    def _initialise(self, images, rng):
        n_nodes = self.grid_.n_nodes
        size = int(self.neuron_size)
        if not isinstance(self.init, str):
            self.set_neurons(self.polar_.to_fourier(np.asarray(self.init, np.float32), "cubic"))
            return
        if self.init == "samples":
            picks = rng.choice(len(images), n_nodes, replace=len(images) < n_nodes)
            offset = (images.shape[1] - size) // 2
            starts = images[picks]
            if offset > 0:
                starts = starts[:, offset : offset + size, offset : offset + size]
            spectra = self.polar_.to_fourier(starts, "cubic")
        else:
            noise = rng.random((n_nodes, size, size), dtype=np.float32)
            spectra = self.polar_.to_fourier(noise, "cubic")
        self.set_neurons(spectra)

    def set_neurons(self, spectra: np.ndarray, *, cartesian=None) -> None:
        """Set the neurons from (n_nodes, n_rings, n_freq) angular spectra.

        ``cartesian``: the same neurons as (n_nodes, neuron_size, neuron_size)
        images, when they were given so (a PINK map). Until training changes
        them, ``prototypes_`` and the exact distances of :meth:`map` use these
        pixels as given instead of their polar round trip.
        """
        self._values = np.ascontiguousarray(spectra.transpose(2, 1, 0), dtype=np.complex64)
        self._neurons_set = getattr(self, "_neurons_set", 0) + 1
        self._cartesian = None
        if cartesian is not None:
            inside = circular_mask(int(self.neuron_size), self.region_diameter_)
            self._cartesian = np.where(inside, np.asarray(cartesian, np.float32), np.float32(0.0))
        self._scales = np.ones(self._values.shape[2], dtype=np.float32)
        self._refresh_norms()

    @property
    def neurons_(self) -> np.ndarray:
        """Neuron spectra, (n_freq, n_rings, n_nodes) complex64."""
        self._bake_scales()
        return self._values

    def _bake_scales(self):
        # Training keeps neuron n as scales[n] * values[..., n] so that an
        # update is a single rank-1 product; fold the scales back in.
        if np.any(self._scales != 1.0):
            self._values *= self._scales
            self._scales[:] = 1.0

    def _refresh_norms(self):
        self._bake_scales()
        n_freq, n_rings, n_nodes = self._values.shape
        pairs = self._values.view(np.float32).reshape(n_freq * n_rings, 2 * n_nodes)
        factors = np.outer(self.polar_.parseval, self.polar_.ring_weights).ravel()
        power = factors @ (pairs * pairs)  # re^2 and im^2 side by side
        self.neuron_norms_ = power.reshape(n_nodes, 2).sum(axis=1).astype(np.float64)

    # --- training --------------------------------------------------------------
    def fit(self, images):
        """Initialise the neurons and train ``n_epochs`` over ``images``.

        Parameters
        ----------
        images : ndarray, (n, size, size)
            Preprocessed images (see :func:`survey_classifier.preprocess.preprocess`).

        Returns
        -------
        self
        """
        images = self.initialise(images)
        for _ in range(int(self.n_epochs)):
            self._epoch(images)
        return self

    def initialise(self, images) -> np.ndarray:
        """Set up the map and its starting neurons for ``images``, without training.

        ``fit`` calls it; call it directly to train elsewhere (e.g. with
        :class:`survey_classifier.som.gpu.TensorFlowSOM`). Returns the
        checked images.
        """
        images = self._check_images(images, fitting=True)
        self._build()
        self._rng = np.random.default_rng(self.random_state)
        self.image_size_ = images.shape[1]
        self._initialise(images, self._rng)
        self.total_steps_ = int(self.n_epochs) * len(images)
        self.step_ = 0
        self.history_ = []
        return images

    def partial_fit(self, images):
        """Train one more epoch over ``images`` (initialising first if needed).

        The schedules continue from where the previous call (or a loaded
        checkpoint) stopped; past ``total_steps_`` they stay at their end values.
        """
        if not hasattr(self, "_values"):
            images = self.initialise(images)
        else:
            images = self._check_images(images)
        if not hasattr(self, "_rng"):
            self._rng = np.random.default_rng(self.random_state)
        self._epoch(images)
        return self

    def schedule(self, step: int) -> tuple[float, float]:
        """Learning rate and neighbourhood width at training ``step``."""
        sigma = self.sigma or (max(self.grid_.shape) / 2.0, 0.5)
        fraction = min(step / max(self.total_steps_ - 1, 1), 1.0)
        lr = decayed(*self.learning_rate, fraction, self.decay)
        width = decayed(*sigma, fraction, self.decay)
        return lr, width

    def _epoch(self, images):
        order = self._rng.permutation(len(images)) if self.shuffle else np.arange(len(images))
        batch = int(self.batch_size)
        bar = tqdm(total=len(images), disable=not self.progress, desc="SOM epoch", unit="img")
        with bar, _one_blas_thread():
            for start in range(0, len(order), _CHUNK):
                chunk = order[start : start + _CHUNK]
                spectra = self.polar_.to_fourier(images[chunk])
                for first in range(0, len(chunk), batch):
                    self._train_step(spectra[first : first + batch])
                bar.update(len(chunk))
        epoch = len(self.history_) + 1
        record = {"epoch": epoch, "steps": int(self.step_)}
        record["learning_rate"], record["sigma"] = self.schedule(self.step_)
        if self.track_errors:
            record.update(self.errors(images))
        self.history_.append(record)
        if self.checkpoint_path and epoch % int(self.checkpoint_every) == 0:
            self.save(self.checkpoint_path)

    def _train_step(self, spectra):
        self._cartesian = None  # the neurons move away from any pixels given to set_neurons
        polar = self.polar_
        n = len(spectra)
        lr, width = self.schedule(self.step_)
        image_norms = polar.squared_norms(spectra)
        # argmin of the distance = argmax of 2 <x_rot, w> - |w|^2 (|x|^2 is constant)
        score = rotation_correlations(
            polar.weighted(spectra), self._values, flip=bool(self.flip),
            n_angles=polar.n_angles, scales=self._scales,
        )  # fmt: skip
        score *= np.float32(2.0)
        score -= self.neuron_norms_.astype(np.float32)[None, None, :, None]
        flat = score.reshape(n, -1).argmax(axis=1)
        flips, nodes, shifts = np.unravel_index(flat, score.shape[1:])
        theta = lr * neighbourhood_weights(self.grid_.distances[nodes], width, self.neighbourhood)
        rotated = rotate_fourier(spectra, shifts, flips, polar.n_angles)  # (n, k, m)
        if n == 1:
            # squared distance to every neuron at the chosen orientation
            distance = image_norms[0] - score[0, flips[0], :, shifts[0]].astype(np.float64)
            self._online_update(rotated[0], theta[0], image_norms[0], distance)
        else:
            # W += sum_b lr theta_b (x_b - W) / max(|sum_b theta_b / lr|, 1): a neuron
            # pulled by several images moves toward their weighted mean, by lr
            # at most; with one image this is the online rule.
            self._bake_scales()
            total = theta.sum(axis=0)
            scale = 1.0 / np.maximum(np.abs(total) / max(lr, 1e-12), 1.0)
            pulled = np.matmul(rotated.transpose(2, 1, 0), (theta * scale).astype(np.complex64))
            self._values *= (1.0 - total * scale).astype(np.float32)
            self._values += pulled
            self._refresh_norms()
        self.step_ += n

    def _online_update(self, rotated, coef, image_norm, distance):
        """W <- (1 - c) W + c x for every neuron, as one rank-1 BLAS product.

        ``distance`` holds the squared distances of ``x`` (as rotated) to each
        neuron, which give <x, W> and so the new norms without a new pass.
        """
        keep = 1.0 - coef
        if np.any(np.abs(keep) < 1e-3):  # a neuron replaced outright: no lazy scale
            self._bake_scales()
            self._values *= keep.astype(np.float32)
            self._values += rotated.T[:, :, None] * coef.astype(np.float32)
            self._refresh_norms()
            return
        old_norms = self.neuron_norms_
        inner = 0.5 * (image_norm + old_norms - distance.astype(np.float64))
        self.neuron_norms_ = keep**2 * old_norms + coef**2 * image_norm + 2.0 * coef * keep * inner
        self._scales *= keep.astype(np.float32)
        n_freq, n_rings, n_nodes = self._values.shape
        matrix = self._values.reshape(n_freq * n_rings, n_nodes).T  # Fortran-ordered view
        updated = _geru(
            1.0,
            (coef / self._scales).astype(np.complex64),
            np.ascontiguousarray(rotated.T).reshape(-1),
            a=matrix,
            overwrite_a=1,
        )
        if not np.shares_memory(updated, self._values):  # BLAS copied after all
            matrix[...] = updated
        self._since_refresh = getattr(self, "_since_refresh", 0) + 1
        if self._since_refresh >= 64 or np.min(np.abs(self._scales)) < 1e-4:
            self._since_refresh = 0
            self._refresh_norms()

    # --- mapping ---------------------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "_values"):
            msg = "this RotationInvariantSOM is not fitted yet; call fit() or load a map"
            raise NotFittedError(msg)

    def map(self, images, *, return_distances=False, batch_size=64,
            refine_within=REFINE_WITHIN, refine_limit=REFINE_LIMIT) -> SOMMapping:  # fmt: skip
        """Best-matching node, rotation, flip and distance of each image.

        The fast core ranks every node, flip and angle at once on the polar
        grid (within a few per cent of the pixel-domain distance on extended
        sources, up to 30 % off on compact ones). The orientations it ranks
        within ``refine_within`` of an image's best (at most
        ``refine_limit``) are then measured again in pixels, as PINK does
        (bilinear rotation, compared pixel by pixel in the circular region
        with the cartesian prototypes), and the best of those is reported:
        ``distance`` is always such an exact value.

        Parameters
        ----------
        images : ndarray, (n, size, size) or (size, size)
            Preprocessed exactly as the training images.
        return_distances : bool
            Also return ``node_distances``: (n, n_nodes) Euclidean distance
            to every node at its best rotation and flip. When refining, every
            node is measured in pixels: at the best of its candidate
            orientations, or at its fast best one if it had none.
        refine_within : float or None
            Fraction of the best fast squared distance within which
            orientations are re-measured in pixels; None reports the fast
            core's distances and orientations unchanged.
        refine_limit : int or None
            At most this many orientations per image are re-measured, those
            the fast core ranks best (None: no limit). Bounds the cost on
            images whose fast distances are nearly flat.
        """
        self._check_fitted()
        images = self._check_images(images)
        if refine_within is not None and not float(refine_within) >= 0.0:
            msg = f"refine_within must be a fraction >= 0 or None, got {refine_within!r}"
            raise ValueError(msg)
        if refine_limit is not None and not int(refine_limit) >= 1:
            msg = f"refine_limit must be at least 1 or None, got {refine_limit!r}"
            raise ValueError(msg)
        with _one_blas_thread():
            return self._map(images, return_distances, batch_size, refine_within, refine_limit)

    def _pixel_distances(self) -> PixelDistances:
        """Exact distances to the current prototypes (rebuilt when they change)."""
        key = (self.step_, getattr(self, "_neurons_set", 0))
        cached = getattr(self, "_pixels", None)
        if cached is None or cached[0] != key:
            pixels = PixelDistances(self.prototypes_, self.region_diameter_, self.polar_.n_angles)
            self._pixels = cached = (key, pixels)
        return cached[1]

    def _map(self, images, return_distances, batch_size, refine_within, refine_limit) -> SOMMapping:
        polar = self.polar_
        pixels = None if refine_within is None else self._pixel_distances()
        keys = ("node", "second_node", "flip", "shift", "distance")
        parts = {key: [] for key in keys}
        node_distances = []
        for start in range(0, len(images), batch_size):
            spectra = polar.to_fourier(images[start : start + batch_size])
            distances = rotation_distances(
                polar.weighted(spectra), polar.squared_norms(spectra), self.neurons_,
                self.neuron_norms_, flip=bool(self.flip), n_angles=polar.n_angles,
            )  # fmt: skip
            if pixels is None:
                per_node, flips, shifts = best_rotations(distances)
            else:
                batch = images[start : start + batch_size]
                per_node, flips, shifts = refine_best(
                    distances, batch, pixels, refine_within, refine_limit,
                    every_node=return_distances,
                )  # fmt: skip
            order = np.argsort(per_node, axis=1)[:, :2]
            rows = np.arange(len(per_node))
            best = order[:, 0]
            parts["node"].append(best)
            parts["second_node"].append(order[:, -1])
            parts["flip"].append(flips[rows, best].astype(bool))
            parts["shift"].append(shifts[rows, best])
            parts["distance"].append(np.sqrt(per_node[rows, best]))
            if return_distances:
                node_distances.append((np.sqrt(per_node), flips, shifts))
        result = SOMMapping({key: np.concatenate(parts[key]) for key in keys})
        result["angle_deg"] = result.pop("shift") * (360.0 / polar.n_angles)
        xy = self.grid_.index_xy[result["node"]]
        result["node_x"], result["node_y"] = xy[:, 0], xy[:, 1]
        if return_distances:
            result["node_distances"] = np.concatenate([p[0] for p in node_distances]).astype(
                np.float32
            )
            result["node_flips"] = np.concatenate([p[1] for p in node_distances]).astype(bool)
            result["node_angles_deg"] = np.concatenate([p[2] for p in node_distances]) * (
                360.0 / polar.n_angles
            )
        return result

    def transform(self, images) -> np.ndarray:
        """(n, n_nodes) distances of each image to each node (best rotation/flip)."""
        return self.map(images, return_distances=True)["node_distances"]

    def errors(self, images) -> dict:
        """Quantization error (mean BMU distance) and topographic error.

        The topographic error is the fraction of images whose best and
        second-best nodes are not neighbours on the map.
        """
        mapping = self.map(images)
        neighbours = self.grid_.are_neighbours(mapping["node"], mapping["second_node"])
        return {
            "quantization_error": float(np.mean(mapping["distance"])),
            "topographic_error": float(1.0 - np.mean(neighbours)) if self.grid_.n_nodes > 1 else 0.0,
        }

    @property
    def prototypes_(self) -> np.ndarray:
        """(n_nodes, neuron_size, neuron_size) cartesian neurons (zero outside the region)."""
        self._check_fitted()
        if getattr(self, "_cartesian", None) is not None:
            return self._cartesian.copy()
        spectra = self.neurons_.transpose(2, 1, 0)
        return self.polar_.to_cartesian(spectra, int(self.neuron_size))

    def rotate_into_frame(self, image, angle_deg, flip):
        """``image`` mirrored (if ``flip``) then rotated by ``angle_deg`` (as mapped)."""
        from scipy import ndimage

        image = np.asarray(image, dtype=np.float32)
        if flip:
            image = image[::-1, :]
        return ndimage.rotate(image, -float(angle_deg), reshape=False, order=1)

    # --- settings checks and persistence ---------------------------------------
    def check_settings(self, *, neuron_size=None, n_rotations=None, flip=None,
                       region_diameter=None, region_shape=None, preprocess=None, source="") -> None:
        """Refuse mapping settings that differ from those the map was trained with.

        ``preprocess`` (a :class:`~survey_classifier.preprocess.PreprocessConfig`
        or its dict) is compared field by field with the preparation the map
        records.

        Raises
        ------
        ModelError
            Naming each setting that differs. ``None`` means "as trained".
        """
        self._check_fitted()
        trained = {
            "neuron_size": int(self.neuron_size),
            "n_rotations": int(self.n_rotations),
            "flip": bool(self.flip),
            "region_diameter": float(self.region_diameter_),
            "region_shape": "circle",
        }
        asked = {
            "neuron_size": neuron_size, "n_rotations": n_rotations, "flip": flip,
            "region_diameter": region_diameter, "region_shape": region_shape,
        }  # fmt: skip
        wrong = []
        for key, value in asked.items():
            if value is None:
                continue
            if key == "region_shape" and value not in _REGION_SHAPES:
                wrong.append(f"region_shape={value!r} (trained with 'circle')")
            elif type(trained[key])(value) != trained[key]:
                wrong.append(f"{key}={value!r} (trained with {trained[key]!r})")
        wrong.extend(self._preprocess_differences(preprocess))
        if wrong:
            where = f" {source}" if source else ""
            msg = (
                f"refusing to map with the SOM{where}: settings differ from training: "
                + "; ".join(wrong)
            )
            raise ModelError(msg)

    def _preprocess_differences(self, preprocess) -> list[str]:
        if preprocess is None:
            return []
        asked = preprocess.to_dict() if isinstance(preprocess, PreprocessConfig) else (
            PreprocessConfig.from_dict(dict(preprocess)).to_dict()
        )  # fmt: skip
        trained = self.preprocess_dict_
        if trained is None:
            return ["preprocess given, but the map records no preprocessing"]
        return [
            f"preprocess {key}={asked[key]!r} (trained with {trained[key]!r})"
            for key in sorted(asked) if asked[key] != trained[key]
        ]  # fmt: skip

    def metadata(self) -> dict:
        params = {name: getattr(self, name) for name in self._SAVED_PARAMS}
        if not isinstance(params["init"], str):
            params["init"] = "samples"  # the given array is not kept; only its result
        params["grid_shape"] = list(params["grid_shape"])
        params["learning_rate"] = list(params["learning_rate"])
        params["sigma"] = None if params["sigma"] is None else list(params["sigma"])
        return {
            "format": SOM_FORMAT,
            "format_version": SOM_FORMAT_VERSION,
            "params": params,
            "preprocess": self.preprocess_dict_,
            "image_size": int(self.image_size_),
            "polar": self.polar_.to_dict(),
            "grid": self.grid_.to_dict(),
            "step": int(self.step_),
            "total_steps": int(self.total_steps_),
            "history": self.history_,
            "saved": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }

    def save(self, path) -> Path:
        """Write the map to ``path`` (.npz: neuron spectra + JSON metadata)."""
        self._check_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            np.savez_compressed(
                handle,
                neurons=self.neurons_,
                metadata=np.array(json.dumps(self.metadata())),
            )
        return path

    @classmethod
    def load(cls, path) -> RotationInvariantSOM:
        """Read a map written by :meth:`save`.

        Raises
        ------
        ModelError
            If the file is missing, not such a map, or of an unsupported version.
        """
        path = Path(path)
        if not path.is_file():
            msg = f"{path}: SOM file not found"
            raise ModelError(msg)
        try:
            with np.load(path, allow_pickle=False) as archive:
                names = set(archive.files)
                if not {"neurons", "metadata"} <= names:
                    msg = f"{path}: not a survey-classifier SOM (arrays {sorted(names)})"
                    raise ModelError(msg)
                meta = json.loads(str(archive["metadata"]))
                neurons = archive["neurons"]
        except (OSError, ValueError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            msg = (
                f"{path}: not a survey-classifier SOM file (.npz with neurons and metadata): {exc}"
                " - for a PINK map use survey_classifier.som.pink.read_som"
            )
            raise ModelError(msg) from exc
        if meta.get("format") != SOM_FORMAT:
            msg = f"{path}: format {meta.get('format')!r} is not {SOM_FORMAT!r}"
            raise ModelError(msg)
        if meta.get("format_version") != SOM_FORMAT_VERSION:
            msg = (
                f"{path}: SOM format version {meta.get('format_version')!r} is not supported "
                f"(this survey-classifier reads version {SOM_FORMAT_VERSION})"
            )
            raise ModelError(msg)
        params = dict(meta["params"])
        params["grid_shape"] = tuple(params["grid_shape"])
        params["learning_rate"] = tuple(params["learning_rate"])
        if params["sigma"] is not None:
            params["sigma"] = tuple(params["sigma"])
        try:
            preprocess = None if meta["preprocess"] is None else PreprocessConfig.from_dict(meta["preprocess"])
        except ValueError as exc:
            msg = f"{path}: its preprocessing record cannot be used: {exc}"
            raise ModelError(msg) from exc
        som = cls(**params, preprocess_config=preprocess)
        som._build()
        expected = (som.polar_.n_freq, som.polar_.n_rings, som.grid_.n_nodes)
        if neurons.shape != expected or neurons.dtype != np.complex64:
            msg = (
                f"{path}: neuron array {neurons.shape} {neurons.dtype} does not match the "
                f"settings in its metadata (expected {expected} complex64)"
            )
            raise ModelError(msg)
        som.set_neurons(neurons.transpose(2, 1, 0))
        som.image_size_ = int(meta["image_size"])
        som.step_ = int(meta["step"])
        som.total_steps_ = int(meta["total_steps"])
        som.history_ = list(meta["history"])
        som.source_ = str(path)
        return som

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{k}={getattr(self, k)!r}"
            for k in ("grid_shape", "layout", "neuron_size", "n_rotations", "flip")
        )
        return f"RotationInvariantSOM({shown})"
