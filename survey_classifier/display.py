"""The one display stretch of survey cutouts, shared by the web page, galleries and plots."""

from __future__ import annotations

import numpy as np

__all__ = ["stretch"]


def stretch(image: np.ndarray) -> np.ndarray:
    """Asinh stretch from the background (the median) to the peak, in [0, 1]; blank pixels as 0.

    Radio cutouts are mostly noise around a zero background: starting at the
    median keeps the noise dark and the asinh brings out faint lobes
    without saturating the core.
    """
    from astropy.visualization import AsinhStretch, ImageNormalize

    image = np.asarray(image, dtype=float)
    finite = np.isfinite(image)
    if not finite.any():
        return np.zeros(image.shape)
    values = image[finite]
    low, high = float(np.median(values)), float(values.max())
    if high <= low:
        return np.zeros(image.shape)
    norm = ImageNormalize(vmin=low, vmax=high, stretch=AsinhStretch(a=0.05), clip=True)
    scaled = np.asarray(norm(np.where(finite, image, low)))
    return np.where(finite, scaled, 0.0)
