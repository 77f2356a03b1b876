"""The measure stage against sources of known flux and size, and on real FIRST cutouts."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from astropy.stats import sigma_clipped_stats
from scipy.stats import spearmanr

from survey_classifier.cutout import Cutout, CutoutSource
from survey_classifier.errors import StageConfigError
from survey_classifier.io import read_cutout
from survey_classifier.stages.base import CutoutFailure, check_result
from survey_classifier.stages.measure import MeasureStage
from survey_classifier.stages.registry import available_stages, load_stage
from survey_classifier.stats import clipped_background
from survey_classifier.synthetic import make_synthetic_cutouts, render_components
from survey_classifier.testing import check_stage

SCALE = 1.8  # arcsec per pixel
BEAM_FWHM = 5.4  # arcsec
BEAM_SIGMA_PX = BEAM_FWHM / (2 * math.sqrt(2 * math.log(2))) / SCALE
NOISE = 1.5e-4  # Jy/beam
SHAPE = (150, 150)
CENTRE = 74.5


def make_cutout(components, *, seed=0, noise=NOISE, beam_arcsec=None, scale=SCALE, name="synthetic"):
    """A cutout holding Gaussian components convolved with the FIRST beam, plus white noise."""
    image = render_components(SHAPE, components, beam_sigma_px=BEAM_SIGMA_PX)
    image += np.random.default_rng(seed).normal(0.0, noise, SHAPE)
    cutout = Cutout(
        source=CutoutSource(path=f"{name}.fits"),
        hdu=0,
        data=image.astype(np.float32),
        sha256=name,
        pixel_scale_arcsec=scale,
    )
    if beam_arcsec is not None:
        cutout.beam_major_arcsec, cutout.beam_minor_arcsec = beam_arcsec
    return cutout


def point(x, y, flux):
    return (x, y, flux, 0.0, 0.0, 0.0)


def expected_radius_px(peak, threshold):
    """Distance from a point source's centre at which it falls to the threshold."""
    return BEAM_SIGMA_PX * math.sqrt(2 * math.log(peak / threshold))


@pytest.mark.parametrize("flux", [0.005, 0.05, 0.5])
def test_point_source_flux_is_recovered(flux):
    result = MeasureStage().measure(make_cutout([point(CENTRE, CENTRE, flux)], seed=1))
    assert result["n_islands"] == 1
    # the source sits where four pixels meet, so no pixel centre catches its peak
    brightest_pixel = render_components(SHAPE, [point(CENTRE, CENTRE, flux)], beam_sigma_px=BEAM_SIGMA_PX).max()
    assert brightest_pixel < 0.9 * flux
    assert result["peak_flux_jy"] == pytest.approx(brightest_pixel, abs=4 * NOISE)
    # the wings below the threshold are lost: a fraction threshold/peak
    assert result["integrated_flux_jy"] == pytest.approx(flux, rel=0.03 + 3 * NOISE / flux)
    assert result["integrated_flux_jy"] < flux * 1.01
    assert result["noise_jy"] == pytest.approx(NOISE, rel=0.05)
    assert result["threshold_jy"] == pytest.approx(3 * result["noise_jy"])
    assert result["beam_used"] == [5.4, 5.4] and result["beam_from_header"] is False
    assert result["centroid_offset_arcsec"] < 0.2
    expected_las = 2 * expected_radius_px(flux, result["threshold_jy"]) * SCALE
    assert result["las_arcsec"] == pytest.approx(expected_las, abs=2 * SCALE)


def test_extended_gaussian_flux_is_recovered():
    component = (CENTRE, CENTRE, 0.2, 8.0, 3.0, math.radians(30))
    result = MeasureStage().measure(make_cutout([component], seed=2))
    assert result["integrated_flux_jy"] == pytest.approx(0.2, rel=0.04)
    assert result["n_islands"] == 1


