"""Robust statistics shared by preprocessing and the stages."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["clipped_background"]


def clipped_background(values, *, sigma=3.0, maxiters=5):
    """Sigma-clipped median and standard deviation of the finite values.

    The same statistics as ``astropy.stats.sigma_clipped_stats(values,
    sigma=sigma, maxiters=maxiters)`` (median centre, population standard
    deviation; values further than ``sigma`` standard deviations from the
    median are dropped until none is or ``maxiters`` passes are done), found
    several times faster: the values are sorted once, so the kept values are
    always a contiguous slice, whose median is its middle element and whose
    standard deviation comes from one sum and one dot product over it.

    Parameters
    ----------
    values : array_like
        Any shape; NaN and infinite values are ignored.
    sigma : float
        Clipping limit in standard deviations, both sides.
    maxiters : int
        Largest number of clipping passes.

    Returns
    -------
    median, std : float
        NaN when there is no finite value.
    """
    data = np.asarray(values).ravel()
    data = np.sort(data[np.isfinite(data)])
    if data.size == 0:
        return math.nan, math.nan
    pivot = float(data[data.size // 2])
    centred = data.astype(np.float64) - pivot  # keeps the sums of squares accurate

    def median_std(low, high):
        count = high - low
        middle = low + count // 2
        median = data[middle] if count % 2 else 0.5 * (float(data[middle - 1]) + float(data[middle]))
        kept = centred[low:high]
        mean = float(kept.sum()) / count
        variance = float(np.dot(kept, kept)) / count - mean * mean
        return float(median), math.sqrt(max(variance, 0.0))

    low, high = 0, data.size
    median, std = median_std(low, high)
    for _ in range(maxiters):
        new_low = int(np.searchsorted(data, median - sigma * std, side="left"))
        new_high = int(np.searchsorted(data, median + sigma * std, side="right"))
        if (new_low, new_high) == (low, high) or new_high <= new_low:
            break
        low, high = new_low, new_high
        median, std = median_std(low, high)
    return median, std
