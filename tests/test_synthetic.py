"""The synthetic FIRST-like cutouts: valid FITS, deterministic, faithful to their truth."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest

from survey_classifier.io import expand_inputs, read_cutout
from survey_classifier.stats import clipped_background
from survey_classifier.synthetic import (
    BEAM_FWHM_ARCSEC,
    KINDS,
    NOISE_JY,
    PIXEL_SCALE_ARCSEC,
    make_synthetic_cutouts,
    render_components,
)

BEAM_SIGMA_PX = BEAM_FWHM_ARCSEC / (2 * math.sqrt(2 * math.log(2))) / PIXEL_SCALE_ARCSEC
BEAM_AREA_PX = 2 * math.pi * BEAM_SIGMA_PX**2


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    directory = tmp_path_factory.mktemp("synthetic")
    truth = make_synthetic_cutouts(directory, n=9, seed=3)
    return directory, truth


def test_files_and_truth_table(synthetic):
    directory, truth = synthetic
    assert truth.colnames == ["file", "ra_deg", "dec_deg", "kind", "flux_jy", "separation_arcsec", "pa_deg"]
    assert list(truth["kind"]) == list(KINDS) * 3
    assert sorted(p.name for p in directory.glob("*.fits")) == sorted(truth["file"])
    assert (directory / "catalogue.csv").exists()
    compact = truth[truth["kind"] == "compact"]
    assert np.all(compact["separation_arcsec"] == 0.0)
    doubles = truth[truth["kind"] != "compact"]
    assert np.all(doubles["separation_arcsec"] >= 20 * PIXEL_SCALE_ARCSEC)


def test_cutouts_read_back_like_first(synthetic):
    directory, truth = synthetic
    for row in truth:
        cutout = read_cutout(directory / row["file"])
        assert cutout.warnings == []
        assert cutout.data.shape == (150, 150) and cutout.data.dtype == np.float32
        assert cutout.pixel_scale_arcsec == pytest.approx(PIXEL_SCALE_ARCSEC)
        assert cutout.beam_major_arcsec == pytest.approx(BEAM_FWHM_ARCSEC)
        assert cutout.bunit == "JY/BEAM"
        assert cutout.ra_deg == pytest.approx(row["ra_deg"], abs=1e-9)
        assert cutout.dec_deg == pytest.approx(row["dec_deg"], abs=1e-9)
        _, noise = clipped_background(cutout.data)
        assert noise == pytest.approx(NOISE_JY, rel=0.15)


def test_image_holds_the_flux_of_the_truth(synthetic):
    directory, truth = synthetic
    for row in truth:
        cutout = read_cutout(directory / row["file"])
        flux = float(np.sum(cutout.data, dtype=np.float64)) / BEAM_AREA_PX
        # noise correlated over a beam adds about NOISE * sqrt(n_beams) to the sum
        n_beams = cutout.data.size / BEAM_AREA_PX
        assert flux == pytest.approx(row["flux_jy"], abs=5 * NOISE_JY * math.sqrt(n_beams) + 0.01 * row["flux_jy"])


def test_render_components_conserves_flux_and_peaks_at_the_flux_for_a_point():
    image = render_components((101, 101), [(50.0, 50.0, 0.02, 0.0, 0.0, 0.0)], beam_sigma_px=BEAM_SIGMA_PX)
    assert image.max() == pytest.approx(0.02)  # a point source peaks at its flux, in Jy/beam
    assert image.sum() / BEAM_AREA_PX == pytest.approx(0.02, rel=1e-6)
    extended = render_components((101, 101), [(50.0, 50.0, 0.02, 6.0, 2.0, 0.7)], beam_sigma_px=BEAM_SIGMA_PX)
    assert extended.sum() / BEAM_AREA_PX == pytest.approx(0.02, rel=1e-6)
    assert extended.max() < 0.02


def test_doubles_are_extended_along_their_position_angle(synthetic):
    directory, truth = synthetic
    for row in truth[truth["kind"] == "frii"]:
        data = read_cutout(directory / row["file"]).data
        signal = data > 10 * NOISE_JY
        rows, columns = np.nonzero(signal)
        # the two brightest regions lie along the PA (east of north; east is -x)
        pa = math.radians(row["pa_deg"])
        along = -(columns - 74.5) * math.sin(pa) + (rows - 74.5) * math.cos(pa)
        across = (columns - 74.5) * math.cos(pa) + (rows - 74.5) * math.sin(pa)
        assert np.ptp(along) * PIXEL_SCALE_ARCSEC == pytest.approx(row["separation_arcsec"], abs=15)
        assert np.ptp(across) < np.ptp(along) / 2


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    first = make_synthetic_cutouts(tmp_path / "a", n=3, seed=11)
    again = make_synthetic_cutouts(tmp_path / "b", n=3, seed=11)
    make_synthetic_cutouts(tmp_path / "c", n=3, seed=12)

    def digest(directory, name):
        return hashlib.sha256((directory / name).read_bytes()).hexdigest()

    for name in first["file"]:
        assert digest(tmp_path / "a", name) == digest(tmp_path / "b", name)
        assert digest(tmp_path / "a", name) != digest(tmp_path / "c", name)
    assert list(first["ra_deg"]) == list(again["ra_deg"])


def test_catalogue_feeds_expand_inputs(synthetic):
    directory, truth = synthetic
    sources = expand_inputs(directory / "catalogue.csv")
    assert [s.path for s in sources] == [str(directory / name) for name in truth["file"]]
    assert [s.extra["kind"] for s in sources] == list(truth["kind"])
    assert sources[0].ra_deg == pytest.approx(truth["ra_deg"][0])


def test_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="n must be at least 1"):
        make_synthetic_cutouts(tmp_path, n=0)
    with pytest.raises(ValueError, match="size must be at least 32"):
        make_synthetic_cutouts(tmp_path, size=8)