@pytest.mark.parametrize("separation_px", [20.0, 45.0, 80.0])
def test_largest_angular_size_of_a_double(separation_px):
    angle = math.radians(35)
    dx, dy = 0.5 * separation_px * math.cos(angle), 0.5 * separation_px * math.sin(angle)
    flux = 0.03
    components = [point(CENTRE + dx, CENTRE + dy, flux), point(CENTRE - dx, CENTRE - dy, flux)]
    result = MeasureStage().measure(make_cutout(components, seed=3))
    assert result["n_islands"] == 2
    expected = (separation_px + 2 * expected_radius_px(flux, result["threshold_jy"])) * SCALE
    assert result["las_arcsec"] == pytest.approx(expected, abs=2 * SCALE)
    assert result["integrated_flux_jy"] == pytest.approx(2 * flux, rel=0.05)
    assert result["centroid_offset_arcsec"] < 0.5  # symmetric about the centre


def test_centroid_offset_of_an_off_centre_source():
    result = MeasureStage().measure(make_cutout([point(CENTRE + 12, CENTRE - 5, 0.05)], seed=4))
    assert result["centroid_offset_arcsec"] == pytest.approx(13 * SCALE, abs=0.1)


def test_unequal_double_pulls_the_centroid_to_the_brighter_side():
    components = [point(CENTRE + 20, CENTRE, 0.03), point(CENTRE - 20, CENTRE, 0.01)]
    result = MeasureStage().measure(make_cutout(components, seed=5))
    # flux-weighted: (0.03 * 20 - 0.01 * 20) / 0.04 = 10 px
    assert result["centroid_offset_arcsec"] == pytest.approx(10 * SCALE, abs=0.5)


def test_asymmetry_about_the_centre():
    """0 for a double symmetric about the centre, (3 - 1) / (3 + 1) for lobes of 3:1, 1 when one-sided."""
    stage = MeasureStage()
    pair = [point(CENTRE + 20, CENTRE + 9, 0.03), point(CENTRE - 20, CENTRE - 9, 0.03)]
    symmetric = stage.measure(make_cutout(pair, seed=6))
    unequal = stage.measure(make_cutout([point(CENTRE + 20, CENTRE, 0.03), point(CENTRE - 20, CENTRE, 0.01)], seed=6))
    bent = stage.measure(make_cutout([point(CENTRE + 20, CENTRE, 0.03), point(CENTRE, CENTRE + 20, 0.03)], seed=6))
    one_sided = stage.measure(make_cutout([point(CENTRE + 15, CENTRE - 4, 0.05)], seed=6))
    assert symmetric["asymmetry"] < 0.05
    assert unequal["asymmetry"] == pytest.approx(0.5, abs=0.05)
    assert bent["asymmetry"] > 0.95 and one_sided["asymmetry"] > 0.95


def test_blank_pixels_do_not_pass_for_asymmetry():
    """Emission whose turned partner falls on blank pixels (a survey edge) is left out, not called one-sided."""
    stage = MeasureStage()
    components = [
        point(CENTRE + 20, CENTRE, 0.03), point(CENTRE - 20, CENTRE, 0.03), point(CENTRE + 8, CENTRE + 45, 0.03)
    ]
    cutout = make_cutout(components, seed=7)
    assert stage.measure(cutout)["asymmetry"] > 0.25  # the third source has no counterpart
    cutout.data[:40, :] = np.nan  # its partner region (around row 29) is blank
    blanked = stage.measure(cutout)
    assert blanked["n_islands"] == 3 and blanked["asymmetry"] < 0.05
    alone = make_cutout([point(CENTRE + 8, CENTRE + 45, 0.03)], seed=7)
    alone.data[:40, :] = np.nan
    assert stage.measure(alone)["asymmetry"] is None


def test_pure_noise_has_no_island():
    result = MeasureStage().measure(make_cutout([], seed=6))
    assert result["n_islands"] == 0
    assert result["integrated_flux_jy"] == 0.0
    assert result["las_arcsec"] is None and result["centroid_offset_arcsec"] is None
    assert 2 * NOISE < result["peak_flux_jy"] < 5 * NOISE  # the brightest noise pixel
    unseeded = MeasureStage(seed_sigma=None).measure(make_cutout([], seed=6))
    assert unseeded["n_islands"] > 5  # 3-sigma noise peaks, which seeding removes


