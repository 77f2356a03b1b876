"""PNG images rendered on the server: cutouts (the display stretch), SOM neurons and the SOM hit map."""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

import numpy as np

__all__ = ["cutout_png", "hit_map_png", "array_png"]

_CACHE: OrderedDict[tuple, bytes] = OrderedDict()
_CACHE_SIZE = 512
_LOCK = threading.Lock()


def _png(rgba: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def cutout_png(path: str, sha256: str | None, *, size: int, cmap: str = "inferno", scale: str = "asinh",
               softening_sigma: float | None = None) -> bytes:
    """PNG of the FITS cutout at ``path``, north up as stored, ``size`` pixels across.

    Drawn with :func:`survey_classifier.display.stretch` (``scale``,
    ``softening_sigma``). Cached by path, checksum, size, colour map and
    stretch. Raises the reader's
    :class:`~survey_classifier.errors.CutoutReadError` for unreadable files.
    """
    from survey_classifier.display import SOFTENING_SIGMA

    softening_sigma = SOFTENING_SIGMA if softening_sigma is None else float(softening_sigma)
    key = (path, sha256, size, cmap, scale, softening_sigma)
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    import warnings

    from survey_classifier.display import stretch
    from survey_classifier.io.fits import read_cutout

    with warnings.catch_warnings():  # quirks were reported when the cutout was classified
        warnings.simplefilter("ignore")
        cutout = read_cutout(path)
    png = array_png(stretch(cutout.data, scale=scale, softening_sigma=softening_sigma), size=size, cmap=cmap)
    with _LOCK:
        _CACHE[key] = png
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return png


def array_png(values: np.ndarray, *, size: int, cmap: str = "inferno") -> bytes:
    """PNG of display values in [0, 1] (rows from south to north, as FITS stores them), ``size`` pixels across."""
    from matplotlib import colormaps
    from PIL import Image

    rgba = (colormaps[cmap](np.asarray(values)[::-1]) * 255).astype(np.uint8)
    image = Image.fromarray(rgba, mode="RGBA")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return _png(np.asarray(image))


def hit_map_png(counts: np.ndarray, *, cell: int = 24, cmap: str = "viridis") -> bytes:
    """PNG of a SOM hit map: ``counts[y, x]`` cutouts per node, one square per node."""
    from matplotlib import colormaps

    counts = np.asarray(counts, dtype=float)
    scaled = np.log1p(counts) / max(np.log1p(counts.max()), 1e-12) if counts.size else counts
    rgba = (colormaps[cmap](scaled) * 255).astype(np.uint8)
    rgba = np.repeat(np.repeat(rgba, cell, axis=0), cell, axis=1)
    return _png(rgba)
