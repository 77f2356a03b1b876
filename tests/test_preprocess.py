"""The shared preprocessing: the default recipe unchanged, the morphology options on real cutouts."""

from __future__ import annotations

import numpy as np
import pytest

from survey_classifier.io.fits import read_cutout
from survey_classifier.islands import kept_islands
from survey_classifier.preprocess import PreprocessConfig, preprocess, resample_matrix
from survey_classifier.stats import clipped_background

MORPHOLOGY = PreprocessConfig(size=64, centre="emission", extent="islands", circle_diameter=64, scaling="peak")


@pytest.fixture(scope="module")
def cutouts(mirabest_files):
    """Twelve MiraBest cutouts of all classes (every 90th file)."""
    return [read_cutout(path) for path in mirabest_files[::90]]


def _signal_and_islands(data):
    finite = np.isfinite(data)
    background, noise = clipped_background(data[finite])
    signal = np.where(finite, data - np.float32(background), np.float32(0.0))
    return signal, noise, kept_islands(signal, noise)[0]


def test_default_recipe_is_the_one_models_were_trained_with(cutouts):
    # the recipe of PreprocessConfig(size=64) before the morphology options, written out
    for cutout in cutouts:
        signal, noise, _ = _signal_and_islands(cutout.data)
        signal[signal < 3.0 * noise] = 0.0
        shrunk = resample_matrix(150, 64) @ signal @ resample_matrix(150, 64).T
        expected = (shrunk - shrunk.min()) / (shrunk.max() - shrunk.min())
        assert np.array_equal(preprocess(cutout.data, PreprocessConfig(size=64)), expected.astype(np.float32))
    old_record = {"size": 64, "crop": None, "background": "sigma_clip", "clip_sigma": 3.0, "scaling": "minmax",
                  "version": 1}  # fmt: skip
    assert PreprocessConfig.from_dict(old_record) == PreprocessConfig(size=64)


def test_islands_extent_makes_the_source_fill_the_circle(cutouts):
    for cutout in cutouts:
        image = preprocess(cutout.data, MORPHOLOGY)
        assert image.max() == 1.0 and image.min() == 0.0
        offsets = np.arange(64) - 31.5
        radius = np.hypot(offsets[:, None], offsets[None, :])
        assert not image[radius > 32].any()  # PINK's circular region
        flux = image.sum()
        if flux == 0:
            continue
        # 90 % of the islands' flux lies within source_fill of the radius (0.8 x 32 px)
        # around the emission centre; the resampling spreads it by about a pixel
        assert image[radius <= 0.8 * 32 + 2].sum() >= 0.85 * flux
    widths = [np.count_nonzero(preprocess(c.data, MORPHOLOGY).max(axis=0) > 0.05) for c in cutouts]
    default_widths = [np.count_nonzero(preprocess(c.data, PreprocessConfig(size=64)).max(axis=0) > 0.05)
                      for c in cutouts]  # fmt: skip
    assert np.median(widths) > 2 * np.median(default_widths)


def test_emission_centring_follows_the_source(cutouts):
    # the same source seen in two windows of the cutout, 20 pixels apart
    config = PreprocessConfig(size=48, centre="emission", extent="islands", islands_only=True, scaling="peak")
    compared = 0
    for cutout in cutouts:
        signal, noise, kept = _signal_and_islands(cutout.data)
        rows, columns = np.nonzero(kept)
        if rows.size == 0 or rows.min() < 22 or columns.min() < 22 or rows.max() > 127 or columns.max() > 127:
            continue  # the source must lie inside both windows
        first = preprocess(cutout.data[:130, :130], config)
        second = preprocess(cutout.data[20:, 20:], config)
        assert np.corrcoef(first.ravel(), second.ravel())[0, 1] > 0.98
        assert np.abs(first - second).max() < 0.25  # noise estimates and island edges differ a little
        fixed = PreprocessConfig(size=48, extent="islands", islands_only=True, scaling="peak")
        still = preprocess(cutout.data[:130, :130], fixed), preprocess(cutout.data[20:, 20:], fixed)
        assert np.corrcoef(still[0].ravel(), still[1].ravel())[0, 1] < 0.5  # about the cutout centre
        compared += 1
    assert compared >= 3


def test_fixed_angular_size_needs_the_pixel_scale(cutouts):
    cutout = cutouts[0]
    config = PreprocessConfig(size=64, extent="arcsec", crop_arcsec=150 * 1.8)
    whole = preprocess(cutout.data, config, pixel_scale_arcsec=cutout.pixel_scale_arcsec)
    assert cutout.pixel_scale_arcsec == pytest.approx(1.8)
    default = preprocess(cutout.data, PreprocessConfig(size=64))
    assert np.corrcoef(whole.ravel(), default.ravel())[0, 1] > 0.97  # the same window, resampled a bit smoother
    half = cutout.preprocessed(PreprocessConfig(size=64, extent="arcsec", crop_arcsec=75 * 1.8))
    assert np.count_nonzero(half > 0.05) > 2 * np.count_nonzero(whole > 0.05)
    with pytest.raises(ValueError, match="needs the pixel scale"):
        preprocess(cutout.data, config)


