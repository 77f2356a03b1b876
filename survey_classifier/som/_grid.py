"""Map layouts, neighbourhood functions and decay schedules of the SOM.

Layouts follow PINK's conventions so maps can be exchanged:

* ``"cartesian"`` with shape ``(ny, nx)``: node ``i`` sits at row ``i // nx``,
  column ``i % nx``.
* ``"hexagonal"`` with shape ``(d, d)``, ``d`` odd: a hexagon-shaped map of
  ``3 r (r + 1) + 1`` nodes, ``r = (d - 1) / 2``, stored row by row, row ``y``
  (from ``-r`` to ``r``) holding ``d - |y|`` nodes. Neighbouring nodes are at
  distance 1 (hexagonal grid distance, and Euclidean distance in the plane).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "LAYOUTS",
    "NEIGHBOURHOODS",
    "DECAYS",
    "MapGrid",
    "neighbourhood_weights",
    "decayed",
]

LAYOUTS = ("cartesian", "hexagonal")
NEIGHBOURHOODS = ("gaussian", "mexican_hat", "bubble")
DECAYS = ("exponential", "linear", "constant")


class MapGrid:
    """Node positions and grid distances of a SOM layout.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)``; for hexagonal maps ``(d, d)`` with ``d`` odd.
    layout : {"cartesian", "hexagonal"}
    periodic : bool
        Wrap distances around the edges (cartesian maps only).
    """

    def __init__(self, shape, layout="cartesian", periodic=False):
        if layout not in LAYOUTS:
            msg = f"layout must be one of {LAYOUTS}, got {layout!r}"
            raise ValueError(msg)
        shape = tuple(int(n) for n in shape)
        if len(shape) != 2 or min(shape) < 1:
            msg = f"grid shape must be two positive integers, got {shape}"
            raise ValueError(msg)
        self.shape = shape
        self.layout = layout
        self.periodic = bool(periodic)
        if layout == "hexagonal":
            if shape[0] != shape[1] or shape[0] % 2 == 0:
                msg = f"a hexagonal map needs shape (d, d) with d odd (as PINK), got {shape}"
                raise ValueError(msg)
            if self.periodic:
                msg = "periodic boundaries are supported for cartesian maps only"
                raise ValueError(msg)
            radius = shape[0] // 2
            axial = [
                (q, y)
                for y in range(-radius, radius + 1)
                for q in range(max(-radius, -radius - y), min(radius, radius - y) + 1)
            ]
            self.axial = np.array(axial, dtype=int)
            q, y = self.axial[:, 0], self.axial[:, 1]
            # Plane coordinates (x to the right, y down the rows).
            self.positions = np.column_stack([q + y / 2.0, y * np.sqrt(3.0) / 2.0])
            # Axial (q, r) shifted into the d x d box: what the mapping reports as (x, y).
            self.index_xy = np.column_stack([q + radius, y + radius])
        else:
            ny, nx = shape
            rows, cols = np.divmod(np.arange(ny * nx), nx)
            self.positions = np.column_stack([cols, rows]).astype(float)
            self.index_xy = np.column_stack([cols, rows])
        self.n_nodes = len(self.positions)
        self.distances = self._pairwise_distances()

    def _pairwise_distances(self) -> np.ndarray:
        delta = self.positions[:, None, :] - self.positions[None, :, :]
        if self.periodic:
            period = np.array([self.shape[1], self.shape[0]], dtype=float)
            delta = np.abs(delta)
            delta = np.minimum(delta, period - delta)
        return np.sqrt((delta**2).sum(axis=-1))

    def are_neighbours(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """True where nodes ``first[i]`` and ``second[i]`` are adjacent on the grid.

        Adjacent means grid distance 1 (the 4 edge neighbours of a cartesian
        node, the 6 neighbours of a hexagonal node).
        """
        return np.abs(self.distances[first, second] - 1.0) < 1e-6

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "layout": self.layout, "periodic": self.periodic}


def neighbourhood_weights(distance: np.ndarray, width: float, kind: str) -> np.ndarray:
    """Neighbourhood function theta(d) for grid distance ``d`` and ``width``.

    ``"gaussian"``: exp(-d^2 / 2 w^2); ``"mexican_hat"``: (1 - d^2 / w^2)
    exp(-d^2 / 2 w^2) (negative beyond ``w``: pushes neurons apart);
    ``"bubble"``: 1 within ``w`` (inclusive), 0 beyond.
    """
    width = max(float(width), 1e-12)
    ratio = (np.asarray(distance, dtype=np.float64) / width) ** 2
    if kind == "gaussian":
        return np.exp(-0.5 * ratio)
    if kind == "mexican_hat":
        return (1.0 - ratio) * np.exp(-0.5 * ratio)
    if kind == "bubble":
        return (ratio <= 1.0 + 1e-12).astype(np.float64)
    msg = f"neighbourhood must be one of {NEIGHBOURHOODS}, got {kind!r}"
    raise ValueError(msg)


def decayed(start: float, end: float, fraction: float, kind: str) -> float:
    """Value of a schedule at ``fraction`` (0 to 1) of the training steps.

    ``"exponential"``: start * (end / start) ** fraction, i.e. the classic
    start * exp(-s / s_n) with s_n chosen so the value reaches ``end``;
    ``"linear"``: straight line from start to end; ``"constant"``: start.
    """
    if kind == "exponential":
        if start <= 0 or end <= 0:
            msg = f"an exponential schedule needs positive start and end, got {start}, {end}"
            raise ValueError(msg)
        return float(start * (end / start) ** fraction)
    if kind == "linear":
        return float(start + (end - start) * fraction)
    if kind == "constant":
        return float(start)
    msg = f"decay must be one of {DECAYS}, got {kind!r}"
    raise ValueError(msg)
