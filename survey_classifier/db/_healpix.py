"""HEALPix pixels of cutout positions, and pixel ranges covering a cone.

Cutouts store the nested-scheme pixel of their position at order
:data:`~survey_classifier.db.models.HEALPIX_ORDER`. In the nested scheme the
pixels of order ``k`` inside one pixel ``p`` of a coarser order ``j`` are the
contiguous run ``[p * 4**(k-j), (p+1) * 4**(k-j))``, so a cone covered by a
few coarse pixels becomes a few ``BETWEEN`` ranges on one indexed integer
column.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from astropy import units as u
from astropy_healpix import HEALPix

from survey_classifier.db.models import HEALPIX_ORDER

__all__ = ["healpix_of", "cone_ranges"]


def healpix_of(ra_deg, dec_deg, order: int = HEALPIX_ORDER) -> np.ndarray:
    """Nested HEALPix pixel of each position (``-1`` where RA or Dec is missing)."""
    ra = np.asarray(ra_deg, dtype=float)
    dec = np.asarray(dec_deg, dtype=float)
    pixels = np.full(ra.shape, -1, dtype=np.int64)
    good = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90.0)
    if good.any():
        grid = HEALPix(nside=2**order, order="nested")
        pixels[good] = grid.lonlat_to_healpix(ra[good] * u.deg, dec[good] * u.deg)
    return pixels


def _coarse_order(radius_deg: float, fine_order: int) -> int:
    """Order whose pixels are about a third of the radius across (about a hundred cover the cone).

    Finer pixels cover the cone more tightly (fewer sources outside it are
    read, then dropped by their exact separation) but take longer to find:
    astropy-healpix takes about 8 microseconds a pixel, 3 ms for the 385
    pixels of a sixth of 0.5 degrees, 0.9 ms for the 105 of a third, which
    cover about 2.2 times the cone's area (1.5 times with a sixth).
    """
    # pixels of order k are about 58.6 deg / 2**k across
    order = int(math.ceil(math.log2(58.6 * 3.0 / max(radius_deg, 1e-9))))
    return max(0, min(fine_order, order))


@lru_cache(maxsize=32)
def _grid(order: int) -> HEALPix:
    return HEALPix(nside=2**order, order="nested")


def _resolution_deg(order: int) -> float:
    """Square root of a pixel's area (astropy-healpix's ``pixel_resolution``), degrees."""
    return math.degrees(math.sqrt(4.0 * math.pi / (12 * 4**order)))


def cone_ranges(
    ra_deg: float, dec_deg: float, radius_deg: float, order: int = HEALPIX_ORDER, max_ranges: int = 48
) -> list[tuple[int, int]]:
    """Inclusive ranges of order-``order`` nested pixels covering a cone.

    Every position within ``radius_deg`` of (``ra_deg``, ``dec_deg``) has its
    pixel in one of the ranges; some positions outside do too (the caller
    computes exact separations afterwards). At most ``max_ranges`` ranges:
    beyond that the closest ones are bridged.
    """
    coarse = _coarse_order(radius_deg, order)
    grid = _grid(coarse)
    # pad by the largest centre-to-corner distance of a pixel (1.044 times the
    # resolution, measured over the sphere) so that a pixel touching the cone
    # is kept even if only its centre is tested
    pad = 1.05 * _resolution_deg(coarse)
    pixels = grid.cone_search_lonlat(ra_deg * u.deg, dec_deg * u.deg, (radius_deg + pad) * u.deg)
    shift = 4 ** (order - coarse)
    ranges: list[list[int]] = []
    for pixel in np.unique(pixels).tolist():
        low, high = pixel * shift, (pixel + 1) * shift - 1
        if ranges and ranges[-1][1] + 1 == low:
            ranges[-1][1] = high
        else:
            ranges.append([low, high])
    while len(ranges) > max_ranges:  # bridge the smallest gap (a little more sky, fewer ranges)
        gaps = [ranges[i + 1][0] - ranges[i][1] for i in range(len(ranges) - 1)]
        i = int(np.argmin(gaps))
        ranges[i][1] = ranges.pop(i + 1)[1]
    return [(low, high) for low, high in ranges]
