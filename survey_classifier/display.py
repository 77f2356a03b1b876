"""How a radio cutout is shown: one intensity stretch for every picture.

Radio cutouts are mostly noise around a zero background, with emission
that can span three decades: a bright unresolved core hundreds of times
the noise beside lobes a few times the noise. A stretch anchored only to
the peak (``asinh`` of the value relative to the peak, the page's stretch
until December 2026) leaves everything but the core nearly black: for 81 of
the 1024 MiraBest cutouts with emission the median display value of it (the
pixels of the islands the ``measure`` stage keeps) was below 0.2, and their
thumbnails (112 and 48 pixels across on the page) looked like black squares
with a dot. :func:`stretch` measures brightness in units of the noise
instead, so faint lobes stay visible whatever the peak (the same median is
then 0.22 or more for every one of them, and the median pixel outside the
islands stays below 0.002).
"""

from __future__ import annotations

import numpy as np

from survey_classifier.stats import clipped_background

__all__ = ["stretch", "stretch_prepared", "SOFTENING_SIGMA", "SCALES", "PREPARED_KNEE"]

#: Pixels this many noise units above the background sit at the knee of the
#: asinh: fainter ones are scaled almost linearly (noise stays dark), brighter
#: ones logarithmically (a bright core does not push the lobes into black).
SOFTENING_SIGMA = 3.0
#: How heights above the background become display values: ``asinh`` (the
#: default, above), ``sqrt`` and ``linear`` of the height over the peak, and
#: ``log``, ``log(1 + s/k) / log(1 + s_max/k)`` with the same softening.
SCALES = ("asinh", "sqrt", "linear", "log")
#: Knee of :func:`stretch_prepared`, as a fraction of the peak.
PREPARED_KNEE = 0.05


def stretch(image, *, scale: str = "asinh", softening_sigma: float = SOFTENING_SIGMA) -> np.ndarray:
    """Display intensities in [0, 1] for a 2-D image (NaN shown as 0).

    ``v = asinh(s / k) / asinh(s_max / k)``, with ``s`` the pixel's height
    above the sigma-clipped median in units of the sigma-clipped noise
    (pixels below the background are 0), ``k`` = :data:`SOFTENING_SIGMA`
    and ``s_max`` the brightest pixel. A 3-sigma pixel under a 500-sigma
    core shows at 0.15 and a 10-sigma lobe at 0.33, where the peak-anchored
    stretch gave 0.03 and 0.11. Images without noise (constant, or already
    clipped to zero below their noise, like some survey PNGs) fall back to
    the median absolute deviation of the pixels above the background, then
    to a linear scale to the peak; an image with nothing above its
    background is all zeros.

    Parameters
    ----------
    image : array_like, shape (ny, nx)
    scale : {"asinh", "sqrt", "linear", "log"}
        One of :data:`SCALES` (the page's stretch control).
    softening_sigma : float
        ``k`` of ``asinh`` and ``log`` in noise units: smaller shows faint
        emission brighter.

    Returns
    -------
    ndarray of float64, same shape, values in [0, 1]

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> image = rng.normal(0.0, 1.0, (64, 64))
    >>> image[30:33, 30:33] = 500.0   # a bright core
    >>> image[10:14, 10:14] = 10.0    # a faint lobe
    >>> shown = stretch(image)
    >>> float(shown.max()), round(float(shown[12, 12]), 2), round(float(np.median(shown)), 2)
    (1.0, 0.33, 0.0)
    """
    if scale not in SCALES:
        msg = f"scale must be one of {', '.join(SCALES)}, got {scale!r}"
        raise ValueError(msg)
    if not softening_sigma > 0.0:
        msg = f"softening_sigma must be positive, got {softening_sigma!r}"
        raise ValueError(msg)
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        msg = f"stretch expects a 2-D image, got shape {image.shape}"
        raise ValueError(msg)
    finite = np.isfinite(image)
    if not finite.any():
        return np.zeros(image.shape)
    background, noise = clipped_background(image[finite])
    height = np.where(finite, image - background, 0.0)
    height[height < 0.0] = 0.0
    peak = float(height.max())
    if not peak > 0.0:
        return np.zeros(image.shape)
    if not noise > 0.0:
        lifted = height[height > 0.0]
        noise = 1.4826 * float(np.median(np.abs(lifted - np.median(lifted))))
    if scale == "linear":
        return height / peak
    if scale == "sqrt":
        return np.sqrt(height / peak)
    if not noise > 0.0:
        return height / peak
    softening = softening_sigma * noise
    if scale == "log":
        return np.log1p(height / softening) / np.log1p(peak / softening)
    return np.arcsinh(height / softening) / np.arcsinh(peak / softening)


def stretch_prepared(image, *, knee: float = PREPARED_KNEE) -> np.ndarray:
    """Display intensities in [0, 1] for a prepared image or a SOM prototype (NaN shown as 0).

    ``v = asinh(x / knee) / asinh(1 / knee)`` with ``x`` the image over its
    peak, clipped to [0, 1]. A prepared image has no noise left to anchor
    :func:`stretch` to (its background is zero and the pixels below the
    clip are zeroed), so the knee sits at a fixed fraction of the peak: a lobe
    at 3 % of a bright core shows at 0.15 and one at 10 % at 0.39, where
    dividing by the peak (the member and neuron pictures until December
    2026) showed 0.03 and 0.10, a dot on a black square. The source in its
    neuron's frame and the neuron's prototype are drawn with it alike, so
    the two can be compared.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.zeros((8, 8))
    >>> image[4, 4], image[1, 1], image[6, 2] = 2.0, 0.06, 0.2
    >>> shown = stretch_prepared(image)
    >>> float(shown[4, 4]), round(float(shown[1, 1]), 2), round(float(shown[6, 2]), 2), float(shown[0, 0])
    (1.0, 0.15, 0.39, 0.0)
    """
    if not knee > 0.0:
        msg = f"knee must be positive, got {knee!r}"
        raise ValueError(msg)
    image = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(image.max()) if image.size else 0.0
    if not peak > 0.0:
        return np.zeros(image.shape)
    return np.arcsinh(np.clip(image / peak, 0.0, 1.0) / knee) / np.arcsinh(1.0 / knee)
