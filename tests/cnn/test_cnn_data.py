"""Labelled catalogues: reading FITS and PNG, checks before training, the split."""

import numpy as np
import pytest
from astropy.table import Table

from survey_classifier.cnn.data import (
    load_images,
    read_catalogue,
    read_image,
    source_groups,
    split_indices,
    turn_on_sky,
)
from survey_classifier.errors import CatalogueError
from survey_classifier.io.fits import read_cutout
from survey_classifier.preprocess import PreprocessConfig, preprocess


@pytest.fixture(scope="module")
def mirabest_labels(data_dir):
    return Table.read(data_dir / "mirabest" / "labels.csv", format="ascii.csv")


def test_mirabest_confident_selection(data_dir):
    dataset = read_catalogue(
        data_dir / "mirabest" / "labels.csv",
        label_column="fr_class",
        where={"confidence": "confident", "fr_class": ["FRI", "FRII"]},
        classes=["FRI", "FRII"],
        check_images=False,
    )
    assert dataset.classes == ["FRI", "FRII"]
    # 672 confident sources, of which 17 hybrids are not selected.
    assert np.bincount(dataset.targets).tolist() == [316, 339]
    assert all(path.exists() for path in dataset.paths)
    assert dataset.ra_deg is not None and len(dataset.ra_deg) == len(dataset)


def test_unknown_labels_stop_before_training(data_dir):
    with pytest.raises(CatalogueError, match=r"labels not among .*\{'hybrid': 17\}"):
        read_catalogue(
            data_dir / "mirabest" / "labels.csv", label_column="fr_class",
            where={"confidence": "confident"}, classes=["FRI", "FRII"], check_images=False,
        )


def test_every_problem_is_reported_at_once(tmp_path, mirabest_labels, data_dir):
    rows = mirabest_labels[:12]
    files = [str(data_dir / "mirabest" / "fits" / f) for f in rows["file"]]
    labels = [str(v) for v in rows["fr_class"]]
    broken = tmp_path / "broken.fits"
    broken.write_bytes(b"SIMPLE  =                    T" + b" " * 50 + b"not a header")
    files += [str(tmp_path / "missing.fits"), str(broken), files[0]]
    labels += ["FRI", "FRI", "Compact"]
    table = Table({"file": files, "label": labels})
    catalogue = tmp_path / "catalogue.ecsv"
    table.write(catalogue)
    with pytest.raises(CatalogueError) as caught:
        read_catalogue(catalogue, classes=["FRI", "FRII"], min_per_class=20)
    message = str(caught.value)
    assert "{'Compact': 1}" in message
    assert "missing.fits: file not found" in message
    assert "broken.fits" in message and "2 unreadable image(s)" in message
    assert "class 'FRI' has 14 examples, fewer than 20" in message
    assert "class 'FRII' has 0 examples" in message


def test_missing_column_names_what_exists(tmp_path, mirabest_labels):
    catalogue = tmp_path / "c.csv"
    mirabest_labels[:3].write(catalogue, format="ascii.csv")
    with pytest.raises(CatalogueError, match=r"no column\(s\) \['label'\].*fr_class"):
        read_catalogue(catalogue)


def test_fits_pixels_come_from_the_shared_reader(mirabest_files):
    path = mirabest_files[0]
    np.testing.assert_array_equal(read_image(path), read_cutout(path).data)


