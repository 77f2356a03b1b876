"""PNG images rendered on the server: cutouts (asinh stretch) and the SOM hit map."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

import numpy as np

__all__ = ["cutout_png", "hit_map_png"]

_CACHE: OrderedDict[tuple, bytes] = OrderedDict()
_CACHE_SIZE = 512
_LOCK = threading.Lock()


def _png(rgba: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _stretched(image: np.ndarray) -> np.ndarray:
    """Asinh stretch from the background (the median) to the peak, in [0, 1]; NaN as 0.

    Radio cutouts are mostly noise around a zero background: starting at the
    median keeps the noise dark and the asinh brings out faint lobes
    without saturating the core.
    """
    from astropy.visualization import AsinhStretch, ImageNormalize

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


def cutout_png(path: str, sha256: str | None, *, size: int, cmap: str = "inferno") -> bytes:
    """PNG of the FITS cutout at ``path``, north up as stored, ``size`` pixels across.

    Cached by path, checksum, size and colour map. Raises the reader's
    :class:`~survey_classifier.errors.CutoutReadError` for unreadable files.
    """
    key = (path, sha256, size, cmap)
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    import warnings

    from matplotlib import colormaps
    from PIL import Image

    from survey_classifier.display import stretch
    from survey_classifier.io.fits import read_cutout

    with warnings.catch_warnings():  # quirks were reported when the cutout was classified
        warnings.simplefilter("ignore")
        cutout = read_cutout(path)
    scaled = stretch(cutout.data)[::-1]  # FITS rows run south to north
    rgba = (colormaps[cmap](scaled) * 255).astype(np.uint8)
    image = Image.fromarray(rgba, mode="RGBA")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    png = _png(np.asarray(image))
    with _LOCK:
        _CACHE[key] = png
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return png


def hit_map_png(counts: np.ndarray, *, cell: int = 24, cmap: str = "viridis") -> bytes:
    """PNG of a SOM hit map: ``counts[y, x]`` cutouts per node, one square per node."""
    from matplotlib import colormaps

    counts = np.asarray(counts, dtype=float)
    scaled = np.log1p(counts) / max(np.log1p(counts.max()), 1e-12) if counts.size else counts
    rgba = (colormaps[cmap](scaled) * 255).astype(np.uint8)
    rgba = np.repeat(np.repeat(rgba, cell, axis=0), cell, axis=1)
    return _png(rgba)