def test_faint_island_without_a_seed_is_dropped():
    # peak 4 sigma: above the 3-sigma threshold, below the 5-sigma seed
    components = [point(CENTRE, CENTRE, 0.05), point(CENTRE + 40, CENTRE, 4 * NOISE)]
    result = MeasureStage().measure(make_cutout(components, seed=7, noise=NOISE / 10))
    assert result["n_islands"] == 2  # with the noise ten times lower, it is a 40-sigma seed
    result = MeasureStage(seed_sigma=50.0).measure(make_cutout(components, seed=7, noise=NOISE / 10))
    assert result["n_islands"] == 1
    assert result["las_arcsec"] < 20 * SCALE


def test_connectivity_four_splits_diagonal_neighbours():
    cutout = make_cutout([], seed=8)
    cutout.data[60, 60] = cutout.data[61, 61] = 0.01  # touching by a corner only
    assert MeasureStage(connectivity=8).measure(cutout)["n_islands"] == 1
    assert MeasureStage(connectivity=4).measure(cutout)["n_islands"] == 2
    assert MeasureStage().measure(cutout)["las_arcsec"] == pytest.approx(math.sqrt(2) * SCALE)


def test_single_pixel_and_single_row_sizes():
    cutout = make_cutout([], seed=9)
    cutout.data[30, 40] = 0.01
    assert MeasureStage().measure(cutout)["las_arcsec"] == 0.0
    cutout.data[30, 40:60] = 0.01  # a horizontal line of 20 pixels
    assert MeasureStage().measure(cutout)["las_arcsec"] == pytest.approx(19 * SCALE)
    cutout.data[30, 40:60] = 0.0
    cutout.data[20:50, 40] = 0.01  # a vertical line: collinear for Qhull
    assert MeasureStage().measure(cutout)["las_arcsec"] == pytest.approx(29 * SCALE)


def test_header_beam_is_used_for_the_flux():
    flux = 0.05
    components = [point(CENTRE, CENTRE, flux)]
    default = MeasureStage().measure(make_cutout(components, seed=10))
    # the same pixels, claimed to come from a beam twice as large in area
    header = MeasureStage().measure(make_cutout(components, seed=10, beam_arcsec=(BEAM_FWHM * 2, BEAM_FWHM)))
    assert header["beam_from_header"] is True and header["beam_used"] == [10.8, 5.4]
    assert header["integrated_flux_jy"] == pytest.approx(default["integrated_flux_jy"] / 2)
    other_default = MeasureStage(default_beam_arcsec=(5.4, 2.7)).measure(make_cutout(components, seed=10))
    assert other_default["integrated_flux_jy"] == pytest.approx(2 * default["integrated_flux_jy"])


def test_blank_pixels_are_ignored():
    cutout = make_cutout([point(CENTRE, CENTRE, 0.05)], seed=11)
    reference = MeasureStage().measure(cutout)
    cutout.data[:, :20] = np.nan
    result = MeasureStage().measure(cutout)
    assert result["integrated_flux_jy"] == pytest.approx(reference["integrated_flux_jy"], rel=1e-3)
    assert math.isfinite(result["noise_jy"])


def test_failures_name_the_reason():
    constant = make_cutout([], noise=0.0)
    blank = make_cutout([point(CENTRE, CENTRE, 0.05)], seed=3)
    blank.data[:] = np.nan
    outcomes = MeasureStage().process([constant, blank])
    assert isinstance(outcomes[0], CutoutFailure) and "noise is zero" in outcomes[0].reason
    assert isinstance(outcomes[1], CutoutFailure) and "blank" in outcomes[1].reason


def test_without_pixel_scale_measures_in_pixels_only():
    components = [point(CENTRE, CENTRE - 10, 0.05), point(CENTRE, CENTRE + 10, 0.05)]
    with_scale = MeasureStage().measure(make_cutout(components, seed=4))
    no_scale = MeasureStage().measure(make_cutout(components, seed=4, scale=None))
    assert no_scale["pixel_scale_missing"] is True and "pixel_scale_missing" not in with_scale
    for key in ("peak_flux_jy", "noise_jy", "n_islands", "las_pixels", "centroid_offset_pixels"):
        assert no_scale[key] == with_scale[key], key
    assert no_scale["n_islands"] == 2 and no_scale["las_pixels"] >= 20
    assert no_scale["integrated_flux_jy"] is None
    assert no_scale["las_arcsec"] is None and no_scale["centroid_offset_arcsec"] is None
    assert with_scale["las_arcsec"] == pytest.approx(with_scale["las_pixels"] * 1.8)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"threshold_sigma": 0}, "threshold_sigma"),
        ({"seed_sigma": 2.0}, "seed_sigma"),
        ({"connectivity": 6}, "connectivity"),
        ({"default_beam_arcsec": (5.4,)}, "default_beam_arcsec"),
        ({"default_beam_arcsec": (5.4, -1)}, "default_beam_arcsec"),
    ],
)
def test_invalid_parameters(params, match):
    with pytest.raises(StageConfigError, match=match):
        MeasureStage(**params)


