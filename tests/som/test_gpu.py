"""The TensorFlow implementation agrees with the numpy core (run on the CPU here)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.train


def test_tensorflow_training_and_mapping_agree_with_numpy(som_images):
    pytest.importorskip("tensorflow")
    from survey_classifier.som import RotationInvariantSOM
    from survey_classifier.som.gpu import TensorFlowSOM

    settings = dict(grid_shape=(3, 3), region_diameter=45, n_rotations=72, init=som_images[:9],
                    shuffle=False, track_errors=False)  # fmt: skip
    reference = RotationInvariantSOM(**settings).fit(som_images[:20])
    twin = RotationInvariantSOM(**settings)
    twin.initialise(som_images[:20])
    core = TensorFlowSOM(twin, device="/CPU:0")
    core.train_epoch(som_images[:20])
    core.write_back()
    scale = np.abs(reference.neurons_).max()
    assert np.abs(twin.neurons_ - reference.neurons_).max() < 1e-4 * scale
    expected = reference.map(som_images[20:80])
    got = core.map(som_images[20:80])
    assert np.mean(expected["node"] == got["node"]) >= 0.98
    assert np.mean(expected["angle_deg"] == got["angle_deg"]) >= 0.95
    np.testing.assert_allclose(got["distance"], expected["distance"], rtol=1e-3)


def test_tensorflow_minibatch_matches_numpy(som_images):
    pytest.importorskip("tensorflow")
    from survey_classifier.som import RotationInvariantSOM
    from survey_classifier.som.gpu import TensorFlowSOM

    settings = dict(grid_shape=(2, 3), layout="cartesian", region_diameter=45, n_rotations=36,
                    init=som_images[:6], shuffle=False, track_errors=False, batch_size=5,
                    neighbourhood="bubble", sigma=(1.5, 0.5))  # fmt: skip
    reference = RotationInvariantSOM(**settings).fit(som_images[:30])
    twin = RotationInvariantSOM(**settings)
    twin.initialise(som_images[:30])
    core = TensorFlowSOM(twin, device="/CPU:0")
    core.train_epoch(som_images[:30])
    core.write_back()
    assert twin.step_ == 30
    scale = np.abs(reference.neurons_).max()
    assert np.abs(twin.neurons_ - reference.neurons_).max() < 1e-4 * scale


def test_one_trace_per_batch_size(som_images):
    """Epochs of other lengths reuse the compiled loop: a warm-up call compiles
    what a timed epoch runs (a retrace inside a timed GPU epoch would dominate it)."""
    pytest.importorskip("tensorflow")
    from survey_classifier.som import RotationInvariantSOM
    from survey_classifier.som.gpu import TensorFlowSOM

    som = RotationInvariantSOM(grid_shape=(2, 2), region_diameter=45, n_rotations=36,
                               init=som_images[:4], track_errors=False, batch_size=3)  # fmt: skip
    som.initialise(som_images[:20])
    core = TensorFlowSOM(som, device="/CPU:0")
    for count in (7, 13, 20):
        core.train_epoch(som_images[:count])
    assert core._compiled[3].experimental_get_tracing_count() == 1
    assert som.step_ == 40
