"""PNG pictures of a SOM."""

from __future__ import annotations

import numpy as np
from PIL import Image

from survey_classifier.som import RotationInvariantSOM
from survey_classifier.som.plots import save_pictures


def _check_png(path):
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        pixels = np.asarray(picture.convert("L"), dtype=float)
    assert pixels.std() > 5  # something was drawn


def test_cartesian_pictures(tmp_path, small_som, som_images):
    written = save_pictures(small_som, som_images[:40], tmp_path, per_node=3)
    assert sorted(written) == ["best_matches", "hits", "prototypes"]
    for path in written.values():
        _check_png(path)


def test_hexagonal_pictures(tmp_path, som_images):
    som = RotationInvariantSOM(grid_shape=(3, 3), layout="hexagonal", region_diameter=45,
                               n_rotations=24, random_state=0, track_errors=False)  # fmt: skip
    som.fit(som_images[:30])
    for path in save_pictures(som, som_images[:30], tmp_path).values():
        _check_png(path)
