"""PINK binary format version 2: round trips and refusals."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from survey_classifier.errors import ModelError
from survey_classifier.som import RotationInvariantSOM, pink


def test_data_file_layout_and_roundtrip(tmp_path, som_images):
    path = pink.write_data(tmp_path / "images.bin", som_images[:5], comment="five cutouts")
    raw = path.read_bytes()
    assert raw.startswith(b"# five cutouts\n# END OF HEADER\n")
    header = struct.unpack_from("<8i", raw, len(b"# five cutouts\n# END OF HEADER\n"))
    assert header == (2, 0, 0, 5, 0, 2, 64, 64)
    np.testing.assert_array_equal(pink.read_data(path), som_images[:5])


def test_som_roundtrip_maps_alike(tmp_path, small_som, som_images):
    path = pink.write_som(tmp_path / "som.bin", small_som)
    neurons, grid = pink.read_som(path)
    assert neurons.shape == (16, 64, 64) and grid.shape == (4, 4)
    np.testing.assert_allclose(neurons, small_som.prototypes_, atol=1e-6)
    imported = pink.som_from_pink(path, image_size=64, region_diameter=45, n_rotations=60)
    a, b = small_som.map(som_images[:40]), imported.map(som_images[:40])
    assert np.mean(a["node"] == b["node"]) >= 0.9
    assert np.median(np.abs(b["distance"] / a["distance"] - 1)) < 0.02


def test_hexagonal_som_mapping_and_rotations(tmp_path, som_images):
    som = RotationInvariantSOM(grid_shape=(3, 3), layout="hexagonal", region_diameter=45,
                               n_rotations=24, random_state=0, track_errors=False)  # fmt: skip
    som.fit(som_images[:30])
    neurons, grid = pink.read_som(pink.write_som(tmp_path / "hex.bin", som))
    assert grid.layout == "hexagonal" and neurons.shape[0] == 7
    mapping = som.map(som_images[:6], return_distances=True)
    distances, grid = pink.read_mapping(pink.write_mapping(tmp_path / "map.bin", mapping["node_distances"], som.grid_))
    np.testing.assert_array_equal(distances, mapping["node_distances"])
    angles = np.deg2rad(mapping["node_angles_deg"])
    flips, read_angles, grid = pink.read_rotations(
        pink.write_rotations(tmp_path / "rot.bin", mapping["node_flips"], angles, som.grid_)
    )
    np.testing.assert_array_equal(flips, mapping["node_flips"])
    np.testing.assert_allclose(read_angles, angles, rtol=1e-6)
    assert (tmp_path / "rot.bin").stat().st_size > 6 * 7 * 5  # 1 + 4 bytes per node


def test_wrong_files_are_refused(tmp_path, som_images, small_som):
    data = pink.write_data(tmp_path / "data.bin", som_images[:2])
    with pytest.raises(ModelError, match="expected a PINK SOM file, found a data file"):
        pink.read_som(data)
    old = tmp_path / "v1.bin"
    old.write_bytes(struct.pack("<4i", 1, 1, 0, 0))
    with pytest.raises(ModelError, match="version 1 is not supported"):
        pink.read_som(old)
    truncated = tmp_path / "cut.bin"
    truncated.write_bytes(pink.write_som(tmp_path / "som.bin", small_som).read_bytes()[:-10])
    with pytest.raises(ModelError, match="bytes of data where its header announces"):
        pink.read_som(truncated)
    doubles = tmp_path / "f64.bin"
    doubles.write_bytes(struct.pack("<8i", 2, 0, 1, 1, 0, 2, 2, 2) + bytes(32))
    with pytest.raises(ModelError, match="data type 1 is not supported"):
        pink.read_data(doubles)
    with pytest.raises(ModelError, match="not a survey-classifier SOM"):
        RotationInvariantSOM.load(tmp_path / "som.bin")


def test_imported_map_measures_against_the_pixels_in_the_file(tmp_path, som_images):
    """PINK compares images with the neurons in its file; so does an imported map,
    not with their polar round trip (which loses pixel-scale detail)."""
    from survey_classifier.som.reference import circular_mask, reference_distances

    inside = circular_mask(64, 45)
    neurons = np.where(inside, som_images[100:104], 0.0).astype(np.float32)  # real cutouts: sharp
    source = RotationInvariantSOM(grid_shape=(2, 2), region_diameter=45, n_rotations=90,
                                  track_errors=False)  # fmt: skip
    source._build()
    source.set_neurons(source.polar_.to_fourier(neurons, "cubic"), cartesian=neurons)
    path = pink.write_som(tmp_path / "sharp.bin", source)
    np.testing.assert_array_equal(pink.read_som(path)[0], neurons)
    imported = pink.som_from_pink(path, image_size=64, region_diameter=45, n_rotations=90)
    images = som_images[:6]
    mapping = imported.map(images)
    round_trip = imported.polar_.to_cartesian(imported.neurons_.transpose(2, 1, 0), 64)
    worse = 0
    for row, image in enumerate(images):
        reference = reference_distances(image, neurons, n_rotations=90, region_diameter=45)
        assert mapping["distance"][row] ** 2 == pytest.approx(reference.min(), rel=1e-5)
        assert mapping["node"][row] == np.unravel_index(reference.argmin(), reference.shape)[1]
        smoothed = reference_distances(image, round_trip, n_rotations=90, region_diameter=45)
        worse += abs(smoothed.min() / reference.min() - 1) > 0.01
    assert worse > 0  # the round trip alone would not have matched PINK