def test_total_scaling_and_islands_only(cutouts):
    config = PreprocessConfig(size=64, centre="emission", extent="islands", islands_only=True, scaling="total")
    for cutout in cutouts:
        image = preprocess(cutout.data, config)
        assert image.sum(dtype=np.float64) == pytest.approx(1.0, rel=1e-5) or not image.any()
    # a 4-sigma blob far from the source is above the 3-sigma clip but in no kept island
    data = cutouts[1].data.copy()
    signal, noise, kept = _signal_and_islands(data)
    assert not kept[5:9, 5:9].any()
    data[5:9, 5:9] = (data - signal)[0, 0] + 4.0 * noise  # background + 4 sigma
    kept_only = preprocess(data, PreprocessConfig(size=150, islands_only=True))
    clipped = preprocess(data, PreprocessConfig(size=150))
    assert clipped[5:9, 5:9].all() and not kept_only[5:9, 5:9].any()
    assert np.array_equal(kept_only > 0, kept & (clipped > 0))


def test_stretches_lift_faint_emission(cutouts):
    base = {"size": 64, "centre": "emission", "extent": "islands", "islands_only": True, "scaling": "peak"}
    for cutout in cutouts[:4]:
        linear = preprocess(cutout.data, PreprocessConfig(**base))
        emission = linear > 0
        for stretch in ("sqrt", "log"):
            lifted = preprocess(cutout.data, PreprocessConfig(**base, stretch=stretch))
            assert np.array_equal(lifted > 0, emission) and lifted.max() == 1.0
            assert np.median(lifted[emission]) > np.median(linear[emission])
            # the order of the pixels is kept
            ranks = [np.argsort(np.argsort(image[emission])) for image in (lifted, linear)]
            assert np.corrcoef(*ranks)[0, 1] > 0.99
        squared = preprocess(cutout.data, PreprocessConfig(**base, stretch="square"))
        assert np.array_equal(squared > 0, emission) and squared.max() == 1.0
        assert np.median(squared[emission]) < np.median(linear[emission])


def test_island_reach_leaves_unrelated_field_sources_out(cutouts):
    reach = PreprocessConfig(**{**MORPHOLOGY.to_dict(), "island_reach": 20.0})
    moved = 0
    for cutout in cutouts[:6]:
        signal, noise, kept = _signal_and_islands(cutout.data)
        if kept[:20, :20].any() or not kept[55:95, 55:95].any():
            continue  # needs an empty corner and a source at the catalogue position
        # an unrelated 50-sigma source in the corner, far from the catalogue position
        data = cutout.data.copy()
        data[6:10, 6:10] = (data - signal)[6:10, 6:10] + 50.0 * noise
        # (the clipped noise estimate moves a hair with the added pixels)
        assert np.abs(preprocess(data, reach) - preprocess(cutout.data, reach)).max() < 0.01
        moved += np.abs(preprocess(data, MORPHOLOGY) - preprocess(cutout.data, MORPHOLOGY)).max() > 0.1
        zeroed = preprocess(data, PreprocessConfig(size=150, island_reach=20.0, scaling="none"))
        assert not zeroed[6:10, 6:10].any() and zeroed[55:95, 55:95].any()
    assert moved >= 2  # without the reach the field source drags the window off the source
    # a source away from the centre is still found: the nearest island is the source
    data = cutouts[0].data
    shifted = np.roll(data, (60, 60), axis=(0, 1))
    assert preprocess(shifted, reach).any()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"centre": "peak"}, "centre must be one of"),
        ({"extent": "arcsec"}, "crop_arcsec is needed"),
        ({"extent": "islands", "crop": 64}, "applies to extent='fixed' only"),
        ({"extent": "islands", "source_fill": 1.5}, r"must lie in \(0, 1\]"),
        ({"islands_only": True, "background": "none"}, "need background='sigma_clip'"),
        ({"island_sigma": (5.0, 3.0)}, "0 < flood <= seed"),
        ({"circle_diameter": 200}, "fit the 64-pixel image"),
        ({"island_reach": -1.0}, "island_reach must be None or a distance"),
        ({"island_reach": 20.0, "background": "none"}, "island_reach need background"),
        ({"scaling": "max"}, "scaling must be one of"),
        ({"stretch": "log", "background": "none"}, "stretch='log' needs background"),
        ({"stretch": "sqrt", "clip_sigma": None}, "needs clipping"),
    ],
)
def test_refuses_inconsistent_options(options, message):
    with pytest.raises(ValueError, match=message):
        PreprocessConfig(size=64, **options)


def test_every_choice_travels_in_the_record():
    record = MORPHOLOGY.to_dict()
    assert {"centre", "extent", "source_fill", "source_flux_fraction", "crop_min", "islands_only",
            "island_sigma", "island_reach", "circle_diameter", "crop_arcsec"} <= set(record)  # fmt: skip
    assert PreprocessConfig.from_dict(record) == MORPHOLOGY
    assert PreprocessConfig.from_dict(record).digest() == MORPHOLOGY.digest() != PreprocessConfig(size=64).digest()
    with pytest.raises(ValueError, match="unknown preprocessing parameters"):
        PreprocessConfig.from_dict({**record, "gamma": 0.5})