def test_clipped_background_equals_astropy(mirabest_files):
    for path in mirabest_files[::100]:
        data = read_cutout(path).data
        _, median, std = sigma_clipped_stats(data, sigma=3.0, maxiters=5)
        ours = clipped_background(data)
        assert ours[0] == pytest.approx(median, abs=1e-9)
        assert ours[1] == pytest.approx(std, rel=1e-5)
    assert all(math.isnan(v) for v in clipped_background(np.full(4, np.nan)))


def test_on_mirabest_size_tracks_the_catalogue(mirabest_dir):
    """On single-island sources the LAS ranks like the catalogue's sizes."""
    with open(mirabest_dir / "labels.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))[::3]
    stage = MeasureStage()
    las, sizes = [], []
    for row in rows:
        result = stage.measure(read_cutout(mirabest_dir / "fits" / row["file"]))
        check_result(stage, result)
        assert result["peak_flux_jy"] > result["threshold_jy"]
        if result["n_islands"] == 1:
            las.append(result["las_arcsec"])
            sizes.append(float(row["size_arcsec"]))
    assert len(las) > 60
    assert spearmanr(las, sizes).statistic > 0.7


def test_on_mirabest_odd_morphologies_are_less_symmetric(mirabest_dir):
    """Hybrids, bent tails and double-doubles are on average less point-symmetric than standard FR I/II."""
    with open(mirabest_dir / "labels.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))[1::4]
    stage = MeasureStage()
    odd, standard = [], []
    for row in rows:
        value = stage.measure(read_cutout(mirabest_dir / "fits" / row["file"]))["asymmetry"]
        assert value is None or 0.0 <= value <= 1.0
        if value is not None:
            is_odd = row["fr_class"] == "hybrid" or row["morphology"] != "standard"
            (odd if is_odd else standard).append(value)
    assert len(odd) >= 15 and len(standard) > 200
    assert np.median(odd) > np.median(standard) + 0.1


def test_synthetic_truth_is_recovered(tmp_path):
    truth = make_synthetic_cutouts(tmp_path, n=12, seed=5)
    stage = MeasureStage()
    for row in truth:
        cutout = read_cutout(tmp_path / row["file"])
        result = stage.measure(cutout)
        assert result["beam_from_header"] is True
        flux = result["integrated_flux_jy"]
        assert flux < 1.05 * row["flux_jy"]  # emission below the threshold is lost, never gained
        if row["kind"] == "compact":
            assert result["n_islands"] == 1
            assert flux == pytest.approx(row["flux_jy"], rel=0.1)
        elif row["kind"] == "frii":  # bright hotspots at the outer edges
            assert flux == pytest.approx(row["flux_jy"], rel=0.2)
            assert result["las_arcsec"] >= 0.95 * row["separation_arcsec"]
        else:  # FRI jets fade into the noise before their ends
            assert flux > 0.6 * row["flux_jy"]
            assert result["las_arcsec"] < row["separation_arcsec"] + 20


def test_registered_through_the_entry_point():
    assert available_stages()["measure"] is MeasureStage
    stage = load_stage("measure", threshold_sigma=4.0)
    assert stage.get_params()["threshold_sigma"] == 4.0


def test_conformance_kit(mirabest_files, tmp_path):
    cutouts = [read_cutout(path) for path in mirabest_files[:4]]
    cutouts.append(make_cutout([], scale=None, name=str(tmp_path / "no_wcs")))  # a failure among them
    check_stage(MeasureStage(), cutouts)
