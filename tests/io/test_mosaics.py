"""Cutting cutouts from synthetic FIRST-like mosaic tiles: pixels, WCS, truth, tiles that meet, refusals."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.table import Table
from astropy.wcs import WCS
from scipy import optimize

from survey_classifier.cutout import CutoutSource
from survey_classifier.errors import CutoutReadError
from survey_classifier.footprints import index_tiles, plan_cutouts
from survey_classifier.io.mosaics import CutoutSize, MosaicCutoutSpec, read_mosaic_cutout
from survey_classifier.io.tiles import TileCache
from survey_classifier.synthetic import BEAM_FWHM_ARCSEC, PIXEL_SCALE_ARCSEC, make_synthetic_mosaic

BEAM_SIGMA_PX = BEAM_FWHM_ARCSEC / (2 * math.sqrt(2 * math.log(2))) / PIXEL_SCALE_ARCSEC
BEAM_AREA_PX = 2 * math.pi * BEAM_SIGMA_PX**2
#: Positions (pixels on the survey grid of a 2x2 mosaic of 1024-pixel tiles overlapping by 128) where
#: a 150-pixel cutout fits on no single tile: on the seams and at the corner where the four tiles meet (not at
#: whole or half pixels, where the rounding of a box to pixels is a tie).
SEAM_POSITIONS = [(960.3, 400.6), (1500.2, 955.3), (957.6, 958.2), (400.2, 962.7)]


@pytest.fixture(scope="module")
def noisy(tmp_path_factory):
    """A 2x2 mosaic cut from one survey image, with FIRST's noise; 30 random sources plus 4 on the seams."""
    folder = tmp_path_factory.mktemp("noisy")
    truth = make_synthetic_mosaic(folder, n_sources=34, seed=3)
    return folder, truth


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The sources alone (no noise), each tile with a SIN projection of its own and NAXIS=4, as FIRST's."""
    folder = tmp_path_factory.mktemp("clean")
    rng = np.random.default_rng(5)
    positions = [(x, y) for x in (150.0, 500.0, 1400.0, 1750.0) for y in (150.0, 500.0, 1400.0, 1750.0)]
    positions = [(x + rng.uniform(-0.5, 0.5), y + rng.uniform(-0.5, 0.5)) for x, y in positions] + SEAM_POSITIONS
    truth = make_synthetic_mosaic(folder, positions=positions, seed=5, shared_grid=False, degenerate_axes=True,
                                  noise_jy=0.0)
    return folder, truth


def _sources(truth, **columns):
    return [CutoutSource(path="", catalogue_id=str(r["id"]), ra_deg=float(r["ra_deg"]), dec_deg=float(r["dec_deg"]),
                         **columns) for r in truth]


def _planned(engine, folder, truth, size="150"):
    return plan_cutouts(_sources(truth), index_tiles(engine, str(folder / "tiles")), CutoutSize.parse(size))


def _cut_all(planned):
    cutouts = {}
    with TileCache() as tiles:
        for source in planned:
            cutouts[source.catalogue_id] = read_mosaic_cutout(source, tiles=tiles)
    return cutouts


def _beam_fit(cutout, ra_deg, dec_deg):
    """Flux (Jy) and world position of a point source: a beam-shaped Gaussian fitted near the given position."""
    x0, y0 = cutout.wcs.wcs_world2pix([[ra_deg, dec_deg]], 0)[0]
    ys, xs = np.mgrid[0 : cutout.data.shape[0], 0 : cutout.data.shape[1]]
    near = (xs - x0) ** 2 + (ys - y0) ** 2 < 6**2
    values = cutout.data[near]

    def residual(p):
        flux, x, y = p
        model = flux * np.exp(-((xs[near] - x) ** 2 + (ys[near] - y) ** 2) / (2 * BEAM_SIGMA_PX**2))
        return model - values

    fit = optimize.least_squares(residual, [float(values.max()), x0, y0])
    peak, x, y = fit.x
    ra, dec = cutout.wcs.wcs_pix2world([[x, y]], 0)[0]
    return peak, x - x0, y - y0, ra, dec


def test_sizes_and_paths_are_read_back():
    assert CutoutSize.parse("150") == CutoutSize(150.0, "px") == CutoutSize.parse("150px")
    assert CutoutSize.parse("270arcsec") == CutoutSize(270.0, "arcsec") == CutoutSize.parse("4.5arcmin")
    assert CutoutSize.parse("0.075deg").pixels(1.8) == 150 and CutoutSize.parse("270arcsec").pixels(1.5) == 180
    for bad in ("", "150.5", "-3", "12 parsecs", "0px"):
        with pytest.raises(ValueError, match="cutout size"):
            CutoutSize.parse(bad)
    spec = MosaicCutoutSpec(("s3://survey/first/14000+32270E.fits", "/data/b c.fits"), 140.1234567, -2.5,
                            CutoutSize.parse("270arcsec"))
    assert spec.path == "mosaic:s3://survey/first/14000+32270E.fits|/data/b c.fits#140.1234567,-2.5000000,270arcsec"
    assert MosaicCutoutSpec.parse(spec.path) == spec
    with pytest.raises(CutoutReadError, match="not a mosaic cutout path"):
        MosaicCutoutSpec.parse("mosaic:/data/tile.fits#140.1,2.5")


