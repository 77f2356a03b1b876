"""Real MiraBest cutouts, preprocessed, for the SOM tests."""

from __future__ import annotations

import numpy as np
import pytest

from survey_classifier.io.fits import read_cutout
from survey_classifier.preprocess import PreprocessConfig

#: Every 7th MiraBest file: 147 cutouts of all classes.
STRIDE = 7


@pytest.fixture(scope="session")
def som_cutouts(mirabest_files):
    return [read_cutout(path) for path in mirabest_files[::STRIDE]]


@pytest.fixture(scope="session")
def som_config():
    return PreprocessConfig(size=64)


@pytest.fixture(scope="session")
def som_images(som_cutouts, som_config):
    """(147, 64, 64) cutouts preprocessed as for the shipped SOM (whole 150 px -> 64 px)."""
    return np.stack([cutout.preprocessed(som_config) for cutout in som_cutouts])


@pytest.fixture(scope="session")
def native_images(som_cutouts):
    """Central 64 x 64 pixels at FIRST's own 1.8 arcsec sampling."""
    config = PreprocessConfig(size=64, crop=64)
    return np.stack([cutout.preprocessed(config) for cutout in som_cutouts])


@pytest.fixture(scope="session")
def small_som(som_images, som_config):
    """A 4x4 map trained for 2 epochs with 60 rotations (fast), plus its images."""
    from survey_classifier.som import RotationInvariantSOM

    som = RotationInvariantSOM(
        grid_shape=(4, 4), neuron_size=64, region_diameter=45, n_rotations=60, n_epochs=2,
        random_state=3, preprocess_config=som_config,
    )  # fmt: skip
    return som.fit(som_images)
