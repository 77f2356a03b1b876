"""Map layouts, neighbourhoods and schedules."""

from __future__ import annotations

import numpy as np
import pytest

from survey_classifier.som._grid import MapGrid, decayed, neighbourhood_weights


def test_cartesian_neighbours_and_periodic_wrap():
    grid = MapGrid((4, 5))
    assert grid.n_nodes == 20
    corner, inner = 0, 6
    assert np.sum(grid.are_neighbours(np.full(20, inner), np.arange(20))) == 4
    assert np.sum(grid.are_neighbours(np.full(20, corner), np.arange(20))) == 2
    periodic = MapGrid((4, 5), periodic=True)
    assert np.sum(periodic.are_neighbours(np.full(20, corner), np.arange(20))) == 4
    assert periodic.distances[0, 4] == pytest.approx(1.0)  # wraps along x
    assert grid.distances[0, 4] == pytest.approx(4.0)


def test_hexagonal_layout_matches_pink():
    grid = MapGrid((21, 21), "hexagonal")
    assert grid.n_nodes == 3 * 10 * 11 + 1  # PINK's hexagon of dimension 21
    neighbours = grid.are_neighbours(np.zeros(grid.n_nodes, int), np.arange(grid.n_nodes))
    centre = grid.n_nodes // 2
    around = grid.are_neighbours(np.full(grid.n_nodes, centre), np.arange(grid.n_nodes))
    assert around.sum() == 6
    assert neighbours.sum() == 3  # a corner of the hexagon
    # every neighbour pair is at Euclidean distance 1 in the plane
    assert np.allclose(grid.distances[centre, around], 1.0)


def test_bad_layouts_are_refused():
    with pytest.raises(ValueError, match="d odd"):
        MapGrid((10, 10), "hexagonal")
    with pytest.raises(ValueError, match="cartesian maps only"):
        MapGrid((5, 5), "hexagonal", periodic=True)
    with pytest.raises(ValueError, match="layout"):
        MapGrid((5, 5), "triangular")


def test_neighbourhood_functions():
    d = np.array([0.0, 1.0, 2.0, 3.0])
    gauss = neighbourhood_weights(d, 2.0, "gaussian")
    assert gauss[0] == 1.0 and np.all(np.diff(gauss) < 0)
    hat = neighbourhood_weights(d, 2.0, "mexican_hat")
    assert hat[0] == 1.0 and hat[2] == pytest.approx(0.0) and hat[3] < 0
    assert list(neighbourhood_weights(d, 2.0, "bubble")) == [1, 1, 1, 0]
    with pytest.raises(ValueError, match="neighbourhood"):
        neighbourhood_weights(d, 1.0, "cone")


def test_schedules():
    assert decayed(0.5, 0.01, 0.0, "exponential") == pytest.approx(0.5)
    assert decayed(0.5, 0.01, 1.0, "exponential") == pytest.approx(0.01)
    assert decayed(0.5, 0.01, 0.5, "exponential") == pytest.approx(np.sqrt(0.5 * 0.01))
    assert decayed(0.5, 0.1, 0.5, "linear") == pytest.approx(0.3)
    assert decayed(0.5, 0.1, 0.7, "constant") == 0.5