def test_a_cutout_is_what_cutout2d_cuts(noisy, engine):
    folder, truth = noisy
    for size in ("150", "151", "270arcsec"):
        planned = _planned(engine, folder, truth, size)
        cutouts = _cut_all(planned)
        for source in planned[::5]:
            tile = MosaicCutoutSpec.parse(source.path).tiles[0]
            if "|" in source.path:
                continue
            with fits.open(tile) as hdus:
                wcs = WCS(hdus[0].header)
                position = wcs.wcs_world2pix([[source.ra_deg, source.dec_deg]], 0)[0]
                n = CutoutSize.parse(size).pixels(1.8)
                expected = Cutout2D(hdus[0].data, tuple(position), (n, n), wcs=wcs, mode="strict")
            cutout = cutouts[source.catalogue_id]
            assert cutout.data.dtype == np.float32 and cutout.data.shape == (n, n)
            np.testing.assert_array_equal(cutout.data, expected.data)
            np.testing.assert_allclose(cutout.wcs.wcs.crpix, expected.wcs.wcs.crpix, rtol=0, atol=1e-12)
            assert (cutout.beam_major_arcsec, cutout.pixel_scale_arcsec) == pytest.approx((5.4, 1.8))
            assert cutout.bunit == "JY/BEAM" and cutout.origin["tile"] == tile
            assert cutout.origin["x"] == pytest.approx(position[0], abs=1e-3)


def test_stamps_hold_the_injected_sources_where_and_as_bright_as_injected(clean, noisy, engine):
    """Noise-free tiles with projections of their own: every compact source within 0.1 pixel and 1 %;
    at FIRST's noise, the bright ones (a fit of the beam) too."""
    for (folder, truth), fitted in ((clean, False), (noisy, True)):
        cutouts = _cut_all(_planned(engine, folder, truth))
        checked = 0
        for row in truth:
            if row["kind"] != "compact" or (fitted and row["flux_jy"] < 0.03):
                continue
            cutout = cutouts[row["id"]]
            peak, dx, dy, ra, dec = _beam_fit(cutout, row["ra_deg"], row["dec_deg"])
            assert math.hypot(dx, dy) < 0.1, (row["id"], dx, dy)
            assert peak == pytest.approx(row["flux_jy"], rel=0.01), row["id"]
            if not fitted:  # the whole flux is in the stamp: sum / beam area
                assert np.nansum(cutout.data) / BEAM_AREA_PX == pytest.approx(row["flux_jy"], rel=0.01)
            checked += 1
        assert checked >= (2 if fitted else 6)


def test_extended_sources_keep_their_flux(clean, engine):
    """FR I and FR II sources (sums of Gaussians) hold their total flux in the stamp, wherever they were cut."""
    folder, truth = clean
    cutouts = _cut_all(_planned(engine, folder, truth))
    for row in truth:
        if row["kind"] != "compact" and row["separation_arcsec"] / 1.8 < 90:
            assert np.nansum(cutouts[row["id"]].data) / BEAM_AREA_PX == pytest.approx(row["flux_jy"], rel=0.01)


def test_a_cutout_across_tiles_of_one_grid_is_the_cut_from_the_whole_image(noisy, engine, tmp_path):
    folder, truth = noisy
    whole = np.full((1920, 1920), np.nan, dtype=np.float32)
    for row in (0, 1):
        for column in (0, 1):
            with fits.open(folder / "tiles" / f"tile_{row}_{column}.fits") as hdus:
                whole[row * 896 : row * 896 + 1024, column * 896 : column * 896 + 1024] = hdus[0].data
                if (row, column) == (0, 0):
                    wcs = WCS(hdus[0].header)
    seam = Table(rows=[(f"S{i}", *wcs.wcs_pix2world([p], 0)[0]) for i, p in enumerate(SEAM_POSITIONS)],
                 names=("id", "ra_deg", "dec_deg"))
    planned = _planned(engine, folder, seam)
    assert all(path.count("|") >= 1 for path in (s.path for s in planned))
    assert max(s.path.count("|") for s in planned) == 3  # the corner where four tiles meet
    cutouts = _cut_all(planned)
    for (x, y), row in zip(SEAM_POSITIONS, seam):
        expected = Cutout2D(whole, (x, y), (150, 150), wcs=wcs, mode="strict")
        cutout = cutouts[row["id"]]
        np.testing.assert_array_equal(cutout.data, expected.data)
        assert cutout.wcs.wcs_pix2world([[0, 0]], 0) == pytest.approx(expected.wcs.wcs_pix2world([[0, 0]], 0))
        assert len(cutout.origin["tiles"]) >= 2


