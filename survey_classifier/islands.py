"""Islands of emission: the source finding shared by ``measure`` and preprocessing.

Pixels more than ``threshold_sigma`` times the noise above the background
form islands (connected regions); only islands whose brightest pixel
reaches ``seed_sigma`` times the noise are kept (flood at 3 sigma, seed at
5 sigma, as PyBDSF and Aegean do: a 150x150 image of pure noise has some 30
pixels above 3 sigma but almost never one above 5 sigma).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["CONNECTIVITIES", "kept_islands"]

#: Neighbourhoods of the labelling: 8 counts diagonal neighbours as connected, 4 does not.
CONNECTIVITIES = {
    4: ndimage.generate_binary_structure(2, 1),
    8: ndimage.generate_binary_structure(2, 2),
}


def kept_islands(signal, noise, *, threshold_sigma=3.0, seed_sigma=5.0, connectivity=8):
    """Pixels of the kept islands, the island labels and how many were kept.

    Parameters
    ----------
    signal : ndarray, shape (ny, nx)
        Background-subtracted image (blank pixels set to 0).
    noise : float
        The image's noise (e.g. the sigma-clipped standard deviation).
    threshold_sigma : float
        Flood level in units of ``noise``.
    seed_sigma : float or None
        An island is kept only if its peak reaches this many times the
        noise; None keeps every island above the flood level.
    connectivity : {8, 4}

    Returns
    -------
    kept : ndarray of bool
        True on the pixels of the kept islands.
    labels : ndarray of int
        Island number of every pixel above the flood level (0 elsewhere),
        kept or not.
    n_kept : int

    Examples
    --------
    >>> import numpy as np
    >>> signal = np.zeros((6, 6)); signal[1, 1:3] = 6.0; signal[4, 4] = 4.0
    >>> kept, labels, n_kept = kept_islands(signal, 1.0)
    >>> n_kept, int(kept.sum()), int(labels.max())
    (1, 2, 2)
    """
    islands, n_islands = ndimage.label(signal > threshold_sigma * noise, structure=CONNECTIVITIES[connectivity])
    if n_islands and seed_sigma is not None:
        seeded = np.zeros(n_islands + 1, dtype=bool)
        seeded[islands[signal >= seed_sigma * noise]] = True
        seeded[0] = False  # background
        return seeded[islands], islands, int(seeded.sum())
    return islands > 0, islands, int(n_islands)
