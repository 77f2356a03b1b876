"""Where a source is and how large: the window that morphology preprocessing cuts out.

Private helpers of :func:`survey_classifier.preprocess.preprocess` (its
``centre`` and ``extent`` options). Coordinates are in pixels of the input
image with pixel ``i`` covering ``[i, i + 1)``, so pixel centres sit at
``i + 1/2``.

The window is resampled with :func:`window_matrix`: output pixel ``j``
takes the mean, over the part of the input it covers, of the image's
bilinear interpolant (each input pixel is a tent of half-width one pixel
around its centre). Shrinking, that is close to the area average of
:func:`survey_classifier.preprocess.resample_matrix` (slightly smoother);
enlarging, it is bilinear interpolation averaged over each output pixel.
Outside the image the interpolant is zero, so a window that reaches past
an edge is padded with zeros, the value of clipped background.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["emission_centre", "enclosing_radius", "reaching_islands", "window_matrix", "resample_window"]


def emission_centre(signal, kept) -> tuple[float, float] | None:
    """Flux-weighted centroid ``(x, y)`` of the kept island pixels, or None if there are none."""
    rows, columns = np.nonzero(kept)
    if rows.size == 0:
        return None
    weights = signal[rows, columns].astype(np.float64)
    total = weights.sum()
    return float((weights * (columns + 0.5)).sum() / total), float((weights * (rows + 0.5)).sum() / total)


def reaching_islands(kept, labels, reach) -> np.ndarray:
    """Pixels of the kept islands that come within ``reach`` pixels of the image centre.

    The distance of an island is that of its nearest pixel centre to the
    centre of the image (the catalogue position of a cutout). When no island
    reaches that far, the nearest one is the source. ``labels`` numbers the
    islands as :func:`survey_classifier.islands.kept_islands` does.

    >>> labels = np.zeros((9, 9), dtype=int); labels[4, 4:6] = 1; labels[0, 0] = 2
    >>> int(reaching_islands(labels > 0, labels, 2.0).sum()), int(reaching_islands(labels == 2, labels, 2.0).sum())
    (2, 1)
    """
    numbers = np.unique(labels[kept])
    if numbers.size == 0:
        return kept
    ny, nx = labels.shape
    rows, columns = np.ogrid[:ny, :nx]
    distance = np.hypot(columns + 0.5 - nx / 2.0, rows + 0.5 - ny / 2.0)
    nearest = np.asarray(ndimage.minimum(distance, labels, numbers))
    chosen = numbers[nearest <= reach] if (nearest <= reach).any() else numbers[[np.argmin(nearest)]]
    return kept & np.isin(labels, chosen)


def enclosing_radius(signal, kept, centre, fraction) -> float | None:
    """Radius (pixels) about ``centre`` holding ``fraction`` of the kept islands' flux.

    The pixels are taken in order of distance from ``centre`` (to their
    centres) until their summed signal reaches ``fraction`` of the total;
    the radius is that pixel's distance plus half a pixel. Unrelated
    sources in a cutout are mostly faint, so a fraction below 1 leaves
    them out while keeping the lobes of the source itself (on the 1027
    MiraBest cutouts, twice the 0.9 radius about the cutout centre is a
    median 1.3 times the catalogue's largest angular size, against 2.2
    for the farthest island pixel). None when there is no kept pixel.
    """
    rows, columns = np.nonzero(kept)
    if rows.size == 0:
        return None
    x, y = centre
    distance = np.hypot(columns + 0.5 - x, rows + 0.5 - y)
    order = np.argsort(distance)
    cumulative = np.cumsum(signal[rows, columns].astype(np.float64)[order])
    reached = int(np.searchsorted(cumulative, fraction * cumulative[-1] * (1.0 - 1e-12)))
    return float(distance[order[min(reached, order.size - 1)]]) + 0.5


def _tent_integral(u):
    """Integral from -inf to ``u`` of the unit tent ``max(0, 1 - |t|)``."""
    u = np.clip(u, -1.0, 1.0)
    return np.where(u <= 0.0, 0.5 * (u + 1.0) ** 2, 1.0 - 0.5 * (1.0 - u) ** 2)


def window_matrix(n_in: int, start: float, length: float, n_out: int) -> np.ndarray:
    """Matrix (n_out x n_in) resampling the window ``[start, start + length)`` to ``n_out`` pixels.

    Row ``j`` holds the weights of the input pixels in the mean of the
    bilinear interpolant over output pixel ``j``, ``[start + j h,
    start + (j + 1) h)`` with ``h = length / n_out``.

    >>> matrix = window_matrix(4, 0.5, 3.0, 3)   # a window between pixel centres
    >>> bool(np.allclose(matrix @ np.ones(4), 1.0))
    True
    """
    step = length / n_out
    low = start + step * np.arange(n_out)[:, None]
    centres = np.arange(n_in)[None, :] + 0.5
    weights = (_tent_integral(low + step - centres) - _tent_integral(low - centres)) / step
    return weights.astype(np.float32)


def resample_window(image, centre, side, size) -> np.ndarray:
    """The square of ``side`` pixels centred on ``centre`` = (x, y), as ``size`` x ``size`` pixels."""
    ny, nx = image.shape
    x, y = centre
    rows = window_matrix(ny, y - side / 2.0, side, size)
    columns = window_matrix(nx, x - side / 2.0, side, size)
    return rows @ image @ columns.T