def test_a_cutout_across_tiles_of_different_projections_is_reprojected(clean, engine):
    folder, truth = clean
    planned = {s.catalogue_id: s for s in _planned(engine, folder, truth)}
    cutouts = _cut_all(planned.values())
    seams = [row for row in truth[-len(SEAM_POSITIONS):]]
    for row in seams:
        assert "|" in planned[row["id"]].path
        cutout = cutouts[row["id"]]
        assert np.isfinite(cutout.data).all()
        total = np.sum(cutout.data) / BEAM_AREA_PX
        if row["kind"] == "compact" or row["separation_arcsec"] / 1.8 < 90:
            # bilinear resampling of the part from the other tiles: the flux within 1 %
            assert total == pytest.approx(row["flux_jy"], rel=0.01), row["id"]


def test_unusable_positions_are_refused_with_the_reason(noisy, engine, tmp_path):
    folder, truth = noisy
    blanked = tmp_path / "tiles"
    blanked.mkdir()
    for path in sorted((folder / "tiles").glob("*.fits")):
        with fits.open(path) as hdus:
            data = hdus[0].data.copy()
            if path.name == "tile_1_1.fits":
                data[500:700, 500:700] = np.nan
            fits.PrimaryHDU(data, header=hdus[0].header).writeto(blanked / path.name)
    with fits.open(blanked / "tile_0_0.fits") as hdus:
        wcs = WCS(hdus[0].header)
    tile_11 = (896 + 600, 896 + 600)
    positions = {"off": (-900.0, 300.0), "edge": (30.0, 700.0), "blank": tile_11, "inside": (300.5, 300.5)}
    catalogue = Table(rows=[(k, *wcs.wcs_pix2world([p], 0)[0]) for k, p in positions.items()],
                      names=("id", "ra_deg", "dec_deg"))
    planned = plan_cutouts(_sources(catalogue), index_tiles(engine, str(blanked)), CutoutSize.parse("150"))
    reasons = {}
    with TileCache() as tiles:
        for source in planned:
            try:
                read_mosaic_cutout(source, tiles=tiles)
                reasons[source.catalogue_id] = None
            except CutoutReadError as exc:
                reasons[source.catalogue_id] = exc.reason
    assert reasons["inside"] is None
    assert reasons["off"].startswith("off every tile: the position is at pixel (")
    assert "tile_0_0.fits" in reasons["off"] and "nearest" in reasons["off"]
    assert reasons["edge"].startswith("too close to the edge of tile tile_0_0.fits")
    assert "(30.0, 700.0), 30.5 px from the edge, and a 150 px cutout needs 75" in reasons["edge"]
    assert reasons["blank"].startswith("on a blank (NaN) region of tile tile_1_1.fits")


def test_integer_scaled_and_tile_compressed_tiles(noisy, tmp_path):
    folder, _ = noisy
    with fits.open(folder / "tiles" / "tile_0_1.fits") as hdus:
        data, header = hdus[0].data, hdus[0].header
    scaled = tmp_path / "scaled.fits"
    hdu = fits.PrimaryHDU(data.copy(), header=header.copy())
    hdu.scale("int16", bscale=2e-5, bzero=0.1)
    hdu.data[10:20, 10:20] = -32768  # stored integers: these pixels are blank
    hdu.header["BLANK"] = -32768
    hdu.writeto(scaled)
    compressed = tmp_path / "tile.fits.fz"
    fits.CompImageHDU(data, header=header, compression_type="RICE_1").writeto(compressed)
    wcs = WCS(header)
    ra, dec = wcs.wcs_pix2world([[80.2, 90.7]], 0)[0]
    for path in (scaled, compressed):
        spec = MosaicCutoutSpec((str(path),), float(ra), float(dec), CutoutSize.parse("150"))
        cutout = read_mosaic_cutout(CutoutSource(path=spec.path))
        with fits.open(path) as hdus:
            image = hdus[-1].data.astype(np.float32)  # astropy's scaled / decompressed pixels
        expected = Cutout2D(image, (80.2, 90.7), (150, 150), wcs=wcs, mode="strict").data
        # astropy scales int16 in float32 arithmetic (errors of 1e-8 Jy near BZERO = 0.1); the reader in float64
        np.testing.assert_allclose(cutout.data, expected, rtol=1e-6, atol=2e-8)
        # BLANK: tile rows 16-19 (the cutout starts at row 16) of the blank rows 10-19, by columns 10-19
        assert np.isnan(cutout.data).sum() == (40 if path == scaled else 0)
        assert Path(cutout.origin["tile"]) == path