def test_turn_on_sky_turns_a_real_cutout_as_the_sky_turns_and_keeps_its_flux(mirabest_files):
    cutout = read_cutout(mirabest_files[0])  # an FR I whose brightest pixel lies 43 pixels from the centre
    pixels = cutout.data
    centre = (np.array(pixels.shape) - 1) / 2
    sky_centre = cutout.wcs.pixel_to_world(*centre[::-1])

    def peak_angle(image):
        """Position angle (east of north, degrees) of the brightest pixel about the cutout's centre."""
        row, column = np.unravel_index(np.argmax(image), image.shape)
        assert np.hypot(*(np.array([row, column]) - centre)) > 40
        return sky_centre.position_angle(cutout.wcs.pixel_to_world(column, row)).deg

    # quarter turns are np.rot90's pixel permutations; on the sky the position angles drop by the turn
    quarter = turn_on_sky(pixels, 90.0)
    np.testing.assert_allclose(quarter, np.rot90(pixels), rtol=0, atol=1e-6 * pixels.max())
    np.testing.assert_allclose(turn_on_sky(pixels, -90.0), np.rot90(pixels, -1), rtol=0, atol=1e-6 * pixels.max())
    assert (peak_angle(pixels) - peak_angle(quarter)) % 360 == pytest.approx(90.0, abs=0.1)
    assert (peak_angle(pixels) - peak_angle(turn_on_sky(pixels, 45.0))) % 360 == pytest.approx(45.0, abs=3.0)
    # any angle: bilinear resampling keeps the flux inside the circle that stays in the frame
    rows, columns = np.indices(pixels.shape)
    inside = np.hypot(rows - centre[0], columns - centre[1]) <= pixels.shape[0] / 2 - 2
    for degrees in (22.5, 30.0, 45.0, 137.0):
        assert turn_on_sky(pixels, degrees)[inside].sum() == pytest.approx(pixels[inside].sum(), rel=0.01)
    # blank pixels count as 0, turned or not
    blank = pixels.copy()
    blank[:10] = np.nan
    assert np.all(turn_on_sky(blank, 0.0)[:10] == 0) and np.isfinite(turn_on_sky(blank, 30.0)).all()


def test_png_goes_through_the_same_preprocess(data_dir):
    dataset = read_catalogue(data_dir / "first4" / "labels.csv", split_column="split",
                             check_images=False)
    assert dataset.classes == ["Bent", "Compact", "FRI", "FRII"]
    config = PreprocessConfig(size=32, crop=100)
    images = load_images(dataset.paths[:3], config)
    assert images.shape == (3, 32, 32, 1)
    raw = read_image(dataset.paths[0])
    assert raw.shape == (300, 300) and raw.max() == 255.0
    np.testing.assert_array_equal(images[0, :, :, 0], preprocess(raw, config))
    assert images.max() == 1.0


def test_split_is_stratified_source_disjoint_and_reproducible(data_dir):
    dataset = read_catalogue(
        data_dir / "mirabest" / "labels.csv", label_column="fr_class",
        where={"confidence": "confident", "fr_class": ["FRI", "FRII"]}, classes=["FRI", "FRII"],
        check_images=False,
    )
    groups = source_groups(dataset.ra_deg, dataset.dec_deg, radius_arcsec=60)
    # MiraBest lists a few sources twice within an arcminute: they share a group.
    assert len(np.unique(groups)) < len(groups)
    parts = split_indices(dataset.targets, groups, test_fraction=0.2, valid_fraction=0.15, seed=0)
    again = split_indices(dataset.targets, groups, test_fraction=0.2, valid_fraction=0.15, seed=0)
    other = split_indices(dataset.targets, groups, test_fraction=0.2, valid_fraction=0.15, seed=1)
    for name in parts:
        np.testing.assert_array_equal(parts[name], again[name])
    assert not np.array_equal(parts["test"], other["test"])
    everything = np.concatenate(list(parts.values()))
    assert np.array_equal(np.sort(everything), np.arange(len(dataset)))
    group_sets = [set(groups[parts[name]]) for name in ("train", "valid", "test")]
    assert not (group_sets[0] & group_sets[1] or group_sets[0] & group_sets[2]
                or group_sets[1] & group_sets[2])
    assert abs(len(parts["test"]) / len(dataset) - 0.2) < 0.02
    overall = dataset.targets.mean()
    for name in ("train", "valid", "test"):
        assert abs(dataset.targets[parts[name]].mean() - overall) < 0.05
