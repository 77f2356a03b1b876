"""A catalogue + mosaic run gives the stage results of the same cutouts pre-cut to files (synthetic and real)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from click.testing import CliRunner
from helpers.mosaics import mirabest_mosaic, precut_catalogue, stage_results

from survey_classifier.api.images import cutout_png
from survey_classifier.cli import main
from survey_classifier.db import make_engine
from survey_classifier.io.fits import read_cutout
from survey_classifier.query import query_errors, query_results
from survey_classifier.synthetic import make_synthetic_mosaic

pytestmark = pytest.mark.slow


def invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def results(url):
    engine = make_engine(url)
    table = query_results(engine)
    engine.dispose()
    return table


def _whole_image(tiles, rows=2, columns=2, step=896, size=1024):
    """The survey image the tiles of a shared-grid mosaic were cut from, with the WCS of tile 0_0."""
    whole = np.zeros((step * (rows - 1) + size, step * (columns - 1) + size), dtype=np.float32)
    for row in range(rows):
        for column in range(columns):
            with fits.open(tiles / f"tile_{row}_{column}.fits") as hdus:
                whole[row * step : row * step + size, column * step : column * step + size] = hdus[0].data
                if (row, column) == (0, 0):
                    header = hdus[0].header.copy()
    return whole, header


def test_a_mosaic_run_gives_the_results_of_the_pre_cut_cutouts(tmp_path):
    positions = [(x + 0.37 * (i + 1), y + 0.61 * (i + 1)) for i, (x, y) in enumerate(
        [(200.0, 250.0), (600.0, 300.0), (1300.0, 200.0), (1700.0, 700.0), (300.0, 1500.0), (800.0, 1700.0),
         (1250.0, 1350.0), (1650.0, 1600.0), (500.0, 800.0), (1500.0, 400.0), (1100.0, 600.0), (200.0, 1100.0)]
    )] + [(960.3, 400.6), (1500.2, 955.3), (957.6, 958.2), (400.2, 962.7)]  # on the seams and the corner
    truth = make_synthetic_mosaic(tmp_path / "survey", positions=positions, seed=11)
    tiles = tmp_path / "survey" / "tiles"
    mosaic_db = f"sqlite:///{tmp_path / 'mosaic.db'}"
    saved = tmp_path / "saved"
    run = invoke("classify", tmp_path / "survey" / "catalogue.csv", "--mosaics", tiles, "--cutout-size", "270arcsec",
                 "--save-cutouts", saved, "--db", mosaic_db, "--quiet")
    assert "16 cutouts, 16 processed, 0 failed" in run.output

    whole, header = _whole_image(tiles)
    fits.PrimaryHDU(whole, header=header).writeto(tmp_path / "whole.fits")
    catalogue = precut_catalogue(truth, lambda row: tmp_path / "whole.fits", 150, tmp_path / "precut")
    files_db = f"sqlite:///{tmp_path / 'files.db'}"
    invoke("classify", catalogue, "--db", files_db, "--quiet")

    saved_catalogue = tmp_path / "saved.csv"
    Table({"file": [f"{name}.fits" for name in truth["id"]], "id": truth["id"]}).write(saved_catalogue)
    saved_db = f"sqlite:///{tmp_path / 'saved.db'}"
    invoke("classify", saved_catalogue, "--base-dir", saved, "--db", saved_db, "--quiet")

    from_mosaic = results(mosaic_db)
    expected = stage_results(results(files_db))
    assert set(expected) == set(truth["id"])
    assert {"measure_peak_flux_jy", "cnn_label", "som_node_x", "anomaly_score"} <= set(next(iter(expected.values())))
    assert stage_results(from_mosaic) == expected
    assert stage_results(results(saved_db)) == expected
    # provenance: the tile and the pixel on it; the path names the tiles a cutout across the seams used
    row = from_mosaic[list(from_mosaic["catalogue_id"]).index("SYN0015")]
    assert row["tile"].endswith("tile_0_0.fits") and row["path"].count("|") == 3
    assert (row["tile_x"], row["tile_y"]) == pytest.approx((957.6, 958.2), abs=1e-3)
    assert set(from_mosaic["kind"]) == {"compact", "fri", "frii"}  # catalogue columns carried through
    with fits.open(saved / "SYN0015.fits") as hdus:
        assert hdus[0].header["TILE"] == "tile_0_0.fits" and hdus[0].header["TILE_X"] == pytest.approx(957.6)
        saved_pixels = hdus[0].data
    # what reads a stored cutout again by its path (the web page's images, galleries) cuts it again
    again = read_cutout(row["path"])
    np.testing.assert_array_equal(again.data, saved_pixels)
    assert again.sha256 == row["sha256"]
    assert cutout_png(row["path"], row["sha256"], size=64).startswith(b"\x89PNG")


def test_positions_off_the_mosaics_are_stored_as_errors(tmp_path):
    make_synthetic_mosaic(tmp_path / "survey", n_sources=3, seed=2, grid=(1, 1), tile_shape=(600, 600))
    with fits.open(tmp_path / "survey" / "tiles" / "tile_0_0.fits") as hdus:
        wcs = WCS(hdus[0].header)
    catalogue = tmp_path / "far.csv"
    rows = [("far", *wcs.wcs_pix2world([[-2000.3, 300.2]], 0)[0]), ("edge", *wcs.wcs_pix2world([[590.4, 300.2]], 0)[0])]
    Table(rows=rows, names=("name", "ra", "dec")).write(catalogue)
    url = f"sqlite:///{tmp_path / 'errors.db'}"
    result = CliRunner().invoke(main, ["classify", str(catalogue), "--mosaics", str(tmp_path / "survey" / "tiles"),
                                       "--db", url, "--stages", "measure", "--quiet"])
    assert result.exit_code == 1 and "2 cutouts, 0 processed, 2 failed" in result.output
    engine = make_engine(url)
    errors = {row["path"].split("#")[1]: row["message"] for row in query_errors(engine)}
    engine.dispose()
    assert len(errors) == 2 and all(message for message in errors.values())
    assert sorted(m.split(":")[0] for m in errors.values()) == [
        "off every tile", "too close to the edge of tile tile_0_0.fits"
    ]


def test_mosaic_options_need_mosaics(tmp_path, mirabest_dir):
    result = CliRunner().invoke(main, ["classify", str(mirabest_dir / "labels.csv"), "--cutout-size", "150",
                                       "--db", f"sqlite:///{tmp_path / 'x.db'}"])
    assert result.exit_code != 0 and "--cutout-size needs --mosaics" in result.output
    result = CliRunner().invoke(main, ["classify", str(mirabest_dir / "labels.csv"), "--mosaics", str(tmp_path),
                                       "--cutout-size", "12 parsecs", "--db", f"sqlite:///{tmp_path / 'x.db'}"])
    assert result.exit_code != 0 and "cutout size '12 parsecs'" in result.output


def test_a_mosaic_of_real_mirabest_cutouts(tmp_path, mirabest_files):
    """Real FIRST sources reprojected into one SIN mosaic: the mosaic run equals its pre-cut stamps exactly,
    and stays close to the original cutouts (reprojection resamples them)."""
    files = mirabest_files[::64][:16]
    tile, positions = mirabest_mosaic(files, tmp_path / "mosaic")
    mosaic_db = f"sqlite:///{tmp_path / 'mosaic.db'}"
    invoke("classify", positions, "--mosaics", tile.parent, "--cutout-size", "150", "--db", mosaic_db,
           "--stages", "measure,cnn", "--quiet")
    truth = Table.read(positions)
    catalogue = precut_catalogue(truth, lambda row: tile, 150, tmp_path / "precut")
    files_db = f"sqlite:///{tmp_path / 'files.db'}"
    invoke("classify", catalogue, "--db", files_db, "--stages", "measure,cnn", "--quiet")
    from_mosaic = stage_results(results(mosaic_db))
    assert from_mosaic == stage_results(results(files_db))

    originals = Table({"file": [str(p) for p in files], "id": list(truth["id"])})
    originals.write(tmp_path / "originals.csv")
    original_db = f"sqlite:///{tmp_path / 'originals.db'}"
    invoke("classify", tmp_path / "originals.csv", "--db", original_db, "--stages", "measure,cnn", "--quiet")
    original = stage_results(results(original_db))
    same_label = sum(from_mosaic[k]["cnn_label"] == original[k]["cnn_label"] for k in original)
    peak_ratio = np.array([from_mosaic[k]["measure_peak_flux_jy"] / original[k]["measure_peak_flux_jy"]
                           for k in original])
    flux_ratio = np.array([from_mosaic[k]["measure_integrated_flux_jy"] / original[k]["measure_integrated_flux_jy"]
                           for k in original])
    assert same_label >= 15, same_label
    assert np.median(np.abs(flux_ratio - 1)) < 0.02 and np.all(np.abs(flux_ratio - 1) < 0.15), flux_ratio
    assert np.all((peak_ratio > 0.8) & (peak_ratio <= 1.01)), peak_ratio  # bilinear resampling lowers peaks
