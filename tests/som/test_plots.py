"""PNG pictures of a SOM."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from survey_classifier.som import RotationInvariantSOM
from survey_classifier.som.plots import save_pictures, u_matrix


def _check_png(path):
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        pixels = np.asarray(picture.convert("L"), dtype=float)
    assert pixels.std() > 5  # something was drawn


def test_cartesian_pictures(tmp_path, small_som, som_images):
    written = save_pictures(small_som, som_images[:40], tmp_path, per_node=3)
    assert sorted(written) == ["best_matches", "hits", "prototypes", "tiles", "umatrix"]
    for path in written.values():
        _check_png(path)
    with Image.open(written["tiles"]) as tiles:
        assert tiles.size == (4 * 56, 4 * 56)  # one 56-pixel square per node, as the page lays them


def test_u_matrix_is_the_mean_distance_to_neighbours(small_som):
    values = u_matrix(small_som)
    prototypes = small_som.prototypes_.reshape(16, -1)
    corner = np.mean([np.linalg.norm(prototypes[0] - prototypes[n]) for n in (1, 4)])
    assert values[0] == pytest.approx(corner, rel=1e-4)
    assert values.shape == (16,) and np.all(values > 0)


def test_hexagonal_pictures(tmp_path, som_images):
    som = RotationInvariantSOM(grid_shape=(3, 3), layout="hexagonal", region_diameter=45,
                               n_rotations=24, random_state=0, track_errors=False)  # fmt: skip
    som.fit(som_images[:30])
    for path in save_pictures(som, som_images[:30], tmp_path).values():
        _check_png(path)
