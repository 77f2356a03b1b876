"""Training, mapping and persistence of RotationInvariantSOM on real cutouts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from survey_classifier.errors import ModelError, NotFittedError
from survey_classifier.som import RotationInvariantSOM


def _som(**params):
    defaults = dict(grid_shape=(3, 3), neuron_size=64, region_diameter=45, n_rotations=36,
                    random_state=0, track_errors=True)  # fmt: skip
    defaults.update(params)
    return RotationInvariantSOM(**defaults)


def test_training_lowers_quantization_error(som_images):
    som = _som(n_epochs=3).fit(som_images)
    untrained = _som(n_epochs=1, learning_rate=(1e-9, 1e-9), decay="constant").fit(som_images)
    errors = [record["quantization_error"] for record in som.history_]
    assert len(errors) == 3
    assert errors[-1] < untrained.history_[0]["quantization_error"]
    assert 0.0 <= som.history_[-1]["topographic_error"] <= 1.0
    assert som.history_[-1]["learning_rate"] == pytest.approx(0.01)


def test_online_update_equals_direct_formula(som_images):
    """The lazy-scaled rank-1 update gives W + lr*theta*(x_rot - W) exactly."""
    som = _som(n_epochs=1, shuffle=False, track_errors=False).fit(som_images[:5])
    before = som.neurons_.copy()
    spectra = som.polar_.to_fourier(som_images[5:6])
    lr, width = som.schedule(som.step_)
    distances = som.map(som_images[5:6], return_distances=True)
    som._train_step(spectra)
    from survey_classifier.som._grid import neighbourhood_weights
    from survey_classifier.som._polar import rotate_fourier

    node = distances["node"][0]
    shift = round(distances["angle_deg"][0] / (360 / som.n_rotations))
    rotated = rotate_fourier(spectra, [shift], [distances["flip"][0]], som.n_rotations)[0]
    theta = lr * neighbourhood_weights(som.grid_.distances[node], width, "gaussian")
    expected = before + theta * (rotated.T[:, :, None] - before)
    np.testing.assert_allclose(som.neurons_, expected, rtol=1e-4, atol=1e-5)
    power = np.abs(som.neurons_) ** 2
    norms = np.einsum("mkn,k,m->n", power, som.polar_.ring_weights, som.polar_.parseval)
    np.testing.assert_allclose(som.neuron_norms_, norms, rtol=1e-4)


@pytest.mark.parametrize("layout, shape", [("cartesian", (3, 4)), ("hexagonal", (3, 3))])
@pytest.mark.parametrize("neighbourhood", ["gaussian", "mexican_hat", "bubble"])
def test_layouts_and_neighbourhoods_train(som_images, layout, shape, neighbourhood):
    som = _som(grid_shape=shape, layout=layout, neighbourhood=neighbourhood, n_epochs=2,
               sigma=(1.5, 0.5), learning_rate=(0.3, 0.02))  # fmt: skip
    som.fit(som_images[:60])
    assert som.prototypes_.shape == (som.grid_.n_nodes, 64, 64)
    assert np.all(np.isfinite(som.prototypes_))
    errors = [record["quantization_error"] for record in som.history_]
    if neighbourhood != "mexican_hat":  # its negative lobe pushes neurons apart by design
        assert errors[-1] < errors[0] * 1.05
    assert np.isfinite(errors).all()


def test_minibatch_and_periodic_and_random_init(som_images):
    som = _som(batch_size=16, periodic=True, init="random", n_epochs=2, flip=False)
    som.fit(som_images)
    assert som.history_[1]["quantization_error"] < som.history_[0]["quantization_error"]
    mapping = som.map(som_images[:10])
    assert not mapping["flip"].any()


def test_mapping_is_rotation_invariant(small_som, som_images):
    """A cutout turned by a multiple of the step maps to the same node and distance."""
    images = som_images[:12]
    step = 360 / small_som.n_rotations
    turned = np.stack([np.rot90(image) for image in images])  # exact 90 degree turns
    first, second = small_som.map(images), small_som.map(turned)
    assert np.mean(first["node"] == second["node"]) >= 0.9
    np.testing.assert_allclose(first["distance"], second["distance"], rtol=0.03)
    # np.rot90 turns by -90 degrees in our convention (origin="lower"), so the
    # angle that aligns the turned cutout is 90 degrees more (less when flipped)
    same = (first["node"] == second["node"]) & (first["flip"] == second["flip"])
    sign = np.where(first["flip"][same], -1, 1)
    gap = (first["angle_deg"][same] - second["angle_deg"][same] + sign * 90) % 360
    assert np.all(np.minimum(gap, 360 - gap) <= step + 1e-6)


def test_mapping_outputs(small_som, som_images):
    mapping = small_som.map(som_images[:7], return_distances=True)
    assert mapping["node_distances"].shape == (7, 16)
    rows = np.arange(7)
    np.testing.assert_allclose(mapping["node_distances"][rows, mapping["node"]], mapping["distance"], rtol=1e-5)
    assert np.all(mapping["node_distances"].min(axis=1) == mapping["node_distances"][rows, mapping["node"]])
    assert set(np.unique(mapping["node_x"])) <= set(range(4))
    assert np.all((mapping["angle_deg"] >= 0) & (mapping["angle_deg"] < 360))
    assert small_som.transform(som_images[:3]).shape == (3, 16)


def test_save_load_roundtrip_and_checkpoint(tmp_path, som_images, som_config):
    som = _som(n_epochs=2, preprocess_config=som_config, checkpoint_path=str(tmp_path / "ckpt.npz"))
    som.fit(som_images[:50])
    path = som.save(tmp_path / "som.npz")
    loaded = RotationInvariantSOM.load(path)
    assert loaded.preprocess_dict_ == som_config.to_dict()
    assert loaded.history_ == som.history_
    a, b = som.map(som_images[50:70]), loaded.map(som_images[50:70])
    for key in ("node", "flip", "angle_deg"):
        np.testing.assert_array_equal(a[key], b[key])
    # the checkpoint resumes: one more epoch continues the schedule
    resumed = RotationInvariantSOM.load(tmp_path / "ckpt.npz")
    assert resumed.step_ == 100
    resumed.partial_fit(som_images[:50])
    assert resumed.step_ == 150 and len(resumed.history_) == 3


def test_bad_map_files_give_clear_errors(tmp_path, small_som):
    text = tmp_path / "notes.npz"
    text.write_text("not a map")
    with pytest.raises(ModelError, match="not a survey-classifier SOM file"):
        RotationInvariantSOM.load(text)
    with pytest.raises(ModelError, match="not found"):
        RotationInvariantSOM.load(tmp_path / "missing.npz")
    meta = small_som.metadata()
    meta["format_version"] = 99
    future = tmp_path / "future.npz"
    np.savez(future, neurons=small_som.neurons_, metadata=np.array(json.dumps(meta)))
    with pytest.raises(ModelError, match="version 99 is not supported"):
        RotationInvariantSOM.load(future)
    meta["format_version"] = 1
    meta["polar"]["n_rings"] = 3
    meta["params"]["region_diameter"] = 30
    shrunk = tmp_path / "mismatch.npz"
    np.savez(shrunk, neurons=small_som.neurons_, metadata=np.array(json.dumps(meta)))
    with pytest.raises(ModelError, match="does not match the settings"):
        RotationInvariantSOM.load(shrunk)


def test_mismatched_settings_are_refused(small_som, som_images):
    small_som.check_settings(n_rotations=60, flip=True, region_diameter=45, region_shape="circle")
    with pytest.raises(ModelError, match="n_rotations=360 .trained with 60"):
        small_som.check_settings(n_rotations=360)
    with pytest.raises(ModelError, match="region_shape='square'"):
        small_som.check_settings(region_shape="square")
    with pytest.raises(ModelError, match="flip=False"):
        small_som.check_settings(flip=False, region_diameter=45)
    with pytest.raises(ModelError, match="neuron_size=32"):
        small_som.check_settings(neuron_size=32)
    small = ndimage.zoom(som_images[:2], (1, 0.75, 0.75), order=1)
    with pytest.raises(ValueError, match="trained on 64x64 images; got 48x48"):
        small_som.map(small)


def test_unfitted_and_invalid(som_images):
    with pytest.raises(NotFittedError):
        _som().map(som_images[:2])
    with pytest.raises(ValueError, match="exceeds the neuron size"):
        _som(neuron_size=32, region_diameter=40).fit(som_images[:5])
    with pytest.raises(ValueError, match="NaN"):
        _som().fit(np.full((3, 64, 64), np.nan, np.float32))
    with pytest.raises(ValueError, match="init"):
        _som(init="zeros").fit(som_images[:5])
