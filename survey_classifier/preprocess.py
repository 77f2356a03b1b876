"""The one preprocessing function shared by training and inference.

Every model stores the :class:`PreprocessConfig` it was trained with (as a
dict in its metadata), and inference rebuilds the same configuration from it,
so a model never sees pixels prepared differently from those it learned on.

The default recipe follows the MiraBest preparation (Porter & Scaife):

1. background: the sigma-clipped median of the finite pixels is subtracted
   and the sigma-clipped standard deviation is the noise estimate (3 sigma,
   5 passes: the statistics of ``astropy.stats.sigma_clipped_stats``,
   computed by :func:`survey_classifier.stats.clipped_background`);
2. clipping: pixels below ``clip_sigma`` times the noise are set to zero
   (blank pixels too);
3. crop: the central ``crop`` x ``crop`` pixels are kept (optional);
4. resize: flux-conserving area resampling to ``size`` x ``size``;
5. scaling: ``"minmax"`` maps the image to [0, 1] (an image with nothing
   above the threshold stays all zeros), ``"none"`` keeps Jy/beam.

Bump :data:`PREPROCESS_VERSION` whenever the arithmetic changes; a model
whose metadata names another version is refused.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from survey_classifier.checksum import sha256_bytes
from survey_classifier.stats import clipped_background

__all__ = [
    "PREPROCESS_VERSION",
    "PreprocessConfig",
    "preprocess",
    "resample_matrix",
]

PREPROCESS_VERSION = 1

_BACKGROUNDS = ("sigma_clip", "none")
_SCALINGS = ("minmax", "none")


@dataclass(frozen=True)
class PreprocessConfig:
    """Parameters of :func:`preprocess`; they travel with every model.

    Parameters
    ----------
    size : int
        Output image side in pixels.
    crop : int or None
        Side of the central region kept before resizing; None keeps all.
    background : {"sigma_clip", "none"}
        Background and noise estimate.
    clip_sigma : float or None
        Pixels below this many sigma are set to zero; None disables clipping.
    scaling : {"minmax", "none"}
        Final intensity scaling.
    version : int
        Version of the preprocessing arithmetic.
    """

    size: int = 64
    crop: int | None = None
    background: str = "sigma_clip"
    clip_sigma: float | None = 3.0
    scaling: str = "minmax"
    version: int = PREPROCESS_VERSION

    def __post_init__(self):
        if self.version != PREPROCESS_VERSION:
            msg = (
                f"preprocessing version {self.version} is not supported by this "
                f"survey-classifier (it implements version {PREPROCESS_VERSION}); "
                "retrain the model or install the release that made it"
            )
            raise ValueError(msg)
        if self.background not in _BACKGROUNDS:
            msg = f"background must be one of {_BACKGROUNDS}, got {self.background!r}"
            raise ValueError(msg)
        if self.scaling not in _SCALINGS:
            msg = f"scaling must be one of {_SCALINGS}, got {self.scaling!r}"
            raise ValueError(msg)
        if int(self.size) < 2:
            msg = f"size must be at least 2 pixels, got {self.size}"
            raise ValueError(msg)
        if self.crop is not None and int(self.crop) < 2:
            msg = f"crop must be None or at least 2 pixels, got {self.crop}"
            raise ValueError(msg)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> PreprocessConfig:
        known = {name: values[name] for name in cls.__dataclass_fields__ if name in values}
        unknown = sorted(set(values) - set(known))
        if unknown:
            msg = f"unknown preprocessing parameters {unknown}"
            raise ValueError(msg)
        return cls(**known)

    def digest(self) -> str:
        """Short stable hash of the parameters (cache key, model metadata)."""
        return _digest(self)


@lru_cache(maxsize=256)
def _digest(config: PreprocessConfig) -> str:
    text = json.dumps(config.to_dict(), sort_keys=True)
    return sha256_bytes(text.encode())[:16]


@lru_cache(maxsize=64)
def resample_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Matrix ``R`` (n_out x n_in) of area weights: ``R @ row`` averages bins.

    Output pixel ``i`` covers input coordinates ``[i, i+1) * n_in / n_out``;
    each input pixel contributes the fraction of it that the output pixel
    covers, so a constant image stays constant and flux density per pixel
    is averaged, not sampled.
    """
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo = edges[:-1, None]
    hi = edges[1:, None]
    pixel = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, pixel + 1) - np.maximum(lo, pixel), 0.0, None)
    return (overlap / overlap.sum(axis=1, keepdims=True)).astype(np.float32)


def _central_crop(image: np.ndarray, crop: int) -> np.ndarray:
    ny, nx = image.shape
    if crop > min(ny, nx):
        msg = f"crop of {crop} pixels is larger than the {ny}x{nx} image"
        raise ValueError(msg)
    y0 = (ny - crop) // 2
    x0 = (nx - crop) // 2
    return image[y0 : y0 + crop, x0 : x0 + crop]


def preprocess(image: np.ndarray, config: PreprocessConfig | None = None) -> np.ndarray:
    """Prepare one 2-D image for a model (see the module docstring).

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
        Pixel values in their physical unit; NaN marks blank pixels.
    config : PreprocessConfig, optional
        Defaults to ``PreprocessConfig()``.

    Returns
    -------
    ndarray, shape (size, size), float32

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> image = rng.normal(0.0, 1e-4, (150, 150)).astype("float32")
    >>> image[70:80, 70:80] += 0.01
    >>> out = preprocess(image, PreprocessConfig(size=32))
    >>> out.shape, float(out.max())
    ((32, 32), 1.0)
    """
    config = config or PreprocessConfig()
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        msg = f"preprocess expects a 2-D image, got shape {image.shape}"
        raise ValueError(msg)
    finite = np.isfinite(image)
    if not finite.any():
        msg = "image has no finite pixels (all blank or NaN)"
        raise ValueError(msg)
    work = np.where(finite, image, np.float32(0.0))
    if config.background == "sigma_clip":
        median, std = clipped_background(image[finite], sigma=3.0, maxiters=5)
        work = np.where(finite, work - np.float32(median), np.float32(0.0))
        if config.clip_sigma is not None:
            work[work < config.clip_sigma * std] = 0.0
    elif config.clip_sigma is not None:
        work[work < 0.0] = 0.0
    if config.crop is not None:
        work = _central_crop(work, int(config.crop))
    ny, nx = work.shape
    size = int(config.size)
    if (ny, nx) != (size, size):
        work = resample_matrix(ny, size) @ work @ resample_matrix(nx, size).T
    if config.scaling == "minmax":
        low = work.min()
        span = work.max() - low
        work = (work - low) / span if span > 0 else np.zeros_like(work)
    return np.ascontiguousarray(work, dtype=np.float32)
